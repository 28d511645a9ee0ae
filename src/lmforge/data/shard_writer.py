"""Tokenize a corpus and pack it into fixed-length webdataset shards, per domain and split.

    python -m data_pipeline.shards corpus=artifacts/corpus tokenizer=artifacts/tokenizer/default \
        out=artifacts/shards/curated seq_len=256

(the CLI lives in `data_pipeline/shards.py`; the work is here, below the training code that
writes missing shards itself.)

Input: a corpus dir (`lmforge.formats.corpus`) as `data_pipeline` writes it (`<domain>/part-*.jsonl.gz`, one
`{"id", "text", ...}` per line). Plain inputs work too: any `*.jsonl[.gz]` (a `text` field per
line) or `*.txt[.gz]` (one document per file) under `<domain>/`; files at the top level, or a
single file given as `corpus`, form the domain `default_domain`.

Output (`lmforge.formats.shards`): `<out>/<domain>/{train,val}-NNNNN.tar` whose samples hold `tokens.bin` (seq_len
little-endian uint16/uint32 ids), and `<out>/manifest.json` (tokenizer fingerprint, per-domain
counts of documents, tokens and sequences, each shard with its sequence count, parent corpus,
corrupt records skipped). Documents are each followed by EOS, concatenated and cut into
back-to-back windows; the tail under one window is dropped and counted. A document goes to
validation by a hash of its id, so the split does not depend on file order or process count.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import multiprocessing
import os
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lmforge.formats import FormatVersionError
from lmforge.formats.corpus import MANIFEST as CORPUS_MANIFEST
from lmforge.formats.corpus import read_manifest as read_corpus_manifest
from lmforge.formats.files import open_maybe_gzip
from lmforge.formats.shards import MANIFEST, SAMPLE_KEY, SPLITS, read_manifest, sample, write_manifest
from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz")
# Below this much input, a process pool costs more to start than it saves (the Rust tokenizer
# already spreads one process's batch over every core).
POOL_MIN_INPUT_BYTES = 32 << 20


@dataclass
class ShardConfig:
    corpus: str = "artifacts/default_corpus"
    tokenizer: str = "artifacts/tokenizer/default"
    out: str = "artifacts/shards/default"
    seq_len: int = 256
    val_fraction: float = 0.05
    sequences_per_shard: int = 4096
    domains: list[str] | None = None  # None: every domain found in the corpus
    default_domain: str = "text"  # domain of input files not under a <domain>/ directory
    num_proc: int | None = None  # tokenizer processes; None: every core once the input is large
    docs_per_task: int = 256  # documents per unit of work sent to a process
    force: bool = False


# Settings that change the shards' content; the rest (where, how fast) do not.
CONTENT_SETTINGS = ("seq_len", "val_fraction", "sequences_per_shard", "domains", "default_domain")


@dataclass
class SplitStats:
    documents: int = 0
    tokens: int = 0  # tokens written into sequences
    sequences: int = 0
    dropped_tail_tokens: int = 0
    shards: list[dict] = field(default_factory=list)  # {"path": relative to out, "sequences": n}


@dataclass
class CorruptRecords:
    """Input that could not be read, counted by reason with a few locations to look at."""

    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 20

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where}: {reason}")

    def report(self) -> dict:
        return {"count": self.count, "by_reason": dict(sorted(self.by_reason.items())), "examples": self.examples}


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def is_validation(doc_id: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


# ----- input discovery and reading (main process) -----


def _is_input(path: Path) -> bool:
    return path.is_file() and path.name.endswith(JSONL_SUFFIXES + TEXT_SUFFIXES)


# Sub-directories that are never a domain: curation writes the records it set aside, with their
# reasons, to <output>/rejects/, and they must not be trained on.
NOT_A_DOMAIN = frozenset({"rejects"})


def discover_inputs(corpus: Path, default_domain: str = "text") -> dict[str, list[Path]]:
    """Input files per domain, in name order: each sub-directory is a domain (searched
    recursively) unless it is hidden or in NOT_A_DOMAIN; top-level files, or `corpus` itself
    when it is a file, are `default_domain`."""
    if corpus.is_file():
        return {default_domain: [corpus]} if _is_input(corpus) else {}
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus {corpus} does not exist (expected a dir of <domain>/part-*.jsonl.gz)")
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in corpus.iterdir() if p.is_dir()):
        if sub.name in NOT_A_DOMAIN or sub.name.startswith("."):
            continue
        files = sorted(f for f in sub.rglob("*") if _is_input(f))
        if files:
            found[sub.name] = files
    top = sorted(f for f in corpus.iterdir() if _is_input(f))
    if top:
        found[default_domain] = sorted(found.get(default_domain, []) + top)
    return found


@dataclass(frozen=True)
class RawRecord:
    """One undecoded document: a JSONL line or a whole text file. Decoding happens in the
    workers, so bad bytes are caught per record there."""

    where: str  # "path:line" or "path"
    default_id: str
    payload: bytes
    is_json: bool


def iter_raw_records(paths: Iterable[Path], root: Path, corrupt: CorruptRecords) -> Iterator[RawRecord]:
    for path in paths:
        rel = str(path.relative_to(root)) if path != root else path.name
        try:
            with open_maybe_gzip(path) as handle:
                if path.name.endswith(TEXT_SUFFIXES):
                    yield RawRecord(rel, rel, handle.read(), is_json=False)
                    continue
                for line_no, line in enumerate(handle, 1):
                    if line.strip():
                        yield RawRecord(f"{rel}:{line_no}", f"{rel}:{line_no}", line, is_json=True)
        except (OSError, EOFError, zlib.error) as err:  # truncated gzip, unreadable file: keep what was read
            corrupt.add(rel, f"unreadable file ({type(err).__name__})")


def _tasks(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    task: list[RawRecord] = []
    for record in records:
        task.append(record)
        if len(task) >= size:
            yield task
            task = []
    if task:
        yield task


# ----- tokenization (worker processes, or in-process) -----

_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_dir: str, rust_threads: bool) -> None:
    global _worker_tokenizer
    # Processes already use every core; Rust threads inside each would oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if rust_threads else "false"
    _worker_tokenizer = Tokenizer.load(tokenizer_dir)


@dataclass
class EncodedTask:
    documents: list[tuple[bool, np.ndarray]]  # (is_validation, ids ending in EOS), in input order
    errors: list[tuple[str, str]]  # (where, reason)
    empty: int


def _decode(record: RawRecord) -> tuple[str, str]:
    """(id, text) of a record; raises ValueError with the reason when it is corrupt."""
    try:
        raw = record.payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError("invalid UTF-8") from err
    if not record.is_json:
        return record.default_id, raw
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError("invalid JSON") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise ValueError("no string 'text' field")
    doc_id = obj.get("id")
    return (str(doc_id) if doc_id is not None else record.default_id), obj["text"]


def _encode_task(task: list[RawRecord], val_fraction: float) -> EncodedTask:
    assert _worker_tokenizer is not None, "_init_worker was not called"
    kept: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []
    empty = 0
    for record in task:
        try:
            doc_id, text = _decode(record)
        except ValueError as err:
            errors.append((record.where, str(err)))
            continue
        if text:
            kept.append((doc_id, text))
        else:
            empty += 1
    encoded = _worker_tokenizer.encode_batch([text for _, text in kept], add_eos=True)
    documents = [
        (is_validation(doc_id, val_fraction), np.asarray(ids, dtype=np.uint32))
        for (doc_id, _), ids in zip(kept, encoded)
    ]
    return EncodedTask(documents, errors, empty)


def _ordered_results(
    tasks: Iterator[list[RawRecord]], val_fraction: float, pool, processes: int
) -> Iterator[EncodedTask]:
    """Results in task order. With a pool, at most 2 tasks per process are in flight, so a large
    corpus is never read into memory ahead of the packing (Pool.imap has no such bound)."""
    if pool is None:
        for task in tasks:
            yield _encode_task(task, val_fraction)
        return
    pending: collections.deque = collections.deque()
    window = 2 * processes
    for task in tasks:
        pending.append(pool.apply_async(_encode_task, (task, val_fraction)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ----- packing and writing (main process) -----


class _SplitWriter:
    """Packs one (domain, split) token stream into windows and writes them to tar shards."""

    def __init__(self, out: Path, domain: str, split: str, cfg: ShardConfig, dtype: np.dtype) -> None:
        self.out, self.domain, self.split, self.cfg, self.dtype = out, domain, split, cfg, dtype
        self.stats = SplitStats()
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0
        self._writer = None  # webdataset.ShardWriter, opened on the first sequence

    def add_document(self, ids: np.ndarray) -> None:
        self.stats.documents += 1
        self._pending.append(ids)
        self._pending_tokens += len(ids)
        n = self.cfg.seq_len
        if self._pending_tokens < n:
            return
        stream = np.concatenate(self._pending)
        full = len(stream) // n * n
        for window in stream[:full].reshape(-1, n):
            self._write(window)
        self._pending = [stream[full:]]
        self._pending_tokens = len(stream) - full

    def _write(self, window: np.ndarray) -> None:
        if self._writer is None:
            import webdataset as wds  # heavy import (torch); workers never need it

            (self.out / self.domain).mkdir(parents=True, exist_ok=True)
            pattern = str(self.out / self.domain / f"{self.split}-%05d.tar")
            # A fixed member mtime makes the same input give byte-identical shards.
            self._writer = wds.ShardWriter(pattern, maxcount=self.cfg.sequences_per_shard, verbose=0, mtime=0.0)
        key = f"{self.domain}-{self.split}-{self.stats.sequences:09d}"
        self._writer.write(sample(key, window, self.dtype))
        path = str(Path(self._writer.fname).relative_to(self.out))
        if not self.stats.shards or self.stats.shards[-1]["path"] != path:
            self.stats.shards.append({"path": path, "sequences": 0})
        self.stats.shards[-1]["sequences"] += 1
        self.stats.sequences += 1
        self.stats.tokens += len(window)

    def finish(self) -> SplitStats:
        if self._writer is not None:
            self._writer.close()
        self.stats.dropped_tail_tokens = self._pending_tokens
        return self.stats


# ----- the job -----


def _corpus_fingerprint(corpus: Path, files: list[Path]) -> str:
    """The corpus manifest's hash when it has one; else names, sizes and mtimes of the inputs."""
    manifest = corpus / CORPUS_MANIFEST
    if corpus.is_dir() and read_corpus_manifest(corpus) is not None:  # refuses another corpus version
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for path in files:
        stat = path.stat()
        h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _select_domains(found: dict[str, list[Path]], wanted: list[str] | None, corpus: Path) -> list[str]:
    if not found:
        raise ValueError(f"corpus {corpus} holds no *.jsonl[.gz] or *.txt[.gz] input files")
    if not wanted:
        return sorted(found)
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise ValueError(f"domains {unknown} not in corpus {corpus} (has {sorted(found)})")
    return list(wanted)


def _process_count(cfg: ShardConfig, input_bytes: int) -> int:
    if cfg.num_proc is not None:
        return max(1, int(cfg.num_proc))
    return (os.cpu_count() or 1) if input_bytes >= POOL_MIN_INPUT_BYTES else 1


def write_shards(cfg: ShardConfig) -> dict:
    """Tokenize and pack `cfg.corpus` into `cfg.out`; return the manifest. Skips the work when
    `cfg.out` already holds a manifest made from the same corpus, tokenizer and settings."""
    corpus, out = Path(cfg.corpus), Path(cfg.out)
    found = discover_inputs(corpus, cfg.default_domain)
    domains = _select_domains(found, cfg.domains, corpus)
    files = [f for d in domains for f in found[d]]
    tokenizer = Tokenizer.load(cfg.tokenizer)
    settings = {k: getattr(cfg, k) for k in CONTENT_SETTINGS}
    corpus_fingerprint = _corpus_fingerprint(corpus, files)
    job_key = hashlib.sha256(
        json.dumps([settings, tokenizer.fingerprint, corpus_fingerprint], sort_keys=True).encode()
    ).hexdigest()
    manifest_path = out / MANIFEST
    if manifest_path.exists() and not cfg.force:
        try:
            existing = read_manifest(out)
        except FormatVersionError as err:
            existing = {}
            log.info("rewriting the shards in %s: %s", out, err)
        if existing.get("job_key") == job_key:
            log.info("shards in %s are up to date; skipping", out)
            return existing
    if manifest_path.exists():
        manifest_path.unlink()  # the old shards are about to be overwritten: no stale manifest
    for domain in domains:  # shards of an earlier, larger run would otherwise linger
        for stale in (out / domain).glob("*.tar") if (out / domain).is_dir() else ():
            stale.unlink()

    input_bytes = sum(f.stat().st_size for f in files)
    processes = _process_count(cfg, input_bytes)
    dtype = token_dtype(tokenizer.vocab_size)
    corrupt = CorruptRecords()
    empty_documents = 0
    result: dict[str, dict] = {}
    start = time.perf_counter()
    log.info("sharding %s (%d files, %.1f MB) with %d process(es)", corpus, len(files), input_bytes / 1e6, processes)
    pool = None
    if processes > 1:
        # spawn, not fork: the caller may be a training process with live threads.
        pool = multiprocessing.get_context("spawn").Pool(processes, _init_worker, (str(cfg.tokenizer), False))
    else:
        _init_worker(str(cfg.tokenizer), rust_threads=True)
    progress = tqdm(desc="tokenize+pack", unit="doc", dynamic_ncols=True)
    try:
        for domain in domains:
            writers = {split: _SplitWriter(out, domain, split, cfg, dtype) for split in SPLITS}
            records = iter_raw_records(found[domain], corpus, corrupt)
            for encoded in _ordered_results(_tasks(records, cfg.docs_per_task), cfg.val_fraction, pool, processes):
                for is_val, ids in encoded.documents:
                    writers["val" if is_val else "train"].add_document(ids)
                for where, reason in encoded.errors:
                    corrupt.add(where, reason)
                empty_documents += encoded.empty
                progress.update(len(encoded.documents))
                progress.set_postfix(domain=domain, refresh=False)
            result[domain] = {split: asdict(w.finish()) for split, w in writers.items()}
    finally:
        progress.close()
        if pool is not None:
            pool.close()
            pool.join()

    manifest = {
        "kind": "token_shards",
        "format": {"sample_key": SAMPLE_KEY, "dtype": dtype.str, "seq_len": cfg.seq_len},
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokenizer_path": str(cfg.tokenizer),
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "parent": {"corpus": str(corpus), "corpus_fingerprint": corpus_fingerprint},
        "inputs": {d: [str(f.relative_to(corpus)) if f != corpus else f.name for f in found[d]] for d in domains},
        "config": settings,
        "job_key": job_key,
        "domains": result,
        "totals": {
            split: {k: sum(result[d][split][k] for d in result) for k in ("documents", "tokens", "sequences")}
            for split in SPLITS
        },
        "empty_documents": empty_documents,
        "corrupt_records": corrupt.report(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if corrupt.count:
        log.warning(
            "skipped %d corrupt record(s) in %s: %s (manifest: corrupt_records)",
            corrupt.count,
            corpus,
            corrupt.by_reason,
        )
    return write_manifest(out, manifest)


def summarize(manifest: dict) -> str:
    lines = [f"{'domain':<12}{'split':<7}{'docs':>8}{'sequences':>11}{'tokens':>12}{'shards':>8}"]
    for domain, splits in manifest["domains"].items():
        for split, s in splits.items():
            lines.append(
                f"{domain:<12}{split:<7}{s['documents']:>8}{s['sequences']:>11}{s['tokens']:>12}{len(s['shards']):>8}"
            )
    bad = manifest["corrupt_records"]
    if bad["count"]:
        lines.append(f"corrupt records skipped: {bad['count']} {bad['by_reason']}")
    return "\n".join(lines)
