"""Reward model: the policy backbone plus a scalar head, trained with the Bradley-Terry loss.

The score of a conversation is a linear head on the final hidden state of its last real
token (the assistant's closing `<|end|>\\n`), which has attended to the whole exchange.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lmforge.losses import bradley_terry_loss, score_last_token
from lmforge.stages.base import BaseStage


class RewardStage(BaseStage):
    """Batch (`lmforge.data.preference`): `input_ids` [2B, T] (chosen rows, then rejected) and
    `last_index` [2B]. Logs pairwise accuracy: how often chosen outscores rejected."""

    stage_name = "reward"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Outside `self.model`, so LoRA never freezes it; saved as `reward_head.*` in the checkpoint.
        self.reward_head = nn.Linear(self.model_config.d_model, 1)
        nn.init.zeros_(self.reward_head.weight)
        nn.init.zeros_(self.reward_head.bias)

    def compute_loss(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        rewards = score_last_token(self.model, self.reward_head, batch["input_ids"], batch["last_index"])
        chosen, rejected = rewards.chunk(2)
        loss = bradley_terry_loss(chosen, rejected)
        return loss, {
            "accuracy": (chosen > rejected).float().mean(),
            "margin": (chosen - rejected).mean().detach(),
            "chosen_reward": chosen.mean().detach(),
            "rejected_reward": rejected.mean().detach(),
        }

    def batch_size_of(self, batch: dict[str, Tensor]) -> int:
        return int(batch["input_ids"].shape[0]) // 2
