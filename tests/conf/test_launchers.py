"""The sweep launchers and sweeper the `sweep` extra ships, run through `python src/train.py -m`
as a user types it: submitit's local executor, Optuna minimising the returned `val/loss`, and the
sbatch script that `hydra/launcher=slurm` writes for a multi-node FSDP job (read without SLURM:
stand-in `sbatch` / `srun` executables capture the script and refuse the submission)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.compose import MICRO_MODEL, REPO, TRAIN_SCRIPT


def run_train(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def tiny_run(tmp_path, corpus_tokenizer_dir, shard_overrides) -> list[str]:
    return [
        *MICRO_MODEL,
        f"tokenizer.path={corpus_tokenizer_dir}",
        *shard_overrides,
        "trainer=cpu",
        "callbacks.progress_bar.refresh_rate=0",
        "optim.warmup_steps=1",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.limit_val_batches=2",
        f"output_root={tmp_path}/runs",
    ]


def the_sweep_dir(tmp_path: Path) -> Path:
    (sweep,) = (tmp_path / "runs" / "pretrain").glob("multirun_*")
    return sweep


@pytest.mark.slow
def test_two_job_sweep_runs_through_submitit_local(tiny_run, tmp_path):
    proc = run_train(["-m", "hydra/launcher=local", "optim.lr=1e-3,3e-3", "logger=csv", *tiny_run], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep = the_sweep_dir(tmp_path)
    assert "Submitit 'local' sweep output dir" in proc.stderr + proc.stdout
    for job, lr in (("0", 1e-3), ("1", 3e-3)):
        manifest = json.loads((sweep / job / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["global_step"] == 3
        assert manifest["config"]["optim"]["lr"] == lr
    # Each job ran in a submitit worker process of its own, which logged there.
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_minimises_val_loss(tiny_run, tmp_path):
    proc = run_train(
        ["-m", "hydra/sweeper=optuna_tpe", "hydra.sweeper.n_trials=3", "logger=none", *tiny_run], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep = the_sweep_dir(tmp_path)
    val_loss = {}
    for job in ("0", "1", "2"):
        manifest = json.loads((sweep / job / "manifest.json").read_text())
        val_loss[manifest["config"]["optim"]["lr"]] = manifest["final_metrics"]["val/loss"]
    assert len(val_loss) == 3  # three learning rates sampled from the search space
    assert all(1e-4 <= lr <= 1e-2 for lr in val_loss)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_lr = min(val_loss, key=val_loss.get)
    assert result["best_params"]["optim.lr"] == pytest.approx(best_lr)
    assert result["best_value"] == pytest.approx(val_loss[best_lr])


STAND_IN = "#!/bin/sh\n{body}\n"


@pytest.fixture
def fake_slurm(tmp_path) -> tuple[dict, Path]:
    """`sbatch` that saves the script it is given and refuses it; `srun` only needs to exist."""
    bin_dir, script = tmp_path / "bin", tmp_path / "captured.sbatch"
    bin_dir.mkdir()
    for name, body in {
        "sbatch": f'cp "$1" "{script}"\necho "sbatch: test stand-in, script saved" >&2\nexit 1',
        "srun": 'echo "srun: test stand-in" >&2\nexit 1',
    }.items():
        (bin_dir / name).write_text(STAND_IN.format(body=body))
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, script


def sbatch_options(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", script, re.M))


@pytest.mark.slow
def test_slurm_launcher_writes_a_multi_node_fsdp_sbatch_script(fake_slurm, tmp_path, monkeypatch):
    env, script_path = fake_slurm
    proc = run_train(
        [
            "-m",
            "hydra/launcher=slurm",
            "trainer=gpu",
            "trainer.devices=8",
            "trainer.num_nodes=2",
            "strategy=fsdp",
            "precision=bf16-true",
            "model=7b",
            "hydra.launcher.partition=gpu",
            "optim.lr=1e-4,2e-4",
            f"output_root={tmp_path}/runs",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert "sbatch: test stand-in" in proc.stderr, proc.stderr[-4000:]
    script = script_path.read_text()
    options = sbatch_options(script)
    assert options["nodes"] == "2" and options["ntasks-per-node"] == "8" and options["gpus-per-node"] == "8"
    assert options["partition"] == "gpu" and options["array"] == "0-1%2"  # the two sweep jobs
    assert options["job-name"] == "train" and options["signal"] == "USR2@120"
    (srun_line,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert "-m submitit.core._submit" in srun_line  # every task runs the job; Lightning reads srun's env
    # The job each array task runs carries the multi-node FSDP overrides.
    import pickle

    submitted = [pickle.loads(p.read_bytes()) for p in (the_sweep_dir(tmp_path) / ".submitit").glob("*.pkl")]
    overrides = sorted(tuple(s.args[0]) for s in submitted)
    assert all({"strategy=fsdp", "trainer.num_nodes=2", "trainer.devices=8"} <= set(o) for o in overrides)

    # What Lightning sees in task 11 of the 16 that srun starts from this script.
    from lightning.fabric.plugins.environments import SLURMEnvironment

    nodes, per_node = int(options["nodes"]), int(options["ntasks-per-node"])
    for key, value in {
        "SLURM_NTASKS": nodes * per_node,
        "SLURM_NTASKS_PER_NODE": per_node,
        "SLURM_JOB_NAME": options["job-name"],
        "SLURM_JOB_ID": 4242,
        "SLURM_NODELIST": "gpu-[017-018]",
        "SLURM_PROCID": 11,
        "SLURM_LOCALID": 3,
        "SLURM_NODEID": 1,
    }.items():
        monkeypatch.setenv(key, str(value))
    # Reading main_address/main_port writes MASTER_ADDR/MASTER_PORT into os.environ: registered
    # here so monkeypatch removes them again (a leaked MASTER_ADDR=gpu-017 hangs later DDP runs).
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    assert SLURMEnvironment.detect()
    slurm = SLURMEnvironment()
    assert (slurm.world_size(), slurm.global_rank(), slurm.local_rank(), slurm.node_rank()) == (16, 11, 3, 1)
    assert slurm.main_address == "gpu-017"
