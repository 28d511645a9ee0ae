"""HF Llama interop: our `Transformer` <-> a `LlamaForCausalLM` directory on disk.

The architectures are the same by construction (`lmforge.model` uses HF's module names), so
this module is two tables - config keys and a parameter-name prefix - plus file handling:

    config.json                 LlamaConfig in the older flat form (top-level rope_theta,
                                torch_dtype) that transformers 4.x and 5.x both read
    model.safetensors           or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    generation_config.json      bos/pad and eos = [<|end|>, <|eos|>], so chat turns stop; an
                                imported tokenizer's own generation_config.json as it came
    tokenizer.json, tokenizer_config.json (chat template), special_tokens_map.json; an imported
                                tokenizer's files (tokenizer.model, chat_template.jinja) byte for byte
    manifest.json               lmforge lineage: model config, tokenizer fingerprint, parent

Imports cover the Llama family: Llama-2, Llama-3/3.1/3.2 (`rope_scaling` of type llama3, tied
embeddings) and Mistral configs without a sliding window. They are strict: a config using a
feature our model does not implement (sliding-window attention, attention/MLP biases as in
Qwen2, another activation or RoPE type) is refused with the key named, instead of loading into
a model that silently computes something else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmforge.formats.checkpoint_meta import write_export_manifest
from lmforge.model import ModelConfig, Transformer, build_model, check_rope_scaling

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3

# ModelConfig field -> LlamaConfig key.
CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "ffn_dim": "intermediate_size",
    "max_seq_len": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
    "head_dim": "head_dim",
    "init_std": "initializer_range",
}
# HF defaults for keys an older config.json may omit (LlamaConfig's own defaults).
HF_DEFAULTS = {
    "num_key_value_heads": None,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "head_dim": None,
    "initializer_range": 0.02,
    "max_position_embeddings": 2048,
}
# Mistral is Llama's architecture plus an optional sliding window (refused when set).
SUPPORTED_MODEL_TYPES = ("llama", "mistral")
# Architectures that differ from Llama by a named feature: refused naming that feature.
REFUSED_MODEL_TYPES = {
    "qwen2": ("attention_bias", "Qwen2's q/k/v projections carry biases; lmforge's projections have none"),
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"unsupported export dtype {dtype}; use one of {sorted(_DTYPES)}")


# ----- names -----
def to_hf_name(name: str) -> str:
    """Our parameter name -> HF `LlamaForCausalLM` name (everything but lm_head sits under `model.`)."""
    return name if name.startswith("lm_head.") else f"model.{name}"


def from_hf_name(name: str) -> str:
    if name.startswith("model."):
        return name[len("model.") :]
    if name.startswith("lm_head."):
        return name
    raise KeyError(f"unexpected HF Llama parameter {name!r} (expected 'model.*' or 'lm_head.*')")


# ----- config -----
def to_hf_config(cfg: ModelConfig, tokenizer=None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """LlamaConfig as a config.json dict in the flat form every transformers version reads."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **{hf_key: getattr(cfg, field) for field, hf_key in CONFIG_KEYS.items()},
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None,
        "use_cache": True,
        "torch_dtype": _dtype_name(dtype),
        "lmforge_model_name": cfg.name,
    }
    if tokenizer is not None:
        generation = tokenizer.generation_config or {}
        config.update(
            bos_token_id=tokenizer.bos_id,
            eos_token_id=generation.get("eos_token_id", tokenizer.eos_id),
            # An imported tokenizer without a pad token (Llama) keeps none.
            pad_token_id=tokenizer.pad_id if tokenizer.specials.pad is not None else None,
        )
    return config


def _refuse(key: str, value: Any, why: str) -> None:
    raise ValueError(f"unsupported HF config: {key}={value!r} ({why}); lmforge's Llama cannot load it exactly")


def _rope_scaling(config: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
    """(rope_theta, scaling) from the flat 4.x form (`rope_theta`, `rope_scaling`) or the 5.x
    `rope_parameters` form; the scaling checked by `check_rope_scaling` with the HF key named."""
    theta, scaling, key = config.get("rope_theta"), config.get("rope_scaling"), "rope_scaling"
    rope = config.get("rope_parameters")
    if rope:
        theta = rope.get("rope_theta", theta)
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            scaling, key = rope, "rope_parameters"
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in ("default", "llama3"):
            _refuse(f"{key}.rope_type", kind, "only plain RoPE and llama3 scaling are implemented")
        try:
            scaling = check_rope_scaling({k: v for k, v in scaling.items() if k != "rope_theta"})
        except ValueError as err:
            _refuse(key, scaling, str(err))
    return theta, scaling or None


def from_hf_config(config: dict[str, Any]) -> ModelConfig:
    """ModelConfig from a config.json dict (flat 4.x form or 5.x `rope_parameters` form)."""
    model_type = config.get("model_type")
    if model_type in REFUSED_MODEL_TYPES:
        key, why = REFUSED_MODEL_TYPES[model_type]
        _refuse(key, f"implied by model_type={model_type!r}", why)
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            _refuse(key, config[key], "projections have no bias")
    window = config.get("sliding_window")
    if window is not None and config.get("use_sliding_window", True):
        _refuse(
            "sliding_window", window, "Mistral-style sliding-window attention; lmforge attends to the whole context"
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        _refuse("model_type", model_type, f"only {list(SUPPORTED_MODEL_TYPES)} are supported")
    if config.get("hidden_act", "silu") != "silu":
        _refuse("hidden_act", config["hidden_act"], "the MLP is SwiGLU with silu")
    values = {**HF_DEFAULTS, **config}
    theta, scaling = _rope_scaling(config)
    if theta is not None:
        values["rope_theta"] = theta
    missing = [k for k in CONFIG_KEYS.values() if k not in values]
    if missing:
        raise ValueError(f"HF config lacks required key(s) {missing}")
    fields = {field: values[hf_key] for field, hf_key in CONFIG_KEYS.items()}
    fields["rope_theta"] = float(fields["rope_theta"])
    fields["tie_embeddings"] = bool(fields["tie_embeddings"])
    name = config.get("lmforge_model_name") or Path(str(config.get("_name_or_path") or "hf")).name or "hf"
    return ModelConfig(**fields, rope_scaling=scaling, name=name)


# ----- weights -----
def hf_state_dict(model: Transformer, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Contiguous tensors under HF names; with tied embeddings lm_head is left out (HF re-ties it)."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            continue
        state[to_hf_name(name)] = tensor.detach().to(device="cpu", dtype=dtype).contiguous()
    return state


def _save_weights(state: dict[str, torch.Tensor], out_dir: Path, max_shard_bytes: int) -> list[str]:
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(
        state, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_bytes
    )
    for filename, names in split.filename_to_tensors.items():
        save_file({n: state[n] for n in names}, str(out_dir / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": dict(sorted(split.tensor_to_filename.items())),
        }
        (out_dir / WEIGHTS_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return [*sorted(split.filename_to_tensors), WEIGHTS_INDEX_FILE]
    return [WEIGHTS_FILE]


def _load_weights(directory: Path) -> dict[str, torch.Tensor]:
    index_file = directory / WEIGHTS_INDEX_FILE
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for filename in sorted(set(weight_map.values())):
            state.update(load_file(str(directory / filename)))
        return state
    if (directory / WEIGHTS_FILE).is_file():
        return load_file(str(directory / WEIGHTS_FILE))
    raise FileNotFoundError(f"{directory} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_tokenizer_files(out_dir: Path, tokenizer) -> list[str]:
    """Tokenizer files and generation_config.json beside exported weights; the names written.

    An imported tokenizer writes the files it came with, its generation_config.json included;
    lmforge's own gets a generation config whose eos list stops chat turns at <|end|>.
    """
    if tokenizer is None:
        return []
    tokenizer.save(out_dir)
    files = list(tokenizer.file_names)
    if GENERATION_CONFIG_FILE not in files:
        generation = {
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": [tokenizer.end_of_turn_id, tokenizer.eos_id],
            "pad_token_id": tokenizer.pad_id,
        }
        _write_json(out_dir / GENERATION_CONFIG_FILE, generation)
        files.append(GENERATION_CONFIG_FILE)
    return files


def export_hf(
    model: Transformer,
    out_dir: str | Path,
    tokenizer=None,
    dtype: torch.dtype = torch.float32,
    manifest: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write an HF Llama directory that `LlamaForCausalLM.from_pretrained` (and SGLang/vLLM) load.

    `manifest` (e.g. `{"parent": ...}`) is merged into the lineage written to manifest.json.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    _write_json(out_dir / CONFIG_FILE, to_hf_config(cfg, tokenizer, dtype))
    files = [CONFIG_FILE, *_save_weights(hf_state_dict(model, dtype), out_dir, max_shard_bytes)]
    files += write_tokenizer_files(out_dir, tokenizer)
    lineage = {
        "kind": "hf_export",
        "model_config": cfg.to_dict(),
        "tokenizer_fingerprint": tokenizer.fingerprint if tokenizer is not None else None,
        "dtype": _dtype_name(dtype),
        "files": files,
        "parent": None,
        **(manifest or {}),
    }
    write_export_manifest(out_dir, lineage)
    log.info("exported HF Llama (%s, %s) to %s", cfg.name, _dtype_name(dtype), out_dir)
    return out_dir


def load_hf(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Transformer, ModelConfig]:
    """Our `Transformer` from an HF Llama directory (ours or e.g. a Llama-2/3 checkpoint).

    dtype None keeps the stored tensors' dtype.
    """
    directory = Path(directory)
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}")
    cfg = from_hf_config(json.loads(config_file.read_text()))
    hf_state = _load_weights(directory)
    state = {from_hf_name(name): tensor for name, tensor in hf_state.items()}
    if cfg.tie_embeddings:
        # Some exporters write a (duplicate) lm_head even when tied; the embedding is the truth.
        state["lm_head.weight"] = state["embed_tokens.weight"]
    elif "lm_head.weight" not in state:
        raise ValueError(f"{directory}: tie_word_embeddings is false but there is no lm_head.weight")
    model = build_model(cfg, device="meta")
    expected = set(model.state_dict())
    unexpected = sorted(set(state) - expected)
    # HF may store rotary inv_freq buffers (older versions); they are recomputed here.
    unexpected = [n for n in unexpected if not n.endswith("rotary_emb.inv_freq")]
    missing = sorted(expected - set(state))
    if missing or unexpected:
        raise ValueError(
            f"{directory}: weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    state = {n: t.to(device=device, dtype=dtype or t.dtype) for n, t in state.items() if n in expected}
    model.load_state_dict(state, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return model, cfg
