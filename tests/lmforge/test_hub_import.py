"""Hub Llama-family folders as starting points (stand-ins from tests/support/hub_standins.py): the
shape, RoPE scaling and tied embeddings of config.json; the tokenizer's own special tokens, chat
template and files; logits equal to transformers' LlamaForCausalLM; what the importer refuses."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from lmforge.checkpoint import load_for_inference, read_metadata
from lmforge.hf import export_hf, from_hf_config, load_hf, to_hf_config
from lmforge.model import ModelConfig, build_model
from lmforge.tokenizer import Tokenizer

CONVERSATION = [
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "What does the license grant?"},
    {"role": "assistant", "content": "The right to copy and modify."},
    {"role": "user", "content": "  And 12 + 30?  "},
    {"role": "assistant", "content": " Answer: 42 "},
]


def hf_logits(directory, ids: torch.Tensor) -> torch.Tensor:
    hf = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(ids).logits


@pytest.mark.parity
@pytest.mark.parametrize("standin", ["llama3_dir", "llama32_dir"])
def test_llama3_rope_scaling_logits_equal_transformers_past_the_original_context(standin, request):
    directory = request.getfixturevalue(standin)
    model, cfg = load_hf(directory)
    scaling = json.loads((directory / "config.json").read_text())["rope_scaling"]
    assert cfg.rope_scaling == {**scaling, "rope_type": "llama3"} and scaling["original_max_position_embeddings"] == 32
    assert (model.lm_head.weight is model.embed_tokens.weight) is (standin == "llama32_dir")
    # 200 positions: most of them beyond the 32 the scaling leaves untouched.
    ids = torch.randint(0, cfg.vocab_size, (2, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.eval()(ids)
    reference = hf_logits(directory, ids)
    assert (ours - reference).abs().max().item() <= 1e-5
    # The scaling is what makes them equal: the same weights with plain RoPE compute something else.
    plain = build_model(ModelConfig(**{**cfg.to_dict(), "rope_scaling": None}), device="meta")
    plain.load_state_dict(model.state_dict(), assign=True)
    with torch.no_grad():
        unscaled = plain.eval()(ids)
    assert (unscaled - reference)[:, 32:].abs().max().item() > 1e-3


@pytest.mark.parity
def test_llama2_logits_equal_transformers(llama2_dir):
    model, cfg = load_hf(llama2_dir)
    assert cfg.rope_scaling is None and cfg.max_seq_len == 128
    ids = torch.randint(0, cfg.vocab_size, (2, 128), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model.eval()(ids) - hf_logits(llama2_dir, ids)).abs().max().item() <= 1e-5


def test_llama3_tokenizer_renders_and_tokenizes_like_transformers(llama3_dir):
    tokenizer = Tokenizer.load(llama3_dir)
    hf = AutoTokenizer.from_pretrained(llama3_dir)
    assert tokenizer.specials.bos == "<|begin_of_text|>" and tokenizer.specials.end_of_turn == "<|eot_id|>"
    assert tokenizer.end_of_turn_id == hf.convert_tokens_to_ids("<|eot_id|>") and tokenizer.pad_id == tokenizer.eos_id
    generation = json.loads((llama3_dir / "generation_config.json").read_text())
    assert tokenizer.stop_ids == sorted(generation["eos_token_id"])
    for generation_prompt in (False, True):
        text = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=generation_prompt)
        assert text == hf.apply_chat_template(CONVERSATION, add_generation_prompt=generation_prompt, tokenize=False)
        hf_ids = hf.apply_chat_template(
            CONVERSATION, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
        )
        assert tokenizer.encode_chat(CONVERSATION, add_generation_prompt=generation_prompt)[0] == list(hf_ids)


def test_llama2_tokenizer_encodes_turns_as_sentencepiece_does(llama2_dir):
    """Llama-2's own recipe: each exchange is [<s>] + SentencePiece("[INST] user [/INST] answer ") +
    [</s>], which is what its converted tokenizer.json gives between the special tokens."""
    import sentencepiece as spm

    tokenizer = Tokenizer.load(llama2_dir)
    sp = spm.SentencePieceProcessor(model_file=str(llama2_dir / "tokenizer.model"))
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.end_of_turn_id) == (1, 2, 2)
    text = tokenizer.apply_chat_template(CONVERSATION)
    assert text == AutoTokenizer.from_pretrained(llama2_dir).apply_chat_template(CONVERSATION, tokenize=False)
    system, turns = CONVERSATION[0]["content"], CONVERSATION[1:]
    expected = []
    for n, (user, answer) in enumerate(zip(turns[::2], turns[1::2], strict=True)):
        prompt = (f"<<SYS>>\n{system}\n<</SYS>>\n\n" if n == 0 else "") + user["content"]
        expected += [1, *sp.encode(f"[INST] {prompt.strip()} [/INST] {answer['content'].strip()} "), 2]
    assert tokenizer.encode_chat(CONVERSATION)[0] == expected
    assert tokenizer.encode("the Licensee 2024") == sp.encode("the Licensee 2024")


@pytest.mark.parametrize("standin", ["llama3_dir", "llama2_dir"])
def test_mask_is_each_assistant_turn_as_the_template_renders_it(standin, request):
    """The trained tokens of turn i spell exactly what the template adds when the conversation is
    extended from messages[:i] + generation prompt to messages[:i+1]: the reply and its closer."""
    tokenizer = Tokenizer.load(request.getfixturevalue(standin))
    hf = AutoTokenizer.from_pretrained(request.getfixturevalue(standin))
    text = tokenizer.apply_chat_template(CONVERSATION)
    ids, mask = tokenizer.encode_chat(CONVERSATION)
    offsets = tokenizer.backend.encode(text, add_special_tokens=False).offsets
    runs, current = [], []
    for (start, end), trained in zip(offsets, mask, strict=True):
        if trained:
            current.append((start, end))
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    replies = []
    for i, message in enumerate(CONVERSATION):
        if message["role"] == "assistant":
            before = hf.apply_chat_template(CONVERSATION[:i], add_generation_prompt=True, tokenize=False)
            through = hf.apply_chat_template(CONVERSATION[: i + 1], tokenize=False)
            replies.append(through[len(before) :])
    assert [text[run[0][0] : run[-1][1]] for run in runs] == replies
    assert all(reply.endswith(tokenizer.specials.end_of_turn) for reply in replies)
    assert sum(mask) < len(ids) // 2


def test_hf_dir_lineage_has_its_own_tokenizer_fingerprint(llama3_dir, llama2_dir, tokenizer):
    fingerprints = {read_metadata(d)["tokenizer_fingerprint"] for d in (llama3_dir, llama2_dir)}
    assert len(fingerprints) == 2 and tokenizer.fingerprint not in fingerprints
    assert read_metadata(llama3_dir)["tokenizer_fingerprint"] == Tokenizer.load(llama3_dir).fingerprint


@pytest.mark.parametrize("standin", ["llama3_dir", "llama32_dir", "llama2_dir"])
def test_export_round_trips_the_hub_files(standin, request, tmp_path):
    source = request.getfixturevalue(standin)
    loaded = load_for_inference(source)
    export_hf(loaded.model, tmp_path, tokenizer=loaded.tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (tmp_path / name).read_bytes() == (source / name).read_bytes(), name
    if (source / "tokenizer.model").exists():
        assert (tmp_path / "tokenizer.model").read_bytes() == (source / "tokenizer.model").read_bytes()
    config, original = (json.loads((d / "config.json").read_text()) for d in (tmp_path, source))
    assert config["rope_scaling"] == original["rope_scaling"] and config["eos_token_id"] == original["eos_token_id"]
    assert config["tie_word_embeddings"] == original["tie_word_embeddings"]
    assert Tokenizer.load(tmp_path).fingerprint == loaded.tokenizer.fingerprint
    ids = torch.randint(0, loaded.model_config.vocab_size, (1, 100), generator=torch.Generator().manual_seed(3))
    assert torch.equal(hf_logits(tmp_path, ids), hf_logits(source, ids))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"model_type": "mistral", "sliding_window": 4096}, "sliding_window"),
        ({"model_type": "qwen2"}, "attention_bias"),
        ({"attention_bias": True}, "attention_bias"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ({"model_type": "gemma"}, "model_type"),
    ],
)
def test_import_refuses_what_it_cannot_compute_in_one_line_naming_the_key(change, key):
    config = {**to_hf_config(ModelConfig(name="t")), **change}
    with pytest.raises(ValueError, match=key) as err:
        from_hf_config(config)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "change",
    [
        {"rope_scaling": {"rope_type": "default"}},
        {"rope_scaling": {"type": "default"}},
        {"model_type": "mistral", "sliding_window": None},
        {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
    ],
)
def test_import_accepts_configs_that_mean_plain_llama(change):
    assert from_hf_config({**to_hf_config(ModelConfig(name="t")), **change}) == ModelConfig(name="t")


def test_chat_replies_stop_at_every_eos_the_checkpoint_declares(llama3_dir, monkeypatch):
    """Llama-3 ends a reply with <|eot_id|> but declares <|end_of_text|> as an eos too: generate_chat
    hands the decoding loop all of them."""
    import lmforge.generate as generation

    tokenizer = Tokenizer.load(llama3_dir)
    model, _ = load_hf(llama3_dir)
    seen = []

    def capture(model, prompts, cfg, pad_id):
        seen.append(set(cfg.stop_token_ids))
        return generation.GenerationOutput(completions=[[] for _ in prompts], finished=[True for _ in prompts])

    monkeypatch.setattr(generation, "generate", capture)
    generation.generate_chat(model, tokenizer, [CONVERSATION[:1]], generation.SamplingConfig(max_new_tokens=2))
    end_of_text = AutoTokenizer.from_pretrained(llama3_dir).convert_tokens_to_ids("<|end_of_text|>")
    assert seen == [set(tokenizer.stop_ids)] and {end_of_text, tokenizer.end_of_turn_id} <= seen[0]
