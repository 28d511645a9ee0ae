"""A W&B table of sample generations every N optimizer steps and at the end of training.

Rows: step, prompt, completion, reward (and, for RL, each reward component). The prompts are the
first `num_prompts` held-out ones of the run's own data: the user turns of SFT conversations, the
prompts of DPO/reward preference pairs, RL's task prompts. Completions are greedy, so the rows of
one prompt show how the answer changes as training goes. The reward is the stage's own: RL's
configured reward functions; DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) when
its reference is in memory (not with `precompute_reference`); none for SFT. Pretraining has no
prompts and logs nothing. Rank 0 only; loggers other than W&B are left alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from lmforge.data.labels import IGNORE_INDEX
from lmforge.generate import SamplingConfig, generate
from lmforge.losses import sequence_logps

log = logging.getLogger(__name__)


def _wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def held_out_prompts(datamodule: Any, n: int) -> list[dict]:
    """Up to `n` held-out prompts as {"messages"} (chat and preference data) or the RL sample dicts."""
    if hasattr(datamodule, "val_set") and datamodule.val_set and isinstance(datamodule.val_set[0], dict):
        if "prompt_ids" in datamodule.val_set[0]:  # RL prompts, with what their rewards need
            return [datamodule.val_set[i] for i in range(min(n, len(datamodule.val_set)))]
    if hasattr(datamodule, "pairs"):
        return [{"messages": list(p.prompt)} for p in datamodule.pairs("val")[:n]]
    if hasattr(datamodule, "conversations"):
        out = []
        for conversation in datamodule.conversations("val")[:n]:
            last_user = max(i for i, m in enumerate(conversation) if m["role"] == "user")
            out.append({"messages": list(conversation[: last_user + 1])})
        return out
    return []


class GenerationSamples(L.Callback):
    def __init__(self, every_n_steps: int = 100, num_prompts: int = 4, max_new_tokens: int = 64, key: str = "samples"):
        self.every_n_steps, self.num_prompts, self.max_new_tokens, self.key = (
            every_n_steps,
            num_prompts,
            max_new_tokens,
            key,
        )
        self._rows: list[list[Any]] = []
        self._columns: list[str] | None = None
        self._logged_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._logged_step:
            self.log_samples(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._logged_step:
            self.log_samples(trainer, pl_module)

    @torch.no_grad()
    def log_samples(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._logged_step = trainer.global_step
        loggers = _wandb_loggers(trainer)
        if not loggers or trainer.global_rank != 0 or trainer.datamodule is None:
            return
        prompts = held_out_prompts(trainer.datamodule, self.num_prompts)
        tokenizer = getattr(pl_module, "tokenizer", None)
        if not prompts or tokenizer is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            columns, rows = self.sample_rows(pl_module, tokenizer, prompts)
        except Exception as err:  # a tracking table is not worth the run it describes
            log.warning("sample generations at step %d not logged: %s", trainer.global_step, err)
            return
        finally:
            pl_module.train(was_training)
        if self._columns not in (None, columns):
            self._rows = []
        self._columns = columns
        # Each table holds every row so far: W&B shows the latest table per key.
        self._rows += [[trainer.global_step, *row] for row in rows]
        for logger in loggers:
            logger.log_table(self.key, columns=["step", *columns], data=self._rows, step=trainer.global_step)

    def sample_rows(self, module: Any, tokenizer: Any, prompts: list[dict]) -> tuple[list[str], list[list[Any]]]:
        sampling = SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=0.0)
        reward_fn = getattr(module, "reward_fn", None)
        if reward_fn is not None and "prompt_ids" in prompts[0]:  # RL: its own sampler and rewards
            _, _, texts, samples, _ = module.sample(prompts, replace(module.sampling, temperature=0.0), 1)
            rewards, parts = reward_fn(texts, samples)
            names = sorted(parts)
            rows = [
                [s["prompt"], t, float(r), *(float(parts[k][i]) for k in names)]
                for i, (s, t, r) in enumerate(zip(samples, texts, rewards, strict=True))
            ]
            return ["prompt", "completion", "reward", *(f"reward/{k}" for k in names)], rows
        stops = tuple(tokenizer.stop_ids)
        encoded = [tokenizer.encode_chat(p["messages"], add_generation_prompt=True)[0] for p in prompts]
        out = generate(module.model, encoded, replace(sampling, stop_token_ids=stops), pad_id=tokenizer.pad_id)
        texts = [tokenizer.decode(ids) for ids in out.completions]
        rewards = self.implicit_rewards(module, encoded, out.completions)
        rows = [[p["messages"][-1]["content"], t, r] for p, t, r in zip(prompts, texts, rewards, strict=True)]
        return ["prompt", "completion", "reward"], rows

    @staticmethod
    def implicit_rewards(module: Any, prompts: list[list[int]], completions: list[list[int]]) -> list[float | None]:
        """DPO's beta * (log pi - log pi_ref) of each completion; None where there is no reference."""
        beta = getattr(module, "beta", None)
        if beta is None or not hasattr(module, "reference_logps"):
            return [None] * len(prompts)
        if not getattr(module, "peft_config", None) and module.frozen_reference() is None:
            return [None] * len(prompts)
        rewards: list[float | None] = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if not completion:
                rewards.append(0.0)
                continue
            ids = torch.tensor([prompt + completion], device=module.device)
            labels = torch.full_like(ids, IGNORE_INDEX)
            labels[0, len(prompt) - 1 : -1] = ids[0, len(prompt) :]  # shifted: position t predicts t+1
            policy = sequence_logps(module.model(ids), labels)[0]
            reference = module.reference_logps(ids, labels)
            value = float(beta * (policy - reference))
            rewards.append(value if math.isfinite(value) else None)
        return rewards
