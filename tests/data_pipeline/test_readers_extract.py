"""Readers + extraction: a WARC written here round-trips; other formats; corrupt input is counted."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data_pipeline.extract import ExtractConfig, HtmlExtractor, extract_text
from data_pipeline.readers import DomainLabeler, ReadStats, discover_shards, read_shard

ARTICLE = (
    "The lighthouse on the northern cape was built in 1854 and guided ships for more than a century. "
    "Its keepers recorded the weather every four hours, and those notebooks are now kept in the town archive."
)
MENU = ["Home", "Shop", "Newsletter", "Login"]


def page(i: int) -> bytes:
    menu = "".join(f"<li><a href='/{m}'>{m}</a></li>" for m in MENU)
    return (
        f"<html><head><title>Page {i}</title></head><body><nav><ul>{menu}</ul></nav>"
        f"<main><article><h1>Story {i}</h1><p>{ARTICLE}</p><p>Paragraph {i} ends here.</p></article></main>"
        f"<footer>Copyright 2024 | Privacy</footer></body></html>"
    ).encode()


def write_warc(path: Path, n: int) -> list[str]:
    urls = []
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i in range(n):
            url = f"https://news.example.com/story/{i}"
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(url, "response", payload=io.BytesIO(page(i)), http_headers=headers)
            )
            urls.append(url)
    return urls


def test_warc_roundtrip_through_reader_and_extractor(tmp_path):
    urls = write_warc(tmp_path / "crawl.warc.gz", 5)
    (shard,) = discover_shards([tmp_path])
    stats = ReadStats()
    docs = list(read_shard(shard, DomainLabeler([{"pattern": "news\\.", "domain": "news"}], "web"), stats))
    assert [d.url for d in docs] == urls
    assert stats.records == 5 and not stats.corrupt
    assert len({d.id for d in docs}) == 5 and all(d.domain == "news" for d in docs)
    extractor = HtmlExtractor(ExtractConfig())
    for i, doc in enumerate(docs):
        assert extractor(doc) is None
        assert ARTICLE in doc.text and f"Paragraph {i} ends here." in doc.text
        assert "Newsletter" not in doc.text and "Copyright" not in doc.text  # boilerplate gone
        assert doc.html is None


def test_trafilatura_option_extracts_the_article():
    text = extract_text(page(3).decode(), method="trafilatura")
    assert ARTICLE in text and "Newsletter" not in text


def test_html_folder_text_files_and_jsonl(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.html").write_bytes(page(1))
    (tmp_path / "notes.txt").write_text("plain text file")
    (tmp_path / "rows.jsonl").write_text('{"id": "r1", "text": "row one", "domain": "books", "url": "u1"}\n')
    shards = discover_shards([tmp_path])
    assert sorted(s.kind for s in shards) == ["html", "jsonl", "text"]
    stats = ReadStats()
    docs = {d.source.split("/")[-1]: d for s in shards for d in read_shard(s, DomainLabeler([], "web"), stats)}
    assert docs["a.html"].html is not None and docs["notes.txt"].text == "plain text file"
    assert docs["rows.jsonl"].id == "r1" and docs["rows.jsonl"].domain == "books"


def test_corrupt_inputs_are_counted_and_reading_continues(tmp_path):
    write_warc(tmp_path / "good.warc.gz", 6)
    data = (tmp_path / "good.warc.gz").read_bytes()
    # Cut inside the 4th of 6 gzip members: a cut exactly between members is a valid shorter file.
    (tmp_path / "cut.warc.gz").write_bytes(data[: len(data) // 2 + len(data) // 12])
    (tmp_path / "rows.jsonl.gz").write_bytes(
        gzip.compress(
            b'{"id": "a", "text": "fine"}\n{"id": "b", "text": \n{"id": "c", "text": "\xff\xfe"}\n{"id": "d", "text": "ok"}\n'
        )
    )
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9 au lait")
    stats = ReadStats()
    docs = [d for s in discover_shards([tmp_path]) for d in read_shard(s, DomainLabeler([], "web"), stats)]
    ids = {d.id for d in docs}
    assert {"a", "d"} <= ids and not {"b", "c"} & ids
    # A cut inside a record header may also count that record as invalid.
    assert {k: v for k, v in stats.corrupt.items() if k != "invalid_warc_record"} == {
        "truncated_gzip": 1,
        "invalid_jsonl": 1,
        "undecodable_bytes": 1,  # the JSONL row; the Latin-1 text file is decoded by charset detection
    }
    assert next(d.text for d in docs if d.source.endswith("latin.txt")) == "caf\u00e9 au lait"
    n_cut = sum(d.source.endswith("cut.warc.gz") for d in docs)
    assert 0 < n_cut < 6  # records before the cut survive


def member_ends(data: bytes) -> set[int]:
    """Offsets where a gzip member ends: cutting there leaves a valid (shorter) file."""
    ends, offset, rest = set(), 0, data
    while rest:
        decoder = zlib.decompressobj(wbits=31)
        decoder.decompress(rest)
        offset += len(rest) - len(decoder.unused_data)
        ends.add(offset)
        rest = decoder.unused_data
    return ends


def test_every_cut_point_of_a_warc_is_reported_as_truncated(tmp_path):
    write_warc(tmp_path / "good.warc.gz", 4)
    data = (tmp_path / "good.warc.gz").read_bytes()
    cut_file = tmp_path / "cut" / "cut.warc.gz"
    cut_file.parent.mkdir()
    for cut in sorted(set(range(10, len(data) - 1, 37)) - member_ends(data)):
        cut_file.write_bytes(data[:cut])
        stats = ReadStats()
        docs = list(read_shard(discover_shards([cut_file])[0], DomainLabeler([], "web"), stats))
        assert stats.corrupt["truncated_gzip"] == 1, cut
        assert len(docs) < 4
