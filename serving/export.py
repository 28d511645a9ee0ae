"""Export a checkpoint as an HF Llama directory that SGLang, vLLM and transformers load as-is.

    python -m serving.export ckpt=<checkpoint> quant=<none|int8wo|w8a8|w4a16|fp8|all> out=<dir>

`ckpt` is anything `lmforge.checkpoint.load_for_inference` takes (a Lightning .ckpt, a run dir, an
HF dir); LoRA adapters are merged there. `quant=none` writes dense weights; the others quantize
with torchao and store the result in compressed-tensors layout (`serving.quantize`), or, with
`format=torchao`, as transformers' `TorchAoConfig` serialization. `quant=all` writes one
export per config under `out/<quant>/` plus the quality table comparing them.
The release gate refuses by default: export needs `gate_report=<eval dir>` whose report scored
this checkpoint (content hash) and passes the release policy (`release_policy`, default
conf/release_policy.yaml, read here: `lmforge.eval.gate.release_verdict`). `gate=skip
gate_reason=...` exports without one and `force=true` exports despite a failed gate; both are
recorded in the manifest's `release_gate`.
`wandb.enabled=true` logs each export dir as a W&B `export` artifact (file:// references) whose
metadata names the checkpoint's `model` artifact, the quant, format, size and gate verdict; the
run's `wandb/` dir goes beside the export (`<out>/../wandb`), never into it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmforge.checkpoint import LoadedModel, load_for_inference, resolve_checkpoint
from lmforge.eval.binding import content_sha256, sha256_file
from lmforge.eval.gate import release_verdict
from lmforge.eval.release_policy import PolicyError
from lmforge.formats.checkpoint_meta import read_export_manifest, write_export_manifest
from lmforge.hf import (
    CONFIG_FILE,
    _save_weights,
    export_hf,
    hf_state_dict,
    to_hf_config,
    to_hf_name,
    write_tokenizer_files,
)
from lmforge.model import Transformer
from serving.quantize import (
    IGNORED_MODULES,
    QUANT_CHOICES,
    QuantSpec,
    compressed_tensors_weights,
    quant_spec,
    quantization_config,
    quantized_weights,
    torchao_quantize,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORMATS = ("compressed-tensors", "torchao")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass
class ExportWandbConfig:
    enabled: bool = False  # log each export dir as a W&B `export` artifact
    project: str = "lmforge"
    mode: str = "offline"  # offline | online | disabled
    name: str | None = None  # run name (default: W&B's)


@dataclass
class ExportConfig:
    ckpt: str | None = None  # .ckpt, run dir or HF dir (required)
    out: str | None = None  # default: artifacts/export/<model name>-<quant>
    quant: str = "none"  # none | int8wo | w8a8 | w4a16 | fp8 | all
    format: str = "compressed-tensors"  # or "torchao" (transformers TorchAoConfig, not loadable by SGLang)
    dtype: str = "bfloat16"  # dtype of the dense tensors (and the engine's compute dtype)
    max_shard_size: str = "5GB"  # safetensors shards past this size
    gate_report: str | None = None  # eval report dir (of this checkpoint) that must pass the release policy
    gate: str = "require"  # require | skip (export without a gate report; recorded)
    gate_reason: str | None = None  # why the gate was skipped or forced (recorded)
    release_policy: str | None = None  # policy file; None: conf/release_policy.yaml
    force: bool = False  # export even when the gate failed (recorded)
    report: bool = True  # measure size / perplexity / greedy agreement and save quality.{json,md}
    val_shards: str | None = None  # token shards dir for held-out perplexity (default: the memorised texts only)
    val_sequences: int = 32  # held-out sequences per domain
    val_texts: list[str] = field(default_factory=list)  # or held-out texts given directly
    probe_texts: list[str] = field(default_factory=list)  # prompts+continuations for greedy agreement
    probe_new_tokens: int = 16
    seed: int = 0
    wandb: ExportWandbConfig = field(default_factory=ExportWandbConfig)

    def __post_init__(self) -> None:
        if isinstance(self.wandb, Mapping):  # ExportConfig(**OmegaConf.to_container(...))
            self.wandb = ExportWandbConfig(**self.wandb)


class GateRefusedError(RuntimeError):
    """The checkpoint failed (or lacks) the release gate and `force` was not set."""


def parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    text = str(size).strip().upper()
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * units[unit])
    return int(text)


def fingerprint_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names + contents): the content hash an eval
    report is bound to (`lmforge.eval.binding.content_sha256`)."""
    return content_sha256(path)


GATE_MODES = ("require", "skip")


def check_release_gate(cfg: ExportConfig, checkpoint_sha256: str) -> dict[str, Any]:
    """The gate's record for the manifest; raises GateRefusedError unless the report scored this
    checkpoint and passes the policy, or the gate was explicitly skipped or forced."""
    if cfg.gate not in GATE_MODES:
        raise ValueError(f"gate={cfg.gate!r}; choose one of {GATE_MODES}")
    reason = cfg.gate_reason or "(no gate_reason given)"
    if cfg.gate == "skip" or (cfg.force and cfg.gate_report is None):
        how = "gate=skip" if cfg.gate == "skip" else "force=true"
        log.warning("release gate SKIPPED (%s): %s", how, reason)
        record = {
            "checked": False,
            "skipped": True,
            "by": how,
            "reason": reason,
            "checkpoint_sha256": checkpoint_sha256,
        }
        if cfg.gate_report is not None:  # what the gate would have said, for the record only
            verdict, _ = release_verdict(cfg.gate_report, checkpoint_sha256, cfg.release_policy)
            record.update(report=str(cfg.gate_report), would_pass=verdict.passed, reasons=verdict.reasons)
        return record
    if cfg.gate_report is None:
        raise GateRefusedError(
            "no gate_report: export needs the checkpoint's passing evaluation report "
            "(gate_report=<python src/eval.py out_dir>), or gate=skip gate_reason='...' to export without one"
        )
    verdict, report = release_verdict(cfg.gate_report, checkpoint_sha256, cfg.release_policy)
    binding = report.get("binding") or {}
    record = {
        "checked": True,
        "report": str(cfg.gate_report),
        "checkpoint_sha256": checkpoint_sha256,
        "report_checkpoint_sha256": binding.get("checkpoint_sha256"),
        "suite": report.get("suite"),
        "suite_sha256": binding.get("suite_sha256"),
        "policy": verdict.policy,
        "passed": verdict.passed,
        "reasons": verdict.reasons,
        "forced": bool(cfg.force and not verdict.passed),
    }
    if not verdict.passed:
        if not cfg.force:
            raise GateRefusedError(
                f"checkpoint failed the release gate ({cfg.gate_report}): {'; '.join(verdict.reasons)}; "
                "pass force=true to export anyway (recorded)"
            )
        record["reason"] = reason
        log.warning("exporting a checkpoint that FAILED the release gate (force=true): %s", verdict.reasons)
    return record


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def quantized_state_dict(model: Transformer, spec: QuantSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """HF-named tensors with every quantized Linear's `weight` replaced by its compressed-tensors tensors."""
    state = hf_state_dict(model, dtype)
    quantized_model = torchao_quantize(_dense_copy(model, dtype), spec)
    for fqn, quantized in quantized_weights(quantized_model).items():
        del state[to_hf_name(f"{fqn}.weight")]
        for local_name, tensor in compressed_tensors_weights(quantized, spec, dtype).items():
            state[to_hf_name(f"{fqn}.{local_name}")] = tensor
    return state


def _dense_copy(model: Transformer, dtype: torch.dtype) -> Transformer:
    import copy

    return copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()


def write_compressed_tensors_export(
    loaded: LoadedModel, out: Path, spec: QuantSpec, dtype: torch.dtype, max_shard_bytes: int, manifest: dict
) -> list[str]:
    """config.json (+ quantization_config), compressed-tensors safetensors, tokenizer files and manifest."""
    model, tokenizer = loaded.model, loaded.tokenizer
    state = quantized_state_dict(model, spec, dtype)
    # Shards of an earlier export into the same directory would be picked up by loaders.
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    config = to_hf_config(loaded.model_config, tokenizer, dtype)
    config["quantization_config"] = quantization_config(spec)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / CONFIG_FILE, config)
    files = [CONFIG_FILE, *_save_weights(state, out, max_shard_bytes)]
    files += _write_tokenizer_files(out, tokenizer)
    write_export_manifest(out, {**manifest, "files": files})
    return files


def _write_tokenizer_files(out: Path, tokenizer) -> list[str]:
    # An imported (Hub) tokenizer's files and generation_config.json go out as they came in.
    return write_tokenizer_files(out, tokenizer)


def write_torchao_export(
    loaded: LoadedModel, out: Path, spec: QuantSpec, dtype: torch.dtype, max_shard_bytes: int, manifest: dict
) -> list[str]:
    """transformers' own TorchAoConfig serialization (safetensors), for transformers users; SGLang refuses it."""
    import tempfile

    from transformers import LlamaForCausalLM, TorchAoConfig

    with tempfile.TemporaryDirectory() as dense_dir:
        export_hf(loaded.model, dense_dir, loaded.tokenizer, dtype=dtype)
        hf_model = LlamaForCausalLM.from_pretrained(
            dense_dir,
            dtype=dtype,
            quantization_config=TorchAoConfig(spec.make_torchao_config(), modules_to_not_convert=list(IGNORED_MODULES)),
        )
    hf_model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_bytes)
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    files += _write_tokenizer_files(out, loaded.tokenizer)
    write_export_manifest(out, {**manifest, "files": sorted(set(files))})
    return files


def assert_no_pickle(directory: Path) -> None:
    """Exports hold safetensors and JSON only: a pickle file would execute code when loaded."""
    offending = [p for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if offending:
        raise RuntimeError(f"export {directory} contains pickle-format files: {offending}")


def export_one(
    cfg: ExportConfig, loaded: LoadedModel, quant: str, out: Path, gate: dict, parent: Path, parent_fingerprint: str
) -> Path:
    dtype = DTYPES[cfg.dtype]
    manifest = {
        "kind": "hf_export",
        "quant": quant,
        "format": "dense" if quant == "none" else cfg.format,
        "model_config": loaded.model_config.to_dict(),
        "tokenizer_fingerprint": loaded.tokenizer.fingerprint if loaded.tokenizer is not None else None,
        "dtype": cfg.dtype,
        "parent": str(parent),
        "parent_fingerprint": parent_fingerprint,
        "parent_lineage": loaded.manifest,
        "release_gate": gate,
    }
    out.mkdir(parents=True, exist_ok=True)
    max_shard_bytes = parse_size(cfg.max_shard_size)
    if quant == "none":
        export_hf(loaded.model, out, loaded.tokenizer, dtype=dtype, manifest=manifest, max_shard_bytes=max_shard_bytes)
    elif cfg.format == "compressed-tensors":
        write_compressed_tensors_export(loaded, out, quant_spec(quant), dtype, max_shard_bytes, manifest)
    elif cfg.format == "torchao":
        write_torchao_export(loaded, out, quant_spec(quant), dtype, max_shard_bytes, manifest)
    else:
        raise ValueError(f"format={cfg.format!r}; choose one of {FORMATS}")
    assert_no_pickle(out)
    # Weight fingerprints last, over the files as written.
    final = read_export_manifest(out)
    final["weights_sha256"] = {p.name: sha256_file(p) for p in sorted(out.glob("*.safetensors"))}
    write_export_manifest(out, final)
    log.info("exported %s (quant=%s) to %s", cfg.ckpt, quant, out)
    return out


def run_export(cfg: ExportConfig) -> Path:
    """Export per `cfg`; returns the output directory (the parent of per-quant dirs for quant=all)."""
    if cfg.ckpt is None:
        raise ValueError("ckpt is required: python -m serving.export ckpt=<checkpoint|run dir|HF dir>")
    if cfg.quant not in (*QUANT_CHOICES, "all"):
        raise ValueError(f"quant={cfg.quant!r}; choose one of {[*QUANT_CHOICES, 'all']}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype={cfg.dtype!r}; choose one of {sorted(DTYPES)}")
    # Hashed once, before loading: the gate is bound to it, and quant=all would otherwise read a
    # (possibly multi-GB) checkpoint once per format.
    parent = resolve_checkpoint(cfg.ckpt)
    parent_fingerprint = fingerprint_path(parent)
    gate = check_release_gate(cfg, parent_fingerprint)
    loaded = load_for_inference(cfg.ckpt)
    if loaded.tokenizer is None:
        log.warning("%s has no tokenizer: the export will lack tokenizer files and a chat template", cfg.ckpt)
    out = Path(cfg.out or f"artifacts/export/{loaded.model_config.name}-{cfg.quant}")
    quants = list(QUANT_CHOICES) if cfg.quant == "all" else [cfg.quant]
    exports = {}
    for quant in quants:
        target = out / quant if cfg.quant == "all" else out
        exports[quant] = export_one(cfg, loaded, quant, target, gate, parent, parent_fingerprint)
    if cfg.report:
        from serving.quality import QualityProbe, quality_report, write_quality_report

        probe = QualityProbe.from_config(cfg, loaded)
        rows = quality_report(loaded, exports, probe, dense_dtype=DTYPES[cfg.dtype])
        print(write_quality_report(rows, out))
    if cfg.wandb.enabled:
        log_wandb(cfg, exports, gate, out)
    return out


def gate_summary(gate: dict) -> str:
    """The release-gate record in one word: passed | forced (failed, exported with force=true) | skipped."""
    if gate.get("skipped"):
        return "skipped"
    return "passed" if gate.get("passed") else "forced"


def log_wandb(cfg: ExportConfig, exports: dict[str, Path], gate: dict, out: Path) -> list[str]:
    """One W&B run (job type `export`, in the group of the run that trained `cfg.ckpt`) logging
    each export dir as an `export` artifact; returns the artifact names."""
    import wandb

    from lmforge.callbacks.wandb_lineage import (
        artifact_name,
        checkpoint_artifact,
        directory_files,
        log_reference_artifact,
        training_group,
    )

    wandb_dir = Path(out).resolve().parent  # beside the export: its files are what an eval report hashes
    run = wandb.init(
        project=cfg.wandb.project,
        mode=cfg.wandb.mode,
        dir=str(wandb_dir),
        job_type="export",
        name=cfg.wandb.name,
        group=training_group(cfg.ckpt),
        config=asdict(cfg),
    )
    parent = checkpoint_artifact(cfg.ckpt)
    names = []
    for quant, directory in exports.items():
        manifest = read_export_manifest(directory)
        files = directory_files(directory)
        metadata = {
            "quant": quant,
            "format": manifest.get("format"),
            "dtype": manifest.get("dtype"),
            "size_bytes": sum(path.stat().st_size for path in files.values()),
            "parent_checkpoint": manifest.get("parent"),
            "parent_fingerprint": manifest.get("parent_fingerprint"),
            "parent_artifact": parent,
            "gate_verdict": gate_summary(gate),
            "release_gate": gate,
            "export_dir": str(Path(directory).resolve()),
        }
        name = artifact_name(f"export-{quant}", run.id)
        names.append(log_reference_artifact(run, name, "export", files, metadata, aliases=["latest", quant]))
    run.finish()
    return names


def register_configs() -> None:
    """Idempotent; call before Hydra composes conf/export.yaml (`main` and the export tests do)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="schema", name="export", node=ExportConfig)


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    from lmforge.config_paths import conf_dir
    from lmforge.config_precheck import register_help_resolver
    from lmforge.config_schema import validate_config

    register_configs()
    register_help_resolver()  # `--help` lists only the groups conf/export.yaml composes

    @hydra.main(config_path=str(conf_dir()), config_name="export", version_base="1.3")
    def _main(raw) -> None:
        validate_config(raw)  # `+forse=true` bypasses the schema at compose time
        cfg = ExportConfig(**OmegaConf.to_container(raw, resolve=True))
        try:
            out = run_export(cfg)
        except (GateRefusedError, PolicyError) as err:  # a refusal is an answer, not a crash: one line
            raise SystemExit(f"serving.export: {err}") from None
        print(f"export written to {out}")

    _main()


if __name__ == "__main__":
    main()
