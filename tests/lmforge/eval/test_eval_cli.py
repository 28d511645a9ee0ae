"""src/eval.py as a user runs it: a wrong report to compare with is one line, before any model loads."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("parent_report={missing}", "error: parent_report={missing} given, but ckpt=None records no parent"),
        ("baseline_report={missing}", "error: baseline_report={missing}: no evaluation report at"),
    ],
)
def test_a_wrong_comparison_report_is_one_line(tmp_path, override, expected):
    missing = tmp_path / "no_report"
    proc = subprocess.run(
        [sys.executable, "src/eval.py", override.format(missing=missing), f"out_dir={tmp_path / 'out'}"],
        cwd=REPO,
        env=dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(expected.format(missing=missing))
    assert "Traceback" not in proc.stderr
    # torchao's CUDA-kernel load failures and torch's Enum notice are not shown on a CPU machine.
    assert "Failed to load" not in proc.stderr and "register_constant" not in proc.stderr
    assert not (tmp_path / "out" / "report.json").exists()


def test_other_torchao_warnings_still_show(caplog, monkeypatch):
    import torch

    import lmforge  # noqa: F401  (installs the filters)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.so: no driver")
        logging.getLogger("torchao").warning("a config option is deprecated")
    assert [r.getMessage() for r in caplog.records] == ["a config option is deprecated"]
