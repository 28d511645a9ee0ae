"""Which model shape buys the most held-out task accuracy per minute on this machine?

For each candidate shape, runs the main job's own steps up to SFT (curate -> tokenizer -> shards
-> pretrain -> SFT, with conf/e2e.yaml's step counts) and scores SFT on the same 200 held-out
generated tasks (scripts/eval_tasks.py). Every step is the CLI the main job calls, so the times
are the main job's. Prints accuracy with its 95% interval, the minutes pretrain + SFT took, and
accuracy per minute; writes the rows to <out>/shapes.json. Run it alone: the times depend on load.

    python scripts/bench_shapes.py                         # tiny, wide and deep
    python scripts/bench_shapes.py --shapes tiny wide      # a subset
    python scripts/bench_shapes.py --e2e steps.sft=300     # any conf/e2e.yaml override, for every shape

docs/main-job.md ("Model shape") records a run and the choice it led to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from hydra import compose, initialize_config_dir  # noqa: E402

from e2e.runner import run_steps  # noqa: E402
from e2e.significance import paired_binary, wilson_interval  # noqa: E402
from e2e.steps import build_steps  # noqa: E402
from lmforge.config_paths import conf_dir  # noqa: E402
from lmforge.config_precheck import register_help_resolver  # noqa: E402

# name -> overrides on model=tiny (d_model 128, 4 layers, 4 heads of 32, ffn 384). Head size stays 32.
SHAPES = {
    "tiny": [],
    "wide": ["model.d_model=192", "model.n_heads=6", "model.n_kv_heads=2", "model.ffn_dim=512"],
    "deep": ["model.n_layers=8"],
}
# The main job's steps up to SFT's held-out task score.
STEPS = ("curate", "tokenizer", "shards", "pretrain", "sft", "tasks_sft")
TIMED = ("pretrain", "sft")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--out", default="artifacts/shapes")
    p.add_argument("--e2e", nargs="*", default=[], help="conf/e2e.yaml overrides for every shape")
    return p.parse_args()


def params_of(overrides: list[str]) -> int:
    from omegaconf import OmegaConf

    from lmforge.model import ModelConfig, build_model

    model = OmegaConf.load(conf_dir() / "model" / "tiny.yaml")
    for override in overrides:
        key, value = override.removeprefix("model.").split("=")
        model[key] = int(value)
    config = ModelConfig(**{k: v for k, v in model.items() if k in ModelConfig.__dataclass_fields__})
    return sum(p.numel() for p in build_model(config).parameters())


def run_shape(name: str, args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    overrides = SHAPES[name]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "e2e",
            overrides=[f"out_dir={out}", "train_overrides=[" + ",".join(f"'{o}'" for o in overrides) + "]", *args.e2e],
        )
    steps = [s for s in build_steps(cfg) if s.name in STEPS]
    results = {r.name: r for r in run_steps(steps, out / "logs", env={"WANDB_MODE": "disabled"})}
    report = json.loads((out / "tasks" / "sft" / "report.json").read_text())
    n, accuracy = report["n"], report["accuracy"]
    minutes = sum(results[s].seconds for s in TIMED) / 60
    low, high = wilson_interval(round(accuracy * n), n)
    return {
        "shape": name,
        "overrides": overrides,
        "params": params_of(overrides),
        "steps": {"pretrain": cfg.steps.pretrain, "sft": cfg.steps.sft},
        "seconds": {s: round(results[s].seconds, 1) for s in TIMED},
        "minutes": round(minutes, 2),
        "n": n,
        "accuracy": accuracy,
        "ci95": [round(low, 3), round(high, 3)],
        "format_rate": report["format_rate"],
        "accuracy_per_minute": round(accuracy / minutes, 4),
    }


def _items(out: str, shape: str) -> dict:
    return json.loads((Path(out) / shape / "tasks" / "sft" / "report.json").read_text())["items"]


def main() -> None:
    args = parse_args()
    os.chdir(REPO)  # build_steps writes repo-relative CLI calls
    register_help_resolver()  # conf/e2e.yaml's help config names this resolver
    rows = [run_shape(name, args) for name in args.shapes]
    # Each shape against the first, item by item on the same tasks (exact sign test on the changed ones).
    first = _items(args.out, rows[0]["shape"])
    for row in rows[1:]:
        mine = _items(args.out, row["shape"])
        if mine["task_id"] == first["task_id"]:
            test = paired_binary("accuracy", first["correct"], mine["correct"])
            row["vs_first"] = {"shape": rows[0]["shape"], "gain": round(test.gain, 3), "p": round(test.p, 4)}
    Path(args.out, "shapes.json").write_text(json.dumps(rows, indent=2))
    print(
        f"\n{'shape':<6}{'params':>10}{'pretrain s':>12}{'sft s':>8}{'min':>7}  accuracy [95% CI]   acc/min  vs first"
    )
    for r in rows:
        lo, hi = r["ci95"]
        print(
            f"{r['shape']:<6}{r['params']:>10,}{r['seconds']['pretrain']:>12.1f}{r['seconds']['sft']:>8.1f}"
            f"{r['minutes']:>7.2f}  {r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]   {r['accuracy_per_minute']:.4f}"
            + (f"   {r['vs_first']['gain']:+.3f} (p {r['vs_first']['p']:.2g})" if "vs_first" in r else "")
        )
    print(f"n={rows[0]['n']} held-out tasks each; rows in {Path(args.out, 'shapes.json')}")


if __name__ == "__main__":
    main()
