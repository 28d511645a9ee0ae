"""Load anything serving may be pointed at as our `Transformer`: a checkpoint, a dense export, or a
quantized compressed-tensors export (dequantized by transformers' compressed-tensors integration,
then renamed onto our module names, so our KV-cache `generate` can run it on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.checkpoint import LoadedModel, load_for_inference
from lmforge.formats.checkpoint_meta import read_export_manifest
from lmforge.hf import from_hf_config, from_hf_name
from lmforge.model import build_model
from lmforge.tokenizer import Tokenizer


def is_quantized_export(path: Path) -> bool:
    config = path / "config.json"
    return path.is_dir() and config.is_file() and "quantization_config" in json.loads(config.read_text())


def load_dequantized_export(path: Path, dtype: torch.dtype = torch.float32) -> LoadedModel:
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    hf_model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, quantization_config=CompressedTensorsConfig(dequantize=True)
    )
    config = from_hf_config(json.loads((path / "config.json").read_text()))
    state = {
        from_hf_name(name): tensor
        for name, tensor in hf_model.state_dict().items()
        if not name.endswith("rotary_emb.inv_freq")
    }
    model = build_model(config, device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    tokenizer = Tokenizer.load(path) if (path / "tokenizer.json").is_file() else None
    return LoadedModel(model.eval(), tokenizer, config, read_export_manifest(path))


def load_served_model(path: str | Path, dtype: torch.dtype = torch.float32) -> LoadedModel:
    path = Path(path)
    if is_quantized_export(path):
        return load_dequantized_export(path, dtype)
    loaded = load_for_inference(path)
    loaded.model.to(dtype)
    return loaded
