"""Each stage's claim, tested item by item against its parent on the held-out generated tasks.

| stage | claim                                   | outcome per item        | alpha |
|-------|-----------------------------------------|-------------------------|-------|
| sft   | answers in the format, and correctly    | formatted, correct      | 0.05  |
| dpo   | prefers chosen over rejected more       | chosen - rejected logp  | 0.05  |
| rl    | more verifiable answers right           | correct                 | 0.01  |

The task reports come from scripts/eval_tasks.py, which scores every checkpoint on the same items in
the same order and records their prompt hashes; a claim whose items do not line up, or whose
checkpoint is missing, is reported as untested with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.significance import PairedResult, paired_binary, paired_continuous

RL_ALPHA = 0.01  # the bar for the RL claim
ALPHA = 0.05


@dataclass(frozen=True)
class Claim:
    stage: str
    parent: str
    metric: str  # key in the task report's `items`, or "pair_margins"
    alpha: float
    what: str


CLAIMS = (
    Claim("sft", "pretrain", "formatted", ALPHA, "answer format rate"),
    Claim("sft", "pretrain", "correct", ALPHA, "held-out task accuracy"),
    Claim("dpo", "sft", "pair_margins", ALPHA, "chosen - rejected log-prob margin"),
    Claim("rl", "dpo", "correct", RL_ALPHA, "verifiable accuracy"),
)


def _outcomes(report: dict, metric: str) -> list | None:
    if metric == "pair_margins":
        return report.get("pair_margins")
    return (report.get("items") or {}).get(metric)


def check_claim(claim: Claim, tasks: dict[str, dict | None]) -> tuple[PairedResult | None, str]:
    """(result, "") or (None, why it could not be tested)."""
    parent, child = tasks.get(claim.parent), tasks.get(claim.stage)
    if not parent or not child:
        missing = claim.parent if not parent else claim.stage
        return None, f"no task report for {missing}"
    before, after = _outcomes(parent, claim.metric), _outcomes(child, claim.metric)
    if before is None or after is None:
        return None, "the task report has no per-item outcomes (older scripts/eval_tasks.py)"
    ids_a = (parent.get("items") or {}).get("task_id")
    ids_b = (child.get("items") or {}).get("task_id")
    if ids_a != ids_b or len(before) != len(after):
        return None, "the two checkpoints were scored on different items"
    if claim.metric == "pair_margins":
        return paired_continuous(claim.what, before, after, claim.alpha), ""
    return paired_binary(claim.what, before, after, claim.alpha), ""


def check_all(tasks: dict[str, dict | None]) -> list[dict]:
    """One row per claim: stage, parent, the PairedResult fields or `untested` with the reason."""
    rows = []
    for claim in CLAIMS:
        result, why = check_claim(claim, tasks)
        row = {"stage": claim.stage, "parent": claim.parent, "metric": claim.what, "alpha": claim.alpha}
        row.update(result.to_dict() if result else {"verdict": "untested", "reason": why})
        rows.append(row)
    return rows


def markdown_rows(rows: list[dict]) -> list[str]:
    lines = [
        "| stage | vs | metric | n | parent | stage | gain [95% CI] | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["verdict"] == "untested":
            lines.append(
                f"| {r['stage']} | {r['parent']} | {r['metric']} | - | - | - | - | - | untested: {r['reason']} |"
            )
            continue
        verdict = r["verdict"] if r["verdict"] == "significant gain" else f"**{r['verdict']}**"
        lines.append(
            f"| {r['stage']} | {r['parent']} | {r['metric']} | {r['n']} | {r['before']:.3f} | {r['after']:.3f} | "
            f"{r['gain']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['p']:.2g} | "
            f"{verdict} (alpha {r['alpha']}) |"
        )
    return lines
