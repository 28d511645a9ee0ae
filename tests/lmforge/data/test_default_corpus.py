"""The embedded default corpus: deterministic, idempotent, in the corpus format, readable back."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from lmforge.data.default_corpus import build_default_corpus
from lmforge.formats.corpus import iter_records, iter_texts


def test_builds_are_byte_identical_and_rebuilds_are_skipped(tmp_path, small_corpus):
    again = build_default_corpus(tmp_path / "again", max_docs_per_domain=25)
    for name in ("manifest.json", "prose/part-00000.jsonl.gz", "code/part-00000.jsonl.gz"):
        assert (again / name).read_bytes() == (small_corpus / name).read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()}
    build_default_corpus(again, max_docs_per_domain=25)
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()} == stamps


def test_manifest_counts_and_hash_match_the_records(small_corpus):
    manifest = json.loads((small_corpus / "manifest.json").read_text())
    records = list(iter_records(small_corpus))
    by_domain = {d: [r for r in records if r["domain"] == d] for d in manifest["counts"]}
    assert manifest["counts"] == {"code": 25, "prose": 25}
    assert {d: len(rs) for d, rs in by_domain.items()} == manifest["counts"]
    assert {d: sum(len(r["text"].encode()) for r in rs) for d, rs in by_domain.items()} == manifest["bytes"]
    # Independent hash: re-serialise what was read back, domains in name order.
    digest = hashlib.sha256()
    for domain in sorted(by_domain):
        for r in by_domain[domain]:
            digest.update(
                json.dumps({k: r[k] for k in ("id", "text", "domain", "source")}, ensure_ascii=False).encode() + b"\n"
            )
    assert digest.hexdigest() == manifest["sha256"]
    assert all(r["id"].startswith("stdlib/") and "test" not in r["id"] for r in by_domain["code"])
    assert len({r["id"] for r in records}) == len(records)


def test_full_default_corpus_is_a_few_megabytes(tmp_path):
    manifest = json.loads((build_default_corpus(tmp_path) / "manifest.json").read_text())
    assert 1_000_000 < sum(manifest["bytes"].values()) < 5_000_000
    assert manifest["counts"]["prose"] > 50 and manifest["counts"]["code"] > 30


def test_reader_filters_domains_and_counts_corrupt_lines(tmp_path, small_corpus, caplog):
    assert len(list(iter_texts(small_corpus, ["prose"]))) == 25
    with pytest.raises(ValueError, match="nope"):
        list(iter_texts(small_corpus, ["nope"]))
    part = tmp_path / "c" / "web" / "part-00000.jsonl.gz"
    part.parent.mkdir(parents=True)
    with gzip.open(part, "wt") as f:
        f.write('{"id": "1", "text": "good"}\n{broken\n{"id": "3"}\n{"id": "4", "text": "fine"}\n')
    assert list(iter_texts(tmp_path / "c")) == ["good", "fine"]
    assert "skipped 2 corrupt record(s), first at line 2" in caplog.text
