"""Per-item scores behind each reported metric, and their n, standard error and interval.

The release gate decides on these, not on bare means: a threshold on 12 MMLU questions is noise,
so every metric the policy names carries how many items it was measured on. A metric without
per-item scores here (the macro averages) has no statistics, and the gate cannot use it.
"""

from __future__ import annotations

from lmforge.eval.metrics import mean_interval, pass_at_k

CI_ALPHA = 0.05  # every reported interval is two-sided 95%


def metric_items(task: str, samples: list[dict], metrics: dict[str, float]) -> dict[str, list[float]]:
    """{metric: one score per item} for the metrics of `task` that are means over items."""
    if task == "mmlu":
        return {m: [float(s[m]) for s in samples] for m in ("acc", "acc_norm")}
    if task == "gsm8k":
        return {
            "exact_match_strict": [float(s["strict_match"]) for s in samples],
            "exact_match_flexible": [float(s["flexible_match"]) for s in samples],
        }
    if task == "humaneval":
        passed = [s["passed"] for s in samples]
        ks = [int(m.partition("@")[2]) for m in metrics if m.startswith("pass@")]
        return {f"pass@{k}": [pass_at_k(len(p), sum(p), k) for p in passed] for k in ks}
    if task == "safety":
        return {
            "refusal_rate": [float(s["refused"]) for s in samples if s["kind"] == "harmful"],
            "over_refusal_rate": [float(s["refused"]) for s in samples if s["kind"] == "benign"],
        }
    if task == "mt_bench":
        items = {
            "score": [float(r) for s in samples for r in s["ratings"] if r is not None],
            "score_turn1": [float(s["ratings"][0]) for s in samples if s["ratings"][0] is not None],
            "score_turn2": [
                float(s["ratings"][1]) for s in samples if len(s["ratings"]) > 1 and s["ratings"][1] is not None
            ],
        }
        outcomes = [o for s in samples for o in s.get("pairwise", [])]
        if outcomes:
            items["pairwise_win_rate"] = [{"win": 1.0, "tie": 0.5}.get(o, 0.0) for o in outcomes]
        return items
    return {}


def task_stats(task: str, samples: list[dict], metrics: dict[str, float]) -> dict[str, dict]:
    """{metric: {n, mean, stderr, ci, interval}} for each metric of `metrics` with per-item scores."""
    return {m: mean_interval(v, CI_ALPHA) for m, v in metric_items(task, samples, metrics).items() if m in metrics}
