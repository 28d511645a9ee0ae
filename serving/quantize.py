"""torchao quantization, written out in the compressed-tensors layout that serving engines load.

torchao does the arithmetic (calibration-free, weight-only rounding or symmetric int8); the
quantized tensors it produces (`qdata` + `scale`) are then stored under the names, dtypes and
`quantization_config` that compressed-tensors defines and that SGLang, vLLM and transformers
auto-detect from config.json. SGLang 0.5.x has no torchao loader any more (see README.md, "Serving"),
which is why the on-disk format is compressed-tensors rather than torchao's own.

    quant     torchao config                                   compressed-tensors
    int8wo    Int8WeightOnlyConfig (per-channel int8)          W8A16, channel, pack-quantized
    w8a8      Int8DynamicActivationInt8WeightConfig            W8A8 int8 (dynamic per-token acts), int-quantized
    w4a16     IntxWeightOnlyConfig(int4, PerGroup(128))        W4A16, group 128, pack-quantized
    fp8       Float8WeightOnlyConfig (per-row e4m3)            FP8 weight, channel, float-quantized

Only the decoder's Linear projections are quantized; embeddings, norms and lm_head stay dense
(llm-compressor's convention, and what the engines' kernels expect).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

QUANT_CHOICES = ("none", "int8wo", "w8a8", "w4a16", "fp8")
GROUP_SIZE = 128
IGNORED_MODULES = ["lm_head"]


@dataclass(frozen=True)
class QuantSpec:
    name: str
    make_torchao_config: Callable[[], object]
    scheme: Callable[[], dict]  # compressed-tensors QuantizationScheme fields (weights, input_activations)
    format: str  # compressed-tensors CompressionFormat value
    num_bits: int


def _int_weights(num_bits: int, group_size: int | None) -> dict:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy, QuantizationType

    return dict(
        weights=QuantizationArgs(
            num_bits=num_bits,
            type=QuantizationType.INT,
            strategy=QuantizationStrategy.GROUP if group_size else QuantizationStrategy.CHANNEL,
            group_size=group_size,
            symmetric=True,
            dynamic=False,
        )
    )


def _w8a8() -> dict:
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    return dict(PRESET_SCHEMES["W8A8"])


def _fp8_weight_only() -> dict:
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    # FP8_DYNAMIC's weight args (per-channel e4m3) without its activation quantization: the
    # FP8 weight-only (W8A16-fp8) scheme engines run on any GPU through Marlin.
    return dict(weights=PRESET_SCHEMES["FP8_DYNAMIC"]["weights"])


def _torchao_configs() -> dict[str, Callable[[], object]]:
    from torchao.quantization import (
        Float8WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )
    from torchao.quantization.granularity import PerGroup

    return {
        "int8wo": Int8WeightOnlyConfig,
        "w8a8": Int8DynamicActivationInt8WeightConfig,
        "w4a16": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(GROUP_SIZE)),
        "fp8": Float8WeightOnlyConfig,
    }


def quant_spec(name: str) -> QuantSpec:
    if name not in QUANT_CHOICES or name == "none":
        raise ValueError(f"quant={name!r} is not a quantization; choose one of {QUANT_CHOICES[1:]}")
    torchao_configs = _torchao_configs()
    specs = {
        "int8wo": QuantSpec("int8wo", torchao_configs["int8wo"], lambda: _int_weights(8, None), "pack-quantized", 8),
        "w8a8": QuantSpec("w8a8", torchao_configs["w8a8"], _w8a8, "int-quantized", 8),
        "w4a16": QuantSpec("w4a16", torchao_configs["w4a16"], lambda: _int_weights(4, GROUP_SIZE), "pack-quantized", 4),
        "fp8": QuantSpec("fp8", torchao_configs["fp8"], _fp8_weight_only, "float-quantized", 8),
    }
    return specs[name]


def is_quantized_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and fqn.split(".")[-1] not in IGNORED_MODULES


def torchao_quantize(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Quantize `model`'s decoder Linear weights in place with torchao; returns the model."""
    from torchao.quantization import quantize_

    quantize_(model, spec.make_torchao_config(), filter_fn=is_quantized_linear)
    return model


@dataclass
class QuantizedWeight:
    """A torchao-quantized weight reduced to plain tensors: integer/fp8 values and one scale per row or group."""

    qdata: torch.Tensor  # int8 (holding int4 values for w4a16) or float8_e4m3fn, shape [out, in]
    scale: torch.Tensor  # [out, 1] per channel or [out, in / group] per group
    dequantized: torch.Tensor  # torchao's own dequantization, the reference the export must match


def unwrap_torchao_weight(weight: torch.Tensor, fqn: str) -> QuantizedWeight:
    """Read qdata/scale out of torchao 0.18's Int8Tensor, IntxUnpackedToInt8Tensor or Float8Tensor."""
    for attr in ("qdata", "scale"):
        if not hasattr(weight, attr):
            raise TypeError(f"{fqn}: {type(weight).__name__} is not a torchao quantized tensor with .{attr}")
    zero_point = getattr(weight, "zero_point", None)
    if zero_point is not None and bool(torch.any(zero_point != 0)):
        # compressed-tensors' symmetric schemes store no zero point; an asymmetric result would be lost.
        raise ValueError(f"{fqn}: torchao produced a non-zero zero_point; only symmetric schemes are exported")
    return QuantizedWeight(weight.qdata.detach(), weight.scale.detach(), weight.dequantize().detach())


def quantized_weights(model: nn.Module) -> dict[str, QuantizedWeight]:
    """Module fqn -> its torchao-quantized weight, for every Linear `torchao_quantize` touched."""
    found = {}
    for fqn, module in model.named_modules():
        if isinstance(module, nn.Linear) and hasattr(module.weight, "qdata"):
            found[fqn] = unwrap_torchao_weight(module.weight, fqn)
    return found


def compressed_tensors_weights(
    quantized: QuantizedWeight, spec: QuantSpec, dense_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """One Linear's tensors in compressed-tensors layout, keyed by local name (weight / weight_packed / ...)."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    qdata, scale = quantized.qdata, quantized.scale
    if spec.format == "pack-quantized":
        # WNA16 kernels (Marlin / machete) take group scales in the activation dtype.
        return {
            "weight_packed": pack_to_int32(qdata.to(torch.int8).contiguous(), spec.num_bits),
            "weight_scale": scale.to(dense_dtype).contiguous(),
            "weight_shape": torch.tensor(list(qdata.shape), dtype=torch.int64),
        }
    # int-quantized / float-quantized: the values as they are, fp32 channel scales (what the
    # engines' W8A8-int8 and FP8 loaders allocate for `weight_scale`).
    return {"weight": qdata.contiguous(), "weight_scale": scale.to(torch.float32).contiguous()}


def dequantize_compressed(tensors: dict[str, torch.Tensor], spec: QuantSpec) -> torch.Tensor:
    """Weight back from its compressed-tensors form, through compressed-tensors' own decompressor."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    scheme = QuantizationScheme(targets=["Linear"], **spec.scheme())
    compressor = BaseCompressor.load_from_registry(spec.format)
    return compressor.decompress(dict(tensors), scheme)["weight"]


def quantization_config(spec: QuantSpec) -> dict:
    """config.json's `quantization_config` for `spec`, built by compressed-tensors' own ModelCompressor."""
    import json
    import tempfile
    from pathlib import Path

    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, QuantizationStatus

    config = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], **spec.scheme())},
        format=spec.format,
        quantization_status=QuantizationStatus.COMPRESSED,
        ignore=list(IGNORED_MODULES),
    )
    with tempfile.TemporaryDirectory() as tmp:
        ModelCompressor(quantization_config=config).update_config(tmp)
        return json.loads((Path(tmp) / "config.json").read_text())["quantization_config"]
