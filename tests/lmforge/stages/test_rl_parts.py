import itertools

import pytest
import torch

from lmforge.data.prompts import PromptDataModule
from lmforge.losses import POLICY_LOSS_TYPES, group_advantages, k3_kl, policy_loss
from lmforge.stages.rl import RLStage


def reference_advantages(rewards, g, scale):
    """Loop-based direct formula: A_i = (r_i - mean(group)) / (std + 1e-4)."""
    out = []
    all_std = torch.tensor(rewards).std().item()
    for start in range(0, len(rewards), g):
        group = rewards[start : start + g]
        mean = sum(group) / g
        std = (sum((r - mean) ** 2 for r in group) / (g - 1)) ** 0.5
        denom = {"group": std + 1e-4, "batch": all_std + 1e-4, "none": 1.0}[scale]
        out += [(r - mean) / denom for r in group]
    return torch.tensor(out)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_formula(scale):
    rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 2.0, -1.0, 0.0, 1.0]
    got = group_advantages(torch.tensor(rewards), 4, scale)
    torch.testing.assert_close(got, reference_advantages(rewards, 4, scale))
    assert got[4:8].abs().max() == 0  # identical rewards carry no signal


def reference_loss(logps, old, ref, adv, mask, lo, hi, beta, loss_type, max_len):
    n, t = logps.shape
    per_seq, total, count = [], 0.0, 0
    for i in range(n):
        s, c = 0.0, 0
        for j in range(t):
            if not mask[i, j]:
                continue
            r = torch.exp(logps[i, j] - old[i, j])
            term = -min(r * adv[i], min(max(r, 1 - lo), 1 + hi) * adv[i])
            if beta:
                d = ref[i, j] - logps[i, j]
                term = term + beta * (torch.exp(d) - d - 1)
            s, c = s + term, c + 1
        per_seq.append(s / max(c, 1))
        total, count = total + s, count + c
    if loss_type == "grpo":
        return sum(per_seq) / n
    if loss_type == "dapo":
        return total / count
    return total / (n * max_len)


@pytest.mark.parametrize("loss_type,beta", itertools.product(["grpo", "dapo", "dr_grpo"], [0.0, 0.05]))
def test_policy_loss_matches_formula(loss_type, beta):
    g = torch.Generator().manual_seed(1)
    n, t = 6, 5
    logps = -torch.rand(n, t, generator=g)
    old = logps + 0.3 * torch.randn(n, t, generator=g)  # ratios both sides of the clip range
    ref = logps + 0.2 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    mask = torch.rand(n, t, generator=g) > 0.3
    mask[:, 0] = True
    got, metrics = policy_loss(logps, old, ref, adv, mask, 0.2, 0.28, beta, loss_type, max_completion_len=8)
    want = reference_loss(logps, old, ref, adv, mask, 0.2, 0.28, beta, loss_type, 8)
    torch.testing.assert_close(got, torch.as_tensor(want, dtype=got.dtype))
    assert 0 < metrics["clip_fraction"] < 1


def test_one_step_has_ratio_one_and_no_clipping():
    logps = -torch.rand(3, 4, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5])
    loss, metrics = policy_loss(logps, logps.detach(), None, adv, torch.ones(3, 4), 0.2, 0.2, 0.0, "grpo")
    assert metrics["clip_fraction"] == 0
    torch.testing.assert_close(loss, -adv.mean())  # ratio 1 => surrogate is -mean(A)


def test_kl_zero_when_policy_equals_reference():
    logps = -torch.rand(4, 7)
    assert k3_kl(logps, logps).abs().max() == 0
    _, metrics = policy_loss(logps, logps, logps.clone(), torch.ones(4), torch.ones(4, 7), beta=0.1)
    assert metrics["kl"] == 0


def test_rl_step_keeps_training_mode_and_parameters(rl_tokenizer_dir, rl_model_cfg):
    stage = RLStage(
        model=rl_model_cfg,
        optim={},
        tokenizer_path=rl_tokenizer_dir,
        group_size=3,
        beta=0.1,
        reward={"task_answer": 1.0, "reasoning_format": 0.1},
        sampling={"max_new_tokens": 6, "temperature": 1.0, "seed": 0},
    )
    stage.configure_model()
    stage.train()
    data = PromptDataModule(rl_tokenizer_dir, tasks={"kind": "mix", "n_train": 4, "n_val": 2, "seed": 0}, batch_size=2)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    loss, metrics = stage.compute_loss(batch, "train")
    assert stage.model.training
    for k, v in stage.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    loss.backward()
    assert (
        any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.model.parameters())
        or metrics["reward_std"] == 0
    )
    assert metrics["kl"] == 0  # the reference is still the policy
    assert set(metrics) >= {"reward", "reward_std", "clip_fraction", "completion_len", "generation_tokens_per_s"}
    assert "model" not in {n.split(".")[0] for n, _ in stage.named_modules() if n.startswith("_reference")}
    assert not any(k.startswith("_reference") for k in stage.state_dict())
    reference = stage.frozen_reference()  # frozen, and neither a submodule nor an optimised parameter
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert all(m is not reference for m in stage.modules())
    assert not {id(p) for p in reference.parameters()} & {id(p) for p in stage.parameters()}


def test_kl_bias_correction_weights_k3_by_the_importance_ratio():
    g = torch.Generator().manual_seed(3)
    logps = -torch.rand(4, 6, generator=g)
    old = logps + 0.3 * torch.randn(4, 6, generator=g)
    ref = logps + 0.2 * torch.randn(4, 6, generator=g)
    adv, mask = torch.zeros(4), torch.ones(4, 6)  # zero advantages: the loss is the KL term alone
    plain, _ = policy_loss(logps, old, ref, adv, mask, beta=1.0, loss_type="dapo")
    corrected, metrics = policy_loss(logps, old, ref, adv, mask, beta=1.0, loss_type="dapo", kl_bias_correction=True)
    want = (k3_kl(logps, ref) * torch.exp(logps - old)).mean()
    torch.testing.assert_close(corrected, want)
    torch.testing.assert_close(metrics["kl"], want)
    assert not torch.allclose(plain, corrected)


def test_loss_types_differ_once_completions_have_different_lengths():
    """With every completion at max_new_tokens the three aggregations coincide; lengths 1..6 of 8 must
    separate them, each matching its formula."""
    g = torch.Generator().manual_seed(4)
    n, t = 6, 8
    logps = -torch.rand(n, t, generator=g)
    old = logps + 0.3 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    lengths = torch.arange(1, n + 1)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    got = {
        lt: policy_loss(logps, old, None, adv, mask, loss_type=lt, max_completion_len=t)[0] for lt in POLICY_LOSS_TYPES
    }
    for lt, value in got.items():
        want = reference_loss(logps, old, None, adv, mask, 0.2, 0.2, 0.0, lt, t)
        torch.testing.assert_close(value, torch.as_tensor(want, dtype=value.dtype))
    assert len({round(v.item(), 6) for v in got.values()}) == 3
    full = torch.ones(n, t, dtype=torch.bool)
    same = [policy_loss(logps, old, None, adv, full, loss_type=lt, max_completion_len=t)[0] for lt in POLICY_LOSS_TYPES]
    torch.testing.assert_close(same[0], same[1])
    torch.testing.assert_close(same[1], same[2])
