"""Supervised fine-tuning on chat conversations: cross-entropy on assistant tokens only."""

from __future__ import annotations

from torch import Tensor

from lmforge.data.labels import IGNORE_INDEX
from lmforge.stages.base import BaseStage


class SFTStage(BaseStage):
    """Batch (`lmforge.data.chat`): `input_ids` [B, T], shifted `labels` [B, T] with -100 on
    prompt and padding, and for packed rows `position_ids` [B, T] + `attn_mask` [B, T] holding
    document ids (the model attends block-diagonally from them; no dense [B, 1, T, T] mask)."""

    stage_name = "sft"
    loss_is_token_nll = True

    def compute_loss(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.model(
            batch["input_ids"], position_ids=batch.get("position_ids"), attn_mask=batch.get("attn_mask")
        )
        loss = self.cross_entropy(logits, batch["labels"])
        trained = (batch["labels"] != IGNORE_INDEX).sum()
        return loss, {"assistant_tokens": trained.float()}
