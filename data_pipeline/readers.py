"""Readers: WARC/WET (gzip), folders of HTML or text files, and JSONL.

Input files are grouped into *shards*, the unit of work, resumption and output naming.
A reader never raises on a bad record: it counts it in ``ReadStats`` (truncated gzip,
invalid JSONL line, undecodable bytes, unparsable WARC record) and moves on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

from lmforge.formats.corpus import Document

log = logging.getLogger(__name__)

WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
TEXT_SUFFIXES = (".txt", ".md", ".rst")


@dataclass(frozen=True)
class Shard:
    """A unit of work: one WARC/JSONL file, or a sorted group of HTML/text files."""

    name: str
    kind: str  # warc | jsonl | html | text
    paths: tuple[str, ...]


@dataclass
class ReadStats:
    records: int = 0
    corrupt: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def bad(self, reason: str, where: str) -> None:
        self.corrupt[reason] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{reason}: {where}")
        log.warning("corrupt input (%s) at %s", reason, where)


@dataclass(frozen=True)
class DomainRule:
    pattern: str
    domain: str


class DomainLabeler:
    """First matching regex (searched in URL, then path) names the domain."""

    def __init__(self, rules: Sequence[DomainRule | dict], default: str) -> None:
        self.rules = [
            (
                re.compile(r["pattern"] if isinstance(r, dict) else r.pattern),
                r["domain"] if isinstance(r, dict) else r.domain,
            )
            for r in rules
        ]
        self.default = default

    def __call__(self, url: str, path: str = "") -> str:
        for regex, domain in self.rules:
            if regex.search(url) or (path and regex.search(path)):
                return domain
        return self.default


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for kind, suffixes in (
        ("warc", WARC_SUFFIXES),
        ("jsonl", JSONL_SUFFIXES),
        ("html", HTML_SUFFIXES),
        ("text", TEXT_SUFFIXES),
    ):
        if name.endswith(suffixes):
            return kind
    return None


def discover_shards(inputs: Sequence[str | Path], files_per_shard: int = 256) -> list[Shard]:
    """Expand files/dirs into shards with stable names (sorted paths, content-free)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and _kind_of(f)))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"pipeline input not found: {p}")
    shards: list[Shard] = []
    loose: dict[str, list[Path]] = {"html": [], "text": []}
    for f in files:
        kind = _kind_of(f)
        if kind is None:
            raise ValueError(
                f"unknown input type for {f}; expected one of "
                f"{WARC_SUFFIXES + JSONL_SUFFIXES + HTML_SUFFIXES + TEXT_SUFFIXES}"
            )
        if kind in loose:
            loose[kind].append(f)
        else:
            shards.append(Shard(name=_shard_name(f), kind=kind, paths=(str(f),)))
    for kind, group in loose.items():
        for start in range(0, len(group), files_per_shard):
            chunk = group[start : start + files_per_shard]
            shards.append(
                Shard(
                    name=f"{kind}-{start // files_per_shard:05d}-{_digest(chunk)}",
                    kind=kind,
                    paths=tuple(str(p) for p in chunk),
                )
            )
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate shard names among inputs: {names}")
    return shards


def _digest(paths: Sequence[Path]) -> str:
    return hashlib.sha1("\n".join(str(p) for p in paths).encode()).hexdigest()[:8]


def _shard_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)
    return f"{stem}-{_digest([path])}"


def read_shard(shard: Shard, labeler: DomainLabeler, stats: ReadStats) -> Iterator[Document]:
    reader = {"warc": _read_warc, "jsonl": _read_jsonl, "html": _read_files, "text": _read_files}[shard.kind]
    for path in shard.paths:
        yield from reader(Path(path), shard, labeler, stats)


class TolerantGzipReader:
    """File-like view of a (multi-member) gzip file that stops cleanly at truncation.

    ``gzip.GzipFile`` raises ``EOFError`` on a truncated file, and fastwarc reads ahead in
    large blocks, so the error would lose every record of the last block. Here the reader
    returns what it could decompress and sets ``truncated`` for the caller to count.
    """

    def __init__(self, raw) -> None:
        self.raw = raw
        self.decoder = zlib.decompressobj(wbits=31)
        self.buffer = b""
        self.truncated = False
        self.corrupt = False
        self._finished = False
        self._position = 0
        self.pending = b""
        self.in_member = False

    def read(self, size: int = -1) -> bytes:
        while not self._finished and (size < 0 or len(self.buffer) < size):
            self._fill()
        if size < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:size], self.buffer[size:]
        self._position += len(out)
        return out

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        if not self.pending:
            self.pending = self.raw.read(1 << 16)
            if not self.pending:
                # Mid-member EOF means the file was cut; a clean end has no open member.
                self.truncated = self.in_member
                self._finished = True
                return
        self.in_member = True
        try:
            self.buffer += self.decoder.decompress(self.pending, 1 << 20)
        except zlib.error:
            self.corrupt = True
            self._finished = True
            return
        if self.decoder.eof:  # member done: the rest belongs to the next member
            self.pending = self.decoder.unused_data
            self.decoder = zlib.decompressobj(wbits=31)
            self.in_member = False
        else:
            self.pending = self.decoder.unconsumed_tail

    def close(self) -> None:
        self.raw.close()


def _decode_html(payload: bytes, content_type: str) -> str:
    match = re.search(r"charset=([\w-]+)", content_type or "", re.I)
    if match:
        try:
            return bytes_to_str(payload, match.group(1))
        except LookupError:  # a charset name no codec knows: fall back to detection
            pass
    return bytes_to_str(payload, detect_encoding(payload))


def _read_warc(path: Path, shard: Shard, labeler: DomainLabeler, stats: ReadStats) -> Iterator[Document]:
    gz = path.name.lower().endswith(".gz")
    raw = open(path, "rb")
    stream = TolerantGzipReader(raw) if gz else raw
    is_wet = ".wet" in path.name.lower()
    types = WarcRecordType.conversion if is_wet else WarcRecordType.response | WarcRecordType.resource
    try:
        records = ArchiveIterator(stream, record_types=types, parse_http=not is_wet, stream_detect=False)
        invalid_before = stats.corrupt["invalid_warc_record"]
        # One record of lookahead: fastwarc hands out the record a truncation cut through with
        # whatever payload was left, and only the end of the stream tells us it was cut.
        held: Document | None = None
        for doc in _warc_records(records, path, labeler, stats, is_wet):
            if held is not None:
                yield held
            held = doc
        if gz:
            stream.read()  # fastwarc stops at a cut record; drain to learn whether the gzip was cut
        cut_inside_held = gz and stream.truncated and stats.corrupt["invalid_warc_record"] == invalid_before
        if held is not None and cut_inside_held:
            stats.records -= 1
            stats.bad("invalid_warc_record", f"{path}:{held.url} (cut by truncation)")
        elif held is not None:
            yield held
    finally:
        raw.close()
    if gz and stream.truncated:
        stats.bad("truncated_gzip", str(path))
    if gz and stream.corrupt:
        stats.bad("corrupt_gzip", str(path))


def _warc_records(
    records: ArchiveIterator, path: Path, labeler: DomainLabeler, stats: ReadStats, is_wet: bool
) -> Iterator[Document]:
    """Documents from WARC records; a record fastwarc cannot parse ends the file (counted)."""
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except OSError as err:  # e.g. a header cut by truncation: no way to resynchronise
            stats.bad("invalid_warc_record", f"{path} ({err})")
            return
        url = record.headers.get("WARC-Target-URI", "") or ""
        where = f"{path}:{url or record.record_id}"
        if not record.record_id:  # headers cut short by truncation
            stats.bad("invalid_warc_record", where)
            continue
        try:
            payload = record.reader.read()
        except Exception as err:  # a record cut by truncation fails on read
            stats.bad("invalid_warc_record", f"{where} ({err})")
            continue
        stats.records += 1
        doc_id = record.record_id.strip("<>").removeprefix("urn:uuid:")
        content_type = ""
        if record.http_headers is not None:
            content_type = record.http_headers.get("Content-Type", "") or ""
        domain = labeler(url, str(path))
        if is_wet or (content_type and "html" not in content_type.lower()):
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                stats.bad("undecodable_bytes", where)
                continue
            yield Document(id=doc_id, text=text, source=str(path), domain=domain, url=url)
        else:
            yield Document(
                id=doc_id, text="", html=_decode_html(payload, content_type), source=str(path), domain=domain, url=url
            )


def _read_jsonl(path: Path, shard: Shard, labeler: DomainLabeler, stats: ReadStats) -> Iterator[Document]:
    gz = path.name.lower().endswith(".gz")
    raw = open(path, "rb")
    stream = TolerantGzipReader(raw) if gz else raw
    try:
        for lineno, line in enumerate(_lines(stream), start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                text_line = line.decode("utf-8")
            except UnicodeDecodeError:
                stats.bad("undecodable_bytes", where)
                continue
            try:
                row = json.loads(text_line)
                if not isinstance(row, dict) or not isinstance(row.get("text", row.get("html")), str):
                    raise ValueError("expected an object with a string 'text' (or 'html') field")
            except ValueError as err:
                stats.bad("invalid_jsonl", f"{where} ({err})")
                continue
            stats.records += 1
            doc = Document.from_json({k: v for k, v in row.items() if k != "html"})
            doc.id = str(row.get("id") or f"{shard.name}/{lineno}")
            doc.source = doc.source or str(path)
            doc.html = row.get("html")
            doc.domain = doc.domain or labeler(doc.url, str(path))
            yield doc
    finally:
        raw.close()
    if gz and stream.truncated:
        stats.bad("truncated_gzip", str(path))


def _lines(stream) -> Iterator[bytes]:
    pending = b""
    while True:
        chunk = stream.read(1 << 16)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    # A cut gzip ends mid-line: that tail is the truncation (counted once), not a bad JSON row.
    if pending and not getattr(stream, "truncated", False):
        yield pending


def _read_files(path: Path, shard: Shard, labeler: DomainLabeler, stats: ReadStats) -> Iterator[Document]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if shard.kind == "text":
            stats.bad("undecodable_bytes", str(path))
            return
        text = _decode_html(data, "")  # HTML may declare or imply a legacy charset
    stats.records += 1
    doc_id = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    url = path.resolve().as_uri()
    domain = labeler(url, str(path))
    if shard.kind == "html":
        yield Document(id=doc_id, text="", html=text, source=str(path), domain=domain, url=url)
    else:
        yield Document(id=doc_id, text=text, source=str(path), domain=domain, url=url)
