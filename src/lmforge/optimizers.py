"""Optimisers and learning-rate schedules behind `optim=adamw|muon` and `schedule=cosine|wsd|constant`.

Muon (torch.optim.Muon) orthogonalises the update of 2-D hidden matrices only; embeddings, the LM
head and norm gains keep AdamW, as Muon's authors and every public recipe do. Lightning's automatic
optimisation takes one optimizer, so the two are joined in `HybridOptimizer`, whose param groups are
the inner optimizers' own dicts: the LR scheduler, gradient clipping and checkpointing see one object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd", "constant")


def is_no_decay(name: str, param: Tensor) -> bool:
    """Norm gains (1-D) and embedding tables are not decayed: decay would pull rare tokens'
    rows and the per-channel scales towards zero for no regularising benefit."""
    return param.ndim < 2 or "embed_tokens" in name


def is_muon_param(name: str, param: Tensor) -> bool:
    """Hidden 2-D weight matrices; the embedding and the output head are excluded (their rows are
    per-token lookups, not a linear map Muon's orthogonalisation is meant for)."""
    return param.ndim == 2 and "embed_tokens" not in name and "lm_head" not in name


def trainable(named: Iterable[tuple[str, nn.Parameter]]) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters, each once (tied weights appear under two names)."""
    seen, out = set(), []
    for name, param in named:
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    return out


def adamw_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    decay = [p for n, p in named if not is_no_decay(n, p)]
    no_decay = [p for n, p in named if is_no_decay(n, p)]
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], cfg) -> torch.optim.Optimizer:
    """`cfg` is an `OptimConfig`: name, lr, betas, eps, weight_decay, momentum, fused."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r}; expected one of {OPTIMIZERS}")
    named = trainable(named_params)
    adamw_kw = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    if cfg.fused is not None:
        adamw_kw["fused"] = bool(cfg.fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(adamw_groups(named, cfg.weight_decay), **adamw_kw)
    matrices = [p for n, p in named if is_muon_param(n, p)]
    rest = [(n, p) for n, p in named if not is_muon_param(n, p)]
    # match_rms_adamw scales each update to AdamW's RMS (0.2 * sqrt(max(A, B))), so one lr serves
    # both optimisers (Liu et al. 2025, "Muon is Scalable for LLM Training", arXiv:2502.16982).
    muon = torch.optim.Muon(
        matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, adjust_lr_fn="match_rms_adamw"
    )
    for group in muon.param_groups:
        group["name"] = "muon"
    inner = [muon]
    if rest:
        inner.append(torch.optim.AdamW(adamw_groups(rest, cfg.weight_decay), **adamw_kw))
    return HybridOptimizer(inner)


class HybridOptimizer(torch.optim.Optimizer):
    """Several optimizers stepped as one. `param_groups` are the inner optimizers' dicts, so an LR
    change by the scheduler reaches them; the state dict nests each inner optimizer's."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    @property
    def state(self):  # noqa: D401 - Lightning moves `optimizer.state` between devices
        merged = {}
        for o in self.optimizers:
            merged.update(o.state)
        return merged

    @state.setter
    def state(self, value) -> None:  # torch's __init__ assigns an empty state; the inner ones hold it
        pass

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for o, sd in zip(self.optimizers, state_dict["inner"], strict=True):
            o.load_state_dict(sd)
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]


def lr_multiplier(
    step: int,
    warmup_steps: int,
    decay_steps: int,
    min_lr_ratio: float,
    schedule: str = "cosine",
    decay_fraction: float = 0.2,
) -> float:
    """Linear warmup from ~0 to 1 over `warmup_steps`, then
    - cosine: cosine to `min_lr_ratio` at `decay_steps`;
    - wsd: constant 1, then a linear cool-down to `min_lr_ratio` over the last `decay_fraction` of
      `decay_steps` (warmup-stable-decay, Hu et al. 2024, MiniCPM, arXiv:2404.06395);
    - constant: 1 after warmup."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r}; expected one of {SCHEDULES}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if step >= decay_steps:
        return min_lr_ratio
    if schedule == "wsd":
        cooldown = max(1, round(decay_fraction * decay_steps))
        start = max(warmup_steps, decay_steps - cooldown)
        if step < start:
            return 1.0
        progress = (step - start) / max(1, decay_steps - start)
        return 1.0 - (1.0 - min_lr_ratio) * progress
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
