"""The embedded default corpus: text every machine with Python already has.

With no arguments, the tokenizer CLI and the pretraining stage need real text without a
download. The installed interpreter ships two kinds: English prose (the language reference
and library topics in `pydoc_data.topics`, what `help("FOR")` prints) and code (the standard
library's own modules). Both are harvested into the corpus format the data pipeline writes:

    <out_dir>/<domain>/part-00000.jsonl.gz   one {"id", "text", "domain", "source"} per line
    <out_dir>/manifest.json                  counts, bytes, python version, sha256 of the content

The selection is sorted and size-capped, so the same interpreter always yields byte-identical
files; a rebuild is skipped when the manifest already records the same content hash.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import platform
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CORPUS_FORMAT = 1
MANIFEST = "manifest.json"
PART_NAME = "part-00000.jsonl.gz"
# ~0.5 MB of prose comes from pydoc topics; the code budget keeps the whole corpus a few MB,
# enough for a 4k-vocab BPE and a tiny pretraining run, small enough to build in a second.
DEFAULT_CODE_BUDGET_BYTES = 1_500_000
# One huge module would crowd out many ordinary ones under the budget; skip such files.
MAX_CODE_FILE_BYTES = 200_000
# Only top-level stdlib modules are read (no tests/, no vendored packages, no site-packages);
# these two are jokes, and `this.py` is ROT13 text rather than code.
EXCLUDED_CODE_FILES = {"this.py", "antigravity.py"}


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    domain: str
    source: str

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "text": self.text, "domain": self.domain, "source": self.source},
            ensure_ascii=False,
        )


def prose_documents() -> list[Document]:
    """One document per pydoc topic (language reference sections), sorted by topic name."""
    from pydoc_data.topics import topics

    return [
        Document(id=f"pydoc/{name}", text=text.strip() + "\n", domain="prose", source="pydoc_data.topics")
        for name, text in sorted(topics.items())
        if text.strip()
    ]


def code_documents(budget_bytes: int = DEFAULT_CODE_BUDGET_BYTES) -> list[Document]:
    """Top-level standard-library modules in name order until `budget_bytes` of source."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs: list[Document] = []
    used = 0
    for path in sorted(stdlib.glob("*.py")):
        if path.name in EXCLUDED_CODE_FILES or path.name.startswith("test"):
            continue
        size = path.stat().st_size
        if size > MAX_CODE_FILE_BYTES:
            continue
        if used + size > budget_bytes:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            log.warning("skipping %s: not UTF-8", path)
            continue
        docs.append(Document(id=f"stdlib/{path.name}", text=text, domain="code", source=f"stdlib:{path.name}"))
        used += size
    return docs


def _content_sha256(by_domain: dict[str, list[Document]]) -> str:
    digest = hashlib.sha256()
    for domain in sorted(by_domain):
        for doc in by_domain[domain]:
            digest.update(doc.to_json().encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()


def _write_part(path: Path, docs: Sequence[Document]) -> None:
    """Write atomically; mtime=0 and no embedded file name keep the gzip bytes reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        for doc in docs:
            gz.write(doc.to_json().encode("utf-8") + b"\n")
    os.replace(tmp, path)


def build_default_corpus(
    out_dir: str | Path,
    max_docs_per_domain: int | None = None,
    code_budget_bytes: int = DEFAULT_CODE_BUDGET_BYTES,
) -> Path:
    """Write the default corpus to `out_dir` (skipped when its manifest already matches)."""
    out_dir = Path(out_dir)
    by_domain = {"prose": prose_documents(), "code": code_documents(code_budget_bytes)}
    if max_docs_per_domain is not None:
        by_domain = {d: docs[:max_docs_per_domain] for d, docs in by_domain.items()}
    sha256 = _content_sha256(by_domain)
    files = [f"{domain}/{PART_NAME}" for domain in sorted(by_domain)]
    manifest_path = out_dir / MANIFEST
    if manifest_path.exists() and all((out_dir / f).exists() for f in files):
        try:
            if json.loads(manifest_path.read_text()).get("sha256") == sha256:
                log.info("default corpus at %s is up to date (sha256 %s)", out_dir, sha256[:12])
                return out_dir
        except json.JSONDecodeError:
            log.warning("rebuilding %s: unreadable manifest", manifest_path)
    for domain, docs in by_domain.items():
        _write_part(out_dir / domain / PART_NAME, docs)
    manifest = {
        "name": "lmforge-default-corpus",
        "format": CORPUS_FORMAT,
        "counts": {d: len(docs) for d, docs in sorted(by_domain.items())},
        "bytes": {d: sum(len(doc.text.encode("utf-8")) for doc in docs) for d, docs in sorted(by_domain.items())},
        "total_docs": sum(len(docs) for docs in by_domain.values()),
        "files": files,
        "sha256": sha256,
        "python_version": platform.python_version(),
        "config": {"max_docs_per_domain": max_docs_per_domain, "code_budget_bytes": code_budget_bytes},
        "parent": {"source": "installed Python: pydoc_data.topics (prose) + stdlib *.py (code)"},
    }
    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    log.info("default corpus written to %s: %s", out_dir, manifest["counts"])
    return out_dir


def ensure_default_corpus(out_dir: str | Path = "artifacts/default_corpus") -> Path:
    """The default corpus at `out_dir`, built on first use."""
    return build_default_corpus(out_dir)


def iter_corpus_records(corpus_dir: str | Path, domains: Sequence[str] | None = None) -> Iterator[dict]:
    """Records of a corpus directory (`<domain>/part-*.jsonl.gz`), domains and parts in name
    order. Corrupt lines are skipped, counted and reported once per file."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus directory {corpus_dir} does not exist")
    available = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and any(p.glob("part-*.jsonl.gz")))
    wanted = list(domains) if domains is not None else available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ValueError(f"corpus {corpus_dir} has no domain(s) {unknown}; it has {available}")
    for domain in wanted:
        for part in sorted((corpus_dir / domain).glob("part-*.jsonl.gz")):
            corrupt = 0
            first_bad = None
            with gzip.open(part, "rt", encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    try:
                        record = json.loads(line)
                        if not isinstance(record.get("text"), str):
                            raise ValueError("no string 'text' field")
                    except (json.JSONDecodeError, ValueError, AttributeError) as err:
                        corrupt += 1
                        first_bad = first_bad or f"line {line_no}: {err}"
                        continue
                    yield record
            if corrupt:
                log.warning("%s: skipped %d corrupt record(s), first at %s", part, corrupt, first_bad)


def iter_corpus_texts(corpus_dir: str | Path, domains: Sequence[str] | None = None) -> Iterator[str]:
    """The `text` of every record in a corpus directory (see `iter_corpus_records`)."""
    for record in iter_corpus_records(corpus_dir, domains):
        yield record["text"]
