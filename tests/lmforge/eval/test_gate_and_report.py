from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmforge.config_paths import conf_dir
from lmforge.eval.binding import checkpoint_sha256
from lmforge.eval.gate import gate_verdict, release_verdict
from lmforge.eval.runner import _task_config, run_suite, task_data_paths
from lmforge.eval.schema import register_configs
from lmforge.eval.tasks import get_task

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
    # Every suite carries the gate; only the CAI claims' safety-only suite switches it off.
    assert cfg["eval"]["gate"]["enabled"] is (suite != "redteam")
    for name, options in cfg["eval"]["tasks"].items():
        task_cfg = _task_config(get_task(name), options, benchmarks, None)
        if hasattr(task_cfg, "path") and name != "safety":
            assert Path(task_cfg.path).exists(), task_cfg.path


def test_eval_time_threshold_overrides_do_not_exist():
    """`eval.gate.max_drop=null` once let a failing checkpoint through: thresholds are not eval config."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="max_drop"):
        _compose(["eval.gate.max_drop=null"])


def _lineage_ckpt(path: Path, stage: str, parent: Path | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"stage": stage, "parent": str(parent) if parent else None, "model_config": {}}
    torch.save({"lmforge": meta, "state_dict": {"w": torch.randn(4)}}, path)
    return path


@pytest.mark.slow
def test_eval_run_writes_a_bound_report_and_the_gate_refuses_small_n(
    tiny_eval_model, benchmarks, tmp_path, monkeypatch
):
    import lmforge.eval.runner as runner

    monkeypatch.setattr(runner, "load_model", lambda cfg, root: tiny_eval_model)
    pre = _lineage_ckpt(tmp_path / "pre" / "last.ckpt", "pretrain", None)
    sft = _lineage_ckpt(tmp_path / "sft" / "last.ckpt", "sft", pre)
    base = _compose(["eval=quick", "limit=2", f"cache_path={tmp_path}/cache.sqlite"])
    base["benchmarks_root"] = str(benchmarks)
    base["eval"]["tasks"]["safety"]["limit"] = 6
    first = run_suite(dict(base, ckpt=str(pre), out_dir=f"{tmp_path}/r_pre"))
    assert (tmp_path / "r_pre" / "summary.html").exists() and (tmp_path / "r_pre" / "metrics.png").exists()
    assert first["stats"]["mmlu"]["acc"]["n"] == 6  # 3 subjects x limit 2
    assert first["binding"]["checkpoint_sha256"] == checkpoint_sha256(pre)[1]
    assert first["sandbox"]["humaneval"] == first["sandbox"]["available"] == "bwrap"
    verdict = gate_verdict(tmp_path / "r_pre")
    assert not verdict.passed and "mmlu.acc: insufficient n (6 items, policy minimum 1000)" in verdict.reasons

    # A lenient policy at eval time changes the report's own verdict, never export's.
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("metrics:\n  mmlu.acc: {min_n: 1, max_drop: 1.0}\n")
    child = dict(base, ckpt=str(sft), out_dir=f"{tmp_path}/r_sft", parent_report=str(tmp_path / "r_pre"))
    child["eval"] = dict(base["eval"], gate=dict(base["eval"]["gate"], policy=str(lenient)))
    second = run_suite(child)
    assert second["cache"]["hits"] > 0  # resumed from the request cache: same model, same requests
    assert second["gate"]["passed"] and second["comparisons"]["baseline"]["report"] == str(tmp_path / "r_pre")
    refused, _ = release_verdict(tmp_path / "r_sft", checkpoint_sha256(sft)[1])
    assert not refused.passed and any("insufficient n" in r for r in refused.reasons)
    html = (tmp_path / "r_sft" / "summary.html").read_text()
    assert "PASS" in html and "95% CI" in html and "bwrap" in html

    # The wrong parent's report is one clear error before the model loads.
    wrong = dict(base, ckpt=str(sft), out_dir=f"{tmp_path}/r_bad", parent_report=str(tmp_path / "r_sft"))
    with pytest.raises(ValueError, match="scored checkpoint sha256"):
        run_suite(wrong)


def test_task_data_paths_resolve_like_the_run_and_honour_a_task_path(tmp_path):
    """What the main job's preflight checks: each file-reading task's data path under the root,
    or the task's own `path`; safety reads packaged prompts and has none."""
    suite = {"tasks": {"mmlu": {"limit": 2}, "gsm8k": {"path": str(tmp_path / "my_gsm8k")}, "safety": {}}}
    assert task_data_paths(suite, tmp_path / "root") == {
        "mmlu": tmp_path / "root" / "mmlu",
        "gsm8k": tmp_path / "my_gsm8k",
    }


def test_a_cai_run_dir_is_compared_with_the_report_of_the_run_it_started_from(tmp_path):
    """A CAI run dir resolves to its DPO sub-run, whose parent is its SFT sub-run: both inside the
    run, so `parent_report` must be the report of the checkpoint the run started from (the main
    job's eval_cai passes SFT's). The sub-run checkpoint file itself keeps its own parent, and a
    report of any other checkpoint is still refused before the model loads."""
    from lmforge.eval.binding import checkpoint_lineage, content_sha256, parent_step
    from lmforge.eval.runner import EvalInputError, _comparisons
    from lmforge.formats.checkpoint_meta import write_run_manifest
    from lmforge.formats.eval_report import write_report

    pre = _lineage_ckpt(tmp_path / "pretrain" / "last.ckpt", "pretrain", None)
    sft = _lineage_ckpt(tmp_path / "sft" / "last.ckpt", "sft", pre)
    cai_sft = _lineage_ckpt(tmp_path / "cai" / "sft" / "last.ckpt", "sft", sft)
    cai_dpo = _lineage_ckpt(tmp_path / "cai" / "dpo" / "last.ckpt", "dpo", cai_sft)
    cai = tmp_path / "cai"
    write_run_manifest(cai, {"kind": "cai_run", "stage": "cai", "parent": str(sft), "last_checkpoint": str(cai_dpo)})
    for name, ckpt in (("pretrain", pre), ("sft", sft)):
        write_report(tmp_path / "eval" / name, {"label": name, "binding": {"checkpoint_sha256": content_sha256(ckpt)}})

    lineage = checkpoint_lineage(cai)
    assert [Path(s["path"]) for s in lineage] == [pre, sft, cai_sft, cai_dpo]
    assert Path(parent_step(cai, lineage)["path"]) == sft
    assert Path(parent_step(cai_dpo, lineage)["path"]) == cai_sft  # a checkpoint file: its own parent
    plain = tmp_path / "sft"  # an ordinary run dir: unchanged, the step before its checkpoint
    assert Path(parent_step(plain, checkpoint_lineage(plain))["path"]) == pre

    compared = _comparisons({"ckpt": str(cai), "parent_report": str(tmp_path / "eval" / "sft")}, {}, lineage)
    assert compared["parent"]["label"] == "sft"
    with pytest.raises(EvalInputError, match="scored checkpoint sha256"):
        _comparisons({"ckpt": str(cai), "parent_report": str(tmp_path / "eval" / "pretrain")}, {}, lineage)
    with pytest.raises(EvalInputError, match="scored checkpoint sha256"):
        _comparisons({"ckpt": str(cai_dpo), "parent_report": str(tmp_path / "eval" / "sft")}, {}, lineage)
