"""Export refuses by default: each way around the release gate of issue #16 is refused here,
and the two explicit ways to export anyway (gate=skip, force=true) are recorded in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.eval.binding import checkpoint_lineage, checkpoint_sha256, report_digest
from lmforge.eval.metrics import mean_interval
from lmforge.formats.eval_report import write_report
from serving.export import ExportConfig, GateRefusedError, run_export

PASSING = {
    "mmlu.acc": (0.40, 14042),
    "gsm8k.exact_match_flexible": (0.20, 1319),
    "humaneval.pass@1": (0.10, 164),
    "safety.refusal_rate": (0.92, 25),
    "safety.over_refusal_rate": (0.08, 25),
}


def _bound_report(directory: Path, ckpt: Path, rates: dict, gate_passed: bool = True) -> Path:
    """A report as `run_suite` binds it to `ckpt` (the fixture is a lineage root)."""
    metrics, stats = {}, {}
    for name, (rate, n) in rates.items():
        task, metric = name.split(".", 1)
        k = round(rate * n)
        metrics.setdefault(task, {})[metric] = rate
        stats.setdefault(task, {})[metric] = mean_interval([1.0] * k + [0.0] * (n - k))
    resolved, sha = checkpoint_sha256(ckpt)
    report = {
        "checkpoint": str(ckpt),
        "stage": "hf",
        "suite": "release",
        "metrics": metrics,
        "stats": stats,
        "lineage": checkpoint_lineage(ckpt)[-1:],
        "comparisons": {"parent": None, "baseline": None},
        "binding": {"checkpoint_file": str(resolved), "checkpoint_sha256": sha, "suite_sha256": "s"},
        "gate": {"passed": gate_passed, "reasons": [], "checks": []},  # what eval wrote; export ignores it
    }
    report["binding"]["digest"] = report_digest(report)
    directory.mkdir(parents=True, exist_ok=True)
    write_report(directory, report)
    return directory


def _cfg(ckpt, tmp_path, **kw) -> ExportConfig:
    return ExportConfig(ckpt=str(ckpt), out=str(tmp_path / "out"), report=False, **kw)


def _gate(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["release_gate"]


def test_no_gate_report_is_refused_by_default(memorised_checkpoint, tmp_path):
    with pytest.raises(GateRefusedError, match="no gate_report"):
        run_export(_cfg(memorised_checkpoint.path, tmp_path))
    assert not (tmp_path / "out").exists()


def test_gate_skip_exports_and_records_the_reason(memorised_checkpoint, tmp_path):
    out = run_export(_cfg(memorised_checkpoint.path, tmp_path, gate="skip", gate_reason="smoke export"))
    gate = _gate(out)
    assert gate["skipped"] is True and gate["by"] == "gate=skip" and gate["reason"] == "smoke export"
    assert gate["checkpoint_sha256"] == checkpoint_sha256(memorised_checkpoint.path)[1]
    with pytest.raises(ValueError, match="gate='maybe'"):
        run_export(_cfg(memorised_checkpoint.path, tmp_path, gate="maybe"))


def test_a_passing_report_of_this_checkpoint_exports(memorised_checkpoint, tmp_path):
    report = _bound_report(tmp_path / "eval", memorised_checkpoint.path, PASSING)
    out = run_export(_cfg(memorised_checkpoint.path, tmp_path, gate_report=str(report)))
    gate = _gate(out)
    assert gate["checked"] and gate["passed"] and not gate["forced"]
    assert gate["checkpoint_sha256"] == gate["report_checkpoint_sha256"]
    assert gate["policy"]["path"].endswith("conf/release_policy.yaml") and len(gate["policy"]["sha256"]) == 64


def test_another_checkpoints_passing_report_is_refused(memorised_checkpoint, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for file in memorised_checkpoint.path.iterdir():  # same model, one weight file byte changed
        (other / file.name).write_bytes(file.read_bytes())
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    report = _bound_report(tmp_path / "eval", other, PASSING)
    with pytest.raises(GateRefusedError, match="scored another checkpoint"):
        run_export(_cfg(memorised_checkpoint.path, tmp_path, gate_report=str(report)))


def test_a_report_whose_own_verdict_passed_is_decided_again_from_the_policy(memorised_checkpoint, tmp_path):
    """Thresholds relaxed at eval time (the report says PASS) do not reach export: 12 MMLU items."""
    rates = dict(PASSING, **{"mmlu.acc": (0.5, 12)})
    report = _bound_report(tmp_path / "eval", memorised_checkpoint.path, rates, gate_passed=True)
    with pytest.raises(GateRefusedError, match=r"mmlu.acc: insufficient n \(12 items"):
        run_export(_cfg(memorised_checkpoint.path, tmp_path, gate_report=str(report)))


def test_an_edited_report_is_refused(memorised_checkpoint, tmp_path):
    report = _bound_report(tmp_path / "eval", memorised_checkpoint.path, dict(PASSING, **{"mmlu.acc": (0.5, 12)}))
    data = json.loads((report / "report.json").read_text())
    data["stats"]["mmlu"]["acc"]["n"] = 14042  # "fix" the sample size by hand
    (report / "report.json").write_text(json.dumps(data))
    with pytest.raises(GateRefusedError, match="edited after evaluation"):
        run_export(_cfg(memorised_checkpoint.path, tmp_path, gate_report=str(report)))


def test_the_export_time_policy_file_decides(memorised_checkpoint, tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text("metrics:\n  mmlu.acc: {min_n: 1000, min: 0.9}\n")
    report = _bound_report(tmp_path / "eval", memorised_checkpoint.path, PASSING)
    with pytest.raises(GateRefusedError, match="mmlu.acc=0.4000 below minimum 0.9"):
        run_export(_cfg(memorised_checkpoint.path, tmp_path, gate_report=str(report), release_policy=str(strict)))


def test_force_exports_a_failed_checkpoint_and_records_it(memorised_checkpoint, tmp_path):
    report = _bound_report(tmp_path / "eval", memorised_checkpoint.path, dict(PASSING, **{"mmlu.acc": (0.5, 12)}))
    cfg = _cfg(memorised_checkpoint.path, tmp_path, gate_report=str(report), force=True, gate_reason="hotfix")
    gate = _gate(run_export(cfg))
    assert gate["forced"] is True and gate["passed"] is False and gate["reason"] == "hotfix"
    assert any("insufficient n" in r for r in gate["reasons"])


def test_force_without_a_report_exports_as_a_recorded_skip_and_the_lineage_says_so(memorised_checkpoint, tmp_path):
    """force=true with no gate_report is a skip by another name: recorded as such, never as passed.
    `gate_summary` is the word the W&B export artifact's lineage carries."""
    from serving.export import gate_summary

    gate = _gate(run_export(_cfg(memorised_checkpoint.path, tmp_path, force=True, gate_reason="bring-up")))
    assert gate["skipped"] is True and gate["by"] == "force=true" and gate["reason"] == "bring-up"
    assert gate["checked"] is False and "passed" not in gate
    assert gate_summary(gate) == "skipped"
    report = _bound_report(tmp_path / "eval", memorised_checkpoint.path, dict(PASSING, **{"mmlu.acc": (0.5, 12)}))
    forced = _gate(run_export(_cfg(memorised_checkpoint.path, tmp_path / "f", gate_report=str(report), force=True)))
    assert gate_summary(forced) == "forced"
    passing = _bound_report(tmp_path / "eval_ok", memorised_checkpoint.path, PASSING)
    assert (
        gate_summary(_gate(run_export(_cfg(memorised_checkpoint.path, tmp_path / "p", gate_report=str(passing)))))
        == "passed"
    )


def test_gate_skip_with_a_report_records_what_the_gate_would_have_said(memorised_checkpoint, tmp_path):
    """The main job's export: skipped explicitly, with the final report's verdict kept for the record."""
    report = _bound_report(tmp_path / "eval", memorised_checkpoint.path, dict(PASSING, **{"mmlu.acc": (0.5, 12)}))
    cfg = _cfg(memorised_checkpoint.path, tmp_path, gate_report=str(report), gate="skip", gate_reason="tiny demo")
    gate = _gate(run_export(cfg))
    assert gate["skipped"] and gate["would_pass"] is False and gate["reason"] == "tiny demo"
    assert any("insufficient n" in r for r in gate["reasons"])


def test_the_cli_refusal_is_one_line_and_a_nonzero_exit(memorised_checkpoint, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "serving.export", f"ckpt={memorised_checkpoint.path}", f"out={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "serving.export: no gate_report" in proc.stderr.splitlines()[-1]
