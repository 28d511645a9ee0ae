"""stage=rl: GRPO-family policy optimisation with pluggable rewards (verifiable or a reward model).

Per batch of prompts the policy samples `group_size` completions each with the KV-cached
`lmforge.generate.generate`, the configured rewards score them (`lmforge.rewards`), rewards are
normalised within each group into advantages (GRPO, Shao et al. 2024, arXiv:2402.03300), and the
clipped surrogate is minimised with an optional k3 KL penalty to the frozen initial policy
(Schulman 2020, "Approximating KL divergence"). The advantages and the loss (`loss_type` grpo /
dapo / dr_grpo) are `lmforge.losses.group_advantages` / `policy_loss`; the prompts come from
`lmforge.data.prompts.PromptDataModule`.

`num_iterations` > 1 takes that many optimiser steps on each generated batch (GRPO's mu): the
datamodule repeats every batch of prompts that many times (`repeat_batches`) and the stage reuses
its rollout, with the log-probs from before the first update as the "old" policy, so the ratio
moves away from 1 and the clip becomes active. With one step per batch the ratio is exactly 1.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.generate import SamplingConfig, generate
from lmforge.losses import POLICY_LOSS_TYPES, SCALE_REWARDS, group_advantages, policy_loss
from lmforge.rewards import build_reward, check_reward_spec, verified_correct
from lmforge.stages.base import BaseStage, to_plain

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- rollouts
def completion_logps(
    model: torch.nn.Module, input_ids: Tensor, attn_mask: Tensor, prompt_len: int, temperature: float = 1.0
) -> Tensor:
    """Log-prob of each completion token [N, T_completion] given left-padded prompts of width `prompt_len`.

    Each row is rotated so that its real tokens start at position 0 (its left pads move to the
    end): plain causal attention then sees exactly the real tokens before each position, with the
    positions the sampler gave them, and no [N, 1, T, T] mask is built, so SDPA runs its fused
    causal kernel. Completion token j of row i sits at ``prompt_len - pads_i + j`` afterwards.

    `temperature` divides the logits as the sampler did, so the ratio and the gradient are those of
    the distribution the completions were actually drawn from (on-policy at any temperature).
    """
    width = input_ids.shape[1]
    pads = (~attn_mask[:, :prompt_len].bool()).sum(dim=1, keepdim=True)  # [N, 1] left pads per row
    steps = torch.arange(width, device=input_ids.device)
    rotated = input_ids.gather(1, (steps[None, :] + pads) % width)
    completion = steps[None, : width - prompt_len]
    before_each = prompt_len - pads - 1 + completion  # [N, C]: the positions that predict each completion token
    logits = model(rotated, logits_at=before_each).float() / temperature
    targets = input_ids[:, prompt_len:]
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def pack_rollout(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
):
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
    # `reward`'s keys are reward names the user picks from a registry, so the config schema cannot
    # list them: the node stays open (empty by default), and `module.reward='{code_tests: 1.0}'` fills it.
    open_config_keys = ("reward",)
    default_reward = {"task_answer": 1.0}  # what an empty `module.reward` means

    @staticmethod
    def check_open_config(key: str, value: Any) -> None:
        """Unknown reward names fail when the config is validated, before any model is built."""
        check_reward_spec(value or RLStage.default_reward)

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
        kl_bias_correction: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if loss_type not in POLICY_LOSS_TYPES:
            raise ValueError(f"module.loss_type={loss_type!r}; expected one of {POLICY_LOSS_TYPES}")
        if scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"module.scale_rewards={scale_rewards!r}; expected one of {SCALE_REWARDS}")
        if group_size < 2:
            raise ValueError(f"module.group_size={group_size}: group-relative advantages need >= 2 completions")
        if num_iterations < 1:
            raise ValueError(f"module.num_iterations={num_iterations} must be >= 1")
        self.reward_spec = to_plain(reward) or dict(self.default_reward)
        check_reward_spec(self.reward_spec)
        self.reward_fn = None  # built in configure_model: a reward model is loaded only for training
        self.group_size, self.num_iterations = group_size, num_iterations
        sampling_cfg = SamplingConfig(**(to_plain(sampling) or {}))
        if sampling_cfg.temperature <= 0:
            raise ValueError("module.sampling.temperature must be > 0: GRPO needs diverse samples per group")
        if sampling_cfg.stop_token_ids:
            raise ValueError(
                "module.sampling.stop_token_ids is not configurable: RL stops at <|end|>, the "
                "token SFT teaches, so the trained sequence is exactly the sampled one"
            )
        # `generate` drops the stop token from a completion; the stage appends it back (below), so
        # the policy is also trained on *when to stop*. Without it, negative advantages push down
        # answer tokens while nothing holds up <|end|>, and completions grow until format breaks.
        self.sampling = replace(sampling_cfg, stop_token_ids=(self.tokenizer.end_of_turn_id,))
        self.beta, self.eps_low, self.eps_high = beta, eps_low, eps_high
        self.loss_type, self.scale_rewards = loss_type, scale_rewards
        self.kl_bias_correction = kl_bias_correction
        self._rollout: Rollout | None = None
        self._train_tokens = 0
        self._train_clock: float | None = None

    def configure_model(self) -> None:
        super().configure_model()
        if self.reward_fn is None:
            self.reward_fn = build_reward(self.reward_spec)
        if self.beta != 0.0 and self.frozen_reference() is None:
            # The frozen initial policy (after init_from and LoRA wrapping).
            self.set_frozen_reference(copy.deepcopy(self.model))

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
            key=tuple(s["prompt"] for s in batch),
            input_ids=ids,
            attn=attn,
            completion_mask=completion_mask,
            prompt_len=prompt_len,
            rewards=rewards_t,
            advantages=group_advantages(rewards_t, self.group_size, self.scale_rewards),
            reward_parts=parts,
            generation_seconds=seconds,
        )
        if self.beta != 0.0:
            with torch.no_grad():
                rollout.ref_logps = completion_logps(
                    self.frozen_reference(), ids, attn, prompt_len, self.sampling.temperature
                )
        return rollout

    def rollout_for(self, batch: list[dict]) -> tuple[Rollout, bool]:
        """The cached rollout while this batch is repeated (num_iterations > 1), else a new one."""
        cached = self._rollout
        key = tuple(s["prompt"] for s in batch)
        if cached is not None and cached.key == key and cached.uses < self.num_iterations:
            return cached, False
        if cached is not None and cached.uses < self.num_iterations and self.num_iterations > 1:
            log.warning(
                "rollout used %d of num_iterations=%d times before new prompts arrived; set "
                "datamodule.repeat_batches=module.num_iterations",
                cached.uses,
                self.num_iterations,
            )
        self._rollout = self.new_rollout(batch)
        return self._rollout, True

    # ----- loss -----
    def compute_loss(self, batch: list[dict], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        if split != "train":
            return self.validation_reward(batch)
        rollout, fresh = self.rollout_for(batch)
        self._train_clock = time.perf_counter()
        logps = completion_logps(
            self.model, rollout.input_ids, rollout.attn, rollout.prompt_len, self.sampling.temperature
        )
        if rollout.old_logps is None:
            # The policy that generated the batch is the current one: ratio == 1 on this step.
            rollout.old_logps = logps.detach()
        rollout.uses += 1
        loss, metrics = policy_loss(
            logps,
            rollout.old_logps,
            rollout.ref_logps,
            rollout.advantages,
            rollout.completion_mask,
            self.eps_low,
            self.eps_high,
            self.beta,
            self.loss_type,
            self.sampling.max_new_tokens,
            self.kl_bias_correction,
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
        metrics = {"reward": mean, **{f"reward/{k}": torch.tensor(v).mean() for k, v in parts.items()}}
        correct = verified_correct(texts, samples)  # `val/accuracy`: the verifier's verdict, not the reward
        if correct is not None:
            metrics["accuracy"] = torch.tensor(correct).mean()
        return -mean, metrics

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
