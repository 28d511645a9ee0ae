"""Pre-training batches from token shards (written by `data_pipeline.shards`).

Batch: `{"input_ids": LongTensor[B, seq_len]}`; the pretrain stage shifts for next-token loss.

Sampling is a pure function of the global sample index g: a seeded draw picks g's domain by
the mix weights, and each domain is read as an endless stream (one pass over its shards in
an epoch-seeded order, then the next epoch). Global batch b is samples
[b*B*W, (b+1)*B*W) for batch size B and W data-parallel ranks; rank r takes its B-slice. So:
- resuming needs only the number of global batches already trained (saved in the checkpoint
  through `state_dict`): the resumed run sees exactly what an uninterrupted run would;
- W ranks with batch B see the same global batches as one process with batch B*W;
- DataLoader workers each build whole batches (b % num_workers == worker id), and PyTorch
  fetches workers round-robin, so the order does not depend on num_workers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lmforge.tokenizer import Tokenizer, check_fingerprint

log = logging.getLogger(__name__)


def _read_tar(url: str) -> wds.WebDataset:
    # We split work by global batch index ourselves, so webdataset must not also split
    # shards across workers or nodes (its defaults would hide samples from some workers).
    return wds.WebDataset(url, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None)


def load_shard_manifest(shards_dir: str | Path) -> dict:
    path = Path(shards_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no token shards at {shards_dir} (missing {path}); write them with `python -m data_pipeline.shards`"
        )
    return json.loads(path.read_text())


class DomainStream:
    """Sequential reader of one domain's sequences with random access by position.

    Position c maps to (epoch c // n, index c % n) in that epoch's shard order. Reading is
    forward-only inside a shard (tar streams), so callers request increasing positions.
    """

    def __init__(self, root: Path, shards: list[dict], dtype: str, seed: int) -> None:
        self.root, self.shards, self.dtype, self.seed = root, shards, np.dtype(dtype), seed
        self.counts = [s["sequences"] for s in shards]
        self.size = sum(self.counts)
        if self.size == 0:
            raise ValueError(f"domain shards under {root} hold no sequences")
        self._epoch = -1
        self._order: list[int] = []
        self._starts: list[int] = []
        self._shard_pos = -1  # index into _order of the open shard
        self._iter: Iterator | None = None
        self._next_index = 0  # index (within the open shard) the iterator yields next

    def _set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        self._order = [int(i) for i in rng.permutation(len(self.shards))]
        self._starts = list(np.cumsum([0] + [self.counts[i] for i in self._order])[:-1])
        self._epoch, self._shard_pos, self._iter = epoch, -1, None

    def _open(self, shard_pos: int) -> None:
        url = str(self.root / self.shards[self._order[shard_pos]]["path"])
        self._iter = iter(_read_tar(url))
        self._shard_pos, self._next_index = shard_pos, 0

    def get(self, position: int) -> np.ndarray:
        epoch, index = divmod(position, self.size)
        if epoch != self._epoch:
            self._set_epoch(epoch)
        shard_pos = int(np.searchsorted(self._starts, index, side="right") - 1)
        offset = index - self._starts[shard_pos]
        if shard_pos != self._shard_pos or offset < self._next_index:
            self._open(shard_pos)
        assert self._iter is not None
        while self._next_index < offset:  # skip forward (resume, other workers' samples)
            next(self._iter)
            self._next_index += 1
        sample = next(self._iter)
        self._next_index += 1
        return np.frombuffer(sample["tokens.bin"], dtype=self.dtype)


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
        block = 1 << 16
        out = []
        for b in range(start // block, (stop - 1) // block + 1):
            rng = np.random.default_rng([self.seed, 7, b])
            draws = rng.choice(len(self.domains), size=block, p=self.probs)
            lo, hi = max(start, b * block) - b * block, min(stop, (b + 1) * block) - b * block
            out.append(draws[lo:hi])
        return np.concatenate(out)

    def domain_positions_before(self, global_sample: int) -> np.ndarray:
        """Per-domain stream positions reached after `global_sample` samples."""
        counts = np.zeros(len(self.domains), dtype=np.int64)
        block = 1 << 20
        for start in range(0, global_sample, block):
            counts += np.bincount(self.domain_choices(start, min(global_sample, start + block)),
                                  minlength=len(self.domains))
        return counts

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        fmt = self.manifest["format"]
        streams = [
            DomainStream(self.root, self.manifest["domains"][d]["train"]["shards"], fmt["dtype"],
                         seed=self.seed * 1000 + i)
            for i, d in enumerate(self.domains)
        ]
        global_batch = self.batch_size * self.world_size
        b = self.start_batch + worker
        positions = self.domain_positions_before(b * global_batch)
        while True:
            first = b * global_batch
            choices = self.domain_choices(first, first + global_batch)
            rows = []
            for k, domain in enumerate(choices):
                mine = self.rank * self.batch_size <= k < (self.rank + 1) * self.batch_size
                if mine:
                    rows.append(streams[domain].get(int(positions[domain])))
                positions[domain] += 1
            yield {"input_ids": torch.from_numpy(np.stack(rows).astype(np.int64))}
            # Skip the batches other workers build: advance positions past them.
            skip_to = b + n_workers
            skipped = self.domain_choices((b + 1) * global_batch, skip_to * global_batch) if n_workers > 1 else []
            positions += np.bincount(np.asarray(skipped, dtype=np.int64), minlength=len(self.domains))
            b = skip_to


def read_validation(root: Path, manifest: dict, domains: list[str], max_sequences: int | None) -> torch.Tensor:
    """All held-out sequences of the given domains, in a fixed order (capped per domain)."""
    rows = []
    dtype = np.dtype(manifest["format"]["dtype"])
    for domain in domains:
        taken = 0
        for shard in manifest["domains"][domain]["val"]["shards"]:
            for sample in _read_tar(str(root / shard["path"])):
                if max_sequences is not None and taken >= max_sequences:
                    break
                rows.append(np.frombuffer(sample["tokens.bin"], dtype=dtype))
                taken += 1
    if not rows:
        raise ValueError(f"no validation sequences in {root} for domains {domains}")
    return torch.from_numpy(np.stack(rows).astype(np.int64))


class TokenShardDataModule(L.LightningDataModule):
    """Token shards mixed by domain weights; exactly resumable (see module docstring)."""

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
        """Rank 0 only: write the shards from `corpus_dir` if they are missing (the embedded
        default corpus is built first when that is what corpus_dir names)."""
        if (self.root / "manifest.json").exists() or self.corpus_dir is None:
            return
        from data_pipeline.shards import ShardConfig, write_shards
        from lmforge.data.default_corpus import ensure_default_corpus

        corpus = Path(self.corpus_dir)
        if not (corpus / "manifest.json").exists() and corpus.name == "default_corpus":
            ensure_default_corpus(corpus)
        seq_len = self.expected_seq_len or 256
        log.info("writing token shards %s from %s (seq_len %d)", self.root, corpus, seq_len)
        write_shards(ShardConfig(corpus=str(corpus), tokenizer=str(self.tokenizer_path), out=str(self.root),
                                 seq_len=seq_len, val_fraction=self.val_fraction))

    def setup(self, stage: str | None = None) -> None:
        if self.manifest is not None:
            return
        manifest = load_shard_manifest(self.root)
        tokenizer = Tokenizer.load(self.tokenizer_path)
        check_fingerprint(manifest["tokenizer_fingerprint"], tokenizer.fingerprint, f"token shards {self.root}")
        seq_len = manifest["format"]["seq_len"]
        if self.expected_seq_len is not None and seq_len != self.expected_seq_len:
            raise ValueError(
                f"shards in {self.root} hold sequences of {seq_len} tokens but the run expects "
                f"{self.expected_seq_len} (data.seq_len / model.max_seq_len); rewrite the shards with seq_len={self.expected_seq_len}"
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

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_world()
        dataset = MixedTokenStream(self.root, self.manifest, self.weights, self.batch_size, self.seed,
                                   start_batch=self.batches_consumed, rank=rank, world_size=world)
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        rows = read_validation(self.root, self.manifest, sorted(self.weights), self.val_sequences_per_domain)
        rank, world = self._rank_world()
        rows = rows[rank::world]  # DistributedSampler-like split; order fixed
        return DataLoader([{"input_ids": r} for r in rows], batch_size=self.val_batch_size, shuffle=False)

    def state_dict(self) -> dict:
        # Lightning saves this after the optimizer step counter advanced, so every global batch
        # before global_step * accumulate has been trained on (and none after it).
        trainer = getattr(self, "trainer", None)
        consumed = self.batches_consumed
        if trainer is not None:
            consumed = int(trainer.global_step * trainer.accumulate_grad_batches)
        return {"batches_consumed": consumed, "seed": self.seed, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed or (self.weights and state.get("weights") != self.weights):
            log.warning("resuming with another data seed or mix than the checkpoint's: the sample order changes")
        self.batches_consumed = int(state["batches_consumed"])
