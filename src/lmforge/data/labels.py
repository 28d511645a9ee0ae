"""The label convention every stage shares: position t is scored on the token at t+1, and
IGNORE_INDEX marks positions that carry no loss (prompt tokens, padding, the last position)."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def next_token_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """Shifted labels of a packed sequence [..., T]: every next token, IGNORE_INDEX at the final position."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[..., :-1] = input_ids[..., 1:]
    return labels
