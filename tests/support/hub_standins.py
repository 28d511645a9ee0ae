"""Small, faithful stand-ins for Hub checkpoints (no Hub access here), built with the libraries the
real ones were made with:

- `llama3_standin`: a Llama-3.1/3.2-style folder. Byte-level BPE trained with `tokenizers` on real
  text (the licenses in /usr/share/common-licenses) with Llama-3's pre-tokenizer split pattern, its
  special tokens appended after the vocabulary in Llama-3's order, `<|begin_of_text|>` added by the
  post-processor, a chat template with Llama-3's header/`<|eot_id|>` layout, and
  `rope_scaling: {rope_type: llama3}` in config.json; `tie=True` gives Llama-3.2's tied embeddings.
- `llama2_standin`: a Llama-2-chat-style folder. A SentencePiece BPE model trained with
  `sentencepiece` using Llama-2's trainer settings (byte fallback, split digits, identity
  normalisation, ids 0/1/2 for <unk>/<s>/</s>), converted to tokenizer.json by transformers'
  `LlamaConverter` in its legacy mode (how Llama-2's tokenizer.json was made), with the
  `[INST]` chat template.
- `llama2_7b_config_dir`: config.json of Llama-2-7B's shape beside the Llama-2 stand-in's
  tokenizer, and no weights.

Weights are random (norm gains too) and saved with `LlamaForCausalLM.save_pretrained`; config.json
is then rewritten in the flat form Hub checkpoints carry (`rope_theta`, `rope_scaling`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

LICENSES = Path("/usr/share/common-licenses")

# Llama-3's pre-tokenizer split (the regex its tokenizer.json carries).
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Llama-3.1's first special tokens, in id order after the regular vocabulary.
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
# Llama-3.1/3.2-Instruct's layout: a system turn with the knowledge/today dates, then one
# header + trimmed content + <|eot_id|> per message.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] | trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = '' %}\n"
    "{%- endif %}\n"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\n"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}\n"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}\n"
    "{{- system_message + '<|eot_id|>' }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)
# Llama-2-chat's layout: <s>[INST] (<<SYS>> block) user [/INST] answer </s>, roles alternating.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system_message = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + ((system_message if loop.first else '') + message['content']).strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'].strip() + ' ' + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)


def license_texts() -> list[str]:
    """Paragraphs of the system's license texts: real prose nobody here wrote."""
    paragraphs = []
    for path in sorted(LICENSES.iterdir()):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            paragraphs += [p.strip() for p in text.split("\n\n") if p.strip()]
    return paragraphs


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _randomize_(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.05 * noise)


def _hub_form(config_file: Path) -> None:
    """config.json as Hub checkpoints write it: top-level rope_theta and a rope_scaling dict."""
    config = json.loads(config_file.read_text())
    rope = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = rope.pop("rope_theta", 10000.0)
    config["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
    _write_json(config_file, config)


def save_llama_weights(out: Path, seed: int, **config) -> None:
    """Random LlamaForCausalLM weights + config.json (Hub form) via transformers' save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    _randomize_(model, seed)
    model.eval().save_pretrained(out)
    _hub_form(out / "config.json")


# ----------------------------------------------------------------------------- Llama-3
def llama3_tokenizer(out: Path, vocab_size: int = 640) -> int:
    """Byte-level BPE with Llama-3's specials and files; returns the vocabulary size."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(license_texts(), trainer=trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = LLAMA3_SPECIALS[0]
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, backend.token_to_id(bos))],
            ),
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    backend.save(str(out / "tokenizer.json"))
    _write_json(
        out / "tokenizer_config.json",
        {
            "bos_token": bos,
            "chat_template": LLAMA3_TEMPLATE,
            "clean_up_tokenization_spaces": True,
            "eos_token": "<|eot_id|>",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 131072,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    )
    _write_json(out / "special_tokens_map.json", {"bos_token": bos, "eos_token": "<|eot_id|>"})
    return backend.get_vocab_size()


def llama3_standin(out: Path, tie: bool = False, seed: int = 0, original_context: int = 32) -> Path:
    """Llama-3.1-style (tie=False) or 3.2-style (tie=True) folder: llama3 RoPE scaling with
    `original_context` trained positions and 8x that as max_position_embeddings."""
    vocab = llama3_tokenizer(out)
    ids = {t: i for i, t in enumerate(LLAMA3_SPECIALS, start=vocab - len(LLAMA3_SPECIALS))}
    eos_ids = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]
    save_llama_weights(
        out,
        seed,
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8 * original_context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=eos_ids,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": original_context,
        },
    )
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": ids["<|begin_of_text|>"],
            "do_sample": True,
            "eos_token_id": eos_ids,
            "temperature": 0.6,
            "top_p": 0.9,
        },
    )
    return out


# ----------------------------------------------------------------------------- Llama-2
class _SentencePieceSource:
    """What transformers' `LlamaConverter` reads from a slow tokenizer: the model file, the
    legacy flag and the id -> piece map."""

    def __init__(self, model_file: Path) -> None:
        import sentencepiece as spm

        self.vocab_file = str(model_file)
        self.legacy = True  # Llama-2's tokenizer.json: Prepend("▁") + Replace(" ", "▁") normaliser
        self.add_prefix_space = True
        self._sp = spm.SentencePieceProcessor(model_file=str(model_file))

    def convert_ids_to_tokens(self, index: int) -> str:
        return self._sp.id_to_piece(index)


def train_sentencepiece(out_file: Path, vocab_size: int = 640) -> None:
    """A SentencePiece BPE model with Llama-2's trainer settings."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(license_texts()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=0.99995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    out_file.write_bytes(model.getvalue())


def _llama_converter():
    """transformers' `LlamaConverter`, with its BPE merge extraction adapted to the extractor's
    current return shape (transformers 5.24 unpacks two values where the extractor gives three)."""
    from transformers.convert_slow_tokenizer import LlamaConverter
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    class Extractor(SentencePieceExtractor):
        def extract(self, vocab_scores=None):
            vocab, _, merges = super().extract(vocab_scores)
            return vocab, merges

    class Converter(LlamaConverter):
        SpmExtractor = Extractor

    return Converter


def llama2_tokenizer(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(out / "tokenizer.model")
    backend = _llama_converter()(_SentencePieceSource(out / "tokenizer.model")).converted()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    backend.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    backend.save(str(out / "tokenizer.json"))

    def added(content: str) -> dict:
        return {
            "__type": "AddedToken",
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        }

    _write_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": added("<s>"),
            "chat_template": LLAMA2_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": added("</s>"),
            "legacy": False,
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": None,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": added("<unk>"),
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": added("<s>"), "eos_token": added("</s>"), "unk_token": added("<unk>")},
    )
    return backend.get_vocab_size()


def llama2_standin(out: Path, seed: int = 1) -> Path:
    vocab = llama2_tokenizer(out)
    save_llama_weights(
        out,
        seed,
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    _write_json(
        out / "generation_config.json",
        {"bos_token_id": 1, "do_sample": True, "eos_token_id": 2, "pad_token_id": 0, "temperature": 0.6, "top_p": 0.9},
    )
    return out


def llama2_7b_config_dir(out: Path, tokenizer_dir: Path) -> Path:
    """Llama-2-7B's config.json (its published shape) and the stand-in tokenizer; no weights."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
        shutil.copy(tokenizer_dir / name, out / name)
    _write_json(
        out / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 4096,
            "initializer_range": 0.02,
            "intermediate_size": 11008,
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 32,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": None,
            "tie_word_embeddings": False,
            "torch_dtype": "float16",
            "use_cache": True,
            "vocab_size": 32000,
        },
    )
    return out
