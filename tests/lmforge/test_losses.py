"""Each loss against a direct, element-by-element implementation of its formula."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.data.labels import IGNORE_INDEX
from lmforge.losses import (
    bradley_terry_loss,
    dpo_loss,
    masked_cross_entropy,
    per_segment_cross_entropy,
    sequence_logps,
)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def direct_dpo(pc, pr, rc, rr, lc, lr, beta, loss_type, eps):
    """One pair at a time, in plain Python floats."""
    if loss_type == "ipo":
        h = (pc / lc - rc / lc) - (pr / lr - rr / lr)
        return (h - 1 / (2 * beta)) ** 2
    h = (pc - rc) - (pr - rr)
    if loss_type == "sigmoid":
        return -log_sigmoid(beta * h)
    return -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "cdpo"])
def test_dpo_loss_matches_formula(loss_type):
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-torch.rand(16, generator=g, dtype=torch.float64) * 40 for _ in range(4))
    lc, lr = (torch.randint(1, 30, (16,), generator=g).double() for _ in range(2))
    beta, eps = 0.3, 0.2 if loss_type == "cdpo" else 0.0
    out = dpo_loss(
        pc, pr, rc, rr, beta=beta, loss_type=loss_type, label_smoothing=eps, chosen_lengths=lc, rejected_lengths=lr
    )
    expected = [direct_dpo(*(t[i].item() for t in (pc, pr, rc, rr, lc, lr)), beta, loss_type, eps) for i in range(16)]
    torch.testing.assert_close(out.losses, torch.tensor(expected, dtype=torch.float64))
    if loss_type != "ipo":
        torch.testing.assert_close(out.chosen_rewards, beta * (pc - rc))
        torch.testing.assert_close(out.rejected_rewards, beta * (pr - rr))


def test_dpo_sigmoid_is_log2_when_policy_equals_reference():
    logps = -torch.rand(8, dtype=torch.float64) * 20
    other = -torch.rand(8, dtype=torch.float64) * 20
    out = dpo_loss(logps, other, logps.clone(), other.clone(), beta=0.5, loss_type="sigmoid")
    torch.testing.assert_close(out.losses, torch.full((8,), math.log(2), dtype=torch.float64))


def test_dpo_rejects_unknown_loss_type():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, loss_type="hinge2")


def test_bradley_terry_matches_formula():
    c, r = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    expected = sum(-math.log(1 / (1 + math.exp(-(a - b)))) for a, b in zip(c.tolist(), r.tolist())) / 10
    assert bradley_terry_loss(c, r).item() == pytest.approx(expected, rel=1e-9)


def test_sequence_logps_sum_and_masked_ce_by_hand():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[IGNORE_INDEX, 3, 4, IGNORE_INDEX, 1], [0, IGNORE_INDEX, IGNORE_INDEX, 6, IGNORE_INDEX]])
    total, count, sums = 0.0, 0, [0.0, 0.0]
    for b in range(2):
        for t in range(5):
            if labels[b, t] != IGNORE_INDEX:
                lp = logits[b, t].log_softmax(-1)[labels[b, t]].item()
                sums[b] += lp
                total -= lp
                count += 1
    logps, lengths = sequence_logps(logits, labels)
    torch.testing.assert_close(logps, torch.tensor(sums))
    assert lengths.tolist() == [3, 2]
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(total / count, rel=1e-5)
    per_row = per_segment_cross_entropy(logits, labels, torch.tensor([[0] * 5, [1] * 5]), 2)
    torch.testing.assert_close(per_row, torch.tensor([-sums[0] / 3, -sums[1] / 2]))
