"""Summarise GPU training-check runs from their CSV logs: tokens/s and MFU (median of the second
half of the logged steps, past compile and warm-up) and first/last loss, one line per run, then
whether the best MFU reaches --target-mfu. Used by scripts/gpu_check_train.sh.

    python scripts/train_check_report.py --target-mfu 0.5 eager=runs/gpu_check/pretrain_1b \\
        compiled=runs/gpu_check/pretrain_1b_compiled
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path


def summarise(run_dir: Path) -> dict[str, float]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (did the run start?)")
    rows = list(csv.DictReader(path.open()))

    def column(name: str) -> list[float]:
        return [float(r[name]) for r in rows if r.get(name)]

    tps, mfu, loss = column("perf/tokens_per_sec"), column("perf/mfu"), column("train/loss")
    if not tps or not loss:
        raise SystemExit(f"error: {path} has no perf/tokens_per_sec or train/loss rows")
    return {
        "tokens_per_sec": statistics.median(tps[len(tps) // 2 :]),
        "mfu": statistics.median(mfu[len(mfu) // 2 :]) if mfu else float("nan"),
        "loss_first": loss[0],
        "loss_last": loss[-1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="label=run_dir")
    p.add_argument("--target-mfu", type=float, default=0.5)
    args = p.parse_args(argv)
    best = float("nan")
    for spec in args.runs:
        label, _, run_dir = spec.partition("=")
        s = summarise(Path(run_dir))
        print(
            f"1b bf16 FSDP2 (1 device) {label}: tokens/s median {s['tokens_per_sec']:,.0f}, "
            f"MFU median {s['mfu']:.3f}, loss {s['loss_first']:.3f} -> {s['loss_last']:.3f}"
        )
        best = s["mfu"] if best != best else max(best, s["mfu"])  # nan-safe max
    verdict = "meets" if best >= args.target_mfu else "is below"
    print(f"best MFU {best:.3f} {verdict} the target {args.target_mfu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
