import json

import pytest

from lmforge.formats.corpus import (
    CORPUS_FORMAT,
    MANIFEST,
    Document,
    iter_records,
    read_manifest,
    write_manifest,
    write_part,
)
from tests.support.format_versions import assert_refused


def test_documents_round_trip(tmp_path):
    docs = [
        Document("a", "first text", "web", "warc", url="https://example.org", metadata={"quality": 0.5}),
        Document("b", "second text", "code", "stdlib"),
    ]
    for doc in docs:
        write_part(tmp_path / doc.domain / "part-00000.jsonl.gz", [doc.to_json()])
    write_manifest(tmp_path, {"counts": {"code": 1, "web": 1}})

    assert read_manifest(tmp_path) == {"format": CORPUS_FORMAT, "counts": {"code": 1, "web": 1}}
    read_back = sorted((Document.from_json(r) for r in iter_records(tmp_path)), key=lambda d: d.id)
    assert read_back == docs


def test_part_bytes_do_not_depend_on_the_process(tmp_path):
    rows = [{"id": "a", "text": "x"}]
    write_part(tmp_path / "one.jsonl.gz", rows)
    write_part(tmp_path / "two.jsonl.gz", rows)
    assert (tmp_path / "one.jsonl.gz").read_bytes() == (tmp_path / "two.jsonl.gz").read_bytes()


def test_a_corpus_without_manifest_reads_as_is(tmp_path):
    write_part(tmp_path / "web" / "part-00000.jsonl.gz", [{"id": "a", "text": "t"}])
    assert read_manifest(tmp_path) is None
    assert [r["text"] for r in iter_records(tmp_path)] == ["t"]


def test_the_default_corpus_legacy_tag_reads_as_version_1(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 1, "sha256": "abc"}))
    assert read_manifest(tmp_path)["sha256"] == "abc"


@pytest.mark.parametrize("found", ["lmforge-corpus/0", "lmforge-corpus/2", "other-corpus/1", None])
def test_another_version_is_refused_naming_file_and_versions(tmp_path, found):
    assert_refused(read_manifest, tmp_path, tmp_path / MANIFEST, {"format": found}, CORPUS_FORMAT)
