"""QLoRA's frozen base: torchao weight-only int8 on every decoder projection, and the way back.

The decoder's `nn.Linear` layers are quantized; embeddings and `lm_head` stay dense, the same
set transformers quantizes with `TorchAoConfig(..., modules_to_not_convert=["lm_head"])`, so
an HF base loaded that way holds exactly the weights lmforge trained against.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTIZED_EXCLUDE = ("lm_head",)


def torchao_config(kind: str):
    from torchao.quantization import Int8WeightOnlyConfig

    if kind != "int8":
        raise ValueError(f"quantize_base={kind!r} is not supported (int8 only)")
    return Int8WeightOnlyConfig()


def quantize_base(model: nn.Module, kind: str) -> nn.Module:
    """Quantize `model`'s decoder Linear weights in place (before peft wraps them)."""
    from torchao.quantization import quantize_

    def is_decoder_linear(module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Linear) and fqn.rsplit(".", 1)[-1] not in QUANTIZED_EXCLUDE

    quantize_(model, torchao_config(kind), filter_fn=is_decoder_linear)
    return model


def is_quantized(tensor: torch.Tensor) -> bool:
    from torchao.utils import TorchAOBaseTensor

    return isinstance(tensor, TorchAOBaseTensor)


def has_quantized_weights(model: nn.Module) -> bool:
    return any(is_quantized(p) for p in model.parameters())


def dense(tensor: torch.Tensor) -> torch.Tensor:
    """A quantized weight as the dense tensor its matmul uses; anything else unchanged."""
    return tensor.dequantize() if is_quantized(tensor) else tensor
