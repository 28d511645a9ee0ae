"""DPO stage: reference handling (live, adapter-disabled, precomputed + cached) and init checks."""

from __future__ import annotations

import pytest
import torch

from lmforge.data.preference import PreferenceCollator, PreferenceDataModule
from lmforge.losses import dpo_loss, sequence_logps
from lmforge.model import ModelConfig, build_model
from lmforge.stages.dpo import DPOStage
from lmforge.stages.sft import SFTStage
from lmforge.tokenizer import TokenizerMismatchError

TASKS = {"kind": "mix", "n_train": 24, "n_val": 8, "seed": 0}
LORA = {"rank": 4, "alpha": 8, "dropout": 0.0}


def save_checkpoint(stage, path) -> str:
    """A checkpoint in the stages' format: `model.`-prefixed state_dict + lmforge lineage."""
    state = {f"model.{k}": v for k, v in stage.model.state_dict().items()}
    torch.save({"state_dict": state, "lmforge": stage.lineage()}, path)
    return str(path)


@pytest.fixture()
def parent_ckpt(model_cfg, task_tokenizer_dir, tmp_path) -> str:
    parent = SFTStage(model=model_cfg, optim={}, tokenizer_path=task_tokenizer_dir)
    parent.configure_model()
    return save_checkpoint(parent, tmp_path / "parent.ckpt")


def datamodule(task_tokenizer_dir) -> PreferenceDataModule:
    dm = PreferenceDataModule(task_tokenizer_dir, tasks=TASKS, max_seq_len=128, batch_size=8)
    dm.setup()
    return dm


def perturb(module: torch.nn.Module) -> None:
    """Move the policy away from the reference (a few optimizer steps' worth)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)


@pytest.mark.parametrize("peft", [None, LORA], ids=["full", "lora"])
@pytest.mark.parity
def test_precomputed_reference_equals_live_reference(model_cfg, task_tokenizer_dir, parent_ckpt, peft, tmp_path):
    stage = DPOStage(
        model=model_cfg,
        optim={},
        tokenizer_path=task_tokenizer_dir,
        init_from=parent_ckpt,
        peft=peft,
        reference_cache_dir=str(tmp_path / "cache"),
    )
    stage.configure_model()
    perturb(stage.model)
    dm = datamodule(task_tokenizer_dir)
    live_batch = next(iter(dm.loader("val", with_reference=False)))
    live_loss, live_metrics = stage.compute_loss(live_batch, "val")

    cached = stage.cached_reference_logps(dm, "val")
    assert len(list((tmp_path / "cache").glob("val-*.pt"))) == 1
    dm.attach_reference_logps("val", cached)
    batch = next(iter(dm.loader("val")))
    assert "reference_logps" in batch
    loss, metrics = stage.compute_loss(batch, "val")
    torch.testing.assert_close(loss, live_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["rewards/margin"], live_metrics["rewards/margin"], rtol=1e-5, atol=1e-6)
    # Second call hits the cache: same numbers, no new file.
    torch.testing.assert_close(stage.cached_reference_logps(dm, "val"), cached)
    assert len(list((tmp_path / "cache").glob("val-*.pt"))) == 1


@pytest.mark.parametrize("peft", [None, LORA], ids=["full", "lora"])
def test_reference_is_the_parent_and_stays_frozen(model_cfg, task_tokenizer_dir, parent_ckpt, peft):
    stage = DPOStage(model=model_cfg, optim={}, tokenizer_path=task_tokenizer_dir, init_from=parent_ckpt, peft=peft)
    stage.configure_model()
    dm = datamodule(task_tokenizer_dir)
    batch = next(iter(dm.loader("train", with_reference=False)))
    # Independent reference: the parent weights in a fresh plain Transformer.
    parent = build_model(ModelConfig(**model_cfg))
    parent.load_state_dict({k[len("model.") :]: v for k, v in torch.load(parent_ckpt)["state_dict"].items()})
    with torch.no_grad():
        expected = sequence_logps(parent(batch["input_ids"]), batch["labels"])[0]
    torch.testing.assert_close(stage.reference_logps(batch["input_ids"], batch["labels"]), expected)
    # policy == reference at the start: the sigmoid loss is log 2
    loss, _ = stage.compute_loss(batch, "train")
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)
    perturb(stage.model)
    torch.testing.assert_close(stage.reference_logps(batch["input_ids"], batch["labels"]), expected)
    assert all(not p.requires_grad for n, p in stage.named_parameters() if "lora_" not in n) == bool(peft)


def test_dpo_loss_types_wired_through_the_stage(model_cfg, task_tokenizer_dir, parent_ckpt):
    dm = datamodule(task_tokenizer_dir)
    batch = next(iter(dm.loader("train", with_reference=False)))
    for loss_type, smoothing in (("ipo", 0.0), ("cdpo", 0.1)):
        stage = DPOStage(
            model=model_cfg,
            optim={},
            tokenizer_path=task_tokenizer_dir,
            init_from=parent_ckpt,
            beta=0.2,
            loss_type=loss_type,
            label_smoothing=smoothing,
        )
        stage.configure_model()
        perturb(stage.model)
        logps, lengths = sequence_logps(stage.model(batch["input_ids"]), batch["labels"])
        ref = stage.reference_logps(batch["input_ids"], batch["labels"])
        expected = dpo_loss(
            *logps.chunk(2),
            *ref.chunk(2),
            beta=0.2,
            loss_type=loss_type,
            label_smoothing=smoothing,
            chosen_lengths=lengths.chunk(2)[0],
            rejected_lengths=lengths.chunk(2)[1],
        ).losses.mean()
        torch.testing.assert_close(stage.compute_loss(batch, "train")[0], expected)


def test_checkpoint_from_another_tokenizer_is_refused(model_cfg, task_tokenizer_dir, other_tokenizer_dir, parent_ckpt):
    for stage_cls in (SFTStage, DPOStage):
        stage_cls(model=model_cfg, optim={}, tokenizer_path=task_tokenizer_dir, init_from=parent_ckpt)  # same: accepted
        with pytest.raises(TokenizerMismatchError, match="init_from"):
            stage_cls(model=model_cfg, optim={}, tokenizer_path=other_tokenizer_dir, init_from=parent_ckpt)


def test_collator_stacks_chosen_over_rejected(task_tokenizer_dir):
    dm = datamodule(task_tokenizer_dir)
    pairs = [dm.datasets["train"][i] for i in range(3)]
    batch = PreferenceCollator(pad_id=dm.pad_id, reference_logps=torch.arange(48.0).view(24, 2))(pairs)
    assert batch["input_ids"].shape[0] == 6
    assert batch["input_ids"][0, : len(pairs[0].chosen.input_ids)].tolist() == pairs[0].chosen.input_ids
    assert batch["input_ids"][3, : len(pairs[0].rejected.input_ids)].tolist() == pairs[0].rejected.input_ids
    assert batch["last_index"][3].item() == len(pairs[0].rejected.input_ids) - 1
    assert batch["reference_logps"].tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]


def test_nll_weight_adds_chosen_token_nll(model_cfg, task_tokenizer_dir, parent_ckpt):
    dm = datamodule(task_tokenizer_dir)
    batch = next(iter(dm.loader("train", with_reference=False)))
    plain = DPOStage(model=model_cfg, optim={}, tokenizer_path=task_tokenizer_dir, init_from=parent_ckpt)
    rpo = DPOStage(model=model_cfg, optim={}, tokenizer_path=task_tokenizer_dir, init_from=parent_ckpt, nll_weight=0.5)
    for stage in (plain, rpo):
        stage.configure_model()
    logps, lengths = sequence_logps(plain.model(batch["input_ids"]), batch["labels"])
    chosen_nll = -(logps.chunk(2)[0] / lengths.chunk(2)[0]).mean()
    expected = plain.compute_loss(batch, "train")[0] + 0.5 * chosen_nll
    torch.testing.assert_close(rpo.compute_loss(batch, "train")[0], expected)


def test_reference_cache_fingerprint_accepts_a_qlora_base():
    """The reference-logp cache key hashes the base weights; a QLoRA base holds torchao int8 tensors
    (no byte view), which hash as their dequantized values and still separate different bases."""
    from lmforge.lora.quantize import dense, quantize_base
    from lmforge.stages.dpo import tensor_fingerprint

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=64, d_model=128, n_layers=1, n_heads=2, ffn_dim=256, max_seq_len=16))
    quantized = quantize_base(model, "int8")
    named = list(quantized.state_dict().items())
    assert any(type(t).__module__.startswith("torchao") for _, t in named)
    key = tensor_fingerprint(named)
    assert key == tensor_fingerprint([(n, dense(t)) for n, t in named])
    named[-1] = (named[-1][0], named[-1][1] + 1)
    assert tensor_fingerprint(named) != key
