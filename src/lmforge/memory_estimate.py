"""Will this training run fit in memory? An estimate from the composed config alone, in milliseconds.

`estimate_training_memory(cfg)` counts, per training process: weights, a frozen reference copy
(DPO/RL without LoRA), gradients and optimizer states of the trainable parameters (all three
sharded over every rank under `strategy=fsdp`), and the activations one micro-batch keeps for
backward. `device_budget(cfg)` is what one process may use on this machine: the smallest GPU's
memory (nvidia-smi), or the RAM available (/proc/meminfo) shared by the local CPU processes.
`check_memory_budget(cfg)` turns the two into one line with the estimate and what would fit.

Byte counts per element follow the precision plugins Lightning documents: `*-true` keeps weights,
gradients and AdamW states in that dtype; `*-mixed` keeps fp32 weights/gradients/states and
autocasts activations to 16 bits. Activations count the tensors a Llama block saves for backward
(norm inputs and outputs, q/k/v, attention output, gate/up/product of the MLP: about
7*d + 2*d_kv + 4*ffn elements per token; SDPA stores no seq x seq matrix), one block input per
layer under activation checkpointing, plus the fp32 logits and their gradient. It ignores
allocator fragmentation, CUDA context and temporary buffers: a lower bound, which is what
refusing needs.

This module imports only the standard library and OmegaConf: it runs before torch is loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

GIB = 1024**3
# Bytes per element of (weights and their gradients/optimizer states, activations).
_PRECISION_BYTES = {
    "64-true": (8, 8),
    "64": (8, 8),
    "32-true": (4, 4),
    "32": (4, 4),
    "bf16-true": (2, 2),
    "16-true": (2, 2),
    "bf16-mixed": (4, 2),
    "16-mixed": (4, 2),
}
# Optimizer states per trainable parameter (lmforge.optimizers): AdamW's two moments, Muon's momentum.
_OPTIMIZER_STATES = {"adamw": 2, "muon": 1}


@dataclass(frozen=True)
class Shape:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    tie_embeddings: bool
    head_dim: int | None = None  # None: d_model // n_heads

    @property
    def d_q(self) -> int:
        return (self.head_dim or self.d_model // self.n_heads) * self.n_heads

    @property
    def d_kv(self) -> int:
        return (self.head_dim or self.d_model // self.n_heads) * self.n_kv_heads

    def num_params(self) -> int:
        """Same count as lmforge.model.ModelConfig.num_params (a test holds them equal)."""
        d = self.d_model
        block = 2 * d * self.d_q + 2 * d * self.d_kv + 3 * d * self.ffn_dim + 2 * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * block + d + head

    def lora_params(self, rank: int, targets: list[str]) -> int:
        d, kv, f = self.d_model, self.d_kv, self.ffn_dim
        in_out = {
            "q_proj": (d, self.d_q),
            "k_proj": (d, kv),
            "v_proj": (d, kv),
            "o_proj": (self.d_q, d),
            "gate_proj": (d, f),
            "up_proj": (d, f),
            "down_proj": (f, d),
        }
        return self.n_layers * sum(rank * sum(in_out[t]) for t in targets if t in in_out)

    def activation_elements_per_token(self, checkpointing: bool) -> int:
        per_layer = 7 * self.d_model + 2 * self.d_kv + 4 * self.ffn_dim
        if checkpointing:  # one block input per layer, one block recomputed at a time
            return self.n_layers * self.d_model + per_layer
        return self.n_layers * per_layer


@dataclass(frozen=True)
class Plan:
    """What the estimate depends on, read from the composed config."""

    shape: Shape
    precision: str
    strategy: str  # auto | ddp | fsdp
    world_size: int
    stage: str
    optimizer: str
    lora_rank: int | None
    lora_targets: tuple[str, ...]
    reference_copy: bool
    rows: int  # sequences in one micro-batch per process
    seq_len: int
    checkpointing: bool


@dataclass(frozen=True)
class Estimate:
    weights: int
    reference: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.reference + self.gradients + self.optimizer + self.activations


def estimate(plan: Plan) -> Estimate:
    weight_bytes, activation_bytes = _PRECISION_BYTES.get(plan.precision, (4, 4))
    params = plan.shape.num_params()
    lora = plan.shape.lora_params(plan.lora_rank, list(plan.lora_targets)) if plan.lora_rank else 0
    trainable = lora or params
    shard = plan.world_size if plan.strategy == "fsdp" else 1
    tokens = plan.rows * plan.seq_len
    activations = tokens * plan.shape.activation_elements_per_token(plan.checkpointing) * activation_bytes
    activations += tokens * plan.shape.vocab_size * (activation_bytes + 8)  # logits + fp32 loss input and grad
    return Estimate(
        weights=(params + lora) * weight_bytes // shard,
        reference=params * weight_bytes // shard if plan.reference_copy and not lora else 0,
        gradients=trainable * weight_bytes // shard,
        optimizer=_OPTIMIZER_STATES.get(plan.optimizer, 2) * trainable * weight_bytes // shard,
        activations=activations,
    )


def _strategy_name(strategy) -> str:
    if isinstance(strategy, str):
        return strategy
    target = str((strategy or {}).get("_target_", ""))
    if "FSDP" in target or "ModelParallel" in target:
        return "fsdp"
    return "ddp" if "DDP" in target else "auto"


def gpu_memory() -> list[int]:
    """Total memory of each visible GPU in bytes, from nvidia-smi; [] without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    sizes = [int(line.strip()) * 1024**2 for line in out.splitlines() if line.strip().isdigit()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        keep = [int(i) for i in visible.split(",") if i.strip().isdigit()]
        sizes = [sizes[i] for i in keep if i < len(sizes)]
    return sizes


def available_ram() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


@dataclass(frozen=True)
class Budget:
    per_process: int
    processes: int  # on this machine
    where: str  # e.g. "of RAM available" / "per GPU"


def device_budget(trainer: Mapping) -> Budget | None:
    """Memory one training process may use here; None when this machine cannot tell."""
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", 1)
    gpus = gpu_memory() if accelerator in ("auto", "gpu", "cuda") else []
    if gpus:
        count = len(gpus) if devices in ("auto", -1, "-1") else int(devices) if str(devices).isdigit() else 1
        return Budget(min(gpus[: max(count, 1)]), count, f"GiB per GPU ({len(gpus)} visible)")
    if accelerator in ("gpu", "cuda"):
        return None  # no GPU here: Lightning itself says so
    ram = available_ram()
    if ram is None:
        return None
    count = int(devices) if str(devices).isdigit() and int(devices) > 0 else 1
    return Budget(ram // count, count, "GiB of RAM available" + (f" / {count} processes" if count > 1 else ""))


def plan_from_config(cfg: DictConfig, stage: str, strategy_choice: str | None = None) -> Plan | None:
    """The estimate's inputs from a composed train config; None when the shape is not known yet
    (model=auto takes it from init_from) or the config trains nothing itself (a runner)."""
    model, module, trainer = cfg.get("model"), cfg.get("module"), cfg.get("trainer")
    if model is None or module is None or trainer is None or cfg.get("runner") is not None:
        return None
    keys = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim")
    if any(OmegaConf.is_missing(model, k) or model.get(k) is None for k in keys):
        return None
    shape = Shape(
        **{k: int(model[k]) for k in keys},
        tie_embeddings=bool(model.get("tie_embeddings", False)),
        head_dim=int(model["head_dim"]) if model.get("head_dim") is not None else None,
    )
    datamodule = cfg.get("datamodule") or {}
    rows = int(datamodule.get("batch_size") or 1)
    if stage in ("dpo", "reward"):
        rows *= 2  # chosen and rejected
    if stage == "rl":
        rows *= int(module.get("group_size") or 1)
    seq_len = int(datamodule.get("max_seq_len") or datamodule.get("seq_len") or model.get("max_seq_len") or 1)
    peft = cfg.get("peft") or {}
    lora = str(peft.get("name", "none")) not in ("none", "None")
    reference = (stage == "dpo" and not module.get("precompute_reference", False)) or (
        stage == "rl" and float(module.get("beta") or 0) > 0
    )
    devices = trainer.get("devices", 1)
    per_node = int(devices) if str(devices).isdigit() else len(gpu_memory()) or 1
    return Plan(
        shape=shape,
        precision=str(trainer.get("precision") or ("64-true" if trainer.get("plugins") else "32-true")),
        strategy=strategy_choice or _strategy_name(trainer.get("strategy")),
        world_size=per_node * int(trainer.get("num_nodes") or 1),
        stage=stage,
        optimizer=str((cfg.get("optim") or {}).get("name", "adamw")),
        lora_rank=int(peft.get("rank", 8)) if lora else None,
        lora_targets=tuple(peft.get("target_modules") or ()) if lora else (),
        reference_copy=reference,
        rows=rows,
        seq_len=seq_len,
        checkpointing=bool(module.get("activation_checkpointing", False)),
    )


def _gib(n: int) -> str:
    return f"{n / GIB:,.1f}"


def describe(est: Estimate) -> str:
    parts = [f"weights {_gib(est.weights)}"]
    if est.reference:
        parts.append(f"reference {_gib(est.reference)}")
    parts += [
        f"gradients {_gib(est.gradients)}",
        f"optimizer {_gib(est.optimizer)}",
        f"activations {_gib(est.activations)}",
    ]
    return " + ".join(parts) + " GiB"


def suggestions(plan: Plan, budget: Budget) -> str:
    """The documented ways down, each with the estimate it gives, cumulatively."""
    steps = []
    if plan.precision != "bf16-true":
        plan = replace(plan, precision="bf16-true")
        steps.append("precision=bf16-true")
    if plan.lora_rank is None and plan.stage != "pretrain":
        plan = replace(plan, lora_rank=8, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))
        steps.append("peft=lora")
    if not plan.checkpointing:
        plan = replace(plan, checkpointing=True)
        steps.append("module.activation_checkpointing=true")
    if plan.rows > (2 if plan.stage in ("dpo", "reward") else 1):
        plan = replace(plan, rows=2 if plan.stage in ("dpo", "reward") else 1)
        steps.append("datamodule.batch_size=1 (trainer.accumulate_grad_batches for the same batch)")
    fits = estimate(plan).total <= budget.per_process
    text = f"try {', '.join(steps)}: about {_gib(estimate(plan).total)} GiB" if steps else ""
    if not fits or plan.strategy != "fsdp":
        text += ("; " if text else "") + (
            "strategy=fsdp over more devices (trainer.devices, trainer.num_nodes) shards weights, "
            "gradients and optimizer states across them"
        )
    return text


class MemoryBudgetError(RuntimeError):
    """The run cannot fit the memory of the device(s) it would run on."""


def check_memory_budget(cfg: DictConfig, stage: str, model_name: str, strategy_choice: str | None = None) -> None:
    """Raise MemoryBudgetError (one line: estimate, budget, suggestion) when the estimate exceeds
    what one process has here. Silent when the shape or the device cannot be known."""
    plan = plan_from_config(cfg, stage, strategy_choice)
    if plan is None:
        return
    budget = device_budget(cfg.trainer)
    if budget is None:
        return
    est = estimate(plan)
    if est.total <= budget.per_process:
        return
    where = f"{plan.world_size} process{'es' if plan.world_size > 1 else ''}"
    raise MemoryBudgetError(
        f"model={model_name} stage={stage} needs about {_gib(est.total)} GiB per process "
        f"({describe(est)}; {plan.shape.num_params():,} parameters, precision={plan.precision}, "
        f"strategy={plan.strategy}, {where}, {plan.rows} rows x {plan.seq_len} tokens per step) "
        f"but this machine has {_gib(budget.per_process)} {budget.where}; {suggestions(plan, budget)}. "
        f"memory_check=false skips this check."
    )
