"""Byte-level BPE: train, save, load, fingerprint, and the one chat template.

The tokenizer directory is HF-compatible (`tokenizer.json` + `tokenizer_config.json` with
the Jinja chat template), so `transformers.AutoTokenizer.from_pretrained(dir)` and serving
engines read it as-is. Every later artifact stores `fingerprint` and refuses a mismatch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import jinja2
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

log = logging.getLogger(__name__)

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_MARKERS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, *ROLE_MARKERS.values(), END_OF_TURN]

# Each turn is "<|role|>\n{content}<|end|>\n". The assistant's trainable span is its content
# plus <|end|> (not the newline after it), so a fine-tuned model learns to stop.
# `Tokenizer.encode_chat` relies on the prefix property: rendering messages[:i] with the
# generation prompt is a prefix of rendering messages.
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
MANIFEST_FILE = "manifest.json"  # lineage written by the tokenizer CLI
# Placeholder for message i's content while finding the template's own special tokens
# (private-use code points, which no template writes).
_CONTENT_SLOT = "\ue000{}\ue001"
_CONTENT_SLOT_RE = re.compile("\ue000(\\d+)\ue001")


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
        added = sorted((t.content for t in backend.get_added_tokens_decoder().values()), key=len, reverse=True)
        self._added_pattern = re.compile("|".join(map(re.escape, added)))
        self._warned_template_edits_content = False

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

    @functools.cached_property
    def _literal(self) -> _HFTokenizer:
        """A copy that reads special-token strings as plain text: message content goes through it,
        so a user who types "<|end|>" gets bytes, not the real end-of-turn marker."""
        literal = _HFTokenizer.from_str(self.backend.to_str())
        literal.encode_special_tokens = True
        return literal

    # ----- chat -----
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        return self._template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, bos_token=BOS, eos_token=EOS
        )

    def encode_chat(
        self, messages: Sequence[dict], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of the rendered conversation and, per token, whether it is assistant
        output (its content and closing <|end|>, not the newline after it): the tokens SFT
        trains on. A token counts as assistant output when it starts inside that span."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            # The span is exactly what the model generates: the content and its <|end|>.
            # The newline the template writes after <|end|> is formatting the model never
            # emits (generation stops at <|end|>), so it is not trained on.
            start = len(self.apply_chat_template(messages[:i], add_generation_prompt=True))
            end = start + len(message["content"]) + len(END_OF_TURN)
            if text[start:end] != message["content"] + END_OF_TURN:
                raise ValueError(
                    f"chat template does not render message {i} as content + {END_OF_TURN} after "
                    "the generation prompt; encode_chat relies on that prefix property"
                )
            spans.append((start, end))
        ids, starts = self._encode_rendered(messages, add_generation_prompt, text)
        mask = [any(s <= a < e for s, e in spans) for a in starts]
        return ids, mask

    def _encode_rendered(
        self, messages: Sequence[dict], add_generation_prompt: bool, text: str
    ) -> tuple[list[int], list[int]]:
        """Ids of `text` (the rendered conversation) and each token's start offset, where only the
        template's own text can produce special tokens.

        The template is rendered with a placeholder per message content; special tokens are found
        in that skeleton only, and each stretch between two of them (template text + content) is
        encoded with special matching off. Tokenizers encodes the stretches between added tokens
        independently anyway, so for content without special strings the ids equal
        `encode(text)`, i.e. what transformers and a serving engine produce.
        """
        skeleton = self.apply_chat_template(
            [{**m, "content": _CONTENT_SLOT.format(i)} for i, m in enumerate(messages)], add_generation_prompt
        )

        def fill(piece: str) -> str:
            return _CONTENT_SLOT_RE.sub(lambda m: messages[int(m.group(1))]["content"], piece)

        if fill(skeleton) != text:
            # The template rewrites content (e.g. strips it): fall back to plain encoding.
            if not self._warned_template_edits_content:
                log.warning(
                    "chat template edits message content; special-token strings inside content "
                    "will be read as special tokens"
                )
                self._warned_template_edits_content = True
            enc = self.backend.encode(text, add_special_tokens=False)
            return enc.ids, [a for a, _ in enc.offsets]
        ids: list[int] = []
        starts: list[int] = []
        offset = 0  # position in `text`

        def add_plain(piece: str) -> None:
            nonlocal offset
            if not piece:
                return
            literal = fill(piece)
            enc = self._literal.encode(literal, add_special_tokens=False)
            ids.extend(enc.ids)
            starts.extend(offset + a for a, _ in enc.offsets)
            offset += len(literal)

        cursor = 0
        for match in self._added_pattern.finditer(skeleton):
            add_plain(skeleton[cursor : match.start()])
            ids.append(self.backend.token_to_id(match.group()))
            starts.append(offset)
            offset += len(match.group())
            cursor = match.end()
        add_plain(skeleton[cursor:])
        return ids, starts

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
    def load(cls, path: str | Path) -> Tokenizer:
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
