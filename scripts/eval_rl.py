"""Held-out verifiable accuracy before and after RL: the reasoning-RL demonstration.

    python scripts/eval_rl.py before=<sft run dir | ckpt> after=<rl run dir | ckpt> [kind=mix] [n=200]

Greedy answers to `n` held-out generated tasks (`lmforge.data.tasks`, split "heldout": no prompt
of it can be in any train split) are scored with `is_correct`, per task kind, for both
checkpoints. A run directory means its *last* checkpoint, not the one its validation picked
(validation prompts are held-out prompts too, so picking on them would flatter the result). When
`after` is an RL run (directory, or a checkpoint inside one), its training prompts are rebuilt from
its manifest and checked to share no prompt with the evaluation set.

Both checkpoints answer the same items, so the gain is tested paired: of the items exactly one
of them gets right, how many did RL fix and how many did it break, and the exact one-sided sign
(McNemar) test of "fixed > broken".
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from lmforge.checkpoint import load_for_inference
from lmforge.data.tasks import Task, is_correct, make_tasks
from lmforge.eval.metrics import sign_test_one_sided
from lmforge.formats.checkpoint_meta import read_run_manifest
from lmforge.generate import SamplingConfig, generate_chat

log = logging.getLogger("eval_rl")


@dataclass
class EvalRLConfig:
    before: str = "???"
    after: str = "???"
    kind: str = "mix"
    n: int = 200
    seed: int = 0
    max_new_tokens: int = 48
    batch_size: int = 50
    threads: int = 2
    out: str | None = None  # JSON report; default <after run>/eval_rl_<kind>.json
    plot: bool = True  # <report>.png: the RL run's reward curves and accuracy before/after by kind


def accuracy(ckpt: str, tasks: list[Task], cfg: EvalRLConfig) -> dict:
    loaded = load_for_inference(ckpt)
    if loaded.tokenizer is None:
        raise FileNotFoundError(f"no tokenizer found next to {ckpt}")
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    by_kind: dict[str, list[bool]] = defaultdict(list)
    per_item: list[bool] = []
    for start in tqdm(range(0, len(tasks), cfg.batch_size), desc=f"greedy answers ({Path(ckpt).name})", leave=False):
        chunk = tasks[start : start + cfg.batch_size]
        replies = generate_chat(
            loaded.model, loaded.tokenizer, [[{"role": "user", "content": t.prompt}] for t in chunk], sampling
        )
        for task, reply in zip(chunk, replies, strict=True):
            ok = is_correct(task, reply)
            by_kind[task.kind].append(ok)
            per_item.append(ok)
    return {
        "accuracy": sum(per_item) / len(per_item),
        "by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "correct": per_item,
    }


def paired_change(before: list[bool], after: list[bool]) -> dict:
    """Items RL fixed and broke, and the exact one-sided sign test p-value of fixed > broken."""
    fixed = sum(a and not b for b, a in zip(before, after, strict=True))
    broken = sum(b and not a for b, a in zip(before, after, strict=True))
    return {"fixed": fixed, "broken": broken, "p_value": sign_test_one_sided(fixed, broken)}


def run_dir_of(path: str) -> Path:
    path = Path(path)
    return path.parent.parent if path.is_file() and path.parent.name == "checkpoints" else path


def final_checkpoint(path: str) -> str:
    """A run directory's last checkpoint; any other path as given."""
    if Path(path).is_dir():
        last = read_run_manifest(path).get("last_checkpoint")
        if last and Path(last).exists():
            return last
    return path


def training_prompts(run: str) -> set[str] | None:
    """The prompts an RL run trained on, from its manifest (generated tasks only)."""
    manifest = read_run_manifest(run_dir_of(run))
    if not manifest:
        return None
    datamodule = manifest["config"]["datamodule"]
    if datamodule.get("train_path") or not datamodule.get("tasks"):
        return None
    tasks = datamodule["tasks"]
    return {t.prompt for t in make_tasks(tasks["kind"], tasks["n_train"], tasks["seed"], split="train")}


def plot_report(path: Path, run: Path, before: dict, after: dict, title: str) -> Path:
    """Left: sampled reward per step (and its 20-step mean) and greedy val/reward from the RL run's
    CSV log; right: held-out accuracy before and after, by task kind."""
    from e2e.report import plt, read_curve  # pyplot on the Agg backend

    curves = read_curve(run / "csv" / "metrics.csv")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    if "train/reward" in curves:
        steps, values = zip(*curves["train/reward"])
        left.plot(steps, values, ".", alpha=0.25, markersize=3, label="train/reward (sampled)")
        window = 20
        trailing = [values[max(0, i - window + 1) : i + 1] for i in range(len(values))]
        means = [sum(w) / len(w) for w in trailing]
        left.plot(steps, means, "-", label=f"train/reward ({window}-log mean)")
    if "val/reward" in curves:
        steps, values = zip(*curves["val/reward"])
        left.plot(steps, values, "o-", label="val/reward (greedy, held out)")
    left.set_xlabel("optimizer step")
    left.set_ylabel("reward")
    left.set_title("RL run")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    kinds = ["all", *sorted(before["by_kind"])]
    xs = range(len(kinds))
    for offset, (name, report) in ((-0.2, ("before", before)), (0.2, ("after", after))):
        heights = [report["accuracy"], *(report["by_kind"][k] for k in kinds[1:])]
        right.bar([x + offset for x in xs], heights, width=0.4, label=name)
    right.set_xticks(list(xs), kinds)
    right.set_ylabel("held-out greedy accuracy")
    right.set_title(title)
    right.grid(alpha=0.3, axis="y")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg: EvalRLConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalRLConfig), OmegaConf.from_cli()))
    torch.set_num_threads(cfg.threads)
    tasks = make_tasks(cfg.kind, cfg.n, cfg.seed, split="heldout")
    seen = training_prompts(cfg.after)
    overlap = None if seen is None else len(seen & {t.prompt for t in tasks})
    if overlap:
        raise RuntimeError(f"{overlap} evaluation prompts occur in the RL run's training prompts")
    before_ckpt, after_ckpt = final_checkpoint(cfg.before), final_checkpoint(cfg.after)
    before, after = accuracy(before_ckpt, tasks, cfg), accuracy(after_ckpt, tasks, cfg)
    kinds = sorted(before["by_kind"])
    print(
        f"held-out {cfg.kind} tasks: n={cfg.n} seed={cfg.seed}, greedy, "
        f"overlap with RL training prompts: {'not checked' if overlap is None else overlap}"
    )
    print(f"{'checkpoint':<10} {'accuracy':>9} " + " ".join(f"{k:>16}" for k in kinds))
    for name, report in (("before", before), ("after", after)):
        print(f"{name:<10} {report['accuracy']:>9.3f} " + " ".join(f"{report['by_kind'][k]:>16.3f}" for k in kinds))
    change = paired_change(before["correct"], after["correct"])
    print(
        f"paired: RL fixed {change['fixed']}, broke {change['broken']} of {cfg.n} items; "
        f"one-sided sign test p = {change['p_value']:.2g}"
    )
    print(f"  before: {before_ckpt}\n  after:  {after_ckpt}")
    run = run_dir_of(cfg.after)
    out = Path(cfg.out) if cfg.out else (run / f"eval_rl_{cfg.kind}.json" if run.is_dir() else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {"config": vars(cfg), "before": before, "after": after, "paired": change, "overlap": overlap}, indent=2
            )
            + "\n"
        )
        print(f"  report: {out}")
        if cfg.plot:
            title = f"held-out {cfg.kind} (n={cfg.n}): fixed {change['fixed']}, broke {change['broken']}"
            print(f"  plot:   {plot_report(out.with_suffix('.png'), run, before, after, title)}")


if __name__ == "__main__":
    main()
