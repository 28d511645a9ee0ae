"""The main job on a minimal config: every artifact and manifest exists, the tokenizer
fingerprint chains from shards through every checkpoint to the export, and a rerun skips
every finished step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MINIMAL = [
    "steps.pretrain=6",
    "steps.sft=4",
    "steps.dpo=3",
    "steps.rl=2",
    "steps.cai_prompts=2",
    "steps.cai_train=2",
    "eval_tasks_n=4",
    "rl_eval_n=4",
    "wandb=false",
]


def _run(out: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "scripts/pipeline.py", f"out_dir={out}", *MINIMAL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_pipeline_artifacts_lineage_and_rerun(tmp_path):
    sys.path.insert(0, str(REPO / "src"))
    from e2e.steps import BRANCHES, CHECKPOINTS

    out = tmp_path / "e2e"
    _run(out)
    done = sorted(p.parent.name for p in out.rglob("e2e_step.json"))
    for artifact in ("corpus", "tokenizer", "shards", *CHECKPOINTS, "export"):
        assert (out / artifact / "manifest.json").exists(), f"{artifact} has no manifest"
        assert artifact in done
    for name in CHECKPOINTS:
        assert (out / "eval" / name / "report.json").exists()
        assert (out / "tasks" / name / "report.json").exists()
    for name in ("dpo", "rl"):
        assert (out / "tasks_rl_kind" / name / "report.json").exists()
    ppl = json.loads((out / "ppl" / "report.json").read_text())
    assert ppl["n"] == len(ppl["items"]["loglik"]) == len(ppl["items"]["loglik_init"]) > 0

    tokenizer_fp = json.loads((out / "tokenizer" / "manifest.json").read_text())["fingerprint"]
    assert json.loads((out / "shards" / "manifest.json").read_text())["tokenizer_fingerprint"] == tokenizer_fp
    for name in CHECKPOINTS:
        assert json.loads((out / name / "manifest.json").read_text())["tokenizer_fingerprint"] == tokenizer_fp
    lineage = json.loads((out / "export" / "lineage.json").read_text())
    assert lineage["tokenizer_fingerprints_agree"] is True
    assert [Path(c["path"]).name for c in lineage["checkpoints"].values()] == list(CHECKPOINTS)
    assert (out / "report.md").read_text().count("|") > 50
    # The CAI branch: evaluated against SFT's report, its two safety claims tested on the job's
    # red-team run (HarmBench's 200 behaviours, 200 GSM8K questions).
    for name, parent in BRANCHES.items():
        report = json.loads((out / "eval" / name / "report.json").read_text())
        assert report["comparisons"]["parent"]["report"] == str(out / "eval" / parent)
    claims = json.loads((out / "report.json").read_text())["stage_claims"]
    cai = [r for r in claims if r["stage"] == "cai"]
    assert len(cai) == 2 and all(r["verdict"] != "untested" and r["n"] == 200 for r in cai), cai
    assert (out / "redteam" / "cai" / "samples" / "safety.jsonl").exists()

    again = _run(out)
    steps = len(list(out.rglob("e2e_step.json")))
    assert again.count("already complete") == steps
    assert "done in" not in again


def test_missing_benchmarks_fail_before_any_step(tmp_path):
    """Without the benchmark files the eval steps would fail after all the training: the job
    refuses at once, naming the folders and LMFORGE_BENCHMARKS, and writes no artifact."""
    env = {**os.environ, "LMFORGE_BENCHMARKS": str(tmp_path / "nowhere")}
    proc = subprocess.run(
        [sys.executable, "scripts/pipeline.py", f"out_dir={tmp_path / 'out'}", *MINIMAL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode != 0
    assert f"{tmp_path / 'nowhere' / 'mmlu'}" in proc.stderr and "LMFORGE_BENCHMARKS" in proc.stderr
    assert not (tmp_path / "out" / "corpus").exists() and not (tmp_path / "out" / "logs").exists()
