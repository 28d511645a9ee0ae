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

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rensa import RMinHash
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

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


def _shingle_hashes(word_hashes: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash every in-document word n-gram from per-word u64 hashes, for all documents at once.

    A shingle hash is a polynomial in its words' hashes (wrapping u64 arithmetic). Windows
    that would straddle two documents are masked out. A document shorter than n words gets
    one shingle over all its words; an empty one a single zero token.
    """
    total = len(word_hashes)
    lengths = np.diff(offsets)
    windows = max(total - n + 1, 0)
    h = np.zeros(windows, dtype=np.uint64)
    for k in range(n):
        h = h * np.uint64(0x100000001B3) + word_hashes[k : k + windows]
    # Window i is valid when it ends inside the document where it starts.
    doc_of_start = np.repeat(np.arange(len(lengths)), lengths)[:windows]
    valid = np.arange(windows) + n <= offsets[1:][doc_of_start] if windows else np.zeros(0, bool)
    rows: list[np.ndarray] = []
    counts = np.maximum(lengths - n + 1, 0)
    starts = offsets[:-1]
    kept = h[valid]
    kept_offsets = np.concatenate([[0], np.cumsum(counts)])
    for doc in np.flatnonzero(counts == 0):  # short documents: one shingle each (rare)
        short = 0
        for w in word_hashes[starts[doc] : starts[doc] + lengths[doc]].tolist():
            short = (short * 0x100000001B3 + w) & 0xFFFFFFFFFFFFFFFF  # same wrap as the numpy path
        rows.append((int(doc), np.uint64(short)))
    if not rows:
        return kept, kept_offsets
    # Splice the short documents' single shingles in at their positions.
    counts = counts.copy()
    counts[[d for d, _ in rows]] = 1
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    out_offsets = np.concatenate([[0], np.cumsum(counts)])
    for doc in range(len(lengths)):
        a, b = kept_offsets[doc], kept_offsets[doc + 1]
        if b > a:
            out[out_offsets[doc] : out_offsets[doc + 1]] = kept[a:b]
    for doc, value in rows:
        out[out_offsets[doc]] = value
    return out, out_offsets


# \w is exactly "alphanumeric or underscore". ASCII text goes through one 256-byte table
# (lowercase, non-word bytes to spaces); other text is NFKC-normalised and lowercased, its few
# distinct non-ASCII non-word characters (curly quotes, dashes, emoji) become spaces, and the same
# table does the ASCII part. Splitting on spaces then gives ``normalized_words``' words without a
# Python object per word (2.5x faster than a per-character str.translate on the benchmark mix).
_ASCII_TABLE = bytes(
    (ord(chr(b).lower()) if chr(b).isalnum() or b == 0x5F else 0x20) if b < 0x80 else b for b in range(256)
)
_BATCH_BYTES = 1 << 23
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _normalized_bytes(text: str) -> bytes:
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE)
    text = unicodedata.normalize("NFKC", text).lower()
    for char in {c for c in set(text) if c > "\x7f" and not (c.isalnum() or c == "_")}:
        text = text.replace(char, " ")
    return text.encode("utf-8", "surrogatepass").translate(_ASCII_TABLE)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads bits so that close inputs get unrelated hashes."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _span_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """u64 hash of each byte span: its bytes read 8 at a time as integers, chained through
    ``_mix``. Most words fit one pass; only longer ones take more."""
    lengths = ends - starts
    padded = np.concatenate((buf, np.zeros(8, np.uint8)))
    lanes = np.arange(8)
    h = lengths.astype(np.uint64) * _GOLDEN
    active = np.arange(len(starts))
    k = 0
    while active.size:
        left = lengths[active] - 8 * k
        chunk = padded[(starts[active] + 8 * k)[:, None] + lanes[None, :]]
        chunk[lanes[None, :] >= left[:, None]] = 0
        with np.errstate(over="ignore"):
            h[active] = _mix(h[active] + np.ascontiguousarray(chunk).view(np.uint64)[:, 0])
        active = active[left > 8]
        k += 1
    return h


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(u64 hash of every normalised word of every text, flat; per-text word offsets [N+1]).

    One byte buffer per batch; word boundaries and hashes in numpy.
    """
    hashes: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    i = 0
    while i < len(texts):
        chunk: list[bytes] = []
        size = 0
        while i < len(texts) and (not chunk or size < _BATCH_BYTES):
            chunk.append(_normalized_bytes(texts[i]))
            size += len(chunk[-1]) + 1
            i += 1
        buf = np.frombuffer(b" ".join(chunk) + b" ", dtype=np.uint8)
        edges = np.diff((buf != 32).view(np.int8), prepend=np.int8(0))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        hashes.append(_span_hashes(buf, starts, ends))
        doc_starts = np.cumsum([0] + [len(b) + 1 for b in chunk])
        counts.append(np.diff(np.searchsorted(starts, doc_starts)))
    flat = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]) if counts else np.zeros(1)
    return flat, offsets.astype(np.int64)


def _doc_hashes(flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Order-sensitive u64 hash of each document's word sequence: a sum of mixed
    (word hash, position) pairs, so equal normalised text gives equal hashes."""
    lengths = np.diff(offsets)
    position = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)
    with np.errstate(over="ignore"):
        terms = _mix(flat ^ (position.astype(np.uint64) * _GOLDEN))
        sums = np.add.reduceat(terms, np.minimum(offsets[:-1], max(len(terms) - 1, 0))) if len(terms) else terms
        sums = np.where(lengths > 0, sums[: len(lengths)] if len(terms) else 0, 0).astype(np.uint64)
        return _mix(sums + lengths.astype(np.uint64))


def signatures(texts: Sequence[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(exact hashes uint64 [N], MinHash signatures uint32 [N, bands*rows]).

    Words are hashed in numpy over one byte buffer, n-grams combined in numpy, and MinHash
    computed in Rust (rensa) over one flat buffer: no Python object per word or shingle.
    The exact hash is a polynomial over the document's word hashes (equal normalised text,
    equal hash).
    """
    if not texts:
        return np.zeros(0, np.uint64), np.zeros((0, cfg.num_perm), dtype=np.uint32)
    flat, offsets = word_hashes(texts)
    hashes = _doc_hashes(flat, offsets)
    shingle_hashes, shingle_offsets = _shingle_hashes(flat, offsets, cfg.ngram)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(
        shingle_hashes, shingle_offsets.astype(np.uint64), cfg.num_perm, cfg.seed
    )
    rows = matrix.to_rows()
    return hashes, np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.uint32, count=len(rows) * cfg.num_perm
    ).reshape(len(rows), cfg.num_perm)


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
