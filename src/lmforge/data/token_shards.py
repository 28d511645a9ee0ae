"""Pre-training batches from token shards (written by `lmforge.data.shard_writer`; format: `lmforge.formats.shards`).

Batch: `{"input_ids": LongTensor[B, seq_len], "labels": LongTensor[B, seq_len]}`, B the per-device
batch size, labels shifted as everywhere in lmforge (`lmforge.losses`): labels[t] = input_ids[t+1],
IGNORE_INDEX at the final position.

Sampling is a pure function of the global sample index g, so no iterator state needs saving:
- g's domain is a seeded draw with the mix weights;
- each domain is an endless stream of its training sequences: epoch e visits the shards in an
  (seed, e)-shuffled order and each shard's sequences in an (seed, e, shard)-shuffled order;
  a domain's k-th draw reads position k of its stream.
Global batch b is samples [b*B*W, (b+1)*B*W) for W data-parallel ranks; rank r takes the r-th
B-slice. Hence:
- resuming needs only the number of global batches trained (`state_dict`, which Lightning stores
  in every checkpoint): the resumed run sees exactly the samples of an uninterrupted run;
- W ranks with batch B see the same global batches as one process with batch B*W;
- with num_workers > 0 each worker builds whole batches (b mod num_workers), and PyTorch
  collects workers round-robin, so the order does not depend on num_workers.
Each rank reads every shard it needs (and keeps one shard per domain in memory): simple and
exact; the I/O is small next to the model's compute at the sizes this repo trains.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lmforge.data.default_corpus import ensure_default_corpus
from lmforge.data.labels import next_token_labels
from lmforge.data.shard_writer import ShardConfig, write_shards
from lmforge.formats.shards import MANIFEST as SHARDS_MANIFEST
from lmforge.formats.shards import read_manifest as read_shard_manifest
from lmforge.formats.shards import read_shard
from lmforge.tokenizer import Tokenizer, check_fingerprint

log = logging.getLogger(__name__)

# Independent random streams derived from the one data seed.
_MIX_STREAM, _ORDER_STREAM = 0, 1
_MIX_BLOCK = 1 << 16  # domain draws are made in seeded blocks, so any range is cheap to recompute


def _name_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


class DomainStream:
    """One domain's training sequences as an endless, epoch-shuffled stream addressable by
    position: position p is (epoch p // n, index p % n), computed rather than replayed."""

    def __init__(self, root: Path, shards: list[dict], dtype: str, seed: int, domain: str) -> None:
        self.root, self.shards, self.dtype = root, shards, np.dtype(dtype)
        self.seed = [seed, _ORDER_STREAM, _name_seed(domain)]
        self.counts = [int(s["sequences"]) for s in shards]
        self.size = sum(self.counts)
        if self.size == 0:
            raise ValueError(f"domain {domain!r} in {root} has no training sequences")
        self._layout_epoch = -1
        self._order: list[int] = []
        self._starts = np.zeros(0, dtype=np.int64)
        self._loaded: tuple[int, int] | None = None  # (epoch, shard) whose rows are in memory
        self._rows = np.zeros((0, 0))
        self._row_order = np.zeros(0, dtype=np.int64)

    def _set_epoch(self, epoch: int) -> None:
        order = np.random.default_rng([*self.seed, epoch]).permutation(len(self.shards))
        self._order = [int(i) for i in order]
        self._starts = np.cumsum([0] + [self.counts[i] for i in self._order])[:-1]
        self._layout_epoch = epoch

    def _load(self, epoch: int, shard: int) -> None:
        if self._loaded is None or self._loaded[1] != shard:
            self._rows = read_shard(self.root / self.shards[shard]["path"], self.dtype, self.counts[shard])
        self._row_order = np.random.default_rng([*self.seed, epoch, shard]).permutation(self.counts[shard])
        self._loaded = (epoch, shard)

    def get(self, position: int) -> np.ndarray:
        epoch, index = divmod(position, self.size)
        if epoch != self._layout_epoch:
            self._set_epoch(epoch)
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        shard = self._order[k]
        if self._loaded != (epoch, shard):
            self._load(epoch, shard)
        return self._rows[self._row_order[index - self._starts[k]]]


class MixedTokenStream(IterableDataset):
    """Endless batches of one rank's slice of the global batch stream, from `start_batch` on."""

    def __init__(
        self,
        root: Path,
        manifest: dict,
        weights: dict[str, float],
        batch_size: int,
        seed: int,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.root, self.manifest, self.batch_size, self.seed = root, manifest, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size
        self.domains = sorted(weights)
        total = float(sum(weights.values()))
        self.probs = np.array([weights[d] / total for d in self.domains])

    def domain_choices(self, start: int, stop: int) -> np.ndarray:
        """Domain index of global samples [start, stop): blocks of a seeded generator, so any
        range is reproducible without drawing everything before it."""
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        out = []
        for block in range(start // _MIX_BLOCK, (stop - 1) // _MIX_BLOCK + 1):
            rng = np.random.default_rng([self.seed, _MIX_STREAM, block])
            draws = rng.choice(len(self.domains), size=_MIX_BLOCK, p=self.probs)
            base = block * _MIX_BLOCK
            out.append(draws[max(start, base) - base : min(stop, base + _MIX_BLOCK) - base])
        return np.concatenate(out)

    def domain_positions_before(self, global_sample: int) -> np.ndarray:
        """How many samples each domain has served before global sample `global_sample`."""
        counts = np.zeros(len(self.domains), dtype=np.int64)
        for start in range(0, global_sample, 16 * _MIX_BLOCK):
            stop = min(global_sample, start + 16 * _MIX_BLOCK)
            counts += np.bincount(self.domain_choices(start, stop), minlength=len(self.domains))
        return counts

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        fmt = self.manifest["format"]
        streams = [
            DomainStream(self.root, self.manifest["domains"][d]["train"]["shards"], fmt["dtype"], self.seed, d)
            for d in self.domains
        ]
        global_batch = self.batch_size * self.world_size
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        b = self.start_batch + worker
        positions = self.domain_positions_before(b * global_batch)
        while True:
            # This batch and the ones the other workers build: drawn once, the first global batch is ours.
            upcoming = self.domain_choices(b * global_batch, (b + n_workers) * global_batch)
            choices = upcoming[:global_batch]
            # Position of each sample within its domain's stream.
            offsets = np.zeros(len(choices), dtype=np.int64)
            for d in range(len(self.domains)):
                hit = choices == d
                offsets[hit] = positions[d] + np.arange(int(hit.sum()))
            rows = [streams[d].get(int(p)) for d, p in zip(choices[mine], offsets[mine])]
            input_ids = torch.from_numpy(np.stack(rows).astype(np.int64))
            yield {"input_ids": input_ids, "labels": next_token_labels(input_ids)}
            # Advance past this batch and the ones the other workers build.
            positions += np.bincount(upcoming, minlength=len(self.domains))
            b += n_workers


class _PositionedLoader(DataLoader):
    """A DataLoader that asks where training stands each time iteration (re)starts: after a
    resume, or when Lightning starts a new epoch under `limit_train_batches`, the stream goes on
    from the batches already trained instead of replaying from the loader's creation point."""

    position: Callable[[], int] | None = None

    def __iter__(self):
        if self.position is not None:
            self.dataset.start_batch = self.position()
        return super().__iter__()


def read_validation(root: Path, manifest: dict, domains: list[str], max_sequences: int | None) -> torch.Tensor:
    """Held-out sequences of the given domains in a fixed order (the first `max_sequences` of each)."""
    rows = []
    dtype = np.dtype(manifest["format"]["dtype"])
    for domain in domains:
        taken = 0
        for shard in manifest["domains"][domain]["val"]["shards"]:
            if max_sequences is not None and taken >= max_sequences:
                break
            shard_rows = read_shard(root / shard["path"], dtype, shard["sequences"])
            keep = shard_rows if max_sequences is None else shard_rows[: max_sequences - taken]
            rows.extend(keep)
            taken += len(keep)
    if not rows:
        raise ValueError(f"no validation sequences in {root} for domains {domains}")
    return torch.from_numpy(np.stack(rows).astype(np.int64))


class TokenShardDataModule(L.LightningDataModule):
    """Token shards mixed by domain weights; exactly resumable (see the module docstring)."""

    def __init__(
        self,
        shards_dir: str,
        tokenizer_path: str,
        weights: dict[str, float] | None = None,
        batch_size: int = 16,
        seq_len: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        val_sequences_per_domain: int | None = 64,
        val_batch_size: int | None = None,
        corpus_dir: str | None = None,
        val_fraction: float = 0.05,
    ) -> None:
        super().__init__()
        self.root = Path(shards_dir)
        self.corpus_dir = corpus_dir
        self.val_fraction = val_fraction
        self.tokenizer_path = tokenizer_path
        self.weights = dict(weights) if weights else None
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.expected_seq_len = seq_len
        self.val_sequences_per_domain = val_sequences_per_domain
        self.val_batch_size = val_batch_size or batch_size
        self.batches_consumed = 0  # restored from a checkpoint; see state_dict
        self.manifest: dict | None = None

    def prepare_data(self) -> None:
        """Local rank 0 only: write the shards from `corpus_dir` if they are missing (a missing
        corpus dir named `default_corpus` is first built from the interpreter's own text)."""
        if (self.root / SHARDS_MANIFEST).exists() or self.corpus_dir is None:
            return

        corpus = Path(self.corpus_dir)
        if not corpus.exists() and corpus.name == "default_corpus":
            ensure_default_corpus(corpus)
        seq_len = self.expected_seq_len or 256
        log.info("writing token shards %s from %s (seq_len %d)", self.root, corpus, seq_len)
        write_shards(
            ShardConfig(
                corpus=str(corpus),
                tokenizer=str(self.tokenizer_path),
                out=str(self.root),
                seq_len=seq_len,
                val_fraction=self.val_fraction,
            )
        )

    def setup(self, stage: str | None = None) -> None:
        if self.manifest is not None:
            return
        manifest = read_shard_manifest(self.root)
        tokenizer = Tokenizer.load(self.tokenizer_path)
        check_fingerprint(manifest["tokenizer_fingerprint"], tokenizer.fingerprint, f"token shards {self.root}")
        seq_len = manifest["format"]["seq_len"]
        if self.expected_seq_len is not None and seq_len != self.expected_seq_len:
            raise ValueError(
                f"shards in {self.root} hold sequences of {seq_len} tokens but the run expects "
                f"{self.expected_seq_len} (model.max_seq_len); rewrite them with seq_len={self.expected_seq_len}"
            )
        available = sorted(manifest["domains"])
        weights = self.weights or {d: 1.0 for d in available}
        unknown = sorted(set(weights) - set(available))
        if unknown:
            raise ValueError(f"data.weights names domains {unknown} that {self.root} lacks (has {available})")
        self.weights = {d: float(w) for d, w in weights.items() if float(w) > 0}
        if not self.weights:
            raise ValueError("data.weights gives every domain weight 0")
        self.manifest = manifest

    def _trainer(self) -> L.Trainer | None:
        return getattr(self, "trainer", None)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self._trainer()
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def batches_trained(self) -> int:
        """Global batches trained so far: every batch before global_step * accumulate was
        stepped on and none after it (Lightning saves checkpoints after the optimizer step)."""
        trainer = self._trainer()
        if trainer is None:
            return self.batches_consumed
        return int(trainer.global_step * trainer.accumulate_grad_batches)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_world()
        dataset = MixedTokenStream(
            self.root,
            self.manifest,
            self.weights,
            self.batch_size,
            self.seed,
            start_batch=self.batches_consumed,
            rank=rank,
            world_size=world,
        )
        loader = _PositionedLoader(dataset, batch_size=None, num_workers=self.num_workers)
        loader.position = self.batches_trained
        return loader

    def val_dataloader(self) -> DataLoader:
        self.setup()
        rows = read_validation(self.root, self.manifest, sorted(self.weights), self.val_sequences_per_domain)
        rank, world = self._rank_world()
        # Equal row counts on every rank, or the ranks' collectives in validation would hang.
        rows = rows[: len(rows) // world * world][rank::world]
        return DataLoader(
            [{"input_ids": r, "labels": next_token_labels(r)} for r in rows],
            batch_size=self.val_batch_size,
            shuffle=False,
        )

    def state_dict(self) -> dict:
        return {
            "batches_consumed": self.batches_trained(),
            "seed": self.seed,
            "weights": self.weights,
            "shards_job_key": (self.manifest or {}).get("job_key"),
        }

    def load_state_dict(self, state: dict) -> None:
        current = {"seed": self.seed, "weights": self.weights, "shards_job_key": (self.manifest or {}).get("job_key")}
        changed = [
            name
            for name, now in current.items()
            if now is not None and state.get(name) is not None and state[name] != now
        ]
        if changed:
            log.warning(
                "resuming with other data settings (%s) than the checkpoint's: the sample order changes",
                ", ".join(changed),
            )
        self.batches_consumed = int(state["batches_consumed"])
