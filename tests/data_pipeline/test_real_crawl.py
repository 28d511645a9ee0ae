"""The documented command on real input nobody here wrote: a gzipped WARC of Debian docs,
licences and foreign man pages with control characters, invalid UTF-8 and a cut last record;
and the same text as JSONL only. Both exit 0 and write a corpus; rejects are counted with reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pycld2
import pytest

from tests.data_pipeline.real_crawl import build_real_crawl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real_crawl")
    built = build_real_crawl(root)
    # A crawl that was cut while writing: half of one more record's gzip member.
    data = built["warc"].read_bytes()
    with open(built["warc"], "ab") as f:
        f.write(data[: len(data) // 40])
    return built


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "data_pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_fixture_carries_text_that_crashes_cld2(crawl):
    from fastwarc.warc import ArchiveIterator

    with open(crawl["warc"], "rb") as f:
        payloads = [r.reader.read() for r in ArchiveIterator(f) if "dirty.example" in r.headers["WARC-Target-URI"]]
    assert len(payloads) == 3
    with pytest.raises(pycld2.error, match="invalid UTF-8"):
        pycld2.detect(payloads[0].decode("utf-8"))


def test_readme_command_on_a_real_warc(crawl, tmp_path):
    out = tmp_path / "corpus"
    proc = run_cli(f"input={crawl['warc']}", f"output={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = json.loads((out / "funnel.json").read_text())
    assert manifest["total_docs"] > 5 and manifest["counts"] == {"web": manifest["total_docs"]}
    # A one-domain crawl is all kept by the mix, and the report says so.
    assert funnel["steps"]["mix"]["docs_in"] == funnel["steps"]["mix"]["docs_out"] == manifest["total_docs"]
    assert manifest["target_ratios"] == {"web": 1.0}
    assert manifest["achieved_ratios"] == {"code": 0.0, "prose": 0.0, "web": 1.0}
    # The dirty records were normalised, not lost; the cut record is a reject with a reason.
    read = funnel["steps"]["read"]
    assert read["modified"]["control_chars_normalized"] > 0 and read["modified"]["invalid_utf8_replaced"] > 0
    assert read["docs_in"] - read["docs_out"] == sum(manifest["rejects"].values()) >= 1
    assert set(manifest["rejects"]) <= {"truncated_gzip", "invalid_warc_record"}
    rejects = [json.loads(x) for f in manifest["rejects_files"] for x in (out / f).read_text().splitlines()]
    assert rejects and all(r["reason"] and str(crawl["warc"]) in r["where"] for r in rejects)
    assert funnel["steps"]["langid"]["removed"].keys() >= {"language_de", "language_fr", "language_es"}
    assert not [r for s in funnel["steps"].values() for r in s["removed"] if r.startswith("error:")]


def test_jsonl_only_input_runs_with_the_default_config(crawl, tmp_path):
    out = tmp_path / "corpus"
    proc = run_cli(f"input={crawl['jsonl']}", f"output={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = json.loads((out / "funnel.json").read_text())
    assert manifest["total_docs"] > 5
    # No raw pages to learn negatives from: the quality step is skipped, with the reason shown.
    quality = funnel["steps"]["quality"]
    assert quality["note"].startswith("skipped: 0 raw web pages") and quality["docs_in"] == quality["docs_out"]
    assert any(w.startswith("quality skipped") for w in manifest["warnings"])
    assert manifest["models"]["quality"]["skipped"] == quality["note"]
