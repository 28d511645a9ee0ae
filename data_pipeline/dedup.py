"""Exact and MinHash-LSH near-duplicate detection as one global step.

Per shard (in the workers): a normalised-text hash and a MinHash signature per document
(rensa, 5-gram word shingles). Globally (one process, over every shard's signatures):
1. exact duplicates: equal normalised hashes;
2. LSH: split each signature into ``bands`` x ``rows``; documents sharing any band are
   candidate pairs (edges);
3. clusters: connected components of that graph (scipy's union-find equivalent);
4. keep one per cluster: the document first in input order (shard name, then position),
   so the choice does not depend on worker count or scheduling.
The probability that a pair with Jaccard s becomes a candidate is 1-(1-s^r)^b; with
b=14, r=8 the curve's midpoint is (1/b)^(1/r) ~ 0.72 (Leskovec et al., Mining of
Massive Datasets, ch. 3.4).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rensa import RMinHash
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from data_pipeline.io_utils import atomic_path

_NON_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1
    domains: list[str] | None = None
    # Optional second check of LSH candidates against this estimated Jaccard (null: off,
    # as in FineWeb/datatrove: band collisions alone decide).
    verify_threshold: float | None = None

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


def normalize(text: str) -> str:
    """Lowercase, NFKC, punctuation stripped, whitespace collapsed: what 'same text' means."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text)).strip()


def exact_hash(normalized: str) -> int:
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little")


def shingles(normalized: str, n: int) -> list[str]:
    words = normalized.split()
    if len(words) < n:
        return [" ".join(words)]
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def signatures(texts: Sequence[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(exact hashes uint64 [N], MinHash signatures uint32 [N, bands*rows])."""
    normalized = [normalize(t) for t in texts]
    hashes = np.array([exact_hash(t) for t in normalized], dtype=np.uint64)
    if not texts:
        return hashes, np.zeros((0, cfg.num_perm), dtype=np.uint32)
    matrix = RMinHash.digest_matrix_from_token_sets([shingles(t, cfg.ngram) for t in normalized],
                                                    cfg.num_perm, cfg.seed)
    return hashes, np.asarray(matrix.to_rows(), dtype=np.uint32)


def save_signatures(path: Path, ids: Sequence[str], hashes: np.ndarray, sigs: np.ndarray,
                    sizes: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(list(ids), dtype=str), hashes=hashes, sigs=sigs, sizes=sizes)


def load_signatures(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["ids"], data["hashes"], data["sigs"], data["sizes"]


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


@dataclass
class DedupResult:
    """Row indices (into the concatenated input) to drop, with why, and cluster stats."""

    drop: dict[int, str] = field(default_factory=dict)
    exact_groups: int = 0
    near_clusters: int = 0
    largest_cluster: int = 1


def _band_edges(sigs: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges between consecutive rows that share a band (a path per bucket is enough for components)."""
    n = len(sigs)
    src, dst = [], []
    for b in range(bands):
        band = np.ascontiguousarray(sigs[:, b * rows:(b + 1) * rows])
        keys = band.view(np.dtype((np.void, band.dtype.itemsize * rows))).ravel()
        order = np.argsort(keys, kind="stable")
        same = keys[order[1:]] == keys[order[:-1]]
        src.append(order[:-1][same])
        dst.append(order[1:][same])
    if n == 0 or not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def find_duplicates(hashes: np.ndarray, sigs: np.ndarray, cfg: DedupConfig,
                    eligible: np.ndarray | None = None) -> DedupResult:
    """Rows are in deterministic input order; the lowest row index of each group survives."""
    n = len(hashes)
    result = DedupResult()
    alive = np.ones(n, dtype=bool) if eligible is None else eligible.copy()
    if cfg.exact and n:
        idx = np.flatnonzero(alive)
        order = idx[np.argsort(hashes[idx], kind="stable")]
        same = hashes[order[1:]] == hashes[order[:-1]]
        labels = np.concatenate([[0], np.cumsum(~same)]) if len(order) else np.zeros(0, int)
        first_of_group = np.concatenate([[True], ~same]) if len(order) else np.zeros(0, bool)
        result.exact_groups = int(np.count_nonzero(np.bincount(labels) > 1)) if len(order) else 0
        for row in order[~first_of_group]:
            result.drop[int(row)] = "exact_duplicate"
            alive[row] = False
    if cfg.near and n:
        idx = np.flatnonzero(alive)
        src, dst = _band_edges(sigs[idx], cfg.bands, cfg.rows)
        if cfg.verify_threshold is not None and len(src):
            sim = (sigs[idx][src] == sigs[idx][dst]).mean(axis=1)
            keep = sim >= cfg.verify_threshold
            src, dst = src[keep], dst[keep]
        labels = _components(len(idx), src, dst)
        sizes = np.bincount(labels)
        result.near_clusters = int(np.count_nonzero(sizes > 1))
        result.largest_cluster = int(sizes.max()) if len(sizes) else 1
        # idx is ascending, so the first occurrence of each label is the lowest input row.
        _, first = np.unique(labels, return_index=True)
        keep_rows = np.zeros(len(idx), dtype=bool)
        keep_rows[first] = True
        for row in idx[~keep_rows]:
            result.drop[int(row)] = "near_duplicate"
    return result
