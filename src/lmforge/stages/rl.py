"""stage=rl: GRPO-family policy optimisation with verifiable rewards.

Per training batch of prompts the policy samples `group_size` completions each (KV-cached
`lmforge.generate.generate`), the rewards are normalised within each group into advantages
(GRPO, Shao et al. 2024, arXiv:2402.03300), and the clipped surrogate is minimised with an
optional k3 KL penalty to the frozen initial policy (Schulman, "Approximating KL divergence", 2020).
Loss aggregation variants: `grpo` (per-sequence token mean), `dapo` (token mean over the batch,
Yu et al. 2025, arXiv:2503.14476, with decoupled eps_low/eps_high), `dr_grpo` (sum over tokens
divided by a constant max length, Liu et al. 2025, arXiv:2503.20783, usually with scale_rewards=none).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from lmforge.data.tasks import Task, make_tasks, task_from_record
from lmforge.generate import SamplingConfig, generate
from lmforge.rewards import build_reward
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
    }
    return loss, metrics


def completion_logps(model: torch.nn.Module, input_ids: Tensor, attn_mask: Tensor, prompt_len: int) -> Tensor:
    """Log-prob of each completion token [N, T_completion] given left-padded prompts of width `prompt_len`."""
    position_ids = (attn_mask.long().cumsum(-1) - 1).clamp(min=0)
    # Causal mask restricted to real (non-pad) keys; broadcast to [N, 1, T, T].
    length = input_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
    mask4d = causal[None, None] & attn_mask[:, None, None, :].bool()
    logits = model(input_ids, position_ids=position_ids, attn_mask=mask4d)
    logits = logits[:, prompt_len - 1 : -1].float()
    targets = input_ids[:, prompt_len:]
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


# ---------------------------------------------------------------- stage
class RLStage(BaseStage):
    """Batch: a list of samples {"prompt_ids": list[int], "prompt": str, "task": dict}."""

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
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.reward_fn = build_reward(to_plain(reward) or {"task_answer": 1.0})
        self.group_size = group_size
        sampling_cfg = SamplingConfig(**(to_plain(sampling) or {}))
        stops = tuple(sorted({*sampling_cfg.stop_token_ids, self.tokenizer.end_of_turn_id, self.tokenizer.eos_id}))
        self.sampling = replace(sampling_cfg, stop_token_ids=stops)
        self.beta, self.eps_low, self.eps_high = beta, eps_low, eps_high
        self.loss_type, self.scale_rewards = loss_type, scale_rewards
        self._reference: list[torch.nn.Module] = []  # a list: kept out of state_dict and the optimizer
        self._tokens = {"generated": 0, "trained": 0}

    def configure_model(self) -> None:
        super().configure_model()
        if self.beta != 0.0 and not self._reference:
            self._reference.append(copy.deepcopy(self.model).eval().requires_grad_(False))

    def _rollout(self, batch: list[dict], sampling: SamplingConfig, group_size: int):
        prompts = [s["prompt_ids"] for s in batch for _ in range(group_size)]
        samples = [s for s in batch for _ in range(group_size)]
        start = time.perf_counter()
        out = generate(self.model, prompts, sampling, pad_id=self.tokenizer.pad_id)
        gen_seconds = time.perf_counter() - start
        texts = [self.tokenizer.decode(c) for c in out.completions]
        rewards, parts = self.reward_fn(texts, samples)
        return prompts, out.completions, rewards, parts, gen_seconds

    def _pack(self, prompts: list[list[int]], completions: list[list[int]]):
        """Left-padded prompts then right-padded completions: [N, P + C] ids, attention and completion masks."""
        pad = self.tokenizer.pad_id
        width_p = max(len(p) for p in prompts)
        width_c = max(1, max(len(c) for c in completions))
        n = len(prompts)
        ids = torch.full((n, width_p + width_c), pad, dtype=torch.long, device=self.device)
        attn = torch.zeros_like(ids, dtype=torch.bool)
        comp_mask = torch.zeros(n, width_c, dtype=torch.bool, device=self.device)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            ids[i, width_p - len(p) : width_p] = torch.tensor(p)
            attn[i, width_p - len(p) : width_p + len(c)] = True
            if c:
                ids[i, width_p : width_p + len(c)] = torch.tensor(c)
                comp_mask[i, : len(c)] = True
        return ids, attn, comp_mask, width_p

    def compute_loss(self, batch: list[dict], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        if split != "train":  # validation: greedy accuracy-style reward, no update
            greedy = replace(self.sampling, temperature=0.0)
            _, _, rewards, parts, _ = self._rollout(batch, greedy, 1)
            mean = torch.tensor(rewards).mean()
            return -mean, {"reward": mean, **{f"reward/{k}": torch.tensor(v).mean() for k, v in parts.items()}}
        prompts, completions, rewards, parts, gen_seconds = self._rollout(batch, self.sampling, self.group_size)
        reward_t = torch.tensor(rewards, device=self.device)
        advantages = group_advantages(reward_t, self.group_size, self.scale_rewards)
        ids, attn, comp_mask, prompt_len = self._pack(prompts, completions)
        start = time.perf_counter()
        logps = completion_logps(self.model, ids, attn, prompt_len)
        old_logps = logps.detach()  # one optimisation step per generated batch: ratio == 1
        ref_logps = None
        if self.beta != 0.0:
            with torch.no_grad():
                ref_logps = completion_logps(self._reference[0], ids, attn, prompt_len)
        loss, metrics = policy_loss(
            logps, old_logps, ref_logps, advantages, comp_mask, self.eps_low, self.eps_high,
            self.beta, self.loss_type, self.sampling.max_new_tokens,
        )
        n_generated = int(comp_mask.sum())
        self._tokens = {"generated": n_generated, "trained": int(attn.sum())}
        lengths = comp_mask.sum(1).float()
        metrics.update(
            reward=reward_t.mean(),
            reward_std=reward_t.std() if reward_t.numel() > 1 else torch.zeros(()),
            completion_len=lengths.mean(),
            generation_tokens_per_s=torch.tensor(n_generated / max(gen_seconds, 1e-9)),
            forward_tokens_per_s=torch.tensor(int(attn.sum()) / max(time.perf_counter() - start, 1e-9)),
            **{f"reward/{k}": torch.tensor(v).mean() for k, v in parts.items()},
        )
        return loss, metrics

    def batch_tokens(self, batch: Any) -> int:
        return self._tokens["trained"]

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
                rec = {"prompt": rec["question"], "answer": final, "kind": "arithmetic"}
            task_from_record(rec)  # validates the required fields
            records.append(rec)
        except (json.JSONDecodeError, KeyError, TypeError):
            bad.append(line_no)
    if bad:
        log.warning("%s: skipped %d corrupt lines (first: %s)", path, len(bad), bad[:5])
    return records


class PromptDataModule(L.LightningDataModule):
    """RL prompts: the generated verifiable tasks (train split for training, held-out for validation) or JSONL."""

    def __init__(
        self,
        tokenizer_path: str,
        tasks: dict | None = None,
        train_path: str | None = None,
        val_path: str | None = None,
        batch_size: int = 8,
        max_prompt_len: int = 192,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = Tokenizer.load(tokenizer_path)
        self.tasks = to_plain(tasks) or {"kind": "mix", "n_train": 2000, "n_val": 64, "seed": 0}
        self.train_path, self.val_path = train_path, val_path
        self.batch_size, self.max_prompt_len, self.num_workers = batch_size, max_prompt_len, num_workers

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
        rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        return self.tokenizer.encode(rendered)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._samples(self._records(self.train_path, "train", self.tasks["n_train"]))
        self.val_set = self._samples(self._records(self.val_path, "heldout", self.tasks["n_val"]))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, collate_fn=list, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, collate_fn=list, num_workers=self.num_workers)


__all__ = ["RLStage", "PromptDataModule", "group_advantages", "policy_loss", "k3_kl", "completion_logps", "Task"]
