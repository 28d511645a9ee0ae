"""Pre-training: next-token cross-entropy over packed token sequences."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lmforge.model import at_least_fp32
from lmforge.stages.base import BaseStage

IGNORE_INDEX = -100


class PretrainStage(BaseStage):
    """Batch: `{"input_ids": LongTensor[B, T]}`, optionally `labels` ([B, T], HF convention: not
    shifted, IGNORE_INDEX masks a position) and `position_ids` ([B, T], restarting per document)."""

    stage_name = "pretrain"
    loss_is_token_nll = True

    def compute_loss(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        input_ids = batch["input_ids"]
        labels = batch.get("labels", input_ids)
        logits = self.model(input_ids, position_ids=batch.get("position_ids"))
        # Position t predicts token t+1; mean over the predicted (unmasked) tokens.
        loss = F.cross_entropy(
            at_least_fp32(logits[:, :-1].flatten(0, 1)), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
        )
        return loss, {}
