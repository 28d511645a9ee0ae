"""stage=rl: GRPO-family policy optimisation with pluggable rewards (verifiable or a reward model).

Per batch of prompts the policy samples `group_size` completions each with the KV-cached
`lmforge.generate.generate`, the configured rewards score them (`lmforge.rewards`), rewards are
normalised within each group into advantages (GRPO, Shao et al. 2024, arXiv:2402.03300), and the
clipped surrogate is minimised with an optional k3 KL penalty to the frozen initial policy
(Schulman 2020, "Approximating KL divergence").

Loss aggregation (`loss_type`): `grpo` (token mean per sequence, then mean over sequences),
`dapo` (token mean over the whole batch, Yu et al. 2025, arXiv:2503.14476, with decoupled
`eps_low`/`eps_high`), `dr_grpo` (token sum over a constant N * max_new_tokens, Liu et al. 2025,
arXiv:2503.20783, usually with `scale_rewards=none`).

`num_iterations` > 1 takes that many optimiser steps on each generated batch (GRPO's mu): the
datamodule repeats every batch of prompts that many times (`repeat_batches`) and the stage reuses
its rollout, with the log-probs from before the first update as the "old" policy, so the ratio
moves away from 1 and the clip becomes active. With one step per batch the ratio is exactly 1.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from lmforge.data.tasks import Task, make_tasks, task_from_record
from lmforge.generate import SamplingConfig, generate, padded_causal_mask
from lmforge.rewards import build_reward, check_reward_spec
from lmforge.stages.base import BaseStage, to_plain
from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)
SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


# ---------------------------------------------------------------- pure functions
def group_advantages(rewards: Tensor, group_size: int, scale_rewards: str = "group", eps: float = 1e-4) -> Tensor:
    """Advantage of each completion: reward minus its group's mean, divided by a std per `scale_rewards`.

    `rewards` is [n_prompts * group_size], consecutive entries sharing a prompt. "group" divides by the
    group's std (GRPO), "batch" by the std of all rewards, "none" not at all (Dr. GRPO).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}; expected one of {SCALE_REWARDS}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale_rewards == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1) if group_size > 1 else torch.zeros_like(centred)
        return centred / (std + eps)
    if scale_rewards == "batch":
        return centred / (rewards.float().std() + eps)
    return centred


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token unbiased, non-negative KL(policy || reference) estimate: exp(d) - d - 1 with d = ref - logp."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def policy_loss(
    logps: Tensor,
    old_logps: Tensor,
    ref_logps: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    loss_type: str = "grpo",
    max_completion_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate (+ beta * k3 KL) over completion tokens [N, T]; returns (loss, metrics)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {LOSS_TYPES}")
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1).to(logps.dtype)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    kl = torch.zeros_like(logps)
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        kl = k3_kl(logps, ref_logps)
        per_token = per_token + beta * kl
    tokens = mask.sum().clamp(min=1)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / tokens
    else:
        if not max_completion_len:
            raise ValueError("loss_type=dr_grpo needs max_completion_len")
        loss = (per_token * mask).sum() / (logps.shape[0] * max_completion_len)
    was_clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    metrics = {
        "kl": ((kl * mask).sum() / tokens).detach(),
        "clip_fraction": ((was_clipped.to(mask.dtype) * mask).sum() / tokens).detach(),
        "ratio_max": (ratio.detach() * mask).max() if mask.any() else torch.ones(()),
    }
    return loss, metrics


def completion_logps(
    model: torch.nn.Module, input_ids: Tensor, attn_mask: Tensor, prompt_len: int, temperature: float = 1.0
) -> Tensor:
    """Log-prob of each completion token [N, T_completion] given left-padded prompts of width `prompt_len`.

    `temperature` divides the logits as the sampler did, so the ratio and the gradient are those of
    the distribution the completions were actually drawn from (on-policy at any temperature).
    """
    position_ids, mask4d = padded_causal_mask(attn_mask)  # the same mask the sampler's prefill used
    logits = model(input_ids, position_ids=position_ids, attn_mask=mask4d)
    logits = logits[:, prompt_len - 1 : -1].float() / temperature
    targets = input_ids[:, prompt_len:]
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def pack_rollout(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Left-padded prompts then right-padded completions: [N, P + C] ids, real-token mask,
    completion mask [N, C] and the prompt width P."""
    width_p = max(len(p) for p in prompts)
    width_c = max(1, max(len(c) for c in completions))
    ids = torch.full((len(prompts), width_p + width_c), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids, dtype=torch.bool)
    completion_mask = torch.zeros(len(prompts), width_c, dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, width_p - len(p) : width_p] = torch.tensor(p)
        attn[i, width_p - len(p) : width_p + len(c)] = True
        if c:
            ids[i, width_p : width_p + len(c)] = torch.tensor(c)
            completion_mask[i, : len(c)] = True
    return ids.to(device), attn.to(device), completion_mask.to(device), width_p


@dataclass
class Rollout:
    """One generated batch and everything the loss needs from it, kept for `num_iterations` steps."""

    key: tuple[str, ...]  # the prompts, to check a repeated batch is the same one
    input_ids: Tensor
    attn: Tensor
    completion_mask: Tensor
    prompt_len: int
    rewards: Tensor
    advantages: Tensor
    reward_parts: dict[str, list[float]]
    generation_seconds: float
    old_logps: Tensor | None = None  # filled by the first optimisation step on this rollout
    ref_logps: Tensor | None = None
    uses: int = 0


# ---------------------------------------------------------------- stage
class RLStage(BaseStage):
    """Batch: a list of samples {"prompt_ids": list[int], "prompt": str, "task": dict, "answer": str}."""

    stage_name = "rl"

    def __init__(
        self,
        *args: Any,
        reward: dict | None = None,
        group_size: int = 8,
        sampling: dict | None = None,
        beta: float = 0.0,
        eps_low: float = 0.2,
        eps_high: float = 0.2,
        loss_type: str = "grpo",
        scale_rewards: str = "group",
        num_iterations: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"module.loss_type={loss_type!r}; expected one of {LOSS_TYPES}")
        if scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"module.scale_rewards={scale_rewards!r}; expected one of {SCALE_REWARDS}")
        if group_size < 2:
            raise ValueError(f"module.group_size={group_size}: group-relative advantages need >= 2 completions")
        if num_iterations < 1:
            raise ValueError(f"module.num_iterations={num_iterations} must be >= 1")
        self.reward_spec = to_plain(reward) or {"task_answer": 1.0}
        check_reward_spec(self.reward_spec)
        self.reward_fn = None  # built in configure_model: a reward model is loaded only for training
        self.group_size, self.num_iterations = group_size, num_iterations
        sampling_cfg = SamplingConfig(**(to_plain(sampling) or {}))
        if sampling_cfg.temperature <= 0:
            raise ValueError("module.sampling.temperature must be > 0: GRPO needs diverse samples per group")
        if sampling_cfg.stop_token_ids:
            raise ValueError("module.sampling.stop_token_ids is not configurable: RL stops at <|end|>, the "
                             "token SFT teaches, so the trained sequence is exactly the sampled one")
        # `generate` drops the stop token from a completion; the stage appends it back (below), so
        # the policy is also trained on *when to stop*. Without it, negative advantages push down
        # answer tokens while nothing holds up <|end|>, and completions grow until format breaks.
        self.sampling = replace(sampling_cfg, stop_token_ids=(self.tokenizer.end_of_turn_id,))
        self.beta, self.eps_low, self.eps_high = beta, eps_low, eps_high
        self.loss_type, self.scale_rewards = loss_type, scale_rewards
        self._reference: list[torch.nn.Module] = []  # a list: kept out of state_dict and the optimizer
        self._rollout: Rollout | None = None
        self._train_tokens = 0
        self._train_clock: float | None = None

    def configure_model(self) -> None:
        super().configure_model()
        if self.reward_fn is None:
            self.reward_fn = build_reward(self.reward_spec)
        if self.beta != 0.0 and not self._reference:
            # The frozen initial policy (after init_from and LoRA wrapping).
            self._reference.append(copy.deepcopy(self.model).eval().requires_grad_(False))

    # ----- rollouts -----
    def sample(self, batch: list[dict], sampling: SamplingConfig, group_size: int):
        """`group_size` completions per prompt: (prompt ids, completion ids with the <|end|> that
        stopped them, decoded texts without it, samples, seconds)."""
        prompts = [s["prompt_ids"] for s in batch for _ in range(group_size)]
        samples = [s for s in batch for _ in range(group_size)]
        start = time.perf_counter()
        out = generate(self.model, prompts, sampling, pad_id=self.tokenizer.pad_id)
        seconds = time.perf_counter() - start
        texts = [self.tokenizer.decode(c) for c in out.completions]
        end = self.tokenizer.end_of_turn_id
        completions = [c + [end] if done else c for c, done in zip(out.completions, out.finished, strict=True)]
        return prompts, completions, texts, samples, seconds

    def new_rollout(self, batch: list[dict]) -> Rollout:
        prompts, completions, texts, samples, seconds = self.sample(batch, self.sampling, self.group_size)
        rewards, parts = self.reward_fn(texts, samples)
        rewards_t = torch.tensor(rewards, dtype=torch.float32, device=self.device)
        ids, attn, completion_mask, prompt_len = pack_rollout(prompts, completions, self.tokenizer.pad_id, self.device)
        rollout = Rollout(
            key=tuple(s["prompt"] for s in batch), input_ids=ids, attn=attn, completion_mask=completion_mask,
            prompt_len=prompt_len, rewards=rewards_t,
            advantages=group_advantages(rewards_t, self.group_size, self.scale_rewards),
            reward_parts=parts, generation_seconds=seconds,
        )
        if self.beta != 0.0:
            reference = self._reference[0]
            if next(reference.parameters()).device != self.device:
                reference.to(self.device)
            with torch.no_grad():
                rollout.ref_logps = completion_logps(reference, ids, attn, prompt_len, self.sampling.temperature)
        return rollout

    def rollout_for(self, batch: list[dict]) -> tuple[Rollout, bool]:
        """The cached rollout while this batch is repeated (num_iterations > 1), else a new one."""
        cached = self._rollout
        key = tuple(s["prompt"] for s in batch)
        if cached is not None and cached.key == key and cached.uses < self.num_iterations:
            return cached, False
        if cached is not None and cached.uses < self.num_iterations and self.num_iterations > 1:
            log.warning("rollout used %d of num_iterations=%d times before new prompts arrived; set "
                        "datamodule.repeat_batches=module.num_iterations", cached.uses, self.num_iterations)
        self._rollout = self.new_rollout(batch)
        return self._rollout, True

    # ----- loss -----
    def compute_loss(self, batch: list[dict], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        if split != "train":
            return self.validation_reward(batch)
        rollout, fresh = self.rollout_for(batch)
        self._train_clock = time.perf_counter()
        logps = completion_logps(self.model, rollout.input_ids, rollout.attn, rollout.prompt_len,
                                 self.sampling.temperature)
        if rollout.old_logps is None:
            # The policy that generated the batch is the current one: ratio == 1 on this step.
            rollout.old_logps = logps.detach()
        rollout.uses += 1
        loss, metrics = policy_loss(
            logps, rollout.old_logps, rollout.ref_logps, rollout.advantages, rollout.completion_mask,
            self.eps_low, self.eps_high, self.beta, self.loss_type, self.sampling.max_new_tokens,
        )
        generated = int(rollout.completion_mask.sum())
        self._train_tokens = int(rollout.attn.sum())
        rewards = rollout.rewards
        metrics.update(
            reward=rewards.mean(),
            reward_std=rewards.std() if rewards.numel() > 1 else torch.zeros(()),
            completion_len=rollout.completion_mask.sum(1).float().mean(),
            **{f"reward/{name}": torch.tensor(values).mean() for name, values in rollout.reward_parts.items()},
        )
        if fresh:  # logged once per generated batch
            metrics["generation_tokens_per_s"] = torch.tensor(generated / max(rollout.generation_seconds, 1e-9))
        return loss, metrics

    @torch.no_grad()
    def validation_reward(self, batch: list[dict]) -> tuple[Tensor, dict[str, Tensor]]:
        """Greedy completions of held-out prompts: the loss is -mean reward (lower is better)."""
        _, _, texts, samples, _ = self.sample(batch, replace(self.sampling, temperature=0.0), 1)
        rewards, parts = self.reward_fn(texts, samples)
        mean = torch.tensor(rewards).mean()
        return -mean, {"reward": mean, **{f"reward/{k}": torch.tensor(v).mean() for k, v in parts.items()}}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Training throughput: forward, backward and optimiser step of the rollout's tokens,
        # generation excluded (it has its own tokens/s), to compare the two phases.
        if self._train_clock is not None:
            seconds = time.perf_counter() - self._train_clock
            self.log("train/train_tokens_per_s", self._train_tokens / max(seconds, 1e-9), on_step=True, on_epoch=False)
            self._train_clock = None

    def batch_tokens(self, batch: Any) -> int:
        return self._train_tokens

    def batch_size_of(self, batch: Any) -> int:
        return len(batch)

    def flops_per_token(self, batch: Any) -> float:
        return self.model_config.flops_per_token(self.sampling.max_new_tokens)


# ---------------------------------------------------------------- prompts
def read_prompt_jsonl(path: str | Path) -> list[dict]:
    """Task records (`task_record`) or GSM8K lines {"question", "answer": "...#### N"}; bad lines counted and named."""
    records, bad = [], []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if "question" in rec:  # GSM8K: the reference is the number after ####
                final = rec["answer"].split("####")[-1].strip()
                rec = {"prompt": rec["question"], "answer": final, "kind": "gsm8k"}
            task_from_record(rec)  # validates the required fields
            records.append(rec)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            bad.append(line_no)
    if bad:
        log.warning("%s: skipped %d corrupt lines (first: %s)", path, len(bad), bad[:5])
    return records


class RepeatBatchSampler(BatchSampler):
    """Yields every batch of indices `repeats` times in a row, for `num_iterations` > 1."""

    def __init__(self, sampler, batch_size: int, drop_last: bool, repeats: int) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.repeats = repeats

    def __iter__(self):
        for batch in super().__iter__():
            for _ in range(self.repeats):
                yield batch

    def __len__(self) -> int:
        return super().__len__() * self.repeats


class PromptDataModule(L.LightningDataModule):
    """RL prompts: generated verifiable tasks (train split; held-out split for validation) or JSONL
    of task records / GSM8K lines. Held-out tasks never occur in any train split."""

    def __init__(
        self,
        tokenizer_path: str,
        tasks: dict | None = None,
        train_path: str | None = None,
        val_path: str | None = None,
        batch_size: int = 8,
        max_prompt_len: int = 192,
        repeat_batches: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = Tokenizer.load(tokenizer_path)
        self.tasks = to_plain(tasks) or {"kind": "mix", "n_train": 2000, "n_val": 64, "seed": 0}
        self.train_path, self.val_path = train_path, val_path
        self.batch_size, self.max_prompt_len, self.num_workers = batch_size, max_prompt_len, num_workers
        self.repeat_batches = repeat_batches

    def _records(self, path: str | None, split: str, n: int) -> list[dict]:
        if path:
            return read_prompt_jsonl(path)
        tasks = make_tasks(self.tasks["kind"], n=n, seed=self.tasks["seed"], split=split)
        return [{"prompt": t.prompt, "answer": t.answer, "kind": t.kind} for t in tasks]

    def _samples(self, records: list[dict]) -> list[dict]:
        out = []
        for rec in records:
            ids = self._prompt_ids(rec["prompt"])
            out.append({"prompt_ids": ids[-self.max_prompt_len :], "prompt": rec["prompt"], "task": rec, "answer": rec["answer"]})
        return out

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)[0]

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._samples(self._records(self.train_path, "train", self.tasks["n_train"]))
        self.val_set = self._samples(self._records(self.val_path, "heldout", self.tasks["n_val"]))

    def train_dataloader(self) -> DataLoader:
        sampler = RepeatBatchSampler(RandomSampler(self.train_set), self.batch_size, drop_last=False,
                                     repeats=self.repeat_batches)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=list, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        sampler = BatchSampler(SequentialSampler(self.val_set), self.batch_size, drop_last=False)
        return DataLoader(self.val_set, batch_sampler=sampler, collate_fn=list, num_workers=self.num_workers)


__all__ = ["RLStage", "PromptDataModule", "Rollout", "group_advantages", "policy_loss", "k3_kl",
           "completion_logps", "pack_rollout", "Task"]
