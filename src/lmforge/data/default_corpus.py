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

import hashlib
import json
import logging
import platform
import sysconfig
from pathlib import Path

from lmforge.formats import FormatVersionError
from lmforge.formats.corpus import Document, read_manifest, write_manifest, write_part

log = logging.getLogger(__name__)

PART_NAME = "part-00000.jsonl.gz"
# ~0.5 MB of prose comes from pydoc topics; the code budget keeps the whole corpus a few MB,
# enough for a 4k-vocab BPE and a tiny pretraining run, small enough to build in a second.
DEFAULT_CODE_BUDGET_BYTES = 1_500_000
# One huge module would crowd out many ordinary ones under the budget; skip such files.
MAX_CODE_FILE_BYTES = 200_000
# Only top-level stdlib modules are read (no tests/, no vendored packages, no site-packages);
# these two are jokes, and `this.py` is ROT13 text rather than code.
EXCLUDED_CODE_FILES = {"this.py", "antigravity.py"}


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
            digest.update(json.dumps(doc.to_json(), ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()


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
    if all((out_dir / f).exists() for f in files):
        try:
            if (read_manifest(out_dir) or {}).get("sha256") == sha256:
                log.info("default corpus at %s is up to date (sha256 %s)", out_dir, sha256[:12])
                return out_dir
        except (json.JSONDecodeError, FormatVersionError) as err:
            log.warning("rebuilding the default corpus at %s: %s", out_dir, err)
    for domain, docs in by_domain.items():
        write_part(out_dir / domain / PART_NAME, (doc.to_json() for doc in docs))
    manifest = {
        "name": "lmforge-default-corpus",
        "counts": {d: len(docs) for d, docs in sorted(by_domain.items())},
        "bytes": {d: sum(len(doc.text.encode("utf-8")) for doc in docs) for d, docs in sorted(by_domain.items())},
        "total_docs": sum(len(docs) for docs in by_domain.values()),
        "files": files,
        "sha256": sha256,
        "python_version": platform.python_version(),
        "config": {"max_docs_per_domain": max_docs_per_domain, "code_budget_bytes": code_budget_bytes},
        "parent": {"source": "installed Python: pydoc_data.topics (prose) + stdlib *.py (code)"},
    }
    write_manifest(out_dir, manifest)
    log.info("default corpus written to %s: %s", out_dir, manifest["counts"])
    return out_dir


def ensure_default_corpus(out_dir: str | Path = "artifacts/default_corpus") -> Path:
    """The default corpus at `out_dir`, built on first use."""
    return build_default_corpus(out_dir)
