"""Exact and MinHash-LSH near-duplicate detection as one global step.

Per shard (in the workers): a normalised-text hash and a MinHash signature per document
(5-gram word shingles, compiled in ``minhash_kernels``). Globally (one process, over every shard's signatures):
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

import functools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from data_pipeline import minhash_kernels as kernels
from lmforge.formats.files import atomic_path

_WORD = re.compile(r"\w+")


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


def normalized_words(text: str) -> list[str]:
    """NFKC, lowercase, punctuation dropped: the words that decide 'same text'."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    return " ".join(normalized_words(text))


def shingles(normalized: str, n: int) -> list[str]:
    """Word n-gram strings (reference definition; ``signatures`` hashes the same n-grams numerically)."""
    words = normalized.split()
    if len(words) < n:
        return [" ".join(words)]
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def _encoded(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every text's bytes for the kernels, in one buffer, and where each text ends.

    ASCII text goes as is (the kernel lowercases it); other text is NFKC-normalised and
    lowercased first, exactly as ``normalized_words`` does."""
    parts = [
        t.encode("ascii") if t.isascii() else unicodedata.normalize("NFKC", t).lower().encode("utf-8", "surrogatepass")
        for t in texts
    ]
    ends = np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)))
    return np.frombuffer(b"".join(parts), dtype=np.uint8), ends


def _batches(texts: Sequence[str]) -> Iterator[Sequence[str]]:
    """Consecutive slices of about ``_BATCH_CHARS`` characters, so the byte buffer stays small."""
    i = 0
    while i < len(texts):
        j, size = i, 0
        while j < len(texts) and (j == i or size < _BATCH_CHARS):
            size += len(texts[j])
            j += 1
        yield texts[i:j]
        i = j


_BATCH_CHARS = 1 << 25


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(u64 hash of every normalised word of every text, flat; per-text word offsets [N+1])."""
    buf, ends = _encoded(texts)
    return kernels.word_hashes_kernel(buf, ends, kernels.word_char_mask())


@functools.cache
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random odd multipliers and offsets of the MinHash permutations (``minhash_kernels._permute``)."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(np.uint64).max
    a = rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    return a, rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True)


def signatures(texts: Sequence[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(exact hashes uint64 [N], MinHash signatures uint32 [N, bands*rows]).

    Words, shingles and MinHash run in one compiled pass (``minhash_kernels``); equal normalised
    text gives an equal exact hash.
    """
    if not texts:
        return np.zeros(0, np.uint64), np.zeros((0, cfg.num_perm), dtype=np.uint32)
    perm_a, perm_b = _permutations(cfg.num_perm, cfg.seed)
    mask = kernels.word_char_mask()
    parts = [kernels.signatures_kernel(*_encoded(batch), mask, cfg.ngram, perm_a, perm_b) for batch in _batches(texts)]
    return np.concatenate([h for h, _ in parts]), np.concatenate([s for _, s in parts])


def save_signatures(path: Path, ids: Sequence[str], hashes: np.ndarray, sigs: np.ndarray, sizes: np.ndarray) -> None:
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
        band = np.ascontiguousarray(sigs[:, b * rows : (b + 1) * rows])
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


def find_duplicates(
    hashes: np.ndarray, sigs: np.ndarray, cfg: DedupConfig, eligible: np.ndarray | None = None
) -> DedupResult:
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
