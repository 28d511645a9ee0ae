"""Readers: WARC/WET (gzip), folders of HTML or text files, and JSONL.

Input files are grouped into *shards*, the unit of work, resumption and output naming. A
gzipped WARC larger than ``split_bytes`` becomes several shards, byte ranges that start at a
gzip member boundary (one WARC record per member, as every crawler writes them), so one big
file is processed in parallel and resumed range by range; an uncompressed JSONL file is split
at line starts the same way.
A reader never raises on a bad record: it counts it in ``ReadStats`` (truncated gzip,
invalid JSONL line, undecodable bytes, unparsable WARC record) and moves on. Every record's
text and HTML are normalised (``normalize.normalize_text``) before anything else sees them,
and its domain is named from its URL and content, never from the local file path.
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

from data_pipeline.normalize import normalize_text
from lmforge.formats.corpus import Document

log = logging.getLogger(__name__)

WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
TEXT_SUFFIXES = (".txt", ".md", ".rst")


@dataclass(frozen=True)
class Shard:
    """A unit of work: one WARC/JSONL file, a byte range of a big WARC, or a group of HTML/text files."""

    name: str
    kind: str  # warc | jsonl | html | text
    paths: tuple[str, ...]
    start: int = 0  # byte range [start, end) of a split WARC: records whose gzip member starts in it
    end: int | None = None


@dataclass
class ReadStats:
    records: int = 0
    corrupt: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    modified: Counter = field(default_factory=Counter)  # control_chars_normalized, invalid_utf8_replaced
    rejects: list[dict] = field(default_factory=list)  # one row per corrupt record, for rejects/

    def bad(self, reason: str, where: str) -> None:
        self.corrupt[reason] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{reason}: {where}")
        if len(self.rejects) < 100_000:
            self.rejects.append({"step": "read", "reason": reason, "where": where})
        log.warning("corrupt input (%s) at %s", reason, where)


@dataclass(frozen=True)
class DomainRule:
    pattern: str  # regex over the record's URL ("" matches no URL)
    domain: str
    content: str = ""  # regex over the first ``CONTENT_CHARS`` of the text/HTML ("" matches nothing)


CONTENT_CHARS = 4096


class DomainLabeler:
    """The first rule whose URL or content regex matches names the domain.

    Only a crawled URL counts: the ``file://`` URL of a local HTML/text file is the path the
    user happened to store it under (a WARC in ``/data/books/`` is not a book).
    """

    def __init__(self, rules: Sequence[DomainRule | dict], default: str) -> None:
        self.rules = []
        for r in rules:
            r = r if isinstance(r, dict) else r.__dict__
            url_re = re.compile(r["pattern"]) if r.get("pattern") else None
            content_re = re.compile(r["content"], re.M) if r.get("content") else None
            self.rules.append((url_re, content_re, r["domain"]))
        self.default = default

    def __call__(self, url: str, content: str = "") -> str:
        if url.startswith("file:"):
            url = ""
        head = content[:CONTENT_CHARS]
        for url_re, content_re, domain in self.rules:
            if (url_re and url and url_re.search(url)) or (content_re and head and content_re.search(head)):
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


def discover_shards(
    inputs: Sequence[str | Path], files_per_shard: int = 256, split_bytes: int | None = None
) -> list[Shard]:
    """Expand files/dirs into shards with stable names (sorted paths, content-free).

    A ``.warc.gz``/``.wet.gz`` or ``.jsonl`` larger than ``split_bytes`` is split into byte ranges.
    """
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
        elif _splittable(f, kind) and split_bytes and f.stat().st_size > split_bytes:
            bounds = warc_split_points(f, split_bytes) if kind == "warc" else jsonl_split_points(f, split_bytes)
            if len(bounds) == 1:
                shards.append(Shard(name=_shard_name(f), kind=kind, paths=(str(f),)))
            for i, (start, end) in enumerate(zip(bounds, bounds[1:] + [None])):
                if len(bounds) > 1:
                    shards.append(Shard(f"{_shard_name(f)}-u{i:05d}", kind, (str(f),), start, end))
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


def _splittable(path: Path, kind: str) -> bool:
    name = path.name.lower()
    return (kind == "warc" and name.endswith(".gz")) or (kind == "jsonl" and name.endswith(".jsonl"))


def jsonl_split_points(path: Path, split_bytes: int) -> list[int]:
    """Line starts near every multiple of ``split_bytes`` of an uncompressed JSONL file (0 first)."""
    size = path.stat().st_size
    points = [0]
    with open(path, "rb") as f:
        target = split_bytes
        while target < size:
            f.seek(target - 1)  # a line starting exactly at the target belongs to the next range
            f.readline()
            if f.tell() >= size:
                break
            if f.tell() > points[-1]:
                points.append(f.tell())
            target = max(f.tell() + 1, target + split_bytes)
    return points


def _is_member_start(window: bytes, pos: int) -> bool:
    """Whether a gzip member that decompresses to a WARC record header starts at ``pos``."""
    try:
        head = zlib.decompressobj(wbits=31).decompress(window[pos:], 8)
    except zlib.error:
        return False
    return head.startswith((b"WARC/1.", b"WARC/0."))


def warc_split_points(path: Path, split_bytes: int, window: int = 1 << 20) -> list[int]:
    """Byte offsets of record-starting gzip members near every multiple of ``split_bytes`` (0 first).

    A file written as one gzip member (no record boundaries to seek to) stays one range.
    """
    size = path.stat().st_size
    points = [0]
    with open(path, "rb") as f:
        target = split_bytes
        while target < size:
            f.seek(target)
            found = None
            scanned = 0
            while found is None and scanned < 16 * window:  # a member longer than 16 MB: look further
                buf = f.read(window + (1 << 16))
                if not buf:
                    break
                pos = buf.find(b"\x1f\x8b\x08")
                while pos != -1 and pos < window:
                    if _is_member_start(buf[: pos + (1 << 16)], pos):
                        found = target + scanned + pos
                        break
                    pos = buf.find(b"\x1f\x8b\x08", pos + 1)
                scanned += window
                f.seek(target + scanned)
            if found is None:
                break
            if found > points[-1]:
                points.append(found)
            target = max(found + 1, target + split_bytes)
    return points


def read_shard(shard: Shard, labeler: DomainLabeler, stats: ReadStats) -> Iterator[Document]:
    """Documents of a shard with normalised text and a domain label."""
    reader = {"warc": _read_warc, "jsonl": _read_jsonl, "html": _read_files, "text": _read_files}[shard.kind]
    for path in shard.paths:
        for doc in reader(Path(path), shard, labeler, stats):
            doc.text, changed = normalize_text(doc.text)
            if doc.html is not None:
                doc.html, changed_html = normalize_text(doc.html)
                changed += changed_html
            if changed:
                stats.modified["control_chars_normalized"] += changed
            if not doc.domain:
                doc.domain = labeler(doc.url, doc.html if doc.html is not None else doc.text)
            yield doc


class TolerantGzipReader:
    """File-like view of a (multi-member) gzip file that stops cleanly at truncation.

    ``gzip.GzipFile`` raises ``EOFError`` on a truncated file, and fastwarc reads ahead in
    large blocks, so the error would lose every record of the last block. Here the reader
    returns what it could decompress and sets ``truncated`` for the caller to count.
    """

    def __init__(self, raw, start: int = 0, end: int | None = None) -> None:
        self.raw = raw
        self.raw_pos = start  # file offset just past the compressed bytes read so far
        self.end = end  # stop at the first member boundary at or past this offset
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
            self.raw_pos += len(self.pending)
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
            if self.end is not None and self.raw_pos - len(self.pending) >= self.end:
                self._finished = True  # the next member belongs to the next byte range
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
    if shard.start:
        raw.seek(shard.start)
    stream = TolerantGzipReader(raw, shard.start, shard.end) if gz else raw
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
        if is_wet or (content_type and "html" not in content_type.lower()):
            text = _decode_text(payload, content_type, stats)
            yield Document(id=doc_id, text=text, source=str(path), domain="", url=url)
        else:
            yield Document(
                id=doc_id, text="", html=_decode_html(payload, content_type), source=str(path), domain="", url=url
            )


def _read_jsonl(path: Path, shard: Shard, labeler: DomainLabeler, stats: ReadStats) -> Iterator[Document]:
    gz = path.name.lower().endswith(".gz")
    raw = open(path, "rb")
    stream = TolerantGzipReader(raw) if gz else raw
    ranged = not gz and (shard.start > 0 or shard.end is not None)
    lines = _range_lines(raw, shard.start, shard.end) if ranged else _lines(stream)
    try:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}" if not ranged else f"{path}: line {lineno} after byte {shard.start}"
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
            yield doc  # read_shard labels rows without a domain
    finally:
        raw.close()
    if gz and stream.truncated:
        stats.bad("truncated_gzip", str(path))


def _range_lines(raw, start: int, end: int | None) -> Iterator[bytes]:
    """Lines that start in [start, end) of an uncompressed file; ``start`` is a line start."""
    raw.seek(start)
    pos = start
    while end is None or pos < end:
        line = raw.readline()
        if not line:
            return
        pos += len(line)
        yield line.rstrip(b"\n")


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


def _decode_text(payload: bytes, content_type: str, stats: ReadStats) -> str:
    """Plain-text bytes to str: UTF-8, a declared charset, or UTF-8 with the odd bad byte replaced.

    A page declared (or assumed) UTF-8 with a few invalid bytes among valid multi-byte
    characters keeps its text, each bad byte becoming U+FFFD (counted); one with no valid
    non-ASCII character, or many bad bytes, is a legacy charset and goes to charset detection.
    """
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    match = re.search(r"charset=([\w-]+)", content_type or "", re.I)
    if match and match.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        return _decode_html(payload, content_type)
    text = payload.decode("utf-8", "replace")
    bad = text.count("\ufffd") - payload.count("\ufffd".encode())
    valid_non_ascii = sum(not ch.isascii() for ch in text) - bad
    if valid_non_ascii == 0 or bad > max(8, len(payload) // 100):
        return _decode_html(payload, "")
    stats.modified["invalid_utf8_replaced"] += bad
    return text


def _read_files(path: Path, shard: Shard, labeler: DomainLabeler, stats: ReadStats) -> Iterator[Document]:
    data = path.read_bytes()
    if shard.kind == "text":
        text = _decode_text(data, "", stats)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _decode_html(data, "")  # HTML may declare or imply a legacy charset
    stats.records += 1
    doc_id = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    url = path.resolve().as_uri()  # provenance only: the labeler ignores file:// URLs
    if shard.kind == "html":
        yield Document(id=doc_id, text="", html=text, source=str(path), domain="", url=url)
    else:
        yield Document(id=doc_id, text=text, source=str(path), domain="", url=url)
