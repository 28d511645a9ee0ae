"""The curated corpus: `<dir>/<domain>/part-*.jsonl.gz`, one document per line (`id`, `text`,
`domain`, `source`, optional `url`, then free metadata), and `<dir>/manifest.json` whose `format`
is CORPUS_FORMAT. Written by `data_pipeline` and by the default-corpus builder; read by the
tokenizer job and the shard writer. A corpus without a manifest (a user's own JSONL) is read as is.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.formats import read_versioned_json, write_versioned_json
from lmforge.formats.files import write_jsonl_gz

log = logging.getLogger(__name__)

CORPUS_FORMAT = "lmforge-corpus/1"
# The default-corpus builder tagged its manifest `"format": 1` before it shared this module; its
# lines were already this layout (id, text, domain, source), so such a corpus reads as version 1.
LEGACY_CORPUS_FORMATS = (1,)
MANIFEST = "manifest.json"
PART_GLOB = "part-*.jsonl.gz"


@dataclass
class Document:
    """One web page / file / JSONL row.

    ``text`` holds the extracted plain text; ``html`` is only set between reading and
    extraction so that later steps (and the worker's memory) never carry raw markup.
    """

    id: str
    text: str
    source: str
    domain: str
    url: str = ""
    html: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Corpus line: the contract fields first, then the metadata flattened in."""
        row = {"id": self.id, "text": self.text, "domain": self.domain, "source": self.source}
        if self.url:
            row["url"] = self.url
        row.update(self.metadata)
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Document:
        row = dict(row)
        known = {k: row.pop(k, None) for k in ("id", "text", "domain", "source", "url")}
        return cls(
            id=str(known["id"]),
            text=known["text"] or "",
            source=known["source"] or "",
            domain=known["domain"] or "",
            url=known["url"] or "",
            metadata=row,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def num_bytes(self) -> int:
        return len(self.text.encode("utf-8", "surrogatepass"))


def write_part(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """One part file, atomically and byte-reproducibly; returns the number of rows."""
    return write_jsonl_gz(path, rows)


def write_manifest(corpus_dir: Path, manifest: dict[str, Any]) -> None:
    """Last, atomically: a manifest's presence means the parts are whole."""
    write_versioned_json(Path(corpus_dir) / MANIFEST, "format", CORPUS_FORMAT, manifest, sort_keys=True)


def read_manifest(corpus_dir: Path | str) -> dict[str, Any] | None:
    """The corpus manifest, or None for a corpus without one; another format version is refused."""
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        return None
    return read_versioned_json(path, "format", CORPUS_FORMAT, LEGACY_CORPUS_FORMATS)


def iter_records(corpus_dir: str | Path, domains: Sequence[str] | None = None) -> Iterator[dict]:
    """Records of a corpus directory, domains and parts in name order. Corrupt lines are skipped,
    counted and reported once per file."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus directory {corpus_dir} does not exist")
    read_manifest(corpus_dir)
    available = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and any(p.glob(PART_GLOB)))
    wanted = list(domains) if domains is not None else available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ValueError(f"corpus {corpus_dir} has no domain(s) {unknown}; it has {available}")
    for domain in wanted:
        for part in sorted((corpus_dir / domain).glob(PART_GLOB)):
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


def iter_texts(corpus_dir: str | Path, domains: Sequence[str] | None = None) -> Iterator[str]:
    """The `text` of every record in a corpus directory (see `iter_records`)."""
    for record in iter_records(corpus_dir, domains):
        yield record["text"]
