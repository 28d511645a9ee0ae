"""Wrap a `Transformer` in peft's LoRA/DoRA layers, and merge them back out for export."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from peft import PeftModel, get_peft_model
from torch import nn

from lmforge.lora.quantize import dense, has_quantized_weights, is_quantized, quantize_base
from lmforge.lora.settings import ALL_LINEAR, LoraSettings
from lmforge.model import Transformer, build_model

log = logging.getLogger(__name__)


def apply_lora(model: Transformer, peft_cfg: dict[str, Any] | LoraSettings) -> PeftModel:
    """Wrap `model` in a `PeftModel`; only the adapter weights stay trainable.

    With `quantize_base` the base's decoder projections are quantized first, so peft wraps the
    quantized layers (its torchao LoRA layer). On the meta device quantization is skipped: a
    checkpoint's quantized tensors arrive with `load_state_dict(..., assign=True)`.
    The wrapper forwards `model(input_ids, position_ids=..., attn_mask=..., return_hidden=...)`
    unchanged, and `model.disable_adapter()` gives the base model back (DPO's reference).
    """
    settings = LoraSettings.from_dict(peft_cfg)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in settings.target_modules if t not in present]
    if missing:
        raise ValueError(f"peft.target_modules {missing} name no module of the model (have e.g. {ALL_LINEAR})")
    if settings.quantize_base and model.embed_tokens.weight.device.type != "meta":
        quantize_base(model, settings.quantize_base)
    with warnings.catch_warnings():
        # peft warns that its torchao layer cannot merge without transformers' quantizer;
        # `merge_lora` merges over the dequantized base instead.
        warnings.filterwarnings("ignore", message=".*get_apply_tensor_subclass", category=UserWarning)
        wrapped = get_peft_model(model, settings.to_peft())
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info(
        "%s rank %d on %s%s: %d trainable of %d parameters",
        "DoRA" if settings.use_dora else "LoRA",
        settings.rank,
        settings.target_modules,
        f" over an {settings.quantize_base} base" if settings.quantize_base else "",
        trainable,
        total,
    )
    return wrapped


def is_lora(model: nn.Module) -> bool:
    return isinstance(model, PeftModel)


def dequantize_base(model: nn.Module) -> nn.Module:
    """Replace quantized base weights by their dense values, in place."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.torchao import TorchaoLoraLinear

    for module in model.modules():
        if isinstance(module, TorchaoLoraLinear):
            # peft's torchao layer re-quantizes the merged weight; an export wants the dense sum,
            # which is what the plain LoRA layer it extends computes.
            module.__class__ = LoraLinear
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and weight is not None and is_quantized(weight):
            module.weight = nn.Parameter(weight.dequantize(), requires_grad=False)
    return model


def merge_lora(model: nn.Module) -> Transformer:
    """Fold the adapter into the base weights and return a plain `Transformer` (for export).

    A QLoRA base is dequantized first: the merged weight is dequantized base + B A scaling.
    """
    if not isinstance(model, PeftModel):
        return model  # already plain
    if has_quantized_weights(model):
        dequantize_base(model)
    return model.merge_and_unload()


def whole_on_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A whole tensor on CPU; an FSDP2 shard is gathered (collective: every rank must call this)."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu").contiguous()


def base_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The frozen base under the adapter under plain `Transformer` names, on CPU, quantized weights
    dequantized (collective under FSDP2)."""
    state = {}
    for name, tensor in model.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = dense(whole_on_cpu(tensor))
    return state


def base_transformer(model: PeftModel) -> Transformer:
    """The base as a plain `Transformer` that shares the adapter model's (dense) tensors."""
    config = model.get_base_model().config
    plain = build_model(config, device="meta")
    plain.load_state_dict(base_state_dict(model), strict=True, assign=True)
    if config.tie_embeddings:
        plain.lm_head.weight = plain.embed_tokens.weight
    return plain
