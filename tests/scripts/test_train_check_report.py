"""scripts/train_check_report.py (the GPU training check's summary) on CSV logs shaped like the
CSVLogger files of a run with the throughput callback."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from lmforge.callbacks import throughput

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_check_report.py"


def load():
    spec = importlib.util.spec_from_file_location("train_check_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(run_dir: Path, mfu: list[float]) -> None:
    (run_dir / "csv").mkdir(parents=True)
    names = ["step", "train/loss", "perf/tokens_per_sec", "perf/mfu"]
    with (run_dir / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for step, m in enumerate(mfu):
            writer.writerow({"step": step, "train/loss": 10 - step, "perf/tokens_per_sec": 1000 * (step + 1)})
            writer.writerow({"step": step, "perf/mfu": m})  # Lightning logs metrics on separate rows


def test_report_medians_and_target(tmp_path, capsys):
    source = Path(throughput.__file__).read_text()
    assert '"perf/mfu"' in source and '"perf/tokens_per_sec"' in source  # the columns read
    write_run(tmp_path / "eager", [0.1, 0.3, 0.35, 0.36])
    write_run(tmp_path / "compiled", [0.05, 0.5, 0.52, 0.54])
    report = load()
    assert report.main(["--target-mfu", "0.5", f"eager={tmp_path / 'eager'}", f"compiled={tmp_path / 'compiled'}"]) == 0
    out = capsys.readouterr().out
    assert "eager: tokens/s median 3,500, MFU median 0.355, loss 10.000 -> 7.000" in out
    assert "compiled: tokens/s median 3,500, MFU median 0.530" in out
    assert "best MFU 0.530 meets the target 0.50" in out
    report.main(["--target-mfu", "0.6", f"eager={tmp_path / 'eager'}"])
    assert "is below the target 0.60" in capsys.readouterr().out


def test_missing_run_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="metrics.csv not found"):
        load().main([f"x={tmp_path}"])
