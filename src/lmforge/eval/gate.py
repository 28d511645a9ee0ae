"""Release gate: an evaluation report checked against the release policy (conf/release_policy.yaml).

Evaluation writes a verdict into report.json for people to read. Export does not trust it: it
calls `release_verdict(report_dir, checkpoint_sha256)`, which checks that the report scored this
very checkpoint and was not edited, reads the policy file itself and decides again from the
report's per-metric statistics. Every rule is in `evaluate_release`:

- each metric the policy requires is present, and measured on at least `min_n` items
  ("insufficient n" fails: the gate does not decide on noise);
- `min` / `max` on the point estimate, and `min_after_alignment` once any checkpoint of the
  lineage went through an alignment stage;
- `max_drop` against the direct parent AND against the fixed baseline (the lineage's first
  checkpoint or a named base model), so small drops cannot accumulate stage after stage. A drop
  fails when it is larger than `max_drop` and significant at the policy's `alpha`;
- a checkpoint whose lineage names a parent must be compared with that parent's report and with
  a baseline: leaving out `parent_report` is a failure, not a skip.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.eval.binding import report_digest
from lmforge.eval.metrics import drop_p_value
from lmforge.eval.release_policy import ReleasePolicy, load_policy
from lmforge.formats.eval_report import read_report


class GateFailedError(RuntimeError):
    """Raised when a checkpoint fails the release gate; the message names each failed check."""


@dataclass
class Check:
    metric: str  # "task.metric", or what a structural check is about ("binding", "lineage.parent")
    rule: str  # min | max | min_after_alignment | max_drop | min_n | present | binding
    threshold: float | None
    value: float | None
    parent_value: float | None = None  # the compared report's value (max_drop)
    passed: bool = True
    reason: str = ""
    against: str | None = None  # parent | baseline (max_drop)
    n: int | None = None
    p_value: float | None = None


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)  # path + sha256 of the policy decided under

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "checks": [asdict(c) for c in self.checks],
            "policy": self.policy,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        checks = [Check(**c) for c in data.get("checks", [])]
        return cls(data["passed"], list(data.get("reasons", [])), checks, dict(data.get("policy") or {}))

    def raise_if_failed(self, what: str = "checkpoint") -> None:
        if not self.passed:
            raise GateFailedError(f"{what} failed the release gate: " + "; ".join(self.reasons))


def _lookup(tree: dict | None, dotted: str) -> Any:
    task, _, metric = dotted.partition(".")
    value = ((tree or {}).get(task) or {}).get(metric)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _fail(metric: str, rule: str, reason: str, **kw) -> Check:
    return Check(metric, rule, kw.pop("threshold", None), kw.pop("value", None), passed=False, reason=reason, **kw)


def _drop_check(name: str, rule, policy: ReleasePolicy, against: str, mine: dict, other: dict) -> Check:
    theirs = _lookup(other.get("stats"), name)
    if theirs is None:
        return _fail(name, "max_drop", f"{name}: the {against} report ({other['report']}) lacks it", against=against)
    if theirs["n"] < rule.min_n:
        return _fail(
            name,
            "max_drop",
            f"{name}: insufficient n in the {against} report ({theirs['n']} items, policy minimum {rule.min_n})",
            against=against,
            n=theirs["n"],
        )
    drop = theirs["mean"] - mine["mean"]
    p = drop_p_value(theirs["mean"], theirs["stderr"], mine["mean"], mine["stderr"])
    check = Check(name, "max_drop", rule.max_drop, mine["mean"], theirs["mean"], against=against, n=mine["n"])
    check.p_value = p
    if drop > rule.max_drop and p < policy.alpha:
        check.passed = False
        check.reason = (
            f"{name} dropped {drop:.4f} vs {against} ({theirs['mean']:.4f} -> {mine['mean']:.4f}), allowed "
            f"{rule.max_drop}; significant (p={p:.2g} < {policy.alpha})"
        )
    elif drop > rule.max_drop:
        check.reason = f"{name} dropped {drop:.4f} vs {against} but not significantly (p={p:.2g})"
    return check


def evaluate_release(report: dict, policy: ReleasePolicy) -> Verdict:
    """The policy's verdict on `report` (its metrics, stats, lineage and comparisons)."""
    checks: list[Check] = []
    if not (report.get("binding") or {}).get("checkpoint_sha256"):
        checks.append(
            _fail(
                "binding",
                "binding",
                "the report is bound to no checkpoint (a random-init smoke run, or written by hand)",
            )
        )
    lineage = report.get("lineage") or []
    comparisons = report.get("comparisons") or {}
    parent, baseline = comparisons.get("parent"), comparisons.get("baseline")
    has_parent = len(lineage) > 1
    if any(step.get("missing") for step in lineage):
        missing = next(step["path"] for step in lineage if step.get("missing"))
        checks.append(_fail("lineage", "present", f"lineage broken: ancestor {missing} no longer exists"))
    if has_parent and policy.require_parent and parent is None:
        checks.append(
            _fail(
                "lineage.parent",
                "present",
                f"no parent report: the checkpoint's parent is {lineage[-2]['path']}; "
                "evaluate with parent_report=<the parent's eval dir>",
            )
        )
    if has_parent and policy.require_baseline and baseline is None:
        checks.append(
            _fail(
                "lineage.baseline",
                "present",
                "no baseline report (the lineage's first checkpoint or baseline_report=<named base model's eval>)",
            )
        )
    stages = [step.get("stage") for step in lineage] or [report.get("stage")]
    aligned = [s for s in stages if s in policy.alignment_stages]
    # The baseline is the parent when the parent is the lineage's first checkpoint: check once.
    same = baseline and parent and baseline.get("checkpoint_sha256") == parent.get("checkpoint_sha256")
    comparators = [("parent", parent)] + ([] if same else [("baseline", baseline)])
    for name, rule in policy.metrics.items():
        value, stats = _lookup(report.get("metrics"), name), _lookup(report.get("stats"), name)
        if value is None:
            if rule.required:
                checks.append(_fail(name, "present", f"{name} missing from the report (required by the policy)"))
            else:
                checks.append(Check(name, "present", None, None, reason=f"{name} not run (optional in the policy)"))
            continue
        n = stats["n"] if stats else 0
        if n < rule.min_n:
            checks.append(
                _fail(
                    name,
                    "min_n",
                    f"{name}: insufficient n ({n} items, policy minimum {rule.min_n})",
                    threshold=rule.min_n,
                    value=value,
                    n=n,
                )
            )
            continue
        floors = [("min", rule.min), ("max", rule.max)]
        if aligned:
            floors.append(("min_after_alignment", rule.min_after_alignment))
        for kind, threshold in floors:
            if threshold is None:
                continue
            check = Check(name, kind, float(threshold), value, n=n)
            if (kind == "max" and value > threshold) or (kind != "max" and value < threshold):
                word = "above maximum" if kind == "max" else "below minimum"
                after = f" (after {', '.join(aligned)})" if kind == "min_after_alignment" else ""
                check.passed, check.reason = False, f"{name}={value:.4f} {word} {threshold}{after}"
            checks.append(check)
        if rule.max_drop is not None:
            for against, other in comparators:
                if other is not None:
                    checks.append(_drop_check(name, rule, policy, against, stats, other))
    reasons = [c.reason for c in checks if not c.passed]
    return Verdict(not reasons, reasons, checks, {"path": policy.path, "sha256": policy.sha256})


def release_verdict(
    report_dir: str | Path, checkpoint_sha256: str, policy: ReleasePolicy | str | Path | None = None
) -> tuple[Verdict, dict]:
    """Export's decision: `report_dir` must have scored the checkpoint whose content hash is
    `checkpoint_sha256`, be unedited, and pass `policy` (default conf/release_policy.yaml, read now).
    Returns the verdict and the report (for the record)."""
    report = read_report(report_dir)
    policy = policy if isinstance(policy, ReleasePolicy) else load_policy(policy)
    verdict = evaluate_release(report, policy)
    binding = report.get("binding") or {}
    bound = binding.get("checkpoint_sha256")
    if bound and bound != checkpoint_sha256:
        verdict.checks.insert(
            0,
            _fail(
                "binding",
                "binding",
                f"{report_dir} scored another checkpoint (sha256 {bound[:12]}..., this one is {checkpoint_sha256[:12]}...)",
            ),
        )
    if bound and binding.get("digest") != report_digest(report):
        verdict.checks.insert(0, _fail("binding", "binding", f"{report_dir}: report.json was edited after evaluation"))
    verdict.reasons = [c.reason for c in verdict.checks if not c.passed]
    verdict.passed = not verdict.reasons
    return verdict, report


def gate_verdict(report_dir: str | Path) -> Verdict:
    """The verdict evaluation wrote into `report_dir/report.json` (for display; export decides
    again with `release_verdict`). A report without one fails."""
    report = read_report(report_dir)
    if "gate" not in report or report["gate"] is None:
        return Verdict(False, [f"{report_dir}: report has no gate verdict (evaluation ran with gate disabled)"])
    return Verdict.from_dict(report["gate"])
