"""`python src/train.py` as a user types it: a typo is reported before torch or Lightning is
imported (in seconds, not after a minute of imports), and `--help` lists only the groups
conf/train.yaml composes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from lmforge.config_precheck import TYPED_NODES, TYPED_STAGES, precheck_train_overrides
from lmforge.config_schema import SCHEMAS, STAGE_CLASSES
from tests.support.compose import REPO, TRAIN_SCRIPT, compose_train

HEAVY = ("torch", "lightning", "wandb", "transformers")


def run_cli(args: list[str], *extra_python: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *extra_python, str(TRAIN_SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, time.perf_counter() - start


def imported_top_level(stderr: str) -> set[str]:
    """Top-level packages named by `python -X importtime` (lines `import time: self | cum | name`)."""
    return {m.group(1).strip().split(".")[0] for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", stderr, re.M)}


@pytest.mark.parametrize(
    "override,message",
    [
        ("modle=tiny", "Could not override 'modle'"),
        ("trainer.max_stpes=5", "Key 'max_stpes' is not in struct"),
        ("model=tinyy", "Could not find 'model/tinyy'"),
    ],
)
def test_typo_fails_before_torch_and_lightning_are_imported(override, message):
    proc, seconds = run_cli([override], "-X", "importtime")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert message in proc.stderr and "HYDRA_FULL_ERROR=1" in proc.stderr
    assert not imported_top_level(proc.stderr) & set(HEAVY), sorted(imported_top_level(proc.stderr) & set(HEAVY))
    assert seconds < 20, seconds  # generous: the imports it skips take a minute on a cold machine


def test_typo_in_a_sweep_fails_before_any_job():
    proc, seconds = run_cli(["-m", "optim.lr=1e-3,3e-3", "trainer.max_stpes=5"], "-X", "importtime")
    assert proc.returncode == 1 and "Key 'max_stpes' is not in struct" in proc.stderr
    assert not imported_top_level(proc.stderr) & set(HEAVY)
    assert seconds < 20, seconds


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-m", "optim.lr=1e-3,3e-3", "model=tiny", "trainer.max_steps=3"],
        ["stage=sft", "experiment=sft_tiny", "+callbacks.x._target_=a.B", "~callbacks.best_checkpoint"],
        ["model.rope_theta=5.0", "module.meta_init=true", "hydra.run.dir=/tmp/x"],
        # only the typed schemas decide these; the precheck leaves them to Hydra's full compose
        ["model.n_layerz=3"],
        ["+module.typo=1"],
        ["stage=sft", "data=curated"],
        ["--help"],
        ["--cfg", "job"],
    ],
)
def test_precheck_accepts_what_it_cannot_refuse(args):
    assert precheck_train_overrides(args) is None


def test_precheck_leaves_the_real_schemas_in_the_config_store():
    compose_train([])  # registers the typed schemas
    precheck_train_overrides(["modle=tiny"])
    with pytest.raises(Exception, match="n_layerz"):
        compose_train(["model.n_layerz=3"])  # still ModelConfig under `model`, not the stand-in


def test_standins_cover_every_schema_the_train_config_uses():
    assert set(TYPED_NODES) == set(SCHEMAS) and set(TYPED_STAGES) == set(STAGE_CLASSES)


def test_group_of_another_entry_point_is_named_as_such():
    proc, seconds = run_cli(["eval=quick"])
    assert proc.returncode == 1
    assert "`eval` is a config group of another entry point" in proc.stderr and seconds < 20


def groups_in_help(stdout: str) -> dict[str, list[str]]:
    section = stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    return {
        line.split(":")[0]: line.split(":", 1)[1].strip().split(", ") for line in section.splitlines() if ": " in line
    }


def test_help_lists_only_the_groups_train_composes():
    proc, _ = run_cli(["--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    groups = groups_in_help(proc.stdout)
    assert sorted(groups) == [
        "callbacks",
        "data",
        "experiment",
        "logger",
        "model",
        "optim",
        "peft",
        "precision",
        "schedule",
        "stage",
        "strategy",
        "trainer",
    ]
    assert "tiny" in groups["model"] and "sft" in groups["stage"] and "default" in groups["data"]
    sft = groups_in_help(run_cli(["stage=sft", "--help"])[0].stdout)
    assert "data" not in sft  # only pretraining reads the token-shard mix
