"""The documented benchmark commands run from a clone, at smoke size, and print what the docs quote.

Their full-size figures are in docs (measurements.md, main-job.md); these tests only keep the
commands from rotting: bench_recipe.py's default once asked for more rows than the embedded corpus
holds, and read an interpolated lr as a string.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_script(*args: str, timeout: int = 600) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_recipe_trains_every_recipe_on_the_same_budget():
    out = run_script("scripts/bench_recipe.py", "--steps", "6", "--seeds", "0", "--val-rows", "16")
    labels = {"adamw+cosine", "adamw+wsd", "muon+wsd"}
    rows = {cols[0]: cols for cols in map(str.split, out.splitlines()) if cols and cols[0] in labels}
    assert set(rows) == {"adamw+cosine", "adamw+wsd", "muon+wsd"}, out
    losses = {name: float(cols[1]) for name, cols in rows.items()}
    # Six steps from a random init: every loss is below the uniform guess over the 4096-token vocab.
    assert all(0 < loss < math.log(4096) for loss in losses.values()), losses
    assert losses["muon+wsd"] != losses["adamw+wsd"], "the optimiser group did not reach the stage"
    assert "6 steps x 16 x 128" in out


def test_bench_attention_compares_each_mask_free_path_with_the_dense_mask():
    out = run_script("scripts/bench_attention.py", "--seq", "128", "--batch", "1", "--rounds", "1", "--device", "cpu")
    for variant in ("packed/dense", "packed/docmask", "prefill/dense", "prefill/rightpad"):
        assert variant in out, out
    assert "docmask is" in out and "rightpad is" in out


def test_bench_shapes_runs_the_main_jobs_steps_for_each_shape(tmp_path):
    out = run_script(
        "scripts/bench_shapes.py",
        "--out",
        str(tmp_path),
        "--shapes",
        "tiny",
        "wide",
        "--e2e",
        "steps.pretrain=2",
        "steps.sft=2",
        "eval_tasks_n=8",
    )
    rows = {r["shape"]: r for r in json.loads((tmp_path / "shapes.json").read_text())}
    assert rows["wide"]["params"] > rows["tiny"]["params"]
    assert all(r["n"] == 8 and 0 <= r["accuracy"] <= 1 and r["minutes"] > 0 for r in rows.values())
    # The shape reached the training commands, not just the table.
    wide_cmd = json.loads((tmp_path / "wide" / "pretrain" / "e2e_step.json").read_text())["command"]
    assert "model.d_model=192" in wide_cmd
    assert (
        "model.d_model=192" not in json.loads((tmp_path / "tiny" / "pretrain" / "e2e_step.json").read_text())["command"]
    )
    assert "accuracy [95% CI]" in out
