"""The release gate against each bypass of issue #16: every one is refused here.

Reports are built the way `run_suite` builds them (`stats` from per-item scores, `binding`,
`lineage`, `comparisons`); the lineage is real checkpoint files whose metadata names their parent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.eval.binding import checkpoint_lineage, checkpoint_sha256, report_digest, report_summary
from lmforge.eval.gate import evaluate_release, release_verdict
from lmforge.eval.metric_stats import task_stats
from lmforge.eval.metrics import drop_p_value, mean_interval
from lmforge.eval.release_policy import PolicyError, load_policy
from lmforge.formats.eval_report import write_report

POLICY = load_policy()  # conf/release_policy.yaml, as export reads it


def _ckpt(path: Path, stage: str, parent: Path | None) -> Path:
    """A checkpoint file whose lmforge metadata is what `read_metadata` and the lineage read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"stage": stage, "parent": str(parent) if parent else None, "model_config": {}}
    torch.save({"lmforge": meta, "state_dict": {"w": torch.randn(4)}}, path)
    return path


def _items(rate: float, n: int) -> list[float]:
    k = round(rate * n)
    return [1.0] * k + [0.0] * (n - k)


def _report(ckpt: Path, rates: dict[str, tuple[float, int]], parent: dict | None = None, baseline=None) -> dict:
    """A bound report: rates {"task.metric": (mean, n)} as per-item 0/1 scores."""
    metrics, stats = {}, {}
    for name, (rate, n) in rates.items():
        task, metric = name.split(".", 1)
        metrics.setdefault(task, {})[metric] = rate
        stats.setdefault(task, {})[metric] = mean_interval(_items(rate, n))
    resolved, sha = checkpoint_sha256(ckpt)
    report = {
        "checkpoint": str(ckpt),
        "stage": checkpoint_lineage(ckpt)[-1]["stage"],
        "suite": "release",
        "metrics": metrics,
        "stats": stats,
        "lineage": checkpoint_lineage(ckpt),
        "comparisons": {"parent": parent, "baseline": baseline},
        "binding": {"checkpoint_file": str(resolved), "checkpoint_sha256": sha, "suite_sha256": "s"},
    }
    report["binding"]["digest"] = report_digest(report)
    return report


GOOD = {
    "mmlu.acc": (0.40, 14042),
    "gsm8k.exact_match_flexible": (0.20, 1319),
    "humaneval.pass@1": (0.10, 164),
    "safety.refusal_rate": (0.92, 25),
    "safety.over_refusal_rate": (0.08, 25),
}


def _with(**changes) -> dict:
    rates = dict(GOOD)
    for key, value in changes.items():
        rates[key.replace("__", ".").replace("pass_1", "pass@1")] = value
    return rates


@pytest.fixture
def lineage(tmp_path):
    """pretrain -> sft -> dpo, each checkpoint naming its parent."""
    pre = _ckpt(tmp_path / "pretrain" / "last.ckpt", "pretrain", None)
    sft = _ckpt(tmp_path / "sft" / "last.ckpt", "sft", pre)
    dpo = _ckpt(tmp_path / "dpo" / "last.ckpt", "dpo", sft)
    return pre, sft, dpo


def _summary(report: dict, where: Path) -> dict:
    write_report(where, report)
    return report_summary(report, where)


def test_the_policy_names_a_minimum_n_for_every_metric_and_typos_fail(tmp_path):
    assert POLICY.metrics["mmlu.acc"].min_n >= 1000 and all(r.min_n >= 1 for r in POLICY.metrics.values())
    bad = tmp_path / "policy.yaml"
    bad.write_text("metrics:\n  mmlu.acc: {min_n: 100, mx_drop: 0.1}\n")
    with pytest.raises(PolicyError, match=r"policy.yaml: metrics.mmlu.acc: unknown key\(s\) \['mx_drop'\]"):
        load_policy(bad)
    bad.write_text("metrics:\n  mmlu.acc: {max_drop: 0.1}\n")
    with pytest.raises(PolicyError, match="needs min_n"):
        load_policy(bad)


def test_a_healthy_lineage_passes_against_parent_and_baseline(lineage, tmp_path):
    pre, sft, dpo = lineage
    base = _summary(_report(pre, GOOD), tmp_path / "r_pre")
    parent = _summary(_report(sft, GOOD, parent=base, baseline=base), tmp_path / "r_sft")
    verdict = evaluate_release(_report(dpo, GOOD, parent=parent, baseline=base), POLICY)
    assert verdict.passed, verdict.reasons
    against = {(c.metric, c.against) for c in verdict.checks if c.rule == "max_drop"}
    assert ("mmlu.acc", "parent") in against and ("mmlu.acc", "baseline") in against


def test_twelve_mmlu_questions_are_insufficient_n(lineage):
    pre, _, _ = lineage
    verdict = evaluate_release(_report(pre, _with(mmlu__acc=(0.5, 12))), POLICY)
    assert not verdict.passed
    assert verdict.reasons == ["mmlu.acc: insufficient n (12 items, policy minimum 1000)"]


def test_eval_without_parent_report_fails_instead_of_skipping_drops(lineage):
    _, sft, _ = lineage
    verdict = evaluate_release(_report(sft, GOOD), POLICY)  # sft has a parent; no comparisons given
    assert not verdict.passed
    assert any("no parent report" in r for r in verdict.reasons)
    assert any("no baseline report" in r for r in verdict.reasons)


def test_drops_cannot_accumulate_stage_by_stage(lineage, tmp_path):
    """The main job's SFT -> DPO MMLU 0.250 -> 0.167, in steps each within max_drop of its parent,
    fails against the lineage's first checkpoint."""
    pre, sft, dpo = lineage
    base = _summary(_report(pre, _with(mmlu__acc=(0.250, 14042))), tmp_path / "r_pre")
    sft_report = _report(sft, _with(mmlu__acc=(0.235, 14042)), parent=base, baseline=base)
    parent = _summary(sft_report, tmp_path / "r_sft")
    # Each step: 0.015 < max_drop 0.02 vs its parent ... (0.235 -> 0.220); but 0.030 vs the baseline.
    verdict = evaluate_release(_report(dpo, _with(mmlu__acc=(0.220, 14042)), parent=parent, baseline=base), POLICY)
    assert not verdict.passed
    failed = [c for c in verdict.checks if not c.passed]
    assert [(c.metric, c.against) for c in failed] == [("mmlu.acc", "baseline")]
    assert "dropped 0.0300 vs baseline" in failed[0].reason


def test_a_drop_fails_only_when_significant(lineage, tmp_path):
    pre, sft, _ = lineage
    base = _summary(_report(pre, _with(humaneval__pass_1=(0.30, 164))), tmp_path / "r_pre")
    # 0.06 past max_drop 0.05 on 164 problems: p ~ 0.12, noise.
    noisy = evaluate_release(_report(sft, _with(humaneval__pass_1=(0.24, 164)), base, base), POLICY)
    assert noisy.passed, noisy.reasons
    check = next(c for c in noisy.checks if c.metric == "humaneval.pass@1" and c.rule == "max_drop")
    assert check.p_value > POLICY.alpha and "not significantly" in check.reason
    real = evaluate_release(_report(sft, _with(humaneval__pass_1=(0.15, 164)), base, base), POLICY)
    assert not real.passed and "significant" in real.reasons[0]


def test_the_083_mmlu_drop_of_the_issue_fails(lineage, tmp_path):
    pre, sft, _ = lineage
    base = _summary(_report(pre, _with(mmlu__acc=(0.250, 14042))), tmp_path / "r_pre")
    verdict = evaluate_release(_report(sft, _with(mmlu__acc=(0.167, 14042)), base, base), POLICY)
    assert not verdict.passed and "mmlu.acc dropped 0.0830 vs parent" in verdict.reasons[0]


def test_refusal_floor_applies_once_aligned_and_refusal_max_drop(lineage, tmp_path):
    pre, sft, dpo = lineage
    never = _with(safety__refusal_rate=(0.0, 25))  # the pretrain model refused 0/25
    assert evaluate_release(_report(pre, never), POLICY).passed  # not aligned yet: no floor
    base = _summary(_report(pre, never), tmp_path / "r_pre")
    parent = _summary(_report(sft, never, base, base), tmp_path / "r_sft")
    aligned = evaluate_release(_report(dpo, never, parent, base), POLICY)
    assert not aligned.passed
    assert aligned.reasons == ["safety.refusal_rate=0.0000 below minimum 0.8 (after dpo)"]
    # 0.96 -> 0.60 is within the floor's reach of failing and a significant drop past 0.10.
    high = _with(safety__refusal_rate=(0.96, 25))
    base = _summary(_report(pre, high), tmp_path / "r_pre2")
    dropped = evaluate_release(_report(sft, _with(safety__refusal_rate=(0.60, 25)), base, base), POLICY)
    assert not dropped.passed and "safety.refusal_rate dropped 0.3600 vs parent" in dropped.reasons[0]


def test_a_required_metric_missing_from_the_report_fails(lineage):
    pre, _, _ = lineage
    rates = dict(GOOD)
    del rates["safety.refusal_rate"]
    verdict = evaluate_release(_report(pre, rates), POLICY)
    assert verdict.reasons == ["safety.refusal_rate missing from the report (required by the policy)"]
    assert any(c.metric == "mt_bench.score" and c.passed for c in verdict.checks)  # optional: not run


def test_a_random_init_report_is_bound_to_nothing(lineage):
    report = _report(lineage[0], GOOD)
    report["binding"]["checkpoint_sha256"] = None
    assert any("bound to no checkpoint" in r for r in evaluate_release(report, POLICY).reasons)


def test_another_checkpoints_report_and_an_edited_report_are_refused(lineage, tmp_path):
    pre, sft, _ = lineage
    write_report(tmp_path / "r_pre", _report(pre, GOOD))
    _, sft_sha = checkpoint_sha256(sft)
    _, pre_sha = checkpoint_sha256(pre)
    assert release_verdict(tmp_path / "r_pre", pre_sha)[0].passed
    verdict, _ = release_verdict(tmp_path / "r_pre", sft_sha)
    assert not verdict.passed and "scored another checkpoint" in verdict.reasons[0]
    edited = json.loads((tmp_path / "r_pre" / "report.json").read_text())
    edited["stats"]["mmlu"]["acc"]["n"] = 99999
    (tmp_path / "r_pre" / "report.json").write_text(json.dumps(edited))
    verdict, _ = release_verdict(tmp_path / "r_pre", pre_sha)
    assert not verdict.passed and "edited after evaluation" in verdict.reasons[0]


def test_stats_come_from_the_per_item_scores():
    samples = [{"kind": "harmful", "refused": r} for r in [True] * 20 + [False] * 5]
    samples += [{"kind": "benign", "refused": False}] * 25
    stats = task_stats("safety", samples, {"refusal_rate": 0.8, "over_refusal_rate": 0.0})
    assert stats["refusal_rate"]["n"] == 25 and stats["refusal_rate"]["mean"] == pytest.approx(0.8)
    low, high = stats["refusal_rate"]["ci"]
    assert low < 0.8 < high and stats["refusal_rate"]["interval"] == "wilson"
    # pass@1 per problem from 4 samples each: a mean of fractions, normal interval
    he = task_stats("humaneval", [{"passed": [True, False, False, False]}, {"passed": [True] * 4}], {"pass@1": 0.625})
    assert he["pass@1"]["mean"] == pytest.approx(0.625) and he["pass@1"]["interval"] == "normal"
    assert drop_p_value(0.5, 0.01, 0.5, 0.01) == pytest.approx(0.5)


def test_a_named_base_model_report_is_the_baseline_drops_are_measured_against(lineage, tmp_path):
    """`baseline_report=<dir>` (a Hub base model's report, outside the lineage) replaces the
    inherited baseline: a fine-tune that keeps its parent's score but sits well below the named
    base model fails against it, and the same fine-tune passes without that baseline."""
    from lmforge.eval.runner import _comparisons

    pre, sft, _ = lineage
    base_model = _ckpt(tmp_path / "hub" / "model.ckpt", "pretrain", None)
    write_report(tmp_path / "r_hub", _report(base_model, _with(mmlu__acc=(0.450, 14042))))
    write_report(tmp_path / "r_pre", _report(pre, _with(mmlu__acc=(0.300, 14042))))
    cfg = {"ckpt": str(sft), "parent_report": str(tmp_path / "r_pre")}
    inherited = _comparisons(cfg, {}, checkpoint_lineage(sft))
    named = _comparisons({**cfg, "baseline_report": str(tmp_path / "r_hub")}, {}, checkpoint_lineage(sft))
    assert inherited["baseline"]["report"] == str(tmp_path / "r_pre")  # the lineage's root by default
    assert named["baseline"]["report"] == str(tmp_path / "r_hub") and named["baseline"]["named"]
    assert named["baseline"]["checkpoint_sha256"] == checkpoint_sha256(base_model)[1]
    assert named["parent"]["report"] == str(tmp_path / "r_pre")
    child = _with(mmlu__acc=(0.300, 14042))
    assert evaluate_release(_report(sft, child, **inherited), POLICY).passed
    verdict = evaluate_release(_report(sft, child, **named), POLICY)
    assert not verdict.passed
    assert [(c.metric, c.against) for c in verdict.checks if not c.passed] == [("mmlu.acc", "baseline")]


def test_the_suite_hash_changes_with_options_data_and_limit_but_not_the_path(tmp_path):
    """What a report is bound to besides the checkpoint: the suite's options, its data's content
    (not where it lies) and the global limit."""
    from lmforge.eval.binding import suite_sha256

    data = tmp_path / "a" / "test.jsonl"
    data.parent.mkdir()
    data.write_text('{"q": 1}\n')
    moved = tmp_path / "b" / "test.jsonl"
    moved.parent.mkdir()
    moved.write_text(data.read_text())
    base = suite_sha256({"gsm8k": {"path": str(data), "num_fewshot": 5}}, {}, None)
    assert suite_sha256({"gsm8k": {"path": str(moved), "num_fewshot": 5}}, {}, None) == base
    assert suite_sha256({"gsm8k": {"path": str(data), "num_fewshot": 1}}, {}, None) != base
    assert suite_sha256({"gsm8k": {"path": str(data), "num_fewshot": 5}}, {}, 12) != base
    moved.write_text('{"q": 2}\n')
    assert suite_sha256({"gsm8k": {"path": str(moved), "num_fewshot": 5}}, {}, None) != base
