"""Direct Preference Optimization (Rafailov et al. 2023) with sigmoid / IPO / cDPO losses.

The reference policy is frozen: with LoRA it is the same network with the adapter disabled
(no second copy in memory); without LoRA it is a separate copy loaded from `init_from`.
With `precompute_reference=true` the reference log-probs of every pair are computed once
before training, cached on disk under a key made of the data and reference fingerprints,
and then ride along in the batches, so the reference is never run again.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from lmforge.checkpoint import load_for_inference
from lmforge.lora.quantize import dense
from lmforge.losses import PREFERENCE_LOSS_TYPES, dpo_loss, sequence_logps
from lmforge.stages.base import BaseStage

log = logging.getLogger(__name__)
CACHE_FORMAT = "dpo-reference-logps-v1"


def tensor_fingerprint(named: Any) -> str:
    """sha256 over (name, dtype, shape, bytes) of named tensors, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        # A QLoRA base holds torchao tensors, which have no byte view: hash their dequantized values.
        t = dense(tensor.detach()).to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def dataset_fingerprint(dataset: Any) -> str:
    """sha256 of every pair's chosen/rejected token ids and labels, in dataset order."""
    digest = hashlib.sha256()
    for pair in dataset:
        for side in (pair.chosen, pair.rejected):
            digest.update(repr((side.input_ids, side.labels)).encode())
    return digest.hexdigest()


class DPOStage(BaseStage):
    """Batch (`lmforge.data.preference`): `input_ids`/`labels` [2B, T] (chosen rows, then
    rejected; labels cover completion tokens only), `index` [B] and, once cached,
    `reference_logps` [B, 2]."""

    stage_name = "dpo"

    def __init__(
        self,
        *args: Any,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        precompute_reference: bool = False,
        reference_cache_dir: str = "artifacts/dpo_reference_cache",
        nll_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if loss_type not in PREFERENCE_LOSS_TYPES:
            raise ValueError(f"module.loss_type={loss_type!r}; expected one of {PREFERENCE_LOSS_TYPES}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"module.label_smoothing={label_smoothing} must be in [0, 0.5)")
        if label_smoothing and loss_type != "cdpo":
            raise ValueError(f"module.label_smoothing is only used by loss_type=cdpo, not {loss_type!r}")
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.precompute_reference = precompute_reference
        # RPO (Pang et al. 2024): + nll_weight * per-token NLL of the chosen completion keeps
        # DPO from lowering the chosen likelihood along with the rejected one.
        self.nll_weight = nll_weight
        self.reference_cache_dir = Path(reference_cache_dir)

    # ----- reference -----
    def configure_model(self) -> None:
        super().configure_model()
        if self.peft_config or self.frozen_reference() is not None:
            return
        if self.init_from:
            reference = load_for_inference(self.init_from).model
        else:
            log.warning("stage=dpo without init_from: the reference is the random initialisation")
            reference = copy.deepcopy(self.model)
        self.set_frozen_reference(reference)

    def _reference(self) -> tuple[nn.Module, Any]:
        """The reference network and the context it must run in."""
        if self.peft_config:  # the base network with the adapter switched off: no second copy
            return self.model, self.model.disable_adapter()
        return self.frozen_reference(), nullcontext()

    @torch.no_grad()
    def reference_logps(self, input_ids: Tensor, labels: Tensor) -> Tensor:
        """Summed completion log-probs under the frozen reference [N]."""
        network, context = self._reference()
        with context:
            logits = network(input_ids)
        return sequence_logps(logits, labels)[0]

    def reference_fingerprint(self) -> str:
        network, _ = self._reference()
        named = [(n, p) for n, p in network.named_parameters() if "lora_" not in n]
        return tensor_fingerprint(named)

    # ----- precomputation -----
    def on_fit_start(self) -> None:
        if not self.precompute_reference:
            return
        datamodule = self.trainer.datamodule
        for split in ("train", "val"):
            datamodule.attach_reference_logps(split, self.cached_reference_logps(datamodule, split))

    def cached_reference_logps(self, datamodule: Any, split: str) -> Tensor:
        dataset = datamodule.datasets[split]
        key = hashlib.sha256(
            f"{CACHE_FORMAT}:{dataset_fingerprint(dataset)}:{self.reference_fingerprint()}".encode()
        ).hexdigest()[:32]
        path = self.reference_cache_dir / f"{split}-{key}.pt"
        if path.is_file():
            log.info("reference log-probs for %s from cache %s", split, path)
            return torch.load(path, map_location="cpu")
        logps = self.compute_reference_logps(datamodule.loader(split, with_reference=False), len(dataset), split)
        if self.global_rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(logps, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)  # atomic: a crash never leaves half a cache
            log.info("cached %d reference log-prob pairs for %s at %s", len(logps), split, path)
        return logps

    def compute_reference_logps(self, loader: Any, n_pairs: int, split: str) -> Tensor:
        out = torch.zeros(n_pairs, 2)
        was_training = self.training
        self.eval()
        for batch in tqdm(loader, desc=f"reference log-probs ({split})", leave=False):
            input_ids, labels = batch["input_ids"].to(self.device), batch["labels"].to(self.device)
            chosen, rejected = self.reference_logps(input_ids, labels).float().cpu().chunk(2)
            out[batch["index"]] = torch.stack([chosen, rejected], dim=-1)
        self.train(was_training)
        return out

    # ----- loss -----
    def compute_loss(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        input_ids, labels = batch["input_ids"], batch["labels"]
        logits = self.model(input_ids)
        policy, lengths = sequence_logps(logits, labels)
        policy_chosen, policy_rejected = policy.chunk(2)
        chosen_lengths, rejected_lengths = lengths.chunk(2)
        if "reference_logps" in batch:
            reference_chosen, reference_rejected = batch["reference_logps"].to(policy.dtype).unbind(-1)
        else:
            reference_chosen, reference_rejected = self.reference_logps(input_ids, labels).chunk(2)
        out = dpo_loss(
            policy_chosen,
            policy_rejected,
            reference_chosen,
            reference_rejected,
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
        )
        margin = out.chosen_rewards - out.rejected_rewards
        chosen_nll = -(policy_chosen / chosen_lengths).mean()
        loss = out.losses.mean() + self.nll_weight * chosen_nll if self.nll_weight else out.losses.mean()
        return loss, {
            "chosen_nll": chosen_nll.detach(),
            "rewards/chosen": out.chosen_rewards.mean(),
            "rewards/rejected": out.rejected_rewards.mean(),
            "rewards/margin": margin.mean(),
            "rewards/accuracy": (margin > 0).float().mean(),
            "logps/chosen": policy_chosen.detach().mean(),
            "logps/rejected": policy_rejected.detach().mean(),
        }

    def batch_size_of(self, batch: dict[str, Tensor]) -> int:
        return int(batch["input_ids"].shape[0]) // 2
