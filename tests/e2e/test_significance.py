"""The paired tests against scipy's own implementations (binomtest, the Wilson interval in
statsmodels' formula as scipy's BinomTestResult.proportion_ci computes it)."""

from __future__ import annotations

import random

import pytest
from scipy.stats import binomtest

from e2e.significance import binomial_two_sided_p, paired_binary, paired_continuous, wilson_interval


@pytest.mark.parametrize("k,n", [(0, 0), (0, 7), (3, 7), (7, 7), (12, 40), (31, 50), (100, 200), (5, 300)])
def test_sign_test_and_wilson_match_scipy(k, n):
    if n == 0:
        assert binomial_two_sided_p(0, 0) == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
        return
    ref = binomtest(k, n, 0.5, alternative="two-sided")
    assert binomial_two_sided_p(k, n) == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_paired_binary_counts_only_discordant_items():
    # 200 items: the child fixes 30 the parent missed and breaks 5 it had right.
    before = [1] * 60 + [0] * 140
    after = [1] * 55 + [0] * 5 + [1] * 30 + [0] * 110
    r = paired_binary("accuracy", before, after, alpha=0.01)
    assert (r.n, r.before, r.after) == (200, 0.30, 0.425)
    assert r.p == pytest.approx(binomtest(30, 35, 0.5).pvalue)
    assert r.verdict == "significant gain" and r.ci_low > 0
    same = paired_binary("accuracy", before, before)
    assert same.p == 1.0 and same.verdict == "no significant gain"
    assert paired_binary("accuracy", after, before, alpha=0.01).verdict == "significant drop"
    with pytest.raises(ValueError, match="not paired"):
        paired_binary("accuracy", before, after[:-1])


def test_a_small_noisy_gain_is_not_dressed_up():
    # 2 correct answers out of 100 at the child, 0 at the parent: p = 0.5, no claim.
    r = paired_binary("accuracy", [0] * 100, [1, 1] + [0] * 98)
    assert r.p == pytest.approx(0.5) and r.verdict == "no significant gain"


def test_paired_continuous_sign_test_and_bootstrap():
    rng = random.Random(0)
    before = [rng.gauss(0, 1) for _ in range(300)]
    after = [b + 0.3 + rng.gauss(0, 0.5) for b in before]
    r = paired_continuous("margin", before, after)
    ups = sum(a > b for a, b in zip(after, before))
    assert r.p == pytest.approx(binomtest(ups, 300, 0.5).pvalue)
    assert r.ci_low < r.gain < r.ci_high and r.ci_low > 0.2 and r.verdict == "significant gain"
    noise = paired_continuous("margin", before, [b + rng.gauss(0, 0.5) for b in before])
    assert noise.ci_low < 0 < noise.ci_high and noise.verdict == "no significant gain"
