"""What a W&B run says about the training job it tracks: where it belongs and what it came from.

- `run_identity`: a sweep's jobs share a group (the sweep dir), `job_type` is the stage and the
  name is the job's own command-line overrides, so a sweep reads as one group of named runs.
  W&B's own `WANDB_RUN_GROUP` puts single runs of one pipeline in one group: the training runs
  here, and every other run that leaves `group` to wandb (eval, data funnel, main-job report).
- `training_run_of`: the W&B run a checkpoint came from, so `src/eval.py` groups its report run
  with it.
- `git_commit`, `data_fingerprint`: the code and the data a run used, beside the tokenizer's.
- `log_checkpoint_artifact`: the final checkpoint as a `model` artifact (a file:// reference, not
  a copy) whose metadata names the parent checkpoint's artifact. Online, the run also calls
  `use_artifact` on the parent, which draws the lineage edge in W&B; wandb refuses `use_artifact`
  in offline mode ("Cannot use artifact when in offline mode"), so an offline run records the
  parent in the artifact's metadata and in its config, for `wandb sync` and for readers.
- `log_reference_artifact`: the same for any output (an eval report's `eval-report`, an export's
  `export`): file:// references, `parent_artifact` in the metadata, `use_artifact` online only.
- `checkpoint_artifact`: the `model` artifact a checkpoint (or the checkpoint an export came from)
  was logged as, for the artifacts of its eval reports and exports to name.

Nothing here imports wandb at module level: `logger=csv` runs never load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmforge.formats.checkpoint_meta import read_export_manifest, read_run_manifest

GROUP_ENV = "WANDB_RUN_GROUP"  # wandb.init reads it too when given no group
_NAME_LIMIT = 120  # W&B display names longer than this are cut in the UI anyway
_SKIP_IN_NAME = ("hydra.", "output_root", "tokenizer.path", "data.shards_dir", "data.corpus_dir")


def run_name(overrides: Sequence[str], fallback: str) -> str:
    """`optim.lr=0.001,model=tiny`: the overrides that tell sweep jobs apart (paths and Hydra's own
    settings left out), else `fallback`."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(_SKIP_IN_NAME) and "/" not in o.split("=", 1)[-1]]
    name = ",".join(kept)
    return (name[: _NAME_LIMIT - 3] + "...") if len(name) > _NAME_LIMIT else name or fallback


def run_identity(stage: str, run_dir: Path, overrides: Sequence[str], sweep_dir: str | None) -> dict[str, str]:
    """group / job_type / name for wandb.init."""
    if sweep_dir:
        group = f"{stage}/{Path(sweep_dir).name}"
    else:
        group = os.environ.get(GROUP_ENV) or stage
    return {"group": group, "job_type": stage, "name": run_name(overrides, fallback=f"{stage}/{Path(run_dir).name}")}


@lru_cache(maxsize=8)
def git_commit(path: Path | None = None) -> str | None:
    """HEAD of the repository holding this code (with `-dirty` when files differ), or None."""
    cwd = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit or None


def _sha256_file(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, _size: int, _mtime_ns: int) -> str:
    """Once per file version: the start and the end of a run both fingerprint its data."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(datamodule_cfg: Mapping[str, Any]) -> str:
    """sha256 over what the datamodule reads: each file a path key names (its content), each
    directory's manifest.json (token shards record their corpus and tokenizer fingerprints there),
    and the remaining settings (generated tasks are defined by kind, counts and seed)."""
    parts: dict[str, Any] = {}
    for key, value in sorted(datamodule_cfg.items()):
        if key == "_target_" or key.endswith("num_workers"):
            continue
        if isinstance(value, str) and key.endswith(("_path", "_dir")) and Path(value).exists():
            path = Path(value)
            manifest = path / "manifest.json"
            parts[key] = (
                _sha256_file(path) if path.is_file() else _sha256_file(manifest) if manifest.is_file() else None
            )
        else:
            parts[key] = value
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def training_run_of(checkpoint: str | None) -> dict[str, Any]:
    """`wandb` of the run manifest of a checkpoint (`.ckpt` under <run>/checkpoints/, or a run
    dir): project, group, run_id, name, artifact; {} when it has none (an HF folder, logger=csv)."""
    if not checkpoint:
        return {}
    path = Path(checkpoint)
    run_dir = path if path.is_dir() else path.parent.parent
    try:
        return dict(read_run_manifest(run_dir).get("wandb") or {})
    except (OSError, ValueError):
        return {}


def training_group(checkpoint: str | None) -> str | None:
    """The W&B group a run about `checkpoint` (its eval, its export) joins: the caller's
    WANDB_RUN_GROUP when set, else the group of the run that trained it."""
    return os.environ.get(GROUP_ENV) or training_run_of(checkpoint).get("group")


def group_with_training_run(checkpoint: str | None) -> None:
    """Runs started after this (an eval report's) join `training_group(checkpoint)`
    (wandb.init reads WANDB_RUN_GROUP)."""
    group = training_group(checkpoint)
    if group:
        os.environ[GROUP_ENV] = group


def artifact_name(stage: str, run_id: str) -> str:
    return f"{stage}-{run_id}"


def checkpoint_artifact(checkpoint: str | None) -> str | None:
    """The `model` artifact of `checkpoint` (a `.ckpt` or run dir: its run manifest's
    `wandb.artifact`; an HF export: that of the checkpoint it was exported from, in its export
    manifest's `parent_lineage`); None when it was not logged to W&B."""
    artifact = training_run_of(checkpoint).get("artifact")
    if artifact or not checkpoint or not Path(checkpoint).is_dir():
        return artifact
    try:
        lineage = read_export_manifest(checkpoint).get("parent_lineage") or {}
    except (OSError, ValueError):
        return None
    return (lineage.get("wandb") or {}).get("artifact") if isinstance(lineage, Mapping) else None


def directory_files(root: Path, skip: Sequence[str] = ("wandb",)) -> dict[str, Path]:
    """Every file under `root` by its relative path, leaving out `skip` folders (a run's own
    `wandb/` dir, still being written) and hidden ones (`.hydra_run`)."""
    root = Path(root)
    files = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(part in skip or part.startswith(".") for part in parts[:-1]):
            files[path.relative_to(root).as_posix()] = path
    return files


def log_reference_artifact(
    run,
    name: str,
    kind: str,
    files: Mapping[str, Path | str],
    metadata: Mapping[str, Any],
    aliases: Sequence[str] = ("latest",),
) -> str:
    """Log `files` (entry name -> path) as a `kind` artifact of file:// references, not copies.
    `metadata["parent_artifact"]` names the artifact it came from; online, `use_artifact` on it
    draws the lineage edge (offline wandb refuses `use_artifact`: the metadata carries it)."""
    import wandb

    artifact = wandb.Artifact(name, type=kind, metadata=dict(metadata))
    for entry, path in files.items():
        artifact.add_reference(Path(path).resolve().as_uri(), name=entry)
    parent = metadata.get("parent_artifact")
    if parent and not run.offline:
        run.use_artifact(f"{parent}:latest")
    run.log_artifact(artifact, aliases=list(aliases))
    return name


def log_checkpoint_artifact(run, manifest: Mapping[str, Any]) -> str | None:
    """Log the run's final checkpoint (and best, when another) as a `model` artifact; returns its name."""
    checkpoints = {p for p in (manifest.get("last_checkpoint"), manifest.get("best_checkpoint")) if p}
    if not checkpoints:
        return None
    return log_reference_artifact(
        run,
        artifact_name(manifest["stage"], run.id),
        "model",
        {Path(path).name: path for path in sorted(checkpoints)},
        metadata={
            "stage": manifest["stage"],
            "global_step": manifest["global_step"],
            "num_params": manifest.get("num_params"),
            "tokenizer_fingerprint": manifest.get("tokenizer_fingerprint"),
            "parent_checkpoint": manifest.get("parent"),
            "parent_artifact": checkpoint_artifact(manifest.get("parent")),
            "final_metrics": manifest.get("final_metrics"),
            "run_dir": manifest.get("run_dir"),
        },
        aliases=["latest", f"step-{manifest['global_step']}"],
    )
