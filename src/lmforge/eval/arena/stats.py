"""Statistics of arena votes: head-to-head (win rate + Wilson CI, one-sided sign test, ties
and both-bad reported) and Bradley-Terry with bootstrap CIs when more than two models."""

from __future__ import annotations

from lmforge.eval.metrics import bradley_terry_bootstrap, summarize_pairwise


def head_to_head(votes: list[dict], new: str, baseline: str, alpha: float = 0.05) -> dict:
    wins = losses = ties = both_bad = 0
    for v in votes:
        if {v["model_a"], v["model_b"]} != {new, baseline}:
            continue
        if v["outcome"] in ("tie", "both_bad"):
            ties += v["outcome"] == "tie"
            both_bad += v["outcome"] == "both_bad"
            continue
        winner = v["model_a"] if v["outcome"] == "a" else v["model_b"]
        wins += winner == new
        losses += winner == baseline
    return {"new": new, "baseline": baseline, **summarize_pairwise(wins, losses, ties, both_bad, alpha).to_dict()}


def comparisons(votes: list[dict]) -> list[tuple[str, str, float]]:
    """(model_a, model_b, score of a) per vote; ties count half, both-bad is skipped (no preference)."""
    score = {"a": 1.0, "b": 0.0, "tie": 0.5}
    return [(v["model_a"], v["model_b"], score[v["outcome"]]) for v in votes if v["outcome"] in score]


def arena_stats(
    votes: list[dict],
    models: list[str],
    new: str | None = None,
    baseline: str | None = None,
    alpha: float = 0.05,
    bootstrap_rounds: int = 200,
    seed: int = 0,
) -> dict:
    out: dict = {"n_votes": len(votes), "annotators": len({v["annotator"] for v in votes}), "alpha": alpha}
    if new and baseline:
        out["head_to_head"] = head_to_head(votes, new, baseline, alpha)
    if len(models) > 2:
        out["bradley_terry"] = bradley_terry_bootstrap(comparisons(votes), bootstrap_rounds, alpha, seed)
    return out
