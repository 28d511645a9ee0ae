"""Byte-level BPE: train, save, load, fingerprint, and the one chat template.

The tokenizer directory is HF-compatible (`tokenizer.json` + `tokenizer_config.json` with
the Jinja chat template), so `transformers.AutoTokenizer.from_pretrained(dir)` and serving
engines read it as-is. Every later artifact stores `fingerprint` and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import jinja2
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_MARKERS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, *ROLE_MARKERS.values(), END_OF_TURN]

# Each turn is "<|role|>\n{content}<|end|>\n". The assistant's trainable span is its content
# plus <|end|>, so a fine-tuned model learns to stop. `lmforge.tokenizer.Tokenizer.encode_chat`
# relies on the prefix property: rendering messages[:i] is a prefix of rendering messages.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


class TokenizerMismatchError(ValueError):
    """An artifact was made with another tokenizer than the one this run uses."""


def round_vocab(n: int, multiple: int = 128) -> int:
    """Round up to a multiple (embedding tables of such sizes run faster on GPUs)."""
    return int(math.ceil(n / multiple) * multiple)


def fingerprint_of_json(tokenizer_json: str) -> str:
    """sha256 of the canonical form of a tokenizer JSON (key order and spacing do not count)."""
    canonical = json.dumps(json.loads(tokenizer_json), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_fingerprint(expected: str, actual: str, what: str) -> None:
    """Raise naming both fingerprints when `what` was made with another tokenizer."""
    if expected != actual:
        raise TokenizerMismatchError(
            f"{what} was made with tokenizer {expected[:16]}..., but this run's tokenizer is "
            f"{actual[:16]}... (full: {expected} vs {actual}). Re-tokenize, or point "
            f"tokenizer.path at the tokenizer it was made with."
        )


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


class Tokenizer:
    """Thin wrapper over a `tokenizers.Tokenizer` with our special tokens and chat template."""

    def __init__(self, backend: _HFTokenizer, chat_template: str = CHAT_TEMPLATE) -> None:
        self.backend = backend
        self.chat_template = chat_template
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(chat_template)
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}")
        self.bos_id = backend.token_to_id(BOS)
        self.eos_id = backend.token_to_id(EOS)
        self.pad_id = backend.token_to_id(PAD)
        self.end_of_turn_id = backend.token_to_id(END_OF_TURN)
        self.fingerprint = fingerprint_of_json(backend.to_str())

    # ----- basics -----
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        encs = self.backend.encode_batch(list(texts), add_special_tokens=False)
        head = [self.bos_id] if add_bos else []
        tail = [self.eos_id] if add_eos else []
        return [head + e.ids + tail for e in encs]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    # ----- chat -----
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        return self._template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, bos_token=BOS, eos_token=EOS
        )

    def encode_chat(
        self, messages: Sequence[dict], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of the rendered conversation and, per token, whether it is assistant
        output (its content and closing <|end|>): the tokens SFT trains on."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(self.apply_chat_template(messages[:i], add_generation_prompt=True))
            end = len(self.apply_chat_template(messages[: i + 1]))
            if not text.startswith(self.apply_chat_template(messages[: i + 1])):
                raise ValueError("chat template lacks the prefix property encode_chat relies on")
            spans.append((start, end))
        enc = self.backend.encode(text, add_special_tokens=False)
        mask = [any(s <= a < e for s, e in spans) for a, _ in enc.offsets]
        return enc.ids, mask

    # ----- files -----
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD,
            "unk_token": None,
            "additional_special_tokens": [*ROLE_MARKERS.values(), END_OF_TURN],
            "chat_template": self.chat_template,
            "model_max_length": 1_000_000,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
            "lmforge_fingerprint": self.fingerprint,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False))
        (directory / "special_tokens_map.json").write_text(
            json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2)
        )
        return directory

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Load from a tokenizer directory (ours or an HF model dir) or a tokenizer.json."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no tokenizer at {path} (expected {file})")
        template = CHAT_TEMPLATE
        config_file = file.parent / CONFIG_FILE
        if config_file.exists():
            template = json.loads(config_file.read_text()).get("chat_template") or CHAT_TEMPLATE
        return cls(_HFTokenizer.from_file(str(file)), chat_template=template)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    min_frequency: int = 2,
    show_progress: bool = True,
    length: int | None = None,
) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style pre-tokenization, no unknown tokens possible).

    vocab_size counts the special tokens and the 256 byte symbols; it is rounded up to a
    multiple of 128. A small corpus may yield fewer merges than asked for.
    """
    vocab_size = round_vocab(vocab_size)
    backend = _HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer=trainer, length=length)
    return Tokenizer(backend)
