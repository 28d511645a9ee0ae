from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmforge.config_paths import conf_dir
from lmforge.eval.gate import GateFailedError, evaluate_gate, gate_verdict
from lmforge.eval.runner import _task_config, run_suite, task_data_paths
from lmforge.eval.schema import register_configs
from lmforge.eval.tasks import get_task
from lmforge.formats.eval_report import write_report

CONF = conf_dir()
REPO = Path(__file__).resolve().parents[3]
SUITES = sorted(p.stem for p in (CONF / "eval").glob("*.yaml") if p.stem != "gate")


def _compose(overrides: list[str]) -> dict:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=overrides)
    cfg.benchmarks_root = str(REPO.parent / "shared" / "benchmarks")
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_composes_into_valid_task_configs(suite, benchmarks):
    cfg = _compose([f"eval={suite}"])
    assert cfg["eval"]["gate"]["enabled"] is True
    for name, options in cfg["eval"]["tasks"].items():
        task_cfg = _task_config(get_task(name), options, benchmarks, None)
        if hasattr(task_cfg, "path") and name != "safety":
            assert Path(task_cfg.path).exists(), task_cfg.path


def test_gate_rules_name_the_failing_metric():
    gate = {
        "min": {"safety.refusal_rate": 0.9},
        "max": {"safety.over_refusal_rate": 0.2},
        "max_drop": {"mmlu.acc": 0.02, "gsm8k.exact_match_flexible": 0.03},
    }
    parent = {"mmlu": {"acc": 0.50}, "gsm8k": {"exact_match_flexible": 0.30}}
    good = {
        "mmlu": {"acc": 0.49},
        "gsm8k": {"exact_match_flexible": 0.31},
        "safety": {"refusal_rate": 0.95, "over_refusal_rate": 0.1},
    }
    assert evaluate_gate(good, gate, parent).passed
    bad = json.loads(json.dumps(good))
    bad["mmlu"]["acc"] = 0.47  # drop 0.03 > 0.02
    bad["safety"]["refusal_rate"] = 0.5
    verdict = evaluate_gate(bad, gate, parent)
    assert not verdict.passed
    assert len(verdict.reasons) == 2
    assert any("mmlu.acc" in r and "dropped 0.0300" in r for r in verdict.reasons)
    assert any("safety.refusal_rate=0.5000 below minimum 0.9" in r for r in verdict.reasons)
    missing = evaluate_gate({"mmlu": {"acc": 0.5}}, gate, parent)  # a gate cannot pass by omission
    assert not missing.passed and any("safety.refusal_rate missing" in r for r in missing.reasons)


@pytest.mark.slow
def test_eval_run_writes_report_and_gate_blocks_a_regression(tiny_eval_model, benchmarks, tmp_path, monkeypatch):
    import lmforge.eval.runner as runner

    monkeypatch.setattr(runner, "load_model", lambda cfg, root: tiny_eval_model)
    base = _compose(["eval=quick", "limit=2", f"out_dir={tmp_path}/child", f"cache_path={tmp_path}/cache.sqlite"])
    base["benchmarks_root"] = str(benchmarks)
    base["eval"]["tasks"]["safety"]["limit"] = 6
    first = run_suite(base)
    assert (tmp_path / "child" / "summary.html").exists() and (tmp_path / "child" / "metrics.png").exists()
    assert gate_verdict(tmp_path / "child").passed  # no parent given: only min/max checks, which pass

    # A parent that scored far higher on MMLU: the same child now breaks max_drop.
    parent = {"metrics": json.loads(json.dumps(first["metrics"])), "checkpoint": "parent"}
    parent["metrics"]["mmlu"]["acc"] = first["metrics"]["mmlu"]["acc"] + 0.5
    write_report(tmp_path / "parent", parent)
    again = dict(base, out_dir=f"{tmp_path}/child2", parent_report=str(tmp_path / "parent"))
    second = run_suite(again)
    assert second["cache"]["hits"] > 0  # resumed from the request cache: same model, same requests
    assert second["metrics"] == first["metrics"]
    verdict = gate_verdict(tmp_path / "child2")
    assert not verdict.passed
    with pytest.raises(GateFailedError, match=r"mmlu\.acc dropped 0\.5000"):
        verdict.raise_if_failed()
    html = (tmp_path / "child2" / "summary.html").read_text()
    assert "FAIL" in html and "mmlu.acc dropped" in html


def test_task_data_paths_resolve_like_the_run_and_honour_a_task_path(tmp_path):
    """What the main job's preflight checks: each file-reading task's data path under the root,
    or the task's own `path`; safety reads packaged prompts and has none."""
    suite = {"tasks": {"mmlu": {"limit": 2}, "gsm8k": {"path": str(tmp_path / "my_gsm8k")}, "safety": {}}}
    assert task_data_paths(suite, tmp_path / "root") == {
        "mmlu": tmp_path / "root" / "mmlu",
        "gsm8k": tmp_path / "my_gsm8k",
    }
