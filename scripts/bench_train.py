"""Training overhead of our Lightning stage against a bare PyTorch loop, in one process.

Both sides train the same model shape on the same batches with the same AdamW settings:
  - lightning: `PretrainStage` under a `lightning.Trainer` (our logging, grad-norm, throughput
    callback included: that is the cost users pay);
  - bare: forward, cross-entropy, backward, AdamW step.
Rounds alternate between the two so machine noise hits both alike; the first steps of every
round are warm-up and not timed. Prints a table of tokens/s and the ratio lightning/bare.

    python scripts/bench_train.py                       # tiny and 125m-class shapes
    python scripts/bench_train.py --shapes tiny --rounds 5 --steps 20
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
from lmforge.model import ModelConfig, build_model  # noqa: E402
from lmforge.stages.pretrain import PretrainStage  # noqa: E402
from lmforge.tokenizer import train_tokenizer  # noqa: E402

OPTIM = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1, "warmup_steps": 0,
         "min_lr_ratio": 1.0, "decay_steps": 10_000}
# Shapes: (model yaml, override, batch, seq_len). 125m runs with a short context to fit CPU minutes.
SHAPES = {
    "tiny": ("tiny", {}, 16, 256),
    "125m": ("125m", {"vocab_size": 4096}, 4, 128),
}


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t0 = warmup, [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t0)


def run_lightning(stage: PretrainStage, batches: list[dict], warmup: int) -> list[float]:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=len(batches), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[timer, ThroughputMFU(peak_flops_per_second=None)],
    )
    trainer.fit(stage, train_dataloaders=DataLoader(batches, batch_size=None))
    return timer.times


def run_bare(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict], warmup: int) -> list[float]:
    times = []
    model.train()
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        ids = batch["input_ids"]
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench_shape(name: str, rounds: int, steps: int, warmup: int, tokenizer_dir: Path) -> dict:
    model_yaml, override, batch, seq_len = SHAPES[name]
    cfg = yaml.safe_load((REPO / "conf" / "model" / f"{model_yaml}.yaml").read_text())
    cfg.update(override, max_seq_len=seq_len)
    model_cfg = ModelConfig(**cfg)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, model_cfg.vocab_size, (batch, seq_len), generator=gen)}
               for _ in range(steps)]

    stage = PretrainStage(model=model_cfg, optim=OPTIM, tokenizer_path=str(tokenizer_dir))
    bare_model = build_model(model_cfg)
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=OPTIM["lr"], betas=OPTIM["betas"],
                                 eps=OPTIM["eps"], weight_decay=OPTIM["weight_decay"])
    tokens = batch * seq_len
    light, bare = [], []
    for r in range(rounds):
        light += run_lightning(stage, batches, warmup)
        bare += run_bare(bare_model, bare_opt, batches, warmup)
        print(f"  {name} round {r + 1}/{rounds}: lightning {tokens / statistics.median(light):,.0f} tok/s, "
              f"bare {tokens / statistics.median(bare):,.0f} tok/s", flush=True)
    light_tps, bare_tps = tokens / statistics.median(light), tokens / statistics.median(bare)
    return {"shape": name, "params": model_cfg.num_params(), "batch": batch, "seq": seq_len,
            "lightning": light_tps, "bare": bare_tps, "ratio": light_tps / bare_tps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="steps per round and side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_MODE", "disabled")

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = Path(tmp) / "tok"
        # The stage loads a tokenizer (fingerprints); its vocabulary does not affect the bench.
        train_tokenizer(["benchmark text " * 50], vocab_size=300, show_progress=False).save(tokenizer_dir)
        rows = [bench_shape(s, args.rounds, args.steps, args.warmup, tokenizer_dir) for s in args.shapes]

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, median step time over "
          f"{args.rounds} interleaved rounds x {args.steps - args.warmup} timed steps")
    print(f"{'shape':<7}{'params':>14}{'batch x seq':>13}{'lightning tok/s':>17}{'bare tok/s':>12}{'ratio':>8}")
    for r in rows:
        print(f"{r['shape']:<7}{r['params']:>14,}{str(r['batch']) + ' x ' + str(r['seq']):>13}"
              f"{r['lightning']:>17,.0f}{r['bare']:>12,.0f}{r['ratio']:>8.3f}")
    print("target: ratio >= 0.97")


if __name__ == "__main__":
    main()
