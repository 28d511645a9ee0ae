"""optim=adamw|muon and schedule=cosine|wsd|constant: the schedules by formula, Muon against torch's own
Muon + AdamW stepped separately, and an exact resume of the joined optimizer through a Lightning checkpoint."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lmforge.optimizers import HybridOptimizer, build_optimizer, lr_multiplier
from lmforge.stages.base import OptimConfig
from lmforge.stages.pretrain import PretrainStage

MICRO = dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=64)


def test_wsd_is_flat_then_cools_linearly_to_the_floor():
    warmup, total, floor = 10, 100, 0.1  # cool-down: the last 20 steps (decay_fraction 0.2)
    values = [lr_multiplier(s, warmup, total, floor, "wsd", 0.2) for s in range(total + 5)]
    assert values[:3] == [0.1, 0.2, 0.3]
    assert all(v == 1.0 for v in values[warmup:81]) and values[81] < 1.0
    assert values[90] == pytest.approx(1 - (1 - floor) * 0.5)
    assert values[total] == pytest.approx(floor) and values[total + 4] == pytest.approx(floor)
    assert all(a >= b for a, b in zip(values[80:], values[81:], strict=False))


def test_constant_schedule_and_unknown_names_fail_clearly():
    assert [lr_multiplier(s, 4, 50, 0.1, "constant") for s in (0, 3, 4, 49, 500)] == [0.25, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="optim.schedule='linear'"):
        lr_multiplier(5, 1, 10, 0.1, "linear")
    with pytest.raises(ValueError, match="optim.name='sgd'"):
        build_optimizer([], OptimConfig(name="sgd"))


def toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.embed_tokens = torch.nn.Embedding(11, 6)
    model.proj = torch.nn.Linear(6, 6, bias=False)
    model.norm = torch.nn.LayerNorm(6)
    model.lm_head = torch.nn.Linear(6, 11, bias=False)
    return model


def loss_of(model, ids):
    return model.lm_head(model.norm(model.proj(model.embed_tokens(ids)))).logsumexp(-1).mean()


def test_muon_steps_hidden_matrices_with_torch_muon_and_the_rest_with_adamw():
    cfg = OptimConfig(name="muon", lr=0.02, weight_decay=0.1, momentum=0.9)
    ours, ref = toy_model(), toy_model()
    optimizer = build_optimizer(ours.named_parameters(), cfg)
    assert isinstance(optimizer, HybridOptimizer)
    # Reference: the two torch optimizers built by hand on an identical copy.
    muon = torch.optim.Muon([ref.proj.weight], lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW(
        [
            {"params": [ref.lm_head.weight], "weight_decay": 0.1},
            {"params": [ref.embed_tokens.weight, ref.norm.weight, ref.norm.bias], "weight_decay": 0.0},
        ],
        lr=0.02,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    ids = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for model, opts in ((ours, [optimizer]), (ref, [muon, adamw])):
            for o in opts:
                o.zero_grad()
            loss_of(model, ids).backward()
            for o in opts:
                o.step()
    for (name, got), want in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
    assert not torch.equal(ours.proj.weight, toy_model().proj.weight)


def fit(stage, rows, root, steps, ckpt_path=None):
    torch.manual_seed(0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(stage, train_dataloaders=DataLoader(rows, batch_size=4), ckpt_path=ckpt_path)
    return trainer


def test_muon_wsd_resume_is_exact(corpus_tokenizer_dir, token_rows, tmp_path):
    """6 steps straight == 3 steps, a checkpoint, then 3 more: the nested optimizer state and the
    schedule survive Lightning's save/load."""
    rows = [{"input_ids": r} for r in token_rows[:4]]  # one batch per epoch: every step starts an epoch
    optim = dict(name="muon", lr=1e-2, warmup_steps=2, schedule="wsd", decay_fraction=0.5, decay_steps=6)

    def stage():
        return PretrainStage(model=dict(MICRO), optim=dict(optim), tokenizer_path=str(corpus_tokenizer_dir))

    straight = stage()
    fit(straight, rows, tmp_path / "a", 6)
    first = stage()
    trainer = fit(first, rows, tmp_path / "b", 3)
    trainer.save_checkpoint(tmp_path / "b.ckpt")
    resumed = stage()
    trainer = fit(resumed, rows, tmp_path / "c", 6, ckpt_path=str(tmp_path / "b.ckpt"))
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert lrs and all(lr == pytest.approx(1e-3) for lr in lrs)  # cooled down to min_lr_ratio * lr
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert not torch.equal(copy.deepcopy(first.state_dict())["model.lm_head.weight"], resumed.model.lm_head.weight)


def test_optim_and_schedule_groups_reach_the_stage(compose_cfg, tmp_path):
    cfg = compose_cfg(["optim=muon", "schedule=wsd", "optim.decay_fraction=0.3"], run_dir=tmp_path)
    optim = OptimConfig(**{k: v for k, v in cfg.module.optim.items()})
    assert (optim.name, optim.schedule, optim.decay_fraction) == ("muon", "wsd", 0.3)
    default = compose_cfg([], run_dir=tmp_path)
    assert (default.module.optim.name, default.module.optim.schedule) == ("adamw", "cosine")
