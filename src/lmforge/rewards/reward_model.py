"""`reward_model`: scores (prompt, completion) with a checkpoint trained by stage=reward."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lmforge.checkpoint import load_for_inference, resolve_checkpoint
from lmforge.losses import score_last_token
from lmforge.rewards.core import RewardFn, register


def load_reward_head(path: str, d_model: int) -> nn.Linear:
    """The `reward_head.*` weights stored beside the backbone in the stage=reward .ckpt."""
    ckpt = resolve_checkpoint(path)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    if "reward_head.weight" not in state:
        raise KeyError(f"{ckpt} has no reward_head.* weights: was it trained with stage=reward?")
    head = nn.Linear(d_model, 1)
    head.load_state_dict({"weight": state["reward_head.weight"], "bias": state["reward_head.bias"]})
    return head


@register("reward_model")
def reward_model(path: str | None = None, device: str = "cpu", batch_size: int = 16) -> RewardFn:
    """Each sample needs its chat ``prompt`` (str); the completion is scored as the assistant turn."""
    if not path:
        raise ValueError(
            "reward 'reward_model' needs path=<stage=reward run dir or .ckpt> "
            "(e.g. module.reward.reward_model.path=runs/reward/<run>)"
        )
    loaded = load_for_inference(path, device=device)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    if tokenizer is None:
        raise FileNotFoundError(f"reward model {path}: no tokenizer found next to the checkpoint")
    head = load_reward_head(path, loaded.model_config.d_model).to(device).eval()

    @torch.no_grad()
    def score(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(completions), batch_size):
            rows = []
            for completion, sample in zip(completions[start : start + batch_size], samples[start : start + batch_size]):
                messages = [{"role": "user", "content": sample["prompt"]}, {"role": "assistant", "content": completion}]
                ids, _ = tokenizer.encode_chat(messages)
                rows.append(ids[-loaded.model_config.max_seq_len :])
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
            for i, r in enumerate(rows):
                input_ids[i, : len(r)] = torch.tensor(r)
            last = torch.tensor([len(r) - 1 for r in rows])
            out.extend(score_last_token(model, head, input_ids.to(device), last.to(device)).float().tolist())
        return out

    return score
