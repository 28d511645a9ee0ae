"""The memory estimate (`lmforge.memory_estimate`) against what torch and peft actually hold, and
the preflight that refuses a run which cannot fit in one line, before torch is imported."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from lmforge.config_paths import conf_dir
from lmforge.config_precheck import PreflightError, compose_untyped, preflight
from lmforge.memory_estimate import Budget, Plan, Shape, estimate, suggestions
from lmforge.model import ModelConfig, Transformer
from tests.support.compose import REPO, TRAIN_SCRIPT, compose_train

MODELS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml") if p.stem != "auto")


def shape_of(cfg: ModelConfig) -> Shape:
    return Shape(
        cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim, cfg.tie_embeddings
    )


@pytest.mark.parametrize("model", MODELS)
def test_parameter_count_matches_the_model(model):
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    cfg = ModelConfig(
        **{k: v for k, v in yaml.safe_load((conf_dir() / "model" / f"{model}.yaml").read_text()).items() if k in fields}
    )
    assert shape_of(cfg).num_params() == cfg.num_params()


def test_lora_count_matches_peft():
    hf = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(LlamaForCausalLM(hf), LoraConfig(r=8, target_modules=targets))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert Shape(256, 64, 3, 4, 2, 160, False).lora_params(8, targets) == trainable


def test_activation_estimate_is_near_what_autograd_saves():
    """Bytes of the tensors autograd keeps for backward (weights excluded), fp32, with the loss.
    (Under activation checkpointing the peak is in backward, recomputing a block: hooks on the
    forward pass cannot see it, so only the plain case is measured.)"""
    cfg = ModelConfig(vocab_size=512, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=176, max_seq_len=128)
    model = Transformer(cfg)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    tokens = torch.randint(0, 512, (4, 128))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
    plan = Plan(shape_of(cfg), "32-true", "auto", 1, "pretrain", "adamw", None, (), False, 4, 128, False)
    ratio = estimate(plan).activations / sum(saved.values())
    assert 0.8 < ratio < 1.5, ratio  # an estimate to refuse on: same size, not an exact count
    checkpointed = estimate(dataclasses.replace(plan, checkpointing=True)).activations
    assert checkpointed < estimate(plan).activations / 2


def test_fsdp_shards_states_but_not_activations():
    shape = Shape(32000, 4096, 32, 32, 32, 11008, False)
    one = Plan(shape, "bf16-true", "fsdp", 1, "sft", "adamw", None, (), False, 1, 4096, True)
    eight = dataclasses.replace(one, world_size=8)
    a, b = estimate(one), estimate(eight)
    assert (b.weights, b.gradients, b.optimizer) == (a.weights // 8, a.gradients // 8, a.optimizer // 8)
    assert a.weights == shape.num_params() * 2 and a.optimizer == 2 * a.weights
    assert b.activations == a.activations
    ddp = estimate(dataclasses.replace(eight, strategy="ddp"))
    assert ddp.weights == a.weights
    # Suggestions end below a budget the first plan exceeds.
    assert "strategy=fsdp" in suggestions(dataclasses.replace(one, strategy="auto"), Budget(20 * 2**30, 1, "GiB"))


def compose(args: list[str]):
    message, cfg = compose_untyped(args)
    assert message is None, message
    return cfg


def test_preflight_refuses_7b_dpo_on_a_small_budget_and_skips_when_told(monkeypatch):
    import lmforge.memory_estimate as memory

    monkeypatch.setattr(memory, "gpu_memory", lambda: [])
    monkeypatch.setattr(memory, "available_ram", lambda: 23 * 2**30)
    with pytest.raises(PreflightError) as err:
        preflight(compose(["model=7b", "stage=dpo"]))
    message = str(err.value)
    assert "\n" not in message and "model=7b stage=dpo needs about" in message
    for part in ("weights 25.1", "reference 25.1", "gradients 25.1", "optimizer 50.2", "activations"):
        assert part in message
    assert "precision=bf16-true" in message and "peft=lora" in message and "strategy=fsdp" in message
    preflight(compose(["model=7b", "stage=dpo", "memory_check=false"]))
    preflight(compose(["model=tiny", "stage=dpo"]))
    # A SLURM job runs elsewhere: the submitting machine's memory says nothing.
    preflight(compose(["model=7b", "hydra/launcher=slurm", "trainer.devices=8"]))
    # An H200 per process: 7B full fine-tuning in bf16 with FSDP over 8 GPUs and checkpointing fits.
    monkeypatch.setattr(memory, "gpu_memory", lambda: [141 * 2**30] * 8)
    preflight(
        compose(
            ["model=7b", "stage=sft", "trainer=gpu", "strategy=fsdp", "precision=bf16-true", "trainer.devices=8"]
            + ["module.activation_checkpointing=true", "datamodule.batch_size=1"]
        )
    )


def test_preflight_names_a_missing_init_from(tmp_path):
    with pytest.raises(PreflightError, match=f"init_from={tmp_path}/nope does not exist"):
        preflight(compose(["model=tiny", "stage=sft", f"init_from={tmp_path}/nope"]))


def run_cli(args: list[str], **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environ.update(PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=120
    )
    return proc, time.perf_counter() - start


def test_7b_dpo_fails_in_seconds_with_the_estimate():
    """On any machine: the estimate at the defaults (fp32, batch 16 pairs of 4096 tokens) is over
    1 TiB, more than any single GPU or host this runs on."""
    proc, seconds = run_cli(["model=7b", "stage=dpo"])
    assert proc.returncode == 1 and seconds < 5, (seconds, proc.stderr[-2000:])
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: model=7b stage=dpo needs about") and "optimizer 50.2" in line
    assert "Traceback" not in proc.stderr
    full, _ = run_cli(["model=7b", "stage=dpo"], HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "PreflightError" in full.stderr


def test_stage_learning_rates_scale_with_model_size():
    def lr(*args: str) -> float:
        return compose_train(list(args)).optim.lr

    assert lr("model=tiny", "stage=dpo") == 3e-3  # what the tiny recipes were measured with
    assert 5e-7 <= lr("model=7b", "stage=dpo") <= 5e-6  # Zephyr / Tulu 2 DPO
    assert 5e-6 <= lr("model=7b", "stage=sft") <= 5e-5
    assert lr("model=7b", "stage=pretrain") == 3e-4 and lr("model=70b", "stage=pretrain") == 1.5e-4
    assert lr("model=125m", "stage=dpo") < lr("model=125m", "stage=sft") < lr("model=125m", "stage=pretrain")
    assert lr("model=7b", "stage=dpo", "optim.lr=1e-6") == 1e-6
    for experiment in ("dpo_7b_fsdp", "dpo_7b_lora"):
        assert 5e-7 <= lr("stage=dpo", f"experiment={experiment}") <= 5e-6, experiment


def test_running_out_of_memory_is_one_line_with_advice(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    from lmforge.callbacks import NonFiniteLossError
    from lmforge.training import exit_on_user_error, one_line_error

    try:
        torch.empty(2**62, dtype=torch.uint8)  # torch's own allocator error, as a real run meets it
    except RuntimeError as err:
        real = err
    line = one_line_error(real)
    assert line.startswith("out of memory: ") and "can't allocate memory" in line and "\n" not in line
    assert "datamodule.batch_size" in line and "precision=bf16-true" in line
    assert one_line_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")).startswith(
        "out of memory: CUDA out of memory"
    )
    assert one_line_error(NonFiniteLossError("training loss is nan at global step 5 ...")).startswith("training loss")
    assert one_line_error(ValueError("a bug")) is None  # anything else keeps its traceback
    with pytest.raises(SystemExit, match="^error: out of memory"):
        exit_on_user_error(real)


@pytest.mark.parametrize(
    "shape",
    [
        {"d_model": 100, "n_heads": 3, "n_kv_heads": 3},
        {"d_model": 96, "n_heads": 6, "n_kv_heads": 4},
        {"d_model": 60, "n_heads": 4, "n_kv_heads": 4},  # head_dim 15: odd
        {"d_model": 64, "n_heads": 4, "n_kv_heads": 2},
    ],
)
def test_preflight_shape_rules_match_the_model(shape):
    """Same verdict and message as lmforge.model.ModelConfig, before torch is imported."""
    from lmforge.config_precheck import model_shape_error

    try:
        ModelConfig(vocab_size=64, ffn_dim=64, n_layers=1, max_seq_len=32, **shape)
        expected = None
    except ValueError as err:
        expected = str(err)
    assert model_shape_error(shape) == expected
    if expected:
        with pytest.raises(PreflightError, match=re.escape(expected)):
            preflight(compose(["model=tiny", *(f"model.{k}={v}" for k, v in shape.items())]))


def test_preflight_reads_an_hf_folders_shape_for_model_auto(tmp_path, monkeypatch):
    """model=auto takes its shape from init_from; for an HF folder the budget is checked from its
    config.json before any weight is read (a Llama-2-7B config here, no weights needed)."""
    import lmforge.memory_estimate as memory

    monkeypatch.setattr(memory, "gpu_memory", lambda: [])
    monkeypatch.setattr(memory, "available_ram", lambda: 23 * 2**30)
    LlamaConfig().save_pretrained(tmp_path)  # transformers' defaults are Llama-2-7B's shape
    with pytest.raises(PreflightError, match="model=auto stage=dpo needs about .*weights 25.1"):
        preflight(compose(["model=auto", "stage=dpo", f"init_from={tmp_path}"]))
    proc, seconds = run_cli(["stage=dpo", f"init_from={tmp_path}"])
    assert proc.returncode == 1 and seconds < 5, (seconds, proc.stderr[-2000:])
    assert proc.stderr.strip().startswith("error: model=auto stage=dpo needs about"), proc.stderr[-2000:]
