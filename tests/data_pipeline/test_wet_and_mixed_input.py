"""WET (Common Crawl's extracted-text format) and a mix of input kinds, on real text nobody here
wrote (licence files and German/French man pages), written the way Common Crawl lays out a WET
file: a `warcinfo` record first, then one `conversion` record per page with `WARC-Refers-To` and
a `text/plain` payload. The file is written with warcio, not with the project's own code.

The documented command reads every conversion record (and nothing else) as a document under its
target URI, keeps the text as is (no HTML extraction), and a folder holding a WET, a JSONL and a
plain-text file runs with the default config too."""

from __future__ import annotations

import gzip
import io
import json
import re
import uuid
from pathlib import Path

import pytest
from warcio.warcwriter import WARCWriter

from tests.data_pipeline.real_crawl import licence_texts, man_pages
from tests.data_pipeline.test_real_crawl import run_cli


def write_wet(path: Path, pages: list[tuple[str, str]]) -> None:
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        info = writer.create_warcinfo_record(path.name, {"software": "a crawler", "format": "WARC file version 1.0"})
        writer.write_record(info)
        for url, text in pages:
            headers = {
                "WARC-Refers-To": f"<urn:uuid:{uuid.uuid4()}>",
                "WARC-Block-Digest": "sha1:placeholder",
                "Content-Type": "text/plain",
            }
            record = writer.create_warc_record(
                url, "conversion", payload=io.BytesIO(text.encode()), warc_headers_dict=headers
            )
            writer.write_record(record)


@pytest.fixture(scope="module")
def pages() -> list[tuple[str, str]]:
    found = licence_texts(10) + man_pages("de", 2) + man_pages("fr", 2)
    assert len(found) == 14, "the machine lacks the licence files or the de/fr manual pages"
    return found


def _words(line: str) -> str:
    """A line's words only: normalisation may rewrite punctuation (e.g. drop an empty "[]")."""
    return " ".join(re.findall(r"\w+", line))


def corpus_docs(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    docs = []
    for name in manifest["files"]:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(out / name, "rt", encoding="utf-8") as f:
            docs += [json.loads(line) for line in f]
    return docs


def test_readme_command_on_a_wet_file(pages, tmp_path):
    wet = tmp_path / "CC-MAIN-sample.warc.wet.gz"
    write_wet(wet, pages)
    out = tmp_path / "corpus"
    proc = run_cli(f"input={wet}", f"output={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    funnel = json.loads((out / "funnel.json").read_text())
    read = funnel["steps"]["read"]
    assert read["docs_in"] == read["docs_out"] == len(pages)  # the warcinfo record is not a document
    removed = funnel["steps"]["langid"]["removed"]
    assert removed.get("language_de") == 2 and removed.get("language_fr") == 2
    docs = corpus_docs(out)
    urls = {u for u, _ in pages}
    assert docs and {d["url"] for d in docs} <= urls
    # The text is the payload's own lines (C4's line filter drops some, e.g. headings without a
    # full stop), not an HTML extraction of it: every kept line is a line of the source.
    source = {url: {_words(line) for line in text.splitlines()} for url, text in pages}
    for doc in docs:
        lines = [_words(line) for line in doc["text"].splitlines() if line.strip()]
        foreign = [line for line in lines if line not in source[doc["url"]]]
        assert len(foreign) <= len(lines) // 50, (doc["url"], foreign[:3])  # PII redaction may touch a few


def test_a_folder_of_mixed_inputs_runs_with_the_default_config(pages, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_wet(folder / "part-0.warc.wet.gz", pages[:5])
    with open(folder / "part-1.jsonl", "w") as f:
        for url, text in pages[5:10]:
            f.write(json.dumps({"url": url, "text": text}) + "\n")
    (folder / "notes.txt").write_text(pages[10][1])
    out = tmp_path / "corpus"
    proc = run_cli(f"input={folder}", f"output={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = json.loads((out / "funnel.json").read_text())["steps"]["read"]
    assert read["docs_in"] == read["docs_out"] == 11
    kept = {d["url"] for d in corpus_docs(out)}
    assert kept & {u for u, _ in pages[:5]} and kept & {u for u, _ in pages[5:10]}
