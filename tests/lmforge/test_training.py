"""`python src/train.py` end to end, in subprocesses as a user runs it: validation loss falls,
W&B offline and CSV logs appear, kill -9 + `resume=auto` reproduces the uninterrupted losses,
the NaN guard stops a run, and 2-process DDP / FSDP (gloo) match one process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.checkpoint import load_for_inference
from tests.support.compose import MICRO_MODEL, REPO, TRAIN_SCRIPT
from tests.support.wandb_records import iter_records
from tests.support.wandb_records import run_config as wandb_run_config


def run_train(
    overrides: list[str], *, check: bool = True, timeout: int = 240, cwd: Path = REPO, full_error: bool = True
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        HYDRA_FULL_ERROR="1" if full_error else "0",
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), *overrides],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:  # show where it stalled, not just that it did
        tail = err.stderr or b""
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise AssertionError(f"train.py ran past {timeout} s; last stderr:\n{tail[-4000:]}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def logged(run_dir: Path, key: str) -> dict[int, float]:
    """{step: value} of one metric from the CSV logger."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


@pytest.fixture
def base_overrides(tmp_path, corpus_tokenizer_dir, shard_overrides):
    return [
        *MICRO_MODEL,
        f"tokenizer.path={corpus_tokenizer_dir}",
        *shard_overrides,
        "trainer=cpu",
        "callbacks.progress_bar.refresh_rate=0",
        "trainer.log_every_n_steps=1",
        f"output_root={tmp_path}/runs",
        "optim.warmup_steps=2",
    ]


def test_pretraining_lowers_val_loss_with_wandb_offline(base_overrides, tmp_path):
    run_dir = tmp_path / "run"
    run_train(
        [
            *base_overrides,
            "trainer.max_steps=40",
            "trainer.val_check_interval=10",
            "logger=wandb",
            "+logger.csv._target_=lightning.pytorch.loggers.CSVLogger",
            f"+logger.csv.save_dir={run_dir}",
            "+logger.csv.name=csv",
            "+logger.csv.version=''",
            f"hydra.run.dir={run_dir}",
        ]
    )
    val = logged(run_dir, "val/loss")
    assert sorted(val) == [9, 19, 29, 39], val
    losses = [val[s] for s in sorted(val)]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.3, losses
    train = logged(run_dir, "train/loss")
    assert sum(list(train.values())[-5:]) / 5 < sum(list(train.values())[:5]) / 5 - 0.5

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["global_step"] == 40
    assert Path(manifest["last_checkpoint"]).is_file() and Path(manifest["best_checkpoint"]).is_file()
    assert manifest["final_metrics"]["val/loss"] == pytest.approx(val[max(val)], rel=1e-6)
    loaded = load_for_inference(run_dir)
    assert loaded.tokenizer.fingerprint == manifest["tokenizer_fingerprint"]

    wandb_files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1
    # The transaction log stores history keys in plain bytes: one per logged step.
    history = wandb_files[0].read_bytes()
    assert history.count(b"train/loss") >= 40 and history.count(b"val/loss") >= 4
    assert b"perf/tokens_per_sec" in history and b"train/grad_norm" in history


@pytest.mark.parity
def test_kill_and_resume_reproduces_uninterrupted_losses(base_overrides, tmp_path):
    common = [
        *base_overrides,
        "logger=csv",
        "trainer.max_steps=12",
        "trainer.val_check_interval=1000",
        "~callbacks.best_checkpoint",
        "callbacks.last_checkpoint.every_n_train_steps=4",
    ]
    full = tmp_path / "runs_full" / "pretrain" / "full"
    run_train([*common, f"hydra.run.dir={full}"])

    killed_root = tmp_path / "runs_killed"
    killed = killed_root / "pretrain" / "killed"
    proc = run_train(
        [
            *common,
            f"output_root={killed_root}",
            f"hydra.run.dir={killed}",
            "+callbacks.kill._target_=tests.support.fault_injection.KillAtStep",
            "+callbacks.kill.step=7",
        ],
        check=False,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (killed / "checkpoints" / "last.ckpt").is_file()  # written at step 4, before the kill

    resumed = killed_root / "pretrain" / "resumed"
    run_train([*common, f"output_root={killed_root}", f"hydra.run.dir={resumed}", "resume=auto"])
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["resumed_from"] == str(killed / "checkpoints" / "last.ckpt")

    reference, after_resume = logged(full, "train/loss"), logged(resumed, "train/loss")
    assert sorted(after_resume) == list(range(4, 12)), after_resume
    for step, loss in after_resume.items():
        assert loss == reference[step], f"step {step}: resumed {loss!r} vs uninterrupted {reference[step]!r}"
    final_full = load_for_inference(full / "checkpoints" / "last.ckpt").model.state_dict()
    final_resumed = load_for_inference(resumed / "checkpoints" / "last.ckpt").model.state_dict()
    for name, value in final_full.items():
        torch.testing.assert_close(final_resumed[name], value, rtol=0, atol=0)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(base_overrides, tmp_path):
    run_dir = tmp_path / "nan"
    proc = run_train(
        [
            *base_overrides,
            "logger=csv",
            "trainer.max_steps=10",
            "trainer.val_check_interval=1000",
            "~callbacks.best_checkpoint",
            "callbacks.last_checkpoint.every_n_train_steps=2",
            "+callbacks.poison._target_=tests.support.fault_injection.PoisonWeightsAtStep",
            "+callbacks.poison.step=5",
            f"hydra.run.dir={run_dir}",
        ],
        check=False,
        full_error=False,
    )
    assert proc.returncode == 1
    last = run_dir / "checkpoints" / "last.ckpt"
    # One line with the step and the last good checkpoint, no traceback (HYDRA_FULL_ERROR=1 shows it).
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert "training loss is nan at global step 5" in line and str(last) in line, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert json.loads((run_dir / "manifest.json").read_text())["status"].startswith("failed: training loss is nan")


def wandb_run(run_dir: Path) -> tuple[str, dict, list[str]]:
    """(run id, config, record kinds) of the one offline W&B run under `run_dir`, read from its
    transaction log as `wandb sync` would upload it."""
    (log_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    kinds = [record.WhichOneof("record_type") for record in iter_records(log_file)]
    return log_file.stem.removeprefix("run-"), wandb_run_config(log_file), kinds


@pytest.mark.slow
def test_readme_sweep_runs_each_job_into_its_own_dir_and_wandb_run(base_overrides, tmp_path):
    """docs/training.md's `python src/train.py --multirun optim.lr=1e-3,3e-3`, with only the
    tiny-model / few-step overrides a user adds, run from a fresh working directory: no
    `hydra.sweep.dir`, the default `logger=wandb`."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    repo_sweeps = set(REPO.glob("runs/*/multirun_*")) | set(REPO.glob("multirun"))
    user_overrides = [o for o in base_overrides if not o.startswith("output_root=")]
    run_train(
        [
            "-m",
            "optim.lr=1e-3,3e-3",
            *user_overrides,
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
        ],
        cwd=workdir,
        timeout=480,
    )
    (sweep,) = workdir.glob("runs/pretrain/multirun_*")  # output_root=runs, relative to the cwd
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert set(REPO.glob("runs/*/multirun_*")) | set(REPO.glob("multirun")) == repo_sweeps  # nothing in the repo
    run_ids = set()
    for job, lr in (("0", 1e-3), ("1", 3e-3)):
        manifest = json.loads((sweep / job / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["config"]["optim"]["lr"] == lr
        assert f"optim.lr={lr}" in yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        # One W&B run per job (not the first job's run reused), finished, with the whole composed config.
        run_id, config, kinds = wandb_run(sweep / job)
        run_ids.add(run_id)
        assert kinds.count("run") == 1 and kinds.count("exit") == 1 and kinds.count("history") >= 2, kinds
        assert config["optim"]["lr"] == lr
        assert config["seed"] == 1337 and config["data"]["batch_size"] == 8
        assert config["trainer"]["max_steps"] == 2 and config["trainer"]["precision"] == "32-true"
        assert config["trainer"]["strategy"] == "auto"
        assert config["hydra"]["choices"]["precision"] == "32-true" and config["hydra"]["job_num"] == int(job)
        assert f"optim.lr={lr}" in config["hydra"]["overrides"]
        # Grouped by sweep, typed by stage, named by the overrides that tell the jobs apart.
        (log_file,) = (sweep / job / "wandb").glob("offline-run-*/run-*.wandb")
        (run,) = [r.run for r in iter_records(log_file) if r.WhichOneof("record_type") == "run"]
        assert (run.run_group, run.job_type) == (f"pretrain/{sweep.name}", "pretrain")
        assert run.display_name.startswith(f"optim.lr={lr},")
    assert len(run_ids) == 2


def test_last_checkpoint_holds_the_final_step(base_overrides, tmp_path):
    """10 steps, `last.ckpt` every 3: Lightning alone leaves it at step 9; the run ends at 10."""
    run_dir = tmp_path / "last"
    run_train(
        [
            *base_overrides,
            "logger=none",
            "trainer.max_steps=10",
            "trainer.val_check_interval=1000",
            "~callbacks.best_checkpoint",
            "callbacks.last_checkpoint.every_n_train_steps=3",
            f"hydra.run.dir={run_dir}",
        ]
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 10
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["global_step"] == 10 and manifest["last_checkpoint"] == str(last.resolve())


def final_loss(run_dir: Path, batch: torch.Tensor) -> float:
    model = load_for_inference(run_dir).model
    with torch.no_grad():
        logits = model(batch)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten()).item()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parity
def test_two_process_cpu_matches_single_process(base_overrides, tmp_path, token_rows, strategy):
    """Same global batch of 8 rows: 1 process x 8 vs 2 gloo processes x 4; weights after k steps agree.

    In exact arithmetic the two runs are equal; only the order of the gradient sums differs. They run
    in float64 so that this rounding (about 1e-16 relative, grown by a few Adam steps) stays far below
    the tolerance on every CPU: in float32 the AVX2 and AVX-512 kernels round differently by 1e-6."""
    common = [
        *base_overrides,
        "logger=none",
        "trainer.max_steps=4",
        "trainer.val_check_interval=1000",
        "~callbacks.best_checkpoint",
        "callbacks.last_checkpoint.every_n_train_steps=4",
        "module.meta_init=false",
        "precision=64-true",
    ]
    single, multi = tmp_path / "single", tmp_path / strategy
    run_train([*common, f"hydra.run.dir={single}"])
    run_train([*common, f"strategy={strategy}", "trainer.devices=2", "data.batch_size=4", f"hydra.run.dir={multi}"])
    reference = load_for_inference(single).model.state_dict()
    distributed = load_for_inference(multi).model.state_dict()
    for name, value in reference.items():
        assert value.dtype == torch.float64, name
        torch.testing.assert_close(distributed[name], value, rtol=1e-9, atol=1e-10)
    batch = token_rows[:8]
    assert final_loss(multi, batch) == pytest.approx(final_loss(single, batch), abs=1e-10)
