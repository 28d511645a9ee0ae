"""Byte-level BPE: train, save, load, fingerprint, chat templates.

The tokenizer directory is HF-compatible (`tokenizer.json` + `tokenizer_config.json` with
the Jinja chat template), so `transformers.AutoTokenizer.from_pretrained(dir)` and serving
engines read it as-is. Every later artifact stores `fingerprint` and refuses a mismatch.

Two kinds load here:
- lmforge's own (`train_tokenizer`): the special tokens in `SPECIAL_TOKENS` and `CHAT_TEMPLATE`;
- an imported Hub tokenizer (Llama-2's SentencePiece-converted `tokenizer.json`, Llama-3's
  byte-level BPE, ...): its own special tokens (`tokenizer_config.json`), its chat template
  (`tokenizer_config.json` or `chat_template.jinja`) and its files, kept byte for byte
  (`source_files`) so that every run dir and export carries exactly the files it came with,
  `generation_config.json` included. The token that closes an assistant turn (`<|end|>`,
  `<|eot_id|>`, `</s>`) is read off the template itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
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
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5 saves the template
GENERATION_CONFIG_FILE = "generation_config.json"
# An imported tokenizer's files, copied verbatim wherever it goes (run dirs, exports).
SOURCE_FILES = (
    TOKENIZER_FILE,
    CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    "tokenizer.model",  # the SentencePiece model Llama-2 ships beside its converted tokenizer.json
    "added_tokens.json",
    CHAT_TEMPLATE_FILE,
    GENERATION_CONFIG_FILE,
)
MANIFEST_FILE = "manifest.json"  # lineage written by the tokenizer CLI
# Placeholder for message i's content while finding the template's own special tokens
# (private-use code points, which no template writes).
_CONTENT_SLOT = "\ue000{}\ue001"
_CONTENT_SLOT_RE = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class SpecialTokens:
    """The special-token strings a tokenizer uses; None where it has none (Llama has no pad)."""

    bos: str | None
    eos: str
    pad: str | None = None
    unk: str | None = None
    end_of_turn: str | None = None  # None: read off the chat template (else eos)


NATIVE_SPECIALS = SpecialTokens(bos=BOS, eos=EOS, pad=PAD, end_of_turn=END_OF_TURN)


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


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def template_environment() -> jinja2.Environment:
    """What HF chat templates are written against (transformers renders them the same way): a
    sandbox with trimmed blocks, loop controls, `tojson`, `raise_exception` and `strftime_now`
    (Llama-3.2's template dates its system turn with it)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    return env


def _token_string(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _template_from(config: dict, directory: Path | None) -> str | None:
    if directory is not None and (directory / CHAT_TEMPLATE_FILE).is_file():
        return (directory / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template or None


class Tokenizer:
    """Thin wrapper over a `tokenizers.Tokenizer` with its special tokens and chat template.

    `specials=None` means lmforge's own tokens (all of `SPECIAL_TOKENS` must exist); an imported
    tokenizer passes its own `SpecialTokens` and the files it was read from (`source_files`).
    """

    def __init__(
        self,
        backend: _HFTokenizer,
        chat_template: str | None = CHAT_TEMPLATE,
        specials: SpecialTokens | None = None,
        source_files: dict[str, bytes] | None = None,
    ) -> None:
        self.backend = backend
        self.source_files = source_files
        if specials is None:
            missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
            if missing:
                raise ValueError(f"tokenizer lacks special tokens {missing}")
            specials = NATIVE_SPECIALS
        for role in ("bos", "eos", "pad", "unk", "end_of_turn"):
            token = getattr(specials, role)
            if token is not None and backend.token_to_id(token) is None:
                raise ValueError(f"tokenizer's {role}_token {token!r} is not in its vocabulary")
        self.chat_template = chat_template
        self._template = template_environment().from_string(chat_template) if chat_template else None
        added = sorted((t.content for t in backend.get_added_tokens_decoder().values()), key=len, reverse=True)
        self._added_pattern = re.compile("|".join(map(re.escape, added))) if added else None
        self.bos_id = backend.token_to_id(specials.bos) if specials.bos else None
        self.eos_id = backend.token_to_id(specials.eos)
        # No pad token (Llama): pad with eos. Padding is always masked out of attention and loss.
        self.pad_id = backend.token_to_id(specials.pad) if specials.pad else self.eos_id
        self.specials = specials
        if specials.end_of_turn is None:
            self.specials = SpecialTokens(**{**specials.__dict__, "end_of_turn": self._turn_closer() or specials.eos})
        self.end_of_turn_id = backend.token_to_id(self.specials.end_of_turn)
        self.fingerprint = fingerprint_of_json(backend.to_str())
        self._warned_template_edits_content = False

    # ----- basics -----
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def is_imported(self) -> bool:
        return self.source_files is not None

    @property
    def generation_config(self) -> dict | None:
        """The imported checkpoint's generation_config.json, if it came with one."""
        raw = (self.source_files or {}).get(GENERATION_CONFIG_FILE)
        return json.loads(raw) if raw else None

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end a reply: the turn closer, eos and the checkpoint's generation eos ids."""
        ids = {self.end_of_turn_id, self.eos_id}
        eos = (self.generation_config or {}).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
        return sorted(ids)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if add_bos and self.bos_id is None:
            raise ValueError("this tokenizer has no bos_token (tokenizer_config.json)")
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
        if self._template is None:
            raise ValueError(
                "this tokenizer has no chat template (tokenizer_config.json 'chat_template' or "
                f"{CHAT_TEMPLATE_FILE}); chat stages need one"
            )
        tokens = {
            f"{role}_token": getattr(self.specials, role)
            for role in ("bos", "eos", "pad", "unk")
            if getattr(self.specials, role) is not None
        }
        return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt, **tokens)

    def _turn_closer(self) -> str | None:
        """The first special token the template writes after an assistant message's content."""
        if self._template is None or self._added_pattern is None:
            return None
        probe = [{"role": "user", "content": _CONTENT_SLOT.format(0)}, {"role": "assistant", "content": "\ue002"}]
        try:
            rendered = self.apply_chat_template(probe)
        except jinja2.TemplateError:
            return None
        after = rendered.find("\ue002")
        match = self._added_pattern.search(rendered, after + 1) if after >= 0 else None
        return match.group() if match else None

    def encode_chat(
        self, messages: Sequence[dict], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of the rendered conversation and, per token, whether it is assistant
        output: the tokens SFT trains on. An assistant turn's span starts where the rendering of
        the turns before it with the generation prompt ends, and ends with the first turn-closing
        token (`specials.end_of_turn`) the template writes after its content: text after the
        closer (a newline, the next header) is formatting the model never emits, since
        generation stops at the closer. A token counts as assistant output when it starts
        inside a span."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        closer = self.specials.end_of_turn
        slots = self._content_offsets(messages, add_generation_prompt, text)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = self.apply_chat_template(messages[:i], add_generation_prompt=True)
            if not text.startswith(prefix):
                raise ValueError(
                    f"chat template: rendering messages[:{i}] with the generation prompt is not a prefix of "
                    "the whole conversation; encode_chat relies on that prefix property"
                )
            start = len(prefix)
            # Content placed verbatim: search after it; edited (e.g. trimmed): after the prefix.
            after = slots[i] if slots is not None else start
            end = text.find(closer, after)
            if end < 0:
                raise ValueError(f"chat template writes no {closer!r} after assistant message {i}")
            spans.append((start, end + len(closer)))
        ids, starts = self._encode_rendered(messages, add_generation_prompt, text)
        mask = [any(s <= a < e for s, e in spans) for a in starts]
        return ids, mask

    def _skeleton(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        return self.apply_chat_template(
            [{**m, "content": _CONTENT_SLOT.format(i)} for i, m in enumerate(messages)], add_generation_prompt
        )

    def _content_offsets(self, messages: Sequence[dict], add_generation_prompt: bool, text: str) -> list[int] | None:
        """Where each message's content ends in `text`, if the template places every content
        verbatim (None when it edits them, e.g. `| trim`)."""
        skeleton = self._skeleton(messages, add_generation_prompt)
        ends: dict[int, int] = {}
        shift = 0
        for match in _CONTENT_SLOT_RE.finditer(skeleton):
            i = int(match.group(1))
            shift += len(messages[i]["content"]) - len(match.group())
            ends[i] = match.end() + shift
        filled = _CONTENT_SLOT_RE.sub(lambda m: messages[int(m.group(1))]["content"], skeleton)
        if filled != text or len(ends) != len(messages):
            return None
        return [ends[i] for i in range(len(messages))]

    def _encode_rendered(
        self, messages: Sequence[dict], add_generation_prompt: bool, text: str
    ) -> tuple[list[int], list[int]]:
        """Ids of `text` (the rendered conversation) and each token's start offset, where only the
        template's own text can produce special tokens.

        Content without special-token strings (the normal case): `encode(text)`, exactly what
        transformers and a serving engine produce. Otherwise the template is rendered with a
        placeholder per message content; special tokens are found in that skeleton only, and each
        stretch between two of them (template text + content) is encoded with special matching off.
        """
        pattern = self._added_pattern
        if pattern is None or not any(pattern.search(m["content"]) for m in messages):
            enc = self.backend.encode(text, add_special_tokens=False)
            return enc.ids, [a for a, _ in enc.offsets]
        skeleton = self._skeleton(messages, add_generation_prompt)

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
        for match in pattern.finditer(skeleton):
            add_plain(skeleton[cursor : match.start()])
            ids.append(self.backend.token_to_id(match.group()))
            starts.append(offset)
            offset += len(match.group())
            cursor = match.end()
        add_plain(skeleton[cursor:])
        return ids, starts

    # ----- files -----
    def save(self, directory: str | Path) -> Path:
        """lmforge's own files; an imported tokenizer writes the files it came with, byte for byte."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.source_files is not None:
            for name, raw in self.source_files.items():
                (directory / name).write_bytes(raw)
            return directory
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
        (directory / SPECIAL_TOKENS_MAP_FILE).write_text(
            json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2)
        )
        return directory

    @property
    def file_names(self) -> list[str]:
        """The files `save` writes."""
        if self.source_files is not None:
            return sorted(self.source_files)
        return [TOKENIZER_FILE, CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE]

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load from a tokenizer directory (ours or an HF model dir) or a tokenizer.json."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no tokenizer at {path} (expected {file})")
        directory = file.parent
        config_file = directory / CONFIG_FILE
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
        backend = _HFTokenizer.from_file(str(file))
        if all(backend.token_to_id(t) is not None for t in SPECIAL_TOKENS):
            return cls(backend, chat_template=config.get("chat_template") or CHAT_TEMPLATE)
        names = {}
        map_file = directory / SPECIAL_TOKENS_MAP_FILE
        special_map = json.loads(map_file.read_text(encoding="utf-8")) if map_file.exists() else {}
        for role in ("bos", "eos", "pad", "unk"):
            names[role] = _token_string(config.get(f"{role}_token")) or _token_string(special_map.get(f"{role}_token"))
        if names["eos"] is None:
            raise ValueError(
                f"{config_file}: no eos_token (and the tokenizer lacks lmforge's {SPECIAL_TOKENS}); "
                "an imported tokenizer must name its eos_token"
            )
        if path.is_dir():
            sources = {n: (directory / n).read_bytes() for n in SOURCE_FILES if (directory / n).is_file()}
        else:
            sources = {TOKENIZER_FILE: file.read_bytes()}
            if config_file.exists():
                sources[CONFIG_FILE] = config_file.read_bytes()
        return cls(
            backend,
            chat_template=_template_from(config, directory if path.is_dir() else None),
            specials=SpecialTokens(**names),
            source_files=sources,
        )


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
