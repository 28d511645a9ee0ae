"""Paired tests behind the main job's "this stage moved its metric" claims.

Every checkpoint is scored on the same held-out items in the same order, so a stage's effect is
measured item by item against its parent:
- yes/no outcomes (correct, formatted): the exact sign test on the discordant pairs (McNemar's exact
  test), two-sided, with a Wilson interval for each rate;
- real-valued outcomes (preference margins): a sign test on the per-item differences plus a
  percentile-bootstrap interval of the mean difference.
A gain is "significant" when the difference is in the claimed direction and p < alpha; anything
else is reported as "no significant gain", never rounded up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (stays inside [0, 1], sane at k=0 or n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_two_sided_p(successes: int, trials: int) -> float:
    """Exact two-sided binomial test against p = 1/2 (the sign test): the probability, under the
    null, of an outcome at most as likely as the one observed."""
    if trials == 0:
        return 1.0
    probs = [math.comb(trials, i) / 2**trials for i in range(trials + 1)]
    observed = probs[successes]
    return min(1.0, sum(p for p in probs if p <= observed * (1 + 1e-7)))


@dataclass
class PairedResult:
    metric: str
    n: int
    before: float
    after: float
    gain: float
    ci_low: float  # 95% interval of the gain
    ci_high: float
    p: float
    alpha: float
    verdict: str  # "significant gain" | "no significant gain" | "significant drop"

    def to_dict(self) -> dict:
        return asdict(self)


def _verdict(gain: float, p: float, alpha: float) -> str:
    if p < alpha and gain > 0:
        return "significant gain"
    if p < alpha and gain < 0:
        return "significant drop"
    return "no significant gain"


def paired_binary(metric: str, before: list[int], after: list[int], alpha: float = 0.05) -> PairedResult:
    """Parent vs child 0/1 outcomes on the same items."""
    if len(before) != len(after):
        raise ValueError(f"{metric}: {len(before)} parent items vs {len(after)} child items; not paired")
    n = len(before)
    gained = sum(1 for a, b in zip(before, after, strict=True) if not a and b)
    lost = sum(1 for a, b in zip(before, after, strict=True) if a and not b)
    p = binomial_two_sided_p(gained, gained + lost)
    rate_a, rate_b = sum(before) / max(n, 1), sum(after) / max(n, 1)
    # Interval of the paired difference of proportions (Wald on the discordant counts, clipped).
    diff = (gained - lost) / max(n, 1)
    se = math.sqrt(max(gained + lost - (gained - lost) ** 2 / max(n, 1), 0.0)) / max(n, 1)
    low, high = max(-1.0, diff - Z95 * se), min(1.0, diff + Z95 * se)
    return PairedResult(metric, n, rate_a, rate_b, rate_b - rate_a, low, high, p, alpha, _verdict(diff, p, alpha))


def paired_continuous(
    metric: str, before: list[float], after: list[float], alpha: float = 0.05, resamples: int = 4000, seed: int = 0
) -> PairedResult:
    """Parent vs child real-valued outcomes on the same items: sign test on the differences and a
    percentile-bootstrap interval of their mean."""
    if len(before) != len(after):
        raise ValueError(f"{metric}: {len(before)} parent items vs {len(after)} child items; not paired")
    diffs = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    n = len(diffs)
    up, down = int((diffs > 0).sum()), int((diffs < 0).sum())
    p = binomial_two_sided_p(up, up + down)
    if n:
        rng = np.random.default_rng(seed)
        means = diffs[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
        low, high = (float(x) for x in np.quantile(means, [0.025, 0.975]))
    else:
        low = high = 0.0
    gain = float(diffs.mean()) if n else 0.0
    return PairedResult(
        metric,
        n,
        float(np.mean(before)) if n else 0.0,
        float(np.mean(after)) if n else 0.0,
        gain,
        low,
        high,
        p,
        alpha,
        _verdict(gain, p, alpha),
    )
