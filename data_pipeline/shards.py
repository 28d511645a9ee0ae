"""Tokenize a corpus and pack it into fixed-length webdataset shards, per domain and split.

    python -m data_pipeline.shards corpus=artifacts/corpus tokenizer=artifacts/tokenizer/default \
        out=artifacts/shards seq_len=256

Input: a corpus dir (`<domain>/part-*.jsonl.gz`, one `{"id", "text", ...}` per line).
Output: `<out>/<domain>/{train,val}-%05d.tar` whose samples hold `tokens.bin` (seq_len
little-endian uint16/uint32 ids) and `manifest.json` (tokenizer fingerprint, per-domain counts,
shard list with per-shard sequence counts, parent corpus). Documents are joined with EOS
and cut into back-to-back windows (the remainder under one window is dropped and counted).
Validation documents are chosen by a hash of their id, so the split is stable across runs
and independent of file order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm import tqdm

from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLITS = ("train", "val")


@dataclass
class ShardConfig:
    corpus: str = "artifacts/default_corpus"
    tokenizer: str = "artifacts/tokenizer/default"
    out: str = "artifacts/shards/default"
    seq_len: int = 256
    val_fraction: float = 0.05
    sequences_per_shard: int = 4096
    encode_batch_docs: int = 256  # documents per tokenizer call (Rust side uses every core)
    domains: list[str] | None = None
    force: bool = False


@dataclass
class SplitStats:
    documents: int = 0
    tokens: int = 0  # tokens written into sequences
    sequences: int = 0
    dropped_tail_tokens: int = 0
    shards: list[dict] = field(default_factory=list)  # {"path": relative, "sequences": n}


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def is_validation(doc_id: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def iter_domain_documents(domain_dir: Path, errors: dict[str, int]) -> Iterator[tuple[str, str]]:
    """(id, text) of every record in a domain dir; corrupt lines and files are counted in
    `errors` (keyed "file:line" reason) and skipped, never fatal."""
    for path in sorted(domain_dir.glob("part-*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8", errors="strict") as handle:
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        text = record["text"]
                        doc_id = str(record.get("id", f"{path.name}:{line_no}"))
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        errors[f"{path}:{line_no}: {type(err).__name__}"] = 1
                        continue
                    if isinstance(text, str) and text:
                        yield doc_id, text
        except (OSError, EOFError, UnicodeDecodeError) as err:  # truncated gzip, bad bytes
            errors[f"{path}: {type(err).__name__}: {err}"] = 1


class _SplitWriter:
    """Packs token streams into windows and writes them to numbered tar shards."""

    def __init__(self, out_dir: Path, domain: str, split: str, cfg: ShardConfig, dtype: np.dtype) -> None:
        self.dir = out_dir / domain
        self.dir.mkdir(parents=True, exist_ok=True)
        self.domain, self.split, self.cfg, self.dtype = domain, split, cfg, dtype
        self.buffer: list[int] = []
        self.stats = SplitStats()
        self.writer: wds.TarWriter | None = None
        self.in_shard = 0

    def add_document(self, ids: list[int]) -> None:
        self.stats.documents += 1
        self.buffer.extend(ids)
        n = self.cfg.seq_len
        while len(self.buffer) >= n:
            self._write(self.buffer[:n])
            del self.buffer[:n]

    def _write(self, window: list[int]) -> None:
        if self.writer is None or self.in_shard >= self.cfg.sequences_per_shard:
            self._close_shard()
            name = f"{self.split}-{len(self.stats.shards):05d}.tar"
            self.stats.shards.append({"path": f"{self.domain}/{name}", "sequences": 0})
            self.writer = wds.TarWriter(str(self.dir / name))
            self.in_shard = 0
        key = f"{self.domain}-{self.split}-{self.stats.sequences:09d}"
        self.writer.write({"__key__": key, "tokens.bin": np.asarray(window, dtype=self.dtype).tobytes()})
        self.in_shard += 1
        self.stats.shards[-1]["sequences"] += 1
        self.stats.sequences += 1
        self.stats.tokens += len(window)

    def _close_shard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> SplitStats:
        self._close_shard()
        self.stats.dropped_tail_tokens = len(self.buffer)
        return self.stats


def _corpus_fingerprint(corpus: Path) -> str:
    manifest = corpus / MANIFEST
    if manifest.exists():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for path in sorted(corpus.rglob("part-*.jsonl*")):
        stat = path.stat()
        h.update(f"{path.relative_to(corpus)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()


def write_shards(cfg: ShardConfig) -> dict:
    """Tokenize and pack `cfg.corpus` into `cfg.out`; return the manifest. Skips the work when
    `cfg.out` already holds a manifest made from the same corpus, tokenizer and settings."""
    corpus, out = Path(cfg.corpus), Path(cfg.out)
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus dir {corpus} does not exist (expected <domain>/part-*.jsonl.gz)")
    tokenizer = Tokenizer.load(cfg.tokenizer)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("force", "out", "encode_batch_docs")}
    job_key = hashlib.sha256(
        json.dumps([settings, tokenizer.fingerprint, _corpus_fingerprint(corpus)], sort_keys=True).encode()
    ).hexdigest()
    manifest_path = out / MANIFEST
    if manifest_path.exists() and not cfg.force:
        existing = json.loads(manifest_path.read_text())
        if existing.get("job_key") == job_key:
            log.info("shards in %s are up to date; skipping", out)
            return existing

    domains = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    if cfg.domains:
        unknown = sorted(set(cfg.domains) - set(domains))
        if unknown:
            raise ValueError(f"domains {unknown} not in corpus {corpus} (has {domains})")
        domains = list(cfg.domains)
    if not domains:
        raise ValueError(f"corpus {corpus} has no domain sub-directories")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    dtype = token_dtype(tokenizer.vocab_size)
    start = time.perf_counter()
    errors: dict[str, int] = {}
    result: dict[str, dict] = {}
    progress = tqdm(desc="tokenize+pack", unit="doc", dynamic_ncols=True)
    for domain in domains:
        writers = {split: _SplitWriter(out, domain, split, cfg, dtype) for split in SPLITS}
        batch: list[tuple[str, str]] = []

        def flush() -> None:
            ids = tokenizer.encode_batch([text for _, text in batch], add_eos=True)
            for (doc_id, _), doc_ids in zip(batch, ids):
                split = "val" if is_validation(doc_id, cfg.val_fraction) else "train"
                writers[split].add_document(doc_ids)
            progress.update(len(batch))
            batch.clear()

        for doc in iter_domain_documents(corpus / domain, errors):
            batch.append(doc)
            if len(batch) >= cfg.encode_batch_docs:
                flush()
        if batch:
            flush()
        result[domain] = {split: asdict(w.finish()) for split, w in writers.items()}
    progress.close()

    manifest = {
        "kind": "token_shards",
        "format": {"sample_key": "tokens.bin", "dtype": dtype.str, "seq_len": cfg.seq_len},
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokenizer_path": str(cfg.tokenizer),
        "eos_id": tokenizer.eos_id,
        "parent": {"corpus": str(corpus), "corpus_fingerprint": _corpus_fingerprint(corpus)},
        "config": settings,
        "job_key": job_key,
        "domains": result,
        "totals": {
            split: {k: sum(result[d][split][k] for d in result) for k in ("documents", "tokens", "sequences")}
            for split in SPLITS
        },
        "corrupt_records": {"count": len(errors), "examples": sorted(errors)[:20]},
        "seconds": round(time.perf_counter() - start, 2),
    }
    if errors:
        log.warning("skipped %d corrupt records/files in %s (see manifest corrupt_records)", len(errors), corpus)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(manifest_path)  # the manifest appears last: its presence means the shards are whole
    return manifest


def summarize(manifest: dict) -> str:
    lines = [f"{'domain':<12}{'split':<7}{'docs':>8}{'sequences':>11}{'tokens':>12}{'shards':>8}"]
    for domain, splits in manifest["domains"].items():
        for split, s in splits.items():
            lines.append(
                f"{domain:<12}{split:<7}{s['documents']:>8}{s['sequences']:>11}{s['tokens']:>12}{len(s['shards']):>8}"
            )
    return "\n".join(lines)


def _main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="shards_schema", node=ShardConfig)

    @hydra.main(version_base="1.3", config_path="../conf", config_name="shards")
    def main(cfg) -> None:
        shard_cfg = ShardConfig(**OmegaConf.to_container(cfg, resolve=True))
        manifest = write_shards(shard_cfg)
        print(summarize(manifest))
        print(f"shards: {Path(shard_cfg.out).resolve()} (tokenizer {manifest['tokenizer_fingerprint'][:12]})")

    main()


if __name__ == "__main__":
    _main()
