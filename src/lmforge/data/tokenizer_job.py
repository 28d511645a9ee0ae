"""The tokenizer CLI's job (src/train_tokenizer.py is its Hydra entry): read documents from a
corpus directory, text files or the embedded default corpus, train the BPE on a capped sample and
measure bytes per token on a held-out one. It lives in the data layer because it reads corpora;
`lmforge.tokenizer` itself knows nothing about where text comes from."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.data.default_corpus import ensure_default_corpus
from lmforge.formats.corpus import MANIFEST as CORPUS_MANIFEST
from lmforge.formats.corpus import iter_texts, read_manifest
from lmforge.tokenizer import MANIFEST_FILE, round_vocab, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class TokenizerJobConfig:
    """conf/tokenizer.yaml. Texts come from `corpus_dir` (corpus format) or `text_files`;
    with neither, the embedded default corpus is built at `default_corpus_dir` and used."""

    corpus_dir: str | None = None
    domains: list[str] | None = None
    text_files: list[str] = field(default_factory=list)
    default_corpus_dir: str = "artifacts/default_corpus"
    out_dir: str = "artifacts/tokenizer/default"
    vocab_size: int = 4096
    min_frequency: int = 2
    # Every k-th document is held out of training to measure bytes per token.
    heldout_every: int = 10
    max_train_bytes: int = 50_000_000  # training-sample cap (BPE needs a sample, not everything)
    max_heldout_bytes: int = 2_000_000
    show_progress: bool = True


@dataclass
class TokenizerSummary:
    out_dir: str
    fingerprint: str
    vocab_size: int
    requested_vocab_size: int  # after rounding; a small sample may not yield that many merges
    train_docs: int
    train_bytes: int
    heldout_docs: int
    heldout_bytes: int
    heldout_tokens: int
    seconds: float

    @property
    def bytes_per_token(self) -> float:
        return self.heldout_bytes / max(self.heldout_tokens, 1)


def _job_documents(job: TokenizerJobConfig) -> tuple[Iterator[str], dict]:
    """The job's documents and a description of where they came from (for the manifest)."""
    if job.text_files:
        files = [Path(f) for f in job.text_files]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"tokenizer.text_files: {f} does not exist")

        def paragraphs() -> Iterator[str]:
            for f in files:
                for paragraph in f.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                    if paragraph.strip():
                        yield paragraph

        return paragraphs(), {"text_files": [str(f) for f in files]}
    corpus = Path(job.corpus_dir) if job.corpus_dir else ensure_default_corpus(job.default_corpus_dir)
    source: dict = {"corpus_dir": str(corpus), "domains": job.domains}
    corpus_manifest = read_manifest(corpus)  # refuses another corpus version
    if corpus_manifest is not None:
        manifest_bytes = (corpus / CORPUS_MANIFEST).read_bytes()
        source["corpus_sha256"] = corpus_manifest.get("sha256") or hashlib.sha256(manifest_bytes).hexdigest()
        source["corpus_counts"] = corpus_manifest.get("counts")
    return iter_texts(corpus, job.domains), source


def run_tokenizer_job(job: TokenizerJobConfig) -> TokenizerSummary:
    """Split documents into a capped training sample and a held-out sample, train, save the
    tokenizer with a manifest, and measure bytes per token on the held-out sample."""
    from tqdm import tqdm

    started = time.perf_counter()
    documents, source = _job_documents(job)
    train: list[str] = []
    heldout: list[str] = []
    train_bytes = heldout_bytes = 0
    for index, text in enumerate(tqdm(documents, desc="reading documents", unit="doc", disable=not job.show_progress)):
        size = len(text.encode("utf-8"))
        if job.heldout_every and index % job.heldout_every == job.heldout_every - 1:
            if heldout_bytes < job.max_heldout_bytes:
                heldout.append(text)
                heldout_bytes += size
        elif train_bytes < job.max_train_bytes:
            train.append(text)
            train_bytes += size
        if train_bytes >= job.max_train_bytes and heldout_bytes >= job.max_heldout_bytes:
            break
    if not train:
        raise ValueError(f"no training text found in {source}")
    tokenizer = train_tokenizer(train, job.vocab_size, job.min_frequency, job.show_progress, length=len(train))
    if tokenizer.vocab_size < round_vocab(job.vocab_size):
        log.warning(
            "the training sample yielded only %d of %d tokens (too few distinct pairs)",
            tokenizer.vocab_size,
            round_vocab(job.vocab_size),
        )
    heldout_tokens = sum(len(ids) for ids in tokenizer.encode_batch(heldout))
    out_dir = tokenizer.save(job.out_dir)
    summary = TokenizerSummary(
        out_dir=str(out_dir),
        fingerprint=tokenizer.fingerprint,
        vocab_size=tokenizer.vocab_size,
        requested_vocab_size=round_vocab(job.vocab_size),
        train_docs=len(train),
        train_bytes=train_bytes,
        heldout_docs=len(heldout),
        heldout_bytes=heldout_bytes,
        heldout_tokens=heldout_tokens,
        seconds=round(time.perf_counter() - started, 2),
    )
    manifest = {
        "kind": "tokenizer",
        "fingerprint": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "requested_vocab_size": summary.requested_vocab_size,
        "bytes_per_token": round(summary.bytes_per_token, 4),
        "sample": {
            k: getattr(summary, k)
            for k in ("train_docs", "train_bytes", "heldout_docs", "heldout_bytes", "heldout_tokens")
        },
        "parent": source,
        "config": asdict(job),
        "seconds": summary.seconds,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return summary
