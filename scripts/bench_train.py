"""Training overhead of our Lightning stage against a bare PyTorch loop, in one process.

Both sides train the same model shape on the same batches with the same AdamW settings:
  - lightning: `PretrainStage` under a `lightning.Trainer` (our logging, grad-norm, throughput
    callback included: that is the cost users pay);
  - bare: forward, cross-entropy, backward, AdamW step.
The two alternate step by step (a callback runs one bare step after each Lightning step), so
load from other processes hits both alike; each round is a fresh Trainer whose first steps are
warm-up and not timed. Prints a table of tokens/s and the ratio lightning/bare.

    python scripts/bench_train.py                       # tiny and 125m-class shapes
    python scripts/bench_train.py --shapes tiny --rounds 5 --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lmforge.callbacks import ThroughputMFU  # noqa: E402
from lmforge.config_paths import conf_dir  # noqa: E402
from lmforge.model import ModelConfig, build_model  # noqa: E402
from lmforge.stages.pretrain import PretrainStage  # noqa: E402
from lmforge.tokenizer import train_tokenizer  # noqa: E402

OPTIM = {
    "lr": 1e-3,
    "betas": (0.9, 0.95),
    "eps": 1e-8,
    "weight_decay": 0.1,
    "warmup_steps": 0,
    "min_lr_ratio": 1.0,
    "decay_steps": 10_000,
}
# Shapes: (model yaml, override, batch, seq_len, default steps per round). 125m keeps its width and
# depth but a 4k vocabulary and a short context, so a CPU run takes minutes.
SHAPES = {
    "tiny": ("tiny", {}, 16, 256, 12),
    "125m": ("125m", {"vocab_size": 4096}, 2, 64, 6),
}


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    """One step of the plain PyTorch loop: forward, cross-entropy, backward, AdamW step."""
    ids = batch["input_ids"]
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class InterleavedBareLoop(L.Callback):
    """Runs the bare loop one step at a time between Lightning's steps, so the two sides
    alternate step by step and a burst of load on the shared machine hits both alike.

    Lightning's step time runs from the end of the previous bare step to the end of this
    Lightning step: its data fetching and every hook and logging call in between count (what a
    user's wall clock sees). The bare step fetches its own batch from its own loader."""

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, warmup: int
    ) -> None:
        self.model, self.optimizer, self.loader, self.warmup = model, optimizer, loader, warmup
        self.lightning_times: list[float] = []
        self.bare_times: list[float] = []

    def on_train_start(self, trainer, module) -> None:
        self.batches = iter(self.loader)
        self.model.train()
        self.mark = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        lightning_done = time.perf_counter()
        bare_start = time.perf_counter()
        bare_step(self.model, self.optimizer, next(self.batches))
        bare_done = time.perf_counter()
        if batch_idx >= self.warmup:
            self.lightning_times.append(lightning_done - self.mark)
            self.bare_times.append(bare_done - bare_start)
        self.mark = time.perf_counter()


def run_round(stage: PretrainStage, bare: InterleavedBareLoop, loader: DataLoader) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(loader),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[bare, ThroughputMFU(peak_flops_per_second=None)],
    )
    trainer.fit(stage, train_dataloaders=loader)


def bench_shape(name: str, rounds: int, steps: int | None, warmup: int, tokenizer_dir: Path) -> dict:
    model_yaml, override, batch, seq_len, default_steps = SHAPES[name]
    steps = steps or default_steps
    cfg = yaml.safe_load((conf_dir() / "model" / f"{model_yaml}.yaml").read_text())
    cfg.update(override, max_seq_len=seq_len)
    model_cfg = ModelConfig(**cfg)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    batches = [
        {"input_ids": torch.randint(0, model_cfg.vocab_size, (batch, seq_len), generator=gen)} for _ in range(steps)
    ]
    loader = DataLoader(batches, batch_size=None)  # both sides fetch the same way

    stage = PretrainStage(model=model_cfg, optim=OPTIM, tokenizer_path=str(tokenizer_dir))
    bare_model = build_model(model_cfg)
    bare_opt = torch.optim.AdamW(
        bare_model.parameters(),
        lr=OPTIM["lr"],
        betas=OPTIM["betas"],
        eps=OPTIM["eps"],
        weight_decay=OPTIM["weight_decay"],
    )
    bare = InterleavedBareLoop(bare_model, bare_opt, loader, warmup)
    tokens = batch * seq_len
    for r in range(rounds):  # a fresh Trainer per round: its setup is not timed, its steps are
        run_round(stage, bare, loader)
        light, plain = bare.lightning_times, bare.bare_times
        print(
            f"  {name} round {r + 1}/{rounds}: lightning {tokens / statistics.median(light):,.0f} tok/s, "
            f"bare {tokens / statistics.median(plain):,.0f} tok/s",
            flush=True,
        )
    light, plain = bare.lightning_times, bare.bare_times
    light_tps, bare_tps = tokens / statistics.median(light), tokens / statistics.median(plain)
    # Other load on the machine only ever adds time, so the fastest steps are a second,
    # noise-robust reading of each side's own speed.
    best_ratio = min(plain) / min(light)
    return {
        "shape": name,
        "params": model_cfg.num_params(),
        "batch": batch,
        "seq": seq_len,
        "lightning": light_tps,
        "bare": bare_tps,
        "ratio": light_tps / bare_tps,
        "best_ratio": best_ratio,
        "timed_steps": len(light),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="steps per round and side (default: per shape)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args()
    fewest_steps = args.steps or min(SHAPES[s][4] for s in args.shapes)
    if not 0 <= args.warmup < fewest_steps:
        parser.error("need 0 <= --warmup < --steps")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # its own level is INFO
    os.environ.setdefault("WANDB_MODE", "disabled")

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = Path(tmp) / "tok"
        # The stage loads a tokenizer (fingerprints); its vocabulary does not affect the bench.
        train_tokenizer(["benchmark text " * 50], vocab_size=300, show_progress=False).save(tokenizer_dir)
        rows = [bench_shape(s, args.rounds, args.steps, args.warmup, tokenizer_dir) for s in args.shapes]

    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} interleaved rounds, "
        f"{args.warmup} warm-up step(s) per round untimed; tok/s from the median step"
    )
    print(
        f"{'shape':<7}{'params':>13}{'batch x seq':>13}{'timed steps':>13}{'lightning tok/s':>17}"
        f"{'bare tok/s':>12}{'ratio':>8}{'ratio (fastest steps)':>23}"
    )
    for r in rows:
        print(
            f"{r['shape']:<7}{r['params']:>13,}{str(r['batch']) + ' x ' + str(r['seq']):>13}"
            f"{r['timed_steps']:>13}{r['lightning']:>17,.0f}{r['bare']:>12,.0f}{r['ratio']:>8.3f}{r['best_ratio']:>23.3f}"
        )
    print("target: ratio >= 0.97")


if __name__ == "__main__":
    main()
