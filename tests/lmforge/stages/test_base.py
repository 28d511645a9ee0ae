"""BaseStage / PretrainStage in process: optimizer groups, schedule, loss, lineage, init_from,
load_for_inference. Batches are real corpus tokens (conftest.token_rows)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lmforge.checkpoint import LMFORGE_KEY, load_for_inference
from lmforge.model import ModelConfig
from lmforge.stages.base import lr_multiplier
from lmforge.stages.pretrain import PretrainStage
from lmforge.tokenizer import Tokenizer, TokenizerMismatchError

MICRO = dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=64)
OPTIM = dict(lr=1e-2, warmup_steps=3, weight_decay=0.1, min_lr_ratio=0.1)


def make_stage(corpus_tokenizer_dir, **kw) -> PretrainStage:
    kw.setdefault("optim", OPTIM)
    return PretrainStage(model=dict(MICRO), tokenizer_path=str(corpus_tokenizer_dir), **kw)


def loaders(token_rows, batch_size=8):
    rows = [{"input_ids": r} for r in token_rows]
    return DataLoader(rows[32:], batch_size=batch_size), DataLoader(rows[:32], batch_size=batch_size)


def fit(stage, token_rows, tmp_path, steps=12, **trainer_kw):
    torch.manual_seed(0)
    train, val = loaders(token_rows)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        **trainer_kw,
    )
    trainer.fit(stage, train_dataloaders=train, val_dataloaders=val)
    return trainer


def test_loss_is_next_token_cross_entropy(corpus_tokenizer_dir, token_rows):
    stage = make_stage(corpus_tokenizer_dir)
    stage.configure_model()
    batch = {"input_ids": token_rows[:4]}
    loss, _ = stage.compute_loss(batch, "train")
    logits = stage.model(batch["input_ids"])
    # Reference: explicit log-softmax gather, averaged over every predicted position.
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    reference = -logp.gather(-1, batch["input_ids"][:, 1:, None]).mean()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_no_weight_decay_on_norms_and_embeddings(corpus_tokenizer_dir, token_rows, tmp_path):
    stage = make_stage(corpus_tokenizer_dir)
    trainer = fit(stage, token_rows, tmp_path, steps=1)
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    names = {id(p): n for n, p in stage.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.1
    assert "model.embed_tokens.weight" in no_decay and "model.norm.weight" in no_decay
    assert all(("layernorm" in n or "norm" in n or "embed" in n) for n in no_decay)
    assert "model.lm_head.weight" in decay and "model.layers.0.self_attn.q_proj.weight" in decay
    assert decay | no_decay == set(names.values())


def test_schedule_warmup_then_cosine():
    warmup, total, floor = 10, 110, 0.1
    assert [lr_multiplier(s, warmup, total, floor) for s in range(3)] == [0.1, 0.2, 0.3]
    assert lr_multiplier(9, warmup, total, floor) == 1.0
    mid = warmup + (total - warmup) // 2  # cosine halfway: the mean of peak and floor
    assert lr_multiplier(mid, warmup, total, floor) == pytest.approx((1 + floor) / 2)
    assert lr_multiplier(total, warmup, total, floor) == pytest.approx(floor)
    quarter = warmup + (total - warmup) // 4
    expected = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert lr_multiplier(quarter, warmup, total, floor) == pytest.approx(expected)


def test_training_lowers_validation_loss_and_checkpoint_round_trips(corpus_tokenizer_dir, token_rows, tmp_path):
    torch.manual_seed(0)
    stage = make_stage(corpus_tokenizer_dir)
    stage.configure_model()
    held_out = {"input_ids": token_rows[:32]}
    with torch.no_grad():
        before = stage.compute_loss(held_out, "val")[0].item()
    trainer = fit(stage, token_rows, tmp_path, steps=30, val_check_interval=30)
    with torch.no_grad():
        after = stage.compute_loss(held_out, "val")[0].item()
    assert after < before - 0.5, f"validation loss {before:.3f} -> {after:.3f}"
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(after, rel=1e-5)

    path = tmp_path / "stage.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    lineage = checkpoint[LMFORGE_KEY]
    assert lineage["tokenizer_fingerprint"] == Tokenizer.load(corpus_tokenizer_dir).fingerprint
    assert lineage["stage"] == "pretrain" and ModelConfig(**lineage["model_config"]) == stage.model_config
    assert all(k.startswith("model.") for k in checkpoint["state_dict"])

    loaded = load_for_inference(path)
    x = token_rows[:2]
    torch.testing.assert_close(loaded.model(x), stage.model(x), rtol=0, atol=0)
    assert loaded.tokenizer is not None and loaded.tokenizer.fingerprint == lineage["tokenizer_fingerprint"]

    child = make_stage(corpus_tokenizer_dir, init_from=str(path))
    child.configure_model()
    torch.testing.assert_close(child.model(x), stage.model(x), rtol=0, atol=0)
    assert child.lineage()["parent"] == str(path.resolve())


def test_init_from_with_another_tokenizer_is_refused(corpus_tokenizer_dir, other_tokenizer_dir, token_rows, tmp_path):
    trainer = fit(make_stage(corpus_tokenizer_dir), token_rows, tmp_path, steps=1)
    path = tmp_path / "parent.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(TokenizerMismatchError) as err:
        make_stage(other_tokenizer_dir, init_from=str(path))
    for fingerprint in (
        Tokenizer.load(corpus_tokenizer_dir).fingerprint,
        Tokenizer.load(other_tokenizer_dir).fingerprint,
    ):
        assert fingerprint in str(err.value)


def test_lora_stage_checkpoint_loads_merged(corpus_tokenizer_dir, token_rows, tmp_path):
    """peft set: only adapters train, the checkpoint has peft's names, load_for_inference merges."""
    peft = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    stage = make_stage(corpus_tokenizer_dir, peft=peft)
    trainer = fit(stage, token_rows, tmp_path, steps=3)
    trainable = [n for n, p in stage.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)
    assert any("lora_A" in k for k in torch.load(path, weights_only=True)["state_dict"])
    loaded = load_for_inference(path)
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())
    x = token_rows[:2]
    stage.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), stage.model(x), rtol=1e-5, atol=1e-5)


def test_grad_norm_is_the_true_norm_and_only_computed_on_logging_steps(corpus_tokenizer_dir, token_rows, tmp_path):
    """`train/grad_norm` equals the 2-norm of all gradients before the optimizer step, and is
    computed only on the steps Lightning writes logs for (it costs a pass over every gradient)."""
    expected: dict[int, float] = {}

    class RecordNorm(L.Callback):  # callbacks' hook runs before the module's, on the same grads
        def on_before_optimizer_step(self, trainer, module, optimizer):
            grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
            expected[trainer.global_step] = float(torch.cat(grads).norm())

    logged: dict[int, float] = {}
    stage = make_stage(corpus_tokenizer_dir)
    log = stage.log

    def spy(name, value, *args, **kwargs):
        if name == "train/grad_norm":
            logged[stage.trainer.global_step] = float(value)
        return log(name, value, *args, **kwargs)

    stage.log = spy
    fit(stage, token_rows, tmp_path, steps=9, log_every_n_steps=3, callbacks=[RecordNorm()])
    assert sorted(logged) == [2, 5, 8]  # Lightning logs when (step + 1) % log_every_n_steps == 0
    for step, value in logged.items():
        assert value == pytest.approx(expected[step], rel=1e-5)
