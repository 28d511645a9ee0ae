"""The document record that flows through every pipeline step."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
    def from_json(cls, row: dict[str, Any]) -> "Document":
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
