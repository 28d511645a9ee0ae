"""`--help` of every entry point but train.py (tests/conf/test_train_cli.py) lists the config groups
that entry point composes, not every directory under conf/ (Hydra's `$APP_CONFIG_GROUPS`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conf.test_train_cli import groups_in_help
from tests.support.compose import REPO

NO_GROUPS = "(none; this command is configured by the keys below)"


@pytest.mark.parametrize(
    "command,groups",
    [
        (["src/eval.py"], {"eval": "quick"}),
        (["-m", "data_pipeline"], {"pipeline": "ray"}),
        (["-m", "serving.export"], {}),
        (["-m", "data_pipeline.shards"], {}),
        (["src/train_tokenizer.py"], {}),
        (["scripts/pipeline.py"], {}),
    ],
    ids=["eval", "curation", "export", "shards", "tokenizer", "main-job"],
)
def test_help_lists_only_this_entry_points_groups(command, groups):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, *command, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = groups_in_help(proc.stdout)
    assert sorted(listed) == sorted(groups), listed  # e.g. no `model`, `stage` or `trainer` in eval's help
    for group, option in groups.items():
        assert option in listed[group]
    if not groups:
        assert NO_GROUPS in proc.stdout
    assert "== Config ==" in proc.stdout  # the composed config follows, as in Hydra's own help
