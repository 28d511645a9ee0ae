"""scripts/eval_rl.py helpers: the paired fixed/broken count and its sign test, the held-out
overlap check against an RL run's training prompts, and which checkpoint a run dir means."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from lmforge.data.tasks import make_tasks
from lmforge.formats.checkpoint_meta import write_run_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_rl.py"


@pytest.fixture(scope="module")
def eval_rl():
    spec = importlib.util.spec_from_file_location("eval_rl_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_paired_change_counts_fixed_and_broken_and_tests_them(eval_rl):
    before = [True, True, False, False, False, False, True, False]
    after = [True, False, True, True, True, False, True, True]
    change = eval_rl.paired_change(before, after)
    assert (change["fixed"], change["broken"]) == (4, 1)
    # P(X >= 4), X ~ Binomial(5, 1/2) = (5 + 1) / 32
    assert change["p_value"] == pytest.approx(6 / 32)
    assert eval_rl.paired_change([True] * 3, [True] * 3)["p_value"] == 1.0
    with pytest.raises(ValueError):
        eval_rl.paired_change([True], [True, False])


def test_training_prompts_rebuild_the_rl_runs_prompts_disjoint_from_heldout(eval_rl, tmp_path):
    tasks = {"kind": "unit_conversion", "n_train": 300, "n_val": 16, "seed": 0}
    write_run_manifest(tmp_path, {"config": {"datamodule": {"tasks": tasks}}})
    seen = eval_rl.training_prompts(str(tmp_path))
    assert seen == {t.prompt for t in make_tasks("unit_conversion", 300, 0, split="train")}
    heldout = {t.prompt for t in make_tasks("unit_conversion", 200, 0, split="heldout")}
    assert len(seen) > 250 and not seen & heldout
    write_run_manifest(tmp_path, {"config": {"datamodule": {"train_path": "x.jsonl"}}})
    assert eval_rl.training_prompts(str(tmp_path)) is None  # prompts from a file: not rebuilt


def test_a_run_dir_means_its_last_checkpoint_not_the_val_picked_one(eval_rl, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    last, best = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "checkpoints" / "best.ckpt"
    last.write_bytes(b"x"), best.write_bytes(b"x")
    write_run_manifest(tmp_path, {"last_checkpoint": str(last), "best_checkpoint": str(best)})
    assert eval_rl.final_checkpoint(str(tmp_path)) == str(last)
    assert eval_rl.final_checkpoint(str(best)) == str(best)
    assert eval_rl.run_dir_of(str(best)) == tmp_path
    assert not math.isnan(eval_rl.paired_change([], [])["p_value"])


def test_plot_report_reads_the_run_csv_and_writes_a_png(eval_rl, tmp_path):
    (tmp_path / "csv").mkdir()
    lines = ["step,train/reward,val/reward"] + [f"{s},{s / 100},{'' if s % 10 else s / 50}" for s in range(40)]
    (tmp_path / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    report = {"accuracy": 0.5, "by_kind": {"unit_conversion": 0.5}}
    png = eval_rl.plot_report(tmp_path / "r.png", tmp_path, report, {**report, "accuracy": 0.7}, "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
