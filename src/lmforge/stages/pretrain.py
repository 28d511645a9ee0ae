"""Pre-training: next-token cross-entropy over packed token sequences."""

from __future__ import annotations

from torch import Tensor

from lmforge.data.labels import next_token_labels
from lmforge.stages.base import BaseStage


class PretrainStage(BaseStage):
    """Batch (`lmforge.data.token_shards`): `input_ids` [B, T], shifted `labels` [B, T] (labels[t] is
    the token position t predicts, IGNORE_INDEX where none; every next token if absent) and optionally
    `position_ids` [B, T], restarting per document."""

    stage_name = "pretrain"
    loss_is_token_nll = True

    def compute_loss(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        input_ids = batch["input_ids"]
        labels = batch["labels"] if "labels" in batch else next_token_labels(input_ids)
        logits = self.model(input_ids, position_ids=batch.get("position_ids"))
        # The final position has no next token inside the window (its label is IGNORE_INDEX), so its
        # log-softmax over the vocabulary is skipped: same tokens, same mean, one row less per sequence.
        return self.cross_entropy(logits[:, :-1], labels[:, :-1]), {}
