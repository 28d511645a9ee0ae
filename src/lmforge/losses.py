"""Post-training losses as pure functions of tensors (no modules, no config objects).

Label convention shared by every function here and by the chat/preference collators:
`labels[b, t]` is the token that position t should predict (already shifted), or
`IGNORE_INDEX` where no loss applies (prompt, padding, the final position).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.model import at_least_fp32

IGNORE_INDEX = -100
LOSS_TYPES = ("sigmoid", "ipo", "cdpo")


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token [B, T] (0 where masked) and the mask [B, T]."""
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    logps = torch.log_softmax(at_least_fp32(logits), dim=-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return logps * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's label tokens [B] and their count [B].

    Sum, not mean: DPO's implicit reward is a log-ratio of sequence probabilities.
    """
    logps, mask = token_logps(logits, labels)
    return logps.sum(-1), mask.sum(-1)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the unmasked label tokens of the whole batch."""
    return F.cross_entropy(
        at_least_fp32(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def per_segment_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, segment_ids: torch.Tensor, n_segments: int
) -> torch.Tensor:
    """Mean cross-entropy per conversation [n_segments], for batches that pack several
    conversations into one row (`segment_ids` numbers them, -1 on padding)."""
    logps, mask = token_logps(logits, labels)
    seg = segment_ids.masked_fill(~mask, 0).reshape(-1)
    nll = torch.zeros(n_segments, device=logits.device, dtype=logps.dtype).index_add_(0, seg, (-logps * mask).reshape(-1))
    counts = torch.zeros(n_segments, device=logits.device, dtype=logps.dtype).index_add_(0, seg, mask.reshape(-1).to(logps.dtype))
    return nll / counts.clamp(min=1)


@dataclass
class PreferenceLoss:
    losses: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B], beta * policy/reference log-ratio, detached
    rejected_rewards: torch.Tensor  # [B]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> PreferenceLoss:
    """Per-pair preference losses from summed completion log-probs.

    sigmoid: -log sigmoid(beta * h), h = (pi_c - ref_c) - (pi_r - ref_r)   (Rafailov et al. 2023)
    cdpo:    the same with labels flipped with probability `label_smoothing` (conservative DPO)
    ipo:     (h - 1 / (2 beta))^2 on length-normalised log-probs            (Azar et al. 2023)
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {LOSS_TYPES}")
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("loss_type='ipo' needs chosen_lengths and rejected_lengths")
        # IPO regresses the log-ratio gap to 1/(2 beta); per-token averages keep that target
        # independent of completion length.
        policy_chosen_logps = policy_chosen_logps / chosen_lengths
        reference_chosen_logps = reference_chosen_logps / chosen_lengths
        policy_rejected_logps = policy_rejected_logps / rejected_lengths
        reference_rejected_logps = reference_rejected_logps / rejected_lengths
    chosen_ratio = policy_chosen_logps - reference_chosen_logps
    rejected_ratio = policy_rejected_logps - reference_rejected_logps
    h = chosen_ratio - rejected_ratio
    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        eps = label_smoothing if loss_type == "cdpo" else 0.0
        losses = -(1.0 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return PreferenceLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """-log P(chosen > rejected) under Bradley-Terry, P = sigmoid(r_c - r_r); mean over pairs."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
