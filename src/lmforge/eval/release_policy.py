"""The release policy: the thresholds a checkpoint must meet to be exported (conf/release_policy.yaml).

Export reads this file itself when it decides (`lmforge.eval.gate.release_verdict`); thresholds
given on an eval command line never reach that decision. A policy file is small YAML:

    alpha: 0.05                      # one-sided level at which a drop counts as real
    alignment_stages: [dpo, rl, cai] # after any of these, `min_after_alignment` floors apply
    require_parent: true             # a checkpoint with a parent needs the parent's report
    require_baseline: true           # ... and the lineage's first checkpoint's (or a named base)
    metrics:
      mmlu.acc: {min_n: 1000, max_drop: 0.02}
      safety.refusal_rate: {min_n: 25, max_drop: 0.10, min_after_alignment: 0.80}

Per metric: `min_n` (items below which the gate refuses to decide: "insufficient n"), `max_drop`
(vs the parent and vs the baseline; fails only when the drop is also significant at `alpha`),
`min` / `max` (on the point estimate), `min_after_alignment`, and `required` (default true:
a metric the report lacks fails).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from lmforge.config_paths import conf_dir

POLICY_FILE = "release_policy.yaml"


class PolicyError(ValueError):
    """A release policy file that cannot be used; the message names the file and the key."""


@dataclass
class MetricRule:
    min_n: int
    required: bool = True
    max_drop: float | None = None
    min: float | None = None
    max: float | None = None
    min_after_alignment: float | None = None


@dataclass
class ReleasePolicy:
    path: str
    sha256: str
    alpha: float = 0.05
    alignment_stages: list[str] = field(default_factory=lambda: ["dpo", "rl", "cai"])
    require_parent: bool = True
    require_baseline: bool = True
    metrics: dict[str, MetricRule] = field(default_factory=dict)


def default_policy_path() -> Path:
    return conf_dir() / POLICY_FILE


def load_policy(path: str | Path | None = None) -> ReleasePolicy:
    """The policy at `path` (default conf/release_policy.yaml), checked key by key."""
    path = Path(path) if path else default_policy_path()
    if not path.is_file():
        raise PolicyError(f"release policy {path} does not exist")
    raw = path.read_bytes()
    data = yaml.safe_load(raw) or {}
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a release policy is a mapping")
    top = {f.name for f in fields(ReleasePolicy)} - {"path", "sha256"}
    unknown = sorted(set(data) - top)
    if unknown:
        raise PolicyError(f"{path}: unknown key(s) {unknown}; a policy has {sorted(top)}")
    alpha = data.get("alpha", 0.05)
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise PolicyError(f"{path}: alpha={alpha!r}; a one-sided level in (0, 0.5)")
    metrics = {}
    rule_keys = {f.name for f in fields(MetricRule)}
    for name, rule in (data.get("metrics") or {}).items():
        where = f"{path}: metrics.{name}"
        if "." not in str(name):
            raise PolicyError(f"{where}: metric names are <task>.<metric>, as in report.json")
        if not isinstance(rule, dict) or "min_n" not in rule:
            raise PolicyError(f"{where}: needs min_n (the fewest items the gate decides on)")
        bad = sorted(set(rule) - rule_keys)
        if bad:
            raise PolicyError(f"{where}: unknown key(s) {bad}; a metric rule has {sorted(rule_keys)}")
        if not isinstance(rule["min_n"], int) or rule["min_n"] < 1:
            raise PolicyError(f"{where}.min_n={rule['min_n']!r}; a positive item count")
        for key in ("max_drop", "min", "max", "min_after_alignment"):
            if rule.get(key) is not None and not isinstance(rule[key], (int, float)):
                raise PolicyError(f"{where}.{key}={rule[key]!r}; a number or null")
        metrics[str(name)] = MetricRule(**rule)
    if not metrics:
        raise PolicyError(f"{path}: names no metrics; a gate that checks nothing passes everything")
    return ReleasePolicy(
        path=str(path.resolve()),
        sha256=hashlib.sha256(raw).hexdigest(),
        alpha=float(alpha),
        alignment_stages=list(data.get("alignment_stages", ["dpo", "rl", "cai"])),
        require_parent=bool(data.get("require_parent", True)),
        require_baseline=bool(data.get("require_baseline", True)),
        metrics=metrics,
    )
