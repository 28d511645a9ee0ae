"""Score a checkpoint on held-out generated tasks: answer format, accuracy, chosen-over-rejected margin.

    python scripts/eval_tasks.py ckpt=runs/sft/<run> [n=200] [kind=mix] [seed=0] [out=report.json]

- format rate: share of greedy completions that end in an ``Answer: X`` line;
- accuracy: share whose answer is correct (`lmforge.data.tasks.is_correct`);
- margin: mean of log p(chosen) - log p(rejected) (summed over completion tokens) on the
  held-out preference pairs, and pair accuracy: how often chosen is the likelier one.
Held-out prompts never occur in any train split (`lmforge.data.tasks.split_of`). The report keeps
every item's outcome (`items`, `pair_margins`) in a fixed order with the prompts' hashes, so two
checkpoints' reports can be compared item by item (paired tests in e2e/significance.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from lmforge.checkpoint import load_for_inference
from lmforge.data.chat import TaskSource
from lmforge.data.preference import PreferenceCollator, encode_pairs, task_pairs
from lmforge.data.tasks import Task, extract_answer, is_correct, make_tasks
from lmforge.generate import SamplingConfig, generate_chat
from lmforge.losses import sequence_logps
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer

log = logging.getLogger("eval_tasks")


@dataclass
class EvalTasksConfig:
    ckpt: str = "???"
    n: int = 200  # held-out tasks (and preference pairs)
    kind: str = "mix"
    seed: int = 0
    max_new_tokens: int = 48
    batch_size: int = 50
    threads: int = 2
    out: str | None = None  # optional JSON report path


def generation_scores(model: Transformer, tokenizer: Tokenizer, tasks: list[Task], cfg: EvalTasksConfig) -> dict:
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    formatted, correct = 0, 0
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples, items = [], {"task_id": [], "correct": [], "formatted": []}
    for start in tqdm(range(0, len(tasks), cfg.batch_size), desc="generating", leave=False):
        chunk = tasks[start : start + cfg.batch_size]
        replies = generate_chat(model, tokenizer, [[{"role": "user", "content": t.prompt}] for t in chunk], sampling)
        for task, reply in zip(chunk, replies, strict=True):
            ok = is_correct(task, reply)
            has_format = extract_answer(reply) is not None
            formatted += has_format
            correct += ok
            items["task_id"].append(hashlib.sha256(task.prompt.encode()).hexdigest()[:12])
            items["correct"].append(int(ok))
            items["formatted"].append(int(has_format))
            by_kind[task.kind][0] += ok
            by_kind[task.kind][1] += 1
            if len(examples) < 4:
                examples.append({"prompt": task.prompt, "reply": reply, "answer": task.answer})
    return {
        "n": len(tasks),
        "format_rate": formatted / len(tasks),
        "accuracy": correct / len(tasks),
        "accuracy_by_kind": {k: c / n for k, (c, n) in sorted(by_kind.items())},
        "examples": examples,
        "items": items,
    }


@torch.no_grad()
def preference_scores(model: Transformer, tokenizer: Tokenizer, cfg: EvalTasksConfig) -> dict:
    source = TaskSource(kind=cfg.kind, n_train=0, n_val=cfg.n, seed=cfg.seed)
    pairs = encode_pairs(tokenizer, task_pairs(source, "val"), model.config.max_seq_len, "heldout pairs")
    collate = PreferenceCollator(tokenizer.pad_id)
    margins = []
    for start in range(0, len(pairs), cfg.batch_size):
        batch = collate(pairs[start : start + cfg.batch_size])
        logps, _ = sequence_logps(model(batch["input_ids"]), batch["labels"])
        chosen, rejected = logps.chunk(2)
        margins.append(chosen - rejected)
    margin = torch.cat(margins)
    return {
        "margin": margin.mean().item(),
        "pair_accuracy": (margin > 0).float().mean().item(),
        "pair_margins": [round(m, 6) for m in margin.tolist()],
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg: EvalTasksConfig = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(EvalTasksConfig), OmegaConf.from_cli())
    )
    torch.set_num_threads(cfg.threads)
    loaded = load_for_inference(cfg.ckpt)
    if loaded.tokenizer is None:
        raise FileNotFoundError(f"no tokenizer found next to {cfg.ckpt}")
    tasks = make_tasks(cfg.kind, cfg.n, cfg.seed, split="heldout")
    report = {
        "ckpt": str(cfg.ckpt),
        "config": asdict(cfg),
        **generation_scores(loaded.model, loaded.tokenizer, tasks, cfg),
        **preference_scores(loaded.model, loaded.tokenizer, cfg),
    }
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(report, indent=2) + "\n")
    for example in report["examples"][:2]:
        print(f"  {example['prompt']!r} -> {example['reply']!r} (answer {example['answer']})")
    kinds = "  ".join(f"{k}={v:.2f}" for k, v in report["accuracy_by_kind"].items())
    print(
        f"{cfg.ckpt}: format_rate={report['format_rate']:.3f} accuracy={report['accuracy']:.3f} "
        f"margin={report['margin']:.3f} pair_accuracy={report['pair_accuracy']:.3f} (n={cfg.n}; {kinds})"
    )
    if cfg.out:
        print(f"report written to {cfg.out}")


if __name__ == "__main__":
    main()
