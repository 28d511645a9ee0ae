"""Find, read and load lmforge checkpoints: Lightning `.ckpt` files, sharded (FSDP2 / DCP)
checkpoint folders, training run directories and HF export directories.

Every training checkpoint carries `checkpoint["lmforge"]` (see `BaseStage.lineage`):
`{"model_config", "tokenizer_fingerprint", "tokenizer_path", "stage", "parent", "peft"}`.
Its `state_dict` keys are `model.<Transformer names>` (peft's names when LoRA was trained).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from lmforge.formats.checkpoint_meta import read_export_manifest, read_run_manifest
from lmforge.model import ModelConfig, Transformer, build_model
from lmforge.tokenizer import Tokenizer, check_fingerprint

log = logging.getLogger(__name__)

LMFORGE_KEY = "lmforge"
SHARDED_METADATA_FILE = "meta.pt"  # Lightning's non-tensor part of a sharded checkpoint
RUN_TOKENIZER_DIR = "tokenizer"  # a run dir keeps a copy of its tokenizer here


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer | None
    model_config: ModelConfig
    manifest: dict[str, Any] = field(default_factory=dict)


def is_hf_dir(path: Path) -> bool:
    """An HF model folder: config.json (weights may be absent when only the shape is wanted)."""
    return path.is_dir() and (path / "config.json").is_file()


AUTO_MODEL = "auto"  # model=auto (conf/model/auto.yaml): the shape comes from init_from
# ModelConfig fields that only matter to a freshly initialised model, not to loaded weights.
_NOT_SHAPE = ("name", "init_std")


class ShapeMismatchError(ValueError):
    """`model=` names another shape than the checkpoint `init_from` starts from."""


def describe_shape(cfg: ModelConfig) -> str:
    scaling = f", rope_scaling={cfg.rope_scaling['rope_type']}" if cfg.rope_scaling else ""
    return (
        f"{cfg.name} (d_model={cfg.d_model}, n_layers={cfg.n_layers}, n_heads={cfg.n_heads}, "
        f"n_kv_heads={cfg.n_kv_heads}, ffn_dim={cfg.ffn_dim}, vocab_size={cfg.vocab_size}, "
        f"max_seq_len={cfg.max_seq_len}{scaling}; {cfg.num_params():,} parameters)"
    )


def check_same_shape(configured: ModelConfig, parent: ModelConfig, init_from: str) -> None:
    """An explicit model= must be the checkpoint's shape: weights of one shape never silently
    train under another's name, sequence length or RoPE."""
    differing = [
        f"{f.name}={getattr(configured, f.name)!r} vs {getattr(parent, f.name)!r}"
        for f in fields(ModelConfig)
        if f.name not in _NOT_SHAPE and getattr(configured, f.name) != getattr(parent, f.name)
    ]
    if differing:
        raise ShapeMismatchError(
            f"model={configured.name} is {describe_shape(configured)} but init_from={init_from} is "
            f"{describe_shape(parent)}; differing: {', '.join(differing)}. Leave model= out "
            "(model=auto takes the checkpoint's shape) or name the matching one"
        )


def parent_model_config(init_from: str | Path) -> ModelConfig:
    """The shape of the checkpoint / run dir / HF dir `init_from` names, without loading weights."""
    return ModelConfig(**read_metadata(init_from)["model_config"])


def parent_tokenizer_path(init_from: str | Path) -> str | None:
    """The tokenizer a child of `init_from` inherits: an HF dir's own files, else the run dir's
    copy, else the path its lineage records. None when there is none to find."""
    path = resolve_checkpoint(init_from)
    if is_hf_dir(path):
        return str(path) if (path / "tokenizer.json").is_file() else None
    candidates = [p / RUN_TOKENIZER_DIR for p in (path.parent, path.parent.parent)]
    recorded = read_metadata(path).get("tokenizer_path")
    if recorded:
        candidates.append(Path(recorded))
    for candidate in candidates:
        if (candidate / "tokenizer.json").is_file():
            return str(candidate)
    return None


def is_sharded_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / SHARDED_METADATA_FILE).is_file()


def resolve_checkpoint(path: str | Path) -> Path:
    """Map a user-given path to a loadable artifact: a `.ckpt`, a sharded checkpoint folder or an HF dir.

    A run directory resolves to its manifest's best checkpoint, else its last one, else the newest
    checkpoint under `checkpoints/`.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if path.is_file() or is_sharded_checkpoint(path) or is_hf_dir(path):
        return path
    manifest = read_run_manifest(path)
    for key in ("best_checkpoint", "last_checkpoint"):
        if manifest.get(key) and Path(manifest[key]).exists():
            return Path(manifest[key])
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(
            f"{path} is neither a checkpoint, a run directory with checkpoints, nor an HF export dir"
        )
    return found


def latest_checkpoint(root: str | Path, pattern: str = "*.ckpt") -> Path | None:
    """Newest Lightning checkpoint (file or sharded folder) named `pattern` anywhere under `root`."""
    root = Path(root)
    if not root.is_dir():
        return None
    candidates = [p for p in root.rglob(pattern) if p.is_file() or is_sharded_checkpoint(p)]
    if not candidates:
        return None
    # Newest run first; within it, `last.ckpt` is the most advanced state.
    return max(candidates, key=lambda p: (_mtime(p), p.name.startswith("last")))


def _mtime(path: Path) -> float:
    return (path / SHARDED_METADATA_FILE).stat().st_mtime if path.is_dir() else path.stat().st_mtime


def load_checkpoint_dict(path: Path) -> dict[str, Any]:
    """The full checkpoint dict of a `.ckpt` file or a sharded folder, tensors on CPU."""
    if is_sharded_checkpoint(path):
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        return _load_distributed_checkpoint(path)
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The lmforge lineage of a checkpoint / run dir / HF dir without loading its weights."""
    path = resolve_checkpoint(path)
    if is_hf_dir(path):
        from lmforge.hf import from_hf_config

        config = from_hf_config(json.loads((path / "config.json").read_text()))
        fingerprint = Tokenizer.load(path).fingerprint if (path / "tokenizer.json").is_file() else None
        manifest = read_export_manifest(path)
        return {
            "model_config": config.to_dict(),
            "tokenizer_fingerprint": fingerprint or manifest.get("tokenizer_fingerprint"),
            "tokenizer_path": str(path) if fingerprint else None,
            "stage": "hf",
            "parent": manifest.get("parent"),
            "peft": None,
        }
    if is_sharded_checkpoint(path):
        extra = torch.load(path / SHARDED_METADATA_FILE, map_location="cpu", weights_only=False)
    else:
        extra = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if LMFORGE_KEY not in extra:
        raise KeyError(f"{path} has no '{LMFORGE_KEY}' metadata: not written by an lmforge stage")
    return dict(extra[LMFORGE_KEY])


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def find_tokenizer(ckpt_path: Path, metadata: dict[str, Any]) -> Tokenizer | None:
    """The run dir's tokenizer copy, else the recorded tokenizer path; verified by fingerprint."""
    candidates = [p / RUN_TOKENIZER_DIR for p in (ckpt_path.parent, ckpt_path.parent.parent)]
    if metadata.get("tokenizer_path"):
        candidates.append(Path(metadata["tokenizer_path"]))
    for candidate in candidates:
        if (candidate / "tokenizer.json").is_file():
            tokenizer = Tokenizer.load(candidate)
            if metadata.get("tokenizer_fingerprint"):
                check_fingerprint(metadata["tokenizer_fingerprint"], tokenizer.fingerprint, f"checkpoint {ckpt_path}")
            return tokenizer
    log.warning("no tokenizer found for %s (looked in %s)", ckpt_path, [str(c) for c in candidates])
    return None


def load_for_inference(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a `.ckpt`, sharded checkpoint, run dir or HF export as a plain eval-mode `Transformer`.

    LoRA checkpoints are rebuilt with `lmforge.lora.apply_lora` and merged, so callers always get
    the architecture of `lmforge.model` with Transformer parameter names.
    """
    resolved = resolve_checkpoint(path)
    if is_hf_dir(resolved):
        from lmforge.hf import load_hf

        model, config = load_hf(resolved, device=device)
        tokenizer = Tokenizer.load(resolved) if (resolved / "tokenizer.json").is_file() else None
        return LoadedModel(model.eval(), tokenizer, config, read_export_manifest(resolved))

    checkpoint = load_checkpoint_dict(resolved)
    metadata = checkpoint.get(LMFORGE_KEY)
    if metadata is None:
        raise KeyError(f"{resolved} has no '{LMFORGE_KEY}' metadata: not written by an lmforge stage")
    config = ModelConfig(**metadata["model_config"])
    model = build_model(config, device="meta")
    state_dict = strip_prefix(checkpoint["state_dict"])
    if metadata.get("peft"):
        from lmforge.lora import apply_lora, merge_lora

        model = apply_lora(model, metadata["peft"])
        model.load_state_dict(state_dict, strict=True, assign=True)
        model = merge_lora(model)
    else:
        model.load_state_dict(state_dict, strict=True, assign=True)
    if config.tie_embeddings:  # `assign` replaced the shared Parameter with two tensors
        model.lm_head.weight = model.embed_tokens.weight
    model = model.to(device).eval()
    run_dir = resolved.parent.parent if resolved.parent.name == "checkpoints" else resolved.parent
    manifest = read_run_manifest(run_dir) or {LMFORGE_KEY: metadata}
    return LoadedModel(model, find_tokenizer(resolved, metadata), config, manifest)
