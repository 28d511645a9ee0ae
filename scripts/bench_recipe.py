"""Optimiser x schedule at a fixed token budget on the embedded corpus (issue #18's recipe table).

Every recipe trains the same `model=tiny` shape from the same seed on the same token batches in the
same order, for the same number of steps; only `optim` and `schedule` differ. Prints the held-out loss
(mean over seeds, with the spread) and the wall time per recipe. Run it alone: the losses do not
depend on load, the times do.

    python scripts/bench_recipe.py                      # 3 recipes x 2 seeds, one epoch of 16 x 128-token rows
    python scripts/bench_recipe.py --steps 20 --seeds 0 # a smoke run
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
import yaml
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lmforge.config_paths import conf_dir  # noqa: E402
from lmforge.data.default_corpus import code_documents, prose_documents  # noqa: E402
from lmforge.model import ModelConfig  # noqa: E402
from lmforge.stages.pretrain import PretrainStage  # noqa: E402
from lmforge.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

# (label, optim group, schedule group); the lr is each optimiser's conf/optim default.
RECIPES = [("adamw+cosine", "adamw", "cosine"), ("adamw+wsd", "adamw", "wsd"), ("muon+wsd", "muon", "wsd")]


def token_rows(tokenizer: Tokenizer, seq_len: int) -> torch.Tensor:
    """The embedded corpus, tokenized, concatenated and cut into rows of seq_len tokens, in a fixed
    shuffled order (prose and code interleave)."""
    ids: list[int] = []
    for doc in prose_documents() + code_documents():
        ids += tokenizer.encode(doc.text, add_bos=True, add_eos=True)
    rows = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]


def optim_for(optim_group: str, schedule: str, steps: int) -> dict:
    optim = yaml.safe_load((conf_dir() / "optim" / f"{optim_group}.yaml").read_text())
    optim.update(yaml.safe_load((conf_dir() / "schedule" / f"{schedule}.yaml").read_text()))
    # The group's lr interpolates conf/lr_defaults.yaml by model and stage; this is its tiny/pretrain entry.
    optim["lr"] = yaml.safe_load((conf_dir() / "lr_defaults.yaml").read_text())["lr_defaults"]["tiny"]["pretrain"]
    optim.update(decay_steps=steps, warmup_steps=max(1, steps // 20))
    return optim


def held_out_loss(stage: PretrainStage, rows: torch.Tensor, batch: int) -> float:
    stage.eval()
    with torch.no_grad():
        losses = [
            stage.compute_loss({"input_ids": rows[i : i + batch]}, "val")[0].item() for i in range(0, len(rows), batch)
        ]
    return statistics.fmean(losses)


def run(recipe: tuple, seed: int, train: torch.Tensor, val: torch.Tensor, args, tokenizer_dir: Path) -> dict:
    label, optim_group, schedule = recipe
    model = ModelConfig(**yaml.safe_load((conf_dir() / "model" / "tiny.yaml").read_text()))
    L.seed_everything(seed, verbose=False)
    stage = PretrainStage(
        model=model, optim=optim_for(optim_group, schedule, args.steps), tokenizer_path=str(tokenizer_dir)
    )
    rows = [{"input_ids": r} for r in train[: args.steps * args.batch]]  # exactly the token budget
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(stage, train_dataloaders=DataLoader(rows, batch_size=args.batch))
    seconds = time.perf_counter() - start
    return {"recipe": label, "seed": seed, "loss": held_out_loss(stage, val, args.batch), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="default: one epoch of the embedded corpus")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--val-rows", type=int, default=128)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = Path(tmp) / "tok"
        texts = [d.text for d in prose_documents() + code_documents()]
        tokenizer = train_tokenizer(texts, vocab_size=4096, show_progress=False)
        tokenizer.save(tokenizer_dir)
        rows = token_rows(tokenizer, args.seq)
        val, train = rows[: args.val_rows], rows[args.val_rows :]
        # One pass over the corpus by default: its size changes as the embedded text does.
        args.steps = args.steps or len(train) // args.batch
        if len(train) < args.steps * args.batch:
            parser.error(f"the corpus has {len(train)} training rows; {args.steps} x {args.batch} needs more")
        # Interleave recipes within each seed so slow-downs from other load hit all alike.
        results = [run(r, s, train, val, args, tokenizer_dir) for s in args.seeds for r in RECIPES]
    tokens = args.steps * args.batch * args.seq
    print(
        f"\nmodel=tiny, {args.steps} steps x {args.batch} x {args.seq} = {tokens:,} tokens, seeds {args.seeds}, "
        f"held-out {args.val_rows} rows; torch {torch.__version__}"
    )
    print(f"{'recipe':<14}{'held-out loss':>15}{'spread':>9}{'seconds':>10}")
    for label, _, _ in RECIPES:
        mine = [r for r in results if r["recipe"] == label]
        losses = [r["loss"] for r in mine]
        spread = (max(losses) - min(losses)) / 2 if len(losses) > 1 else 0.0
        print(
            f"{label:<14}{statistics.fmean(losses):>15.4f}{spread:>9.4f}{statistics.fmean(r['seconds'] for r in mine):>10.1f}"
        )


if __name__ == "__main__":
    main()
