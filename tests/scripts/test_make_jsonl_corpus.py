"""scripts/make_jsonl_corpus.py: the scale-run input is valid JSONL, the planted mix is there, the same
seed gives the same bytes, and the documented pipeline command reads it (JSONL only, no WARC)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make(out: Path, mb: str, seed: str = "0") -> str:
    proc = subprocess.run(
        [sys.executable, "scripts/make_jsonl_corpus.py", str(out), "--mb", mb, "--seed", seed],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def test_the_generated_crawl_is_valid_mixed_and_reproducible(tmp_path):
    make(tmp_path / "a.jsonl", "0.5")
    make(tmp_path / "b.jsonl", "0.5")
    make(tmp_path / "c.jsonl", "0.5", seed="1")
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes() and a != (tmp_path / "c.jsonl").read_bytes()
    rows = [json.loads(line) for line in a.decode().splitlines()]
    assert 0.5 * 2**20 <= len(a) < 0.5 * 2**20 + 64_000  # stops at the first line past the size
    assert len({r["id"] for r in rows}) == len(rows) and all(r["url"].startswith("https://") for r in rows)
    texts = [r["text"] for r in rows]
    assert any("Die Stadtverwaltung" in t or "La mairie" in t or "El ayuntamiento" in t for t in texts)
    assert any("@" in t or "(at)" in t for t in texts)


def test_the_default_pipeline_curates_it(tmp_path):
    make(tmp_path / "crawl.jsonl", "0.3")
    out = tmp_path / "corpus"
    proc = subprocess.run(
        [sys.executable, "-m", "data_pipeline", f"input={tmp_path / 'crawl.jsonl'}", f"output={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads((out / "funnel.json").read_text())["steps"]
    assert steps["read"]["docs_in"] == len((tmp_path / "crawl.jsonl").read_text().splitlines())
    # The planted foreign pages are removed by language, the near copies by dedup.
    assert sum(v for k, v in steps["langid"]["removed"].items() if k.startswith("language_")) > 0
    assert steps["dedup"]["removed"]
    assert json.loads((out / "manifest.json").read_text())["total_docs"] > 0
