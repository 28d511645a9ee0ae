"""Compose-time config -> fitted run: the logic behind `src/train.py`.

`fit_from_config(cfg)` instantiates the datamodule, stage module, callbacks, loggers and trainer
from the Hydra config, resolves `resume`, fits, and writes `manifest.json` into the run dir:
resolved config, model config, tokenizer fingerprint, parent, final metrics, checkpoint paths.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lmforge.callbacks.wandb_lineage import data_fingerprint, git_commit, log_checkpoint_artifact, run_identity
from lmforge.checkpoint import RUN_TOKENIZER_DIR, latest_checkpoint, resolve_checkpoint
from lmforge.config_schema import validate_config
from lmforge.formats.checkpoint_meta import MANIFEST as MANIFEST_FILE
from lmforge.formats.checkpoint_meta import write_run_manifest

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER_PATH = "artifacts/tokenizer/default"
# Rank 0 resolves `resume=auto` once; ranks started later must not pick a newer checkpoint.
RESUME_ENV = "LMFORGE_RESUME_FROM"


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ModelParallelStrategy as pure FSDP2: one data-parallel mesh over all ranks.

    The parent's "auto" sizes mean tensor parallel within a node; sharding is done by
    `BaseStage.configure_model` (`fully_shard` per DecoderLayer) on the `data_parallel` mesh.
    """

    def __init__(self, save_distributed_checkpoint: bool = True, **kwargs: Any) -> None:
        super().__init__(tensor_parallel_size=1, save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_processes * self.num_nodes
        super().setup_environment()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a named group (callbacks, logger); empty -> []."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def instantiate_loggers(cfg: DictConfig, stage: str) -> list[Any]:
    """The `logger` group; a W&B logger left without group / job_type / name gets the job's
    (`lmforge.callbacks.wandb_lineage.run_identity`): a sweep's jobs share a group, each named
    by its overrides."""
    group = cfg.get("logger")
    if not group:
        return []
    loggers = []
    for node in group.values():
        if not (isinstance(node, DictConfig) and "_target_" in node):
            continue
        kwargs = {}
        if str(node._target_).endswith("WandbLogger"):
            kwargs = {k: v for k, v in wandb_identity(cfg, stage).items() if node.get(k) is None}
        loggers.append(instantiate(node, **kwargs))
    return loggers


def wandb_identity(cfg: DictConfig, stage: str) -> dict[str, str]:
    overrides, sweep_dir = [], None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        overrides = list(hydra_cfg.overrides.task)
        if str(hydra_cfg.mode) == "RunMode.MULTIRUN":
            sweep_dir = str(hydra_cfg.sweep.dir)
    return run_identity(stage, Path(cfg.run_dir), overrides, sweep_dir)


def stage_choice(cfg: DictConfig) -> str:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("stage") or "pretrain"
    return "pretrain"


def resolve_resume(cfg: DictConfig) -> str | None:
    """`resume=auto`: newest `last*.ckpt` of this stage under `output_root`; else an explicit path."""
    resume = cfg.get("resume")
    if not resume:
        return None
    if RESUME_ENV in os.environ and int(os.environ.get("LOCAL_RANK", 0)) > 0:
        # A rank Lightning launched from this command: use the path rank 0 resolved.
        return os.environ[RESUME_ENV] or None
    if resume == "auto":
        root = Path(cfg.output_root) / stage_choice(cfg)
        found = latest_checkpoint(root, pattern="last*.ckpt")
        if found is None:
            log.info("resume=auto: no checkpoint under %s; starting a fresh run", root)
            return None
        log.info("resume=auto: continuing from %s", found)
        return str(found)
    return str(resolve_checkpoint(resume))


def ensure_tokenizer(cfg: DictConfig) -> None:
    """The default tokenizer is trained on the embedded corpus on first use (as `python
    src/train_tokenizer.py` does); any other missing path is an error. Token shards are the
    datamodule's business (`TokenShardDataModule.prepare_data` writes missing ones on rank 0)."""
    tokenizer_path = Path(cfg.tokenizer.path)
    if (tokenizer_path / "tokenizer.json").is_file() or tokenizer_path.is_file():
        return
    if tokenizer_path != Path(DEFAULT_TOKENIZER_PATH):
        raise FileNotFoundError(
            f"tokenizer.path={tokenizer_path} does not exist; train one with "
            f"`python src/train_tokenizer.py out_dir={tokenizer_path}`"
        )
    from lmforge.data.tokenizer_job import TokenizerJobConfig, run_tokenizer_job

    log.info("no tokenizer at %s: training it on the embedded default corpus", tokenizer_path)
    run_tokenizer_job(TokenizerJobConfig(out_dir=str(tokenizer_path), vocab_size=int(cfg.model.vocab_size)))


@rank_zero_only
def _prepare_run_dir(run_dir: Path, tokenizer) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    # A self-contained run: `load_for_inference(run_dir)` finds the tokenizer without the config.
    tokenizer.save(run_dir / RUN_TOKENIZER_DIR)


def _checkpoint_paths(trainer: L.Trainer) -> tuple[str | None, str | None]:
    best = last = None
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            best = best or callback.best_model_path or None
            last = last or callback.last_model_path or None
    return best, last


def build_manifest(cfg: DictConfig, module, trainer: L.Trainer, resumed_from: str | None, status: str) -> dict:
    best, last = _checkpoint_paths(trainer)
    lineage = module.lineage()
    return {
        "kind": "training_run",
        "status": status,
        "stage": lineage["stage"],
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_dir": str(Path(cfg.run_dir).resolve()),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "model_config": lineage["model_config"],
        "num_params": module.model_config.num_params(),
        "tokenizer_fingerprint": lineage["tokenizer_fingerprint"],
        "tokenizer_path": lineage["tokenizer_path"],
        "data_fingerprint": data_fingerprint(OmegaConf.to_container(cfg.datamodule, resolve=True))
        if cfg.get("datamodule")
        else None,
        "git_commit": git_commit(),
        "parent": lineage["parent"],
        "resumed_from": resumed_from,
        "global_step": trainer.global_step,
        "final_metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        "best_checkpoint": str(Path(best).resolve()) if best else None,
        "last_checkpoint": str(Path(last).resolve()) if last else None,
    }


@rank_zero_only
def write_manifest(run_dir: Path, manifest: dict) -> Path:
    return write_run_manifest(run_dir, manifest)


def fit_from_config(cfg: DictConfig) -> dict:
    """Instantiate everything the config names, fit, and write the run manifest."""
    validate_config(cfg)
    run_dir = Path(cfg.run_dir)
    L.seed_everything(cfg.seed, workers=True)
    ensure_tokenizer(cfg)
    datamodule = instantiate(cfg.datamodule)
    module = instantiate(cfg.module, _convert_="all")
    loggers = instantiate_loggers(cfg, module.stage_name)
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # Lightning refuses an LR monitor with nothing to log to (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    resumed_from = resolve_resume(cfg)
    # Lightning launches the other ranks as copies of this command with this environment.
    os.environ[RESUME_ENV] = resumed_from or ""
    _prepare_run_dir(run_dir, module.tokenizer)
    log_run_config(loggers, cfg, module)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resumed_from)
    except BaseException as err:
        write_manifest(run_dir, build_manifest(cfg, module, trainer, resumed_from, f"failed: {err}"))
        finish_loggers(loggers, exit_code=1)
        raise
    manifest = build_manifest(cfg, module, trainer, resumed_from, "completed")
    track_outputs(loggers, manifest)
    write_manifest(run_dir, manifest)
    finish_loggers(loggers, exit_code=0)
    return manifest


def run_config(cfg: DictConfig, module=None) -> dict:
    """What a tracker records about a run: the whole resolved job config (trainer, precision,
    strategy, data, batch size, seed, ...), Hydra's group choices and command-line overrides, and
    under `lineage` the git commit and the tokenizer and data fingerprints."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    config["lineage"] = {
        "git_commit": git_commit(),
        "tokenizer_fingerprint": module.tokenizer.fingerprint if module is not None else None,
        "data_fingerprint": data_fingerprint(config["datamodule"]) if config.get("datamodule") else None,
        "parent": str(Path(cfg.init_from).resolve()) if cfg.get("init_from") else None,
    }
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        config["hydra"] = {
            "choices": OmegaConf.to_container(hydra_cfg.runtime.choices),
            "overrides": list(hydra_cfg.overrides.task),
            "job_num": hydra_cfg.job.get("num"),
            "mode": str(hydra_cfg.mode),
        }
    return config


def log_run_config(loggers: list, cfg: DictConfig, module=None) -> None:
    """Every logger gets the full composed config, not only the LightningModule's hparams
    (which Lightning adds on top at fit start). Loggers' `log_hyperparams` run on rank 0 only."""
    if not loggers:
        return
    config = run_config(cfg, module)
    for logger in loggers:
        logger.log_hyperparams(config)


@rank_zero_only
def track_outputs(loggers: list, manifest: dict) -> None:
    """The final checkpoint as a W&B `model` artifact naming its parent's; the manifest records
    the run and the artifact (`wandb`), so the eval, export and report runs of this checkpoint,
    and the runs trained from it, can link back."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            run = logger.experiment
            # The data fingerprint again: token shards are written during fit (prepare_data).
            lineage = {
                "git_commit": manifest["git_commit"],
                "tokenizer_fingerprint": manifest["tokenizer_fingerprint"],
                "data_fingerprint": manifest["data_fingerprint"],
                "parent": manifest["parent"],
            }
            run.config.update({"lineage": lineage}, allow_val_change=True)
            try:
                artifact = log_checkpoint_artifact(run, manifest)
            except Exception as err:  # the fit succeeded; its manifest must still be written
                log.warning("checkpoint artifact not logged to W&B: %s", err)
                artifact = None
            manifest["wandb"] = {
                "project": run.project,
                "group": run.group,
                "run_id": run.id,
                "name": run.name,
                "artifact": artifact,
            }


@rank_zero_only
def finish_loggers(loggers: list, exit_code: int) -> None:
    """Close each W&B run at the end of its job. Lightning's `WandbLogger` leaves the run open,
    so in a Hydra sweep every later job would otherwise log into the first job's run."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish(exit_code=exit_code)
            logger._experiment = None


OOM_ADVICE = (
    "lower datamodule.batch_size (trainer.accumulate_grad_batches keeps the batch), precision=bf16-true, "
    "module.activation_checkpointing=true, strategy=fsdp or peft=lora"
)


def one_line_error(err: BaseException) -> str | None:
    """The one line a user needs for a failure that is not a bug in lmforge, else None: a
    non-finite loss (the NaN guard names the step and the last good checkpoint) or running out
    of GPU or host memory (torch's first line, then what lowers the need)."""
    import torch

    from lmforge.callbacks import NonFiniteLossError

    if isinstance(err, NonFiniteLossError):
        return str(err).strip().splitlines()[0]
    text = str(err).strip()
    if isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
        first = text.splitlines()[0] if text else type(err).__name__
        return f"out of memory: {first[:300]}; {OOM_ADVICE}"
    return None


def exit_on_user_error(err: BaseException) -> None:
    """Exit with `error: <one line>` (status 1) for the failures `one_line_error` knows;
    `HYDRA_FULL_ERROR=1` keeps the traceback."""
    message = one_line_error(err)
    if message is not None and os.environ.get("HYDRA_FULL_ERROR") != "1":
        log.debug("full traceback", exc_info=err)
        raise SystemExit(f"error: {message} (HYDRA_FULL_ERROR=1 shows the traceback)")


@rank_zero_only
def print_summary(manifest: dict) -> None:
    """The CLI's closing lines: where the artifacts went."""
    metrics = manifest["final_metrics"]
    shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("train/loss", "val/loss") if k in metrics)
    print(f"\nfinished {manifest['stage']} after {manifest['global_step']} steps ({shown})")
    print(f"  last checkpoint: {manifest['last_checkpoint']}")
    print(f"  best checkpoint: {manifest['best_checkpoint']}")
    print(f"  manifest:        {Path(manifest['run_dir']) / MANIFEST_FILE}")
