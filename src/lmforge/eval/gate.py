"""Release gate: thresholds from conf/eval/gate.yaml checked against an evaluation report and
its parent checkpoint's report. Evaluation writes the verdict into report.json; export calls
`gate_verdict(report_dir)` and refuses a failed checkpoint unless forced."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.formats.eval_report import read_report


class GateFailedError(RuntimeError):
    """Raised when a checkpoint fails the release gate; the message names each failed check."""


@dataclass
class Check:
    metric: str  # "task.metric"
    rule: str  # "min" | "max" | "max_drop" | "present"
    threshold: float | None
    value: float | None
    parent_value: float | None = None
    passed: bool = True
    reason: str = ""


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        return cls(data["passed"], list(data.get("reasons", [])), [Check(**c) for c in data.get("checks", [])])

    def raise_if_failed(self, what: str = "checkpoint") -> None:
        if not self.passed:
            raise GateFailedError(f"{what} failed the release gate: " + "; ".join(self.reasons))


def _lookup(metrics: dict, dotted: str) -> float | None:
    task, _, metric = dotted.partition(".")
    value = metrics.get(task, {}).get(metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def evaluate_gate(metrics: dict, gate: dict[str, Any], parent_metrics: dict | None = None) -> Verdict:
    """metrics / parent_metrics: {task: {metric: value}}. gate: {min: {...}, max: {...},
    max_drop: {...}, require_parent: bool}. A metric the gate names but the run did not
    produce fails the check (a gate must not pass by omission)."""
    checks: list[Check] = []
    for rule in ("min", "max"):
        for name, threshold in (gate.get(rule) or {}).items():
            value = _lookup(metrics, name)
            check = Check(name, rule, float(threshold), value)
            if value is None:
                check.passed, check.reason = False, f"{name} missing from the report (gate {rule} {threshold})"
            elif (rule == "min" and value < threshold) or (rule == "max" and value > threshold):
                check.passed = False
                word = "below minimum" if rule == "min" else "above maximum"
                check.reason = f"{name}={value:.4f} {word} {threshold}"
            checks.append(check)
    drops = gate.get("max_drop") or {}
    if parent_metrics is None:
        if drops and gate.get("require_parent", False):
            checks.append(
                Check(
                    "parent",
                    "present",
                    None,
                    None,
                    passed=False,
                    reason="gate.require_parent is set but no parent report was given",
                )
            )
    else:
        for name, allowed in drops.items():
            value, parent = _lookup(metrics, name), _lookup(parent_metrics, name)
            check = Check(name, "max_drop", float(allowed), value, parent)
            if parent is None:
                check.reason = f"{name} not in the parent report; drop not checked"
            elif value is None:
                check.passed, check.reason = False, f"{name} missing from the report (parent had {parent:.4f})"
            elif parent - value > allowed:
                check.passed = False
                check.reason = (
                    f"{name} dropped {parent - value:.4f} vs parent ({parent:.4f} -> {value:.4f}), allowed {allowed}"
                )
            checks.append(check)
    reasons = [c.reason for c in checks if not c.passed]
    return Verdict(not reasons, reasons, checks)


def gate_verdict(report_dir: str | Path) -> Verdict:
    """The verdict evaluation wrote into `report_dir/report.json`. A report without one fails."""
    report = read_report(report_dir)
    if "gate" not in report or report["gate"] is None:
        return Verdict(False, [f"{report_dir}: report has no gate verdict (evaluation ran with gate disabled)"])
    return Verdict.from_dict(report["gate"])
