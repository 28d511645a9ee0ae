"""One bad record never stops the run: it is counted under its step and exception type and
written to rejects/ with its id and URL; ``strict=true`` stops at it instead, naming it."""

from __future__ import annotations

import json
import random

import pytest

from data_pipeline.heuristics import HeuristicFilter
from data_pipeline.pipeline import RecordError, run_pipeline
from data_pipeline.readers import DomainLabeler
from tests.support.pipeline_docs import fast_config, prose_doc, read_corpus, write_jsonl


def make_rows(n: int) -> list[dict]:
    rng = random.Random(3)
    return [{"id": f"doc-{i}", "url": f"https://site.example/{i}", "text": prose_doc(rng, 14)} for i in range(n)]


@pytest.fixture
def exploding_heuristics(monkeypatch):
    """The heuristics step raises on records whose text carries a marker (a stand-in for any bug)."""
    original = HeuristicFilter.__call__

    def call(self, doc):
        if "EXPLODE" in doc.text:
            raise ZeroDivisionError("division by zero in a rule")
        return original(self, doc)

    monkeypatch.setattr(HeuristicFilter, "__call__", call)


def test_a_raising_step_rejects_the_record_and_the_run_goes_on(tmp_path, exploding_heuristics):
    rows = make_rows(30)
    rows[4]["text"] += " EXPLODE"
    rows[17]["text"] += " EXPLODE"
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "rows.jsonl", rows)
    out = run_pipeline(fast_config(tmp_path / "in", tmp_path / "out"))
    ids = {r["id"] for r in read_corpus(out)}
    assert "doc-4" not in ids and "doc-17" not in ids and len(ids) == 28
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rejects"] == {"error:heuristics:ZeroDivisionError": 2}
    funnel = json.loads((out / "funnel.json").read_text())["steps"]
    assert funnel["heuristics"]["removed"]["error:heuristics:ZeroDivisionError"] == 2
    (rejects_file,) = manifest["rejects_files"]
    rejects = [json.loads(line) for line in (out / rejects_file).read_text().splitlines()]
    assert [(r["id"], r["url"], r["step"]) for r in rejects] == [
        ("doc-4", "https://site.example/4", "heuristics"),
        ("doc-17", "https://site.example/17", "heuristics"),
    ]
    assert all(r["error"] == "ZeroDivisionError: division by zero in a rule" for r in rejects)


def test_strict_stops_at_the_first_bad_record_and_names_it(tmp_path, exploding_heuristics):
    rows = make_rows(10)
    rows[6]["text"] += " EXPLODE"
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "rows.jsonl", rows)
    with pytest.raises(RecordError, match=r"'heuristics' raised on record https://site.example/6 .*ZeroDivisionError"):
        run_pipeline(fast_config(tmp_path / "in", tmp_path / "out", strict=True))


def test_corrupt_records_are_written_to_rejects_too(tmp_path):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "rows.jsonl", make_rows(5))
    with open(tmp_path / "in" / "rows.jsonl", "ab") as f:
        f.write(b'{"id": "broken", "text": \n')
    out = run_pipeline(fast_config(tmp_path / "in", tmp_path / "out"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rejects"] == {"invalid_jsonl": 1}
    (row,) = [json.loads(line) for line in (out / manifest["rejects_files"][0]).read_text().splitlines()]
    assert row["step"] == "read" and row["where"].endswith("rows.jsonl:6 (Expecting value: line 1 column 26 (char 25))")


def test_domain_rules_see_url_and_content_never_the_local_path(tmp_path):
    labeler = DomainLabeler(
        [
            {"pattern": r"/books?/|gutenberg", "domain": "prose"},
            {"pattern": "", "domain": "code", "content": r"^def \w+\("},
        ],
        "web",
    )
    assert labeler("file:///data/books/crawl.html", "<p>a page</p>") == "web"
    assert labeler("https://example.org/books/1", "") == "prose"
    assert labeler("file:///data/books/x.txt", "import os\n\ndef main():\n    pass") == "code"
    # Through the pipeline: a JSONL file stored under books/ is still web.
    (tmp_path / "books").mkdir()
    write_jsonl(tmp_path / "books" / "rows.jsonl", [{k: v for k, v in r.items() if k != "url"} for r in make_rows(4)])
    out = run_pipeline(fast_config(tmp_path / "books", tmp_path / "out"))
    assert {r["domain"] for r in read_corpus(out)} == {"web"}


def test_a_reader_that_raises_keeps_what_it_read_and_the_run_goes_on(tmp_path, monkeypatch):
    import data_pipeline.readers as readers

    original = readers._read_jsonl

    def flaky(path, shard, labeler, stats):
        for i, doc in enumerate(original(path, shard, labeler, stats)):
            if i == 3:
                raise OSError("Input/output error")
            yield doc

    monkeypatch.setattr(readers, "_read_jsonl", flaky)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "rows.jsonl", make_rows(6))
    out = run_pipeline(fast_config(tmp_path / "in", tmp_path / "out"))
    assert sorted(r["id"] for r in read_corpus(out)) == ["doc-0", "doc-1", "doc-2"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rejects"] == {"error:read:OSError": 1}
    with pytest.raises(RecordError, match=r"reading .*rows\.jsonl raised OSError"):
        run_pipeline(fast_config(tmp_path / "in", tmp_path / "strict", strict=True))


@pytest.mark.parametrize("lose_work_copy", [False, True])
def test_deleting_the_output_folder_and_rerunning_writes_it_all_again(tmp_path, lose_work_copy):
    """A user who deletes the corpus folder to rerun gets the same corpus and rejects back, not an
    empty folder whose manifest still counts every document (the work dir's markers said "done").
    The rejects come from their work copy, or, when that is gone too, from processing again."""
    import shutil

    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "rows.jsonl", make_rows(5))
    with open(tmp_path / "in" / "rows.jsonl", "ab") as f:
        f.write(b'{"id": "broken", "text": \n')
    cfg = fast_config(tmp_path / "in", tmp_path / "out")
    out = run_pipeline(cfg)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "funnel.json"}
    assert any(str(p).startswith("rejects/") for p in first) and any(str(p).endswith(".jsonl.gz") for p in first)
    shutil.rmtree(out)
    if lose_work_copy:
        for copy in (tmp_path / "out.work").rglob("*.rejects.jsonl"):
            copy.unlink()
    out = run_pipeline(cfg)
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "funnel.json"}
    assert again.keys() == first.keys()
    assert read_corpus(out) and all(again[p] == first[p] for p in first if p.suffix != ".gz"), "changed on rerun"
