"""Scoring functions shared by the benchmarks and the arena: pass@k, answer extraction,
exact match, and the statistics of pairwise human votes.

Everything here is pure Python (no torch), so the arena server and the gate import it cheaply.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

# ----------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 (arXiv:2107.03374, eq. 1): 1 - C(n-c, k) / C(n, k).

    Evaluated as a running product so that n=200 does not overflow floats.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass_at_k needs k <= n samples, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


# ----------------------------------------------------------------------------- GSM8K extraction

INVALID = "[invalid]"
# The two GSM8K answer extractors lm-evaluation-harness reports (tasks/gsm8k/gsm8k.yaml):
# "strict" wants the dataset's own "#### N" line; "flexible" takes the last number-like run.
STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# Normalisation applied to both prediction and reference before comparing.
IGNORE_PATTERNS = (",", r"\$", r"(?s).*#### ", r"\.$")


def _pick(matches: list, index: int) -> str:
    if not matches:
        return INVALID
    match = matches[index]
    if isinstance(match, tuple):  # alternation: keep the group that matched
        groups = [g for g in match if g]
        match = groups[0] if groups else INVALID
    return match.strip()


def extract_strict(text: str) -> str:
    """First `#### N` answer in `text`, or "[invalid]"."""
    return _pick(STRICT_PATTERN.findall(text), 0)


def extract_flexible(text: str) -> str:
    """Last number-like token in `text`, or "[invalid]"."""
    return _pick(FLEXIBLE_PATTERN.findall(text), -1)


def normalize_answer(text: str) -> str:
    """GSM8K exact-match form, as lm-eval's harness computes it (strip IGNORE_PATTERNS, lower-case).
    Not `lmforge.data.tasks.canonical_answer`, which compares generated tasks' numbers by value."""
    for pattern in IGNORE_PATTERNS:
        text = re.sub(pattern, "", text)
    return text.lower()


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


# ----------------------------------------------------------------------------- vote statistics


def wilson_interval(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) for a binomial proportion, two-sided level 1-alpha."""
    if trials == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def sign_test_one_sided(wins: int, losses: int) -> float:
    """P(X >= wins) for X ~ Binomial(wins + losses, 1/2): the exact one-sided sign test of
    "the new model is preferred" on decisive votes (ties and both-bad are excluded)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def mean_interval(values: Sequence[float], alpha: float = 0.05) -> dict[str, float | int | list[float] | str]:
    """A per-item metric's mean with its standard error and a two-sided 1-alpha interval.

    0/1 items get the Wilson interval (honest near 0 and 1, where most refusal and pass rates
    sit); other items (pass@k per problem, judge scores) the normal interval of the mean.
    """
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "stderr": float("nan"), "ci": [float("nan")] * 2, "interval": "none"}
    mean = sum(values) / n
    if all(v in (0.0, 1.0) for v in values):
        low, high = wilson_interval(round(mean * n), n, alpha)
        return {
            "n": n,
            "mean": mean,
            "stderr": math.sqrt(mean * (1 - mean) / n),
            "ci": [low, high],
            "interval": "wilson",
        }
    variance = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    stderr = math.sqrt(variance / n)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return {"n": n, "mean": mean, "stderr": stderr, "ci": [mean - z * stderr, mean + z * stderr], "interval": "normal"}


def drop_p_value(reference_mean: float, reference_stderr: float, mean: float, stderr: float) -> float:
    """One-sided p-value of "the metric fell" (reference - mean > 0), by a two-sample z test on
    independent means (unpaired: conservative when both runs scored the same items)."""
    drop = reference_mean - mean
    se = math.sqrt(reference_stderr**2 + stderr**2)
    if se == 0:
        return 0.0 if drop > 0 else 1.0
    return 1.0 - NormalDist().cdf(drop / se)


@dataclass
class PairwiseSummary:
    wins: int
    losses: int
    ties: int
    both_bad: int
    win_rate: float  # wins / decisive votes
    win_rate_ci: tuple[float, float]
    p_value: float
    alpha: float
    wins_statistically: bool

    def to_dict(self) -> dict:
        return {**self.__dict__, "win_rate_ci": list(self.win_rate_ci)}


def summarize_pairwise(wins: int, losses: int, ties: int, both_bad: int, alpha: float = 0.05) -> PairwiseSummary:
    decisive = wins + losses
    p_value = sign_test_one_sided(wins, losses)
    return PairwiseSummary(
        wins=wins,
        losses=losses,
        ties=ties,
        both_bad=both_bad,
        win_rate=wins / decisive if decisive else float("nan"),
        win_rate_ci=wilson_interval(wins, decisive, alpha),
        p_value=p_value,
        alpha=alpha,
        wins_statistically=p_value < alpha and wins > losses,
    )


def bradley_terry(
    comparisons: Sequence[tuple[str, str, float]], iterations: int = 2000, tol: float = 1e-10
) -> dict[str, float]:
    """Bradley-Terry strengths by Hunter's (2004) MM algorithm.

    `comparisons` are (model_i, model_j, score_i) with score_i 1 (i won), 0 (j won) or 0.5 (tie).
    Returns log-strengths centred to mean zero (only differences are identified).
    """
    models = sorted({m for a, b, _ in comparisons for m in (a, b)})
    wins = {m: 0.0 for m in models}
    games: dict[tuple[str, str], float] = {}
    for a, b, score in comparisons:
        wins[a] += score
        wins[b] += 1.0 - score
        key = (a, b) if a < b else (b, a)
        games[key] = games.get(key, 0.0) + 1.0
    # A model with zero (or all) wins has an infinite MLE; a tiny pseudo-count keeps it finite.
    wins = {m: w + 1e-3 for m, w in wins.items()}
    strength = {m: 1.0 for m in models}
    for _ in range(iterations):
        new = {}
        for m in models:
            denom = 0.0
            for (a, b), n in games.items():
                if m in (a, b):
                    other = b if m == a else a
                    denom += n / (strength[m] + strength[other])
            new[m] = wins[m] / denom if denom else strength[m]
        geo = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        new = {m: v / geo for m, v in new.items()}
        delta = max(abs(new[m] - strength[m]) for m in models)
        strength = new
        if delta < tol:
            break
    return {m: math.log(v) for m, v in strength.items()}


def bradley_terry_bootstrap(
    comparisons: Sequence[tuple[str, str, float]], rounds: int = 200, alpha: float = 0.05, seed: int = 0
) -> dict[str, dict[str, float]]:
    """BT scores with percentile bootstrap intervals (votes resampled with replacement)."""
    point = bradley_terry(comparisons)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {m: [] for m in point}
    for _ in range(rounds):
        resampled = [comparisons[rng.randrange(len(comparisons))] for _ in comparisons]
        scores = bradley_terry(resampled, iterations=500, tol=1e-8)
        for m in point:
            samples[m].append(scores.get(m, 0.0))
    out = {}
    for m, values in samples.items():
        values.sort()
        lo = values[int(math.floor(alpha / 2 * (len(values) - 1)))]
        hi = values[int(math.ceil((1 - alpha / 2) * (len(values) - 1)))]
        out[m] = {"score": point[m], "ci_low": lo, "ci_high": hi}
    return out
