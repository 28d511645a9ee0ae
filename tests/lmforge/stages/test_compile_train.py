"""`compile=true` compiles each decoder block in place and the cross-entropy: same parameter
names, and loss and gradients equal the eager stage's in fp32 (with activation checkpointing
around the blocks)."""

from __future__ import annotations

import pytest
import torch

from lmforge.cpu_linear import _forward as cpu_linear_forward
from lmforge.losses import compiled_cross_entropy
from lmforge.stages.pretrain import PretrainStage

MICRO = dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=64)
OPTIM = dict(lr=1e-2, warmup_steps=3, weight_decay=0.1, min_lr_ratio=0.1)

pytestmark = pytest.mark.slow  # one inductor compile of a block, forward and backward (~1 min on 2 cores)


def loss_and_grads(stage, batch):
    stage.configure_model()
    loss, _ = stage.compute_loss(batch, "train")
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in stage.model.named_parameters()}


def test_compiled_blocks_match_eager(corpus_tokenizer_dir, token_rows, monkeypatch):
    import lmforge.losses as losses

    loss_calls = []

    def compiled_loss():  # the real compiled loss, counted: compile=true must take this path
        loss_calls.append(1)
        return compiled_cross_entropy()

    monkeypatch.setattr(losses, "compiled_cross_entropy", compiled_loss)
    batch = {"input_ids": token_rows[:4, :33]}
    eager = PretrainStage(model=dict(MICRO), optim=OPTIM, tokenizer_path=str(corpus_tokenizer_dir))
    compiled = PretrainStage(
        model=dict(MICRO),
        optim=OPTIM,
        tokenizer_path=str(corpus_tokenizer_dir),
        compile=True,
        activation_checkpointing=True,
    )
    eager_loss, eager_grads = loss_and_grads(eager, batch)
    loss, grads = loss_and_grads(compiled, batch)
    assert all(layer._compiled_call_impl is not None for layer in compiled.model.layers)
    assert loss_calls == [1]  # the loss ran compiled too, and the eager stage never asked for it
    up_proj = compiled.model.layers[0].mlp.up_proj
    assert up_proj.forward.__func__ is cpu_linear_forward  # fp32 CPU GEMMs through oneDNN
    assert list(grads) == list(eager_grads)  # names unchanged: checkpoints and FSDP plans still apply
    torch.testing.assert_close(loss, eager_loss, rtol=0, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)
