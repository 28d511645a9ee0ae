"""Compiled (numba) inner loops of the dedup step: words, shingles and MinHash in one pass.

The input is every document's normalised UTF-8 bytes in one buffer (NFKC and lowercase are
applied in Python, where they are exact; ASCII bytes are lowercased here). A word is a maximal
run of code points that Python's ``re`` counts as ``\\w``, so the words are exactly those of
``dedup.normalized_words``. No Python object is made per word or per shingle, which is what made
the numpy + rensa version spend most of its time copying and tokenising.

The loops are serial on purpose: the pipeline's parallelism is its worker processes, and a
threaded kernel inside each worker would oversubscribe the cores (and OpenMP is not fork-safe).
"""

from __future__ import annotations

import functools
import re

import numpy as np
from numba import njit

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHINGLE_BASE = np.uint64(0x100000001B3)


@functools.cache
def word_char_mask() -> np.ndarray:
    """bool[0x110000]: which code points ``re``'s ``\\w`` matches (built from re itself, ~0.15 s once)."""
    every = "".join(map(chr, range(0x110000)))
    word = "".join(re.findall(r"\w", every)).encode("utf-32-le", "surrogatepass")
    mask = np.zeros(0x110000, dtype=np.bool_)
    mask[np.frombuffer(word, dtype=np.uint32)] = True
    return mask


@njit(cache=True, inline="always")
def _mix(h):
    """splitmix64 finaliser: spreads bits so that close inputs get unrelated hashes."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, inline="always")
def _permute(s, a, b):
    """Permutation p of a shingle hash. ``a*s + b`` (mod 2^64, a odd) alone is only 2-universal:
    on the LSH candidate pairs of the 1-GB test crawl its estimates ran 0.012 above the true
    Jaccard and it linked more pages. One xorshift-multiply round on top brought that to 0.000."""
    v = a * s + b
    v = (v ^ (v >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    return v ^ (v >> np.uint64(32))


@njit(cache=True)
def _doc_words(buf, start, end, mask, out):
    """Write the u64 hash of each word in buf[start:end] to out[0:]; return the word count."""
    count = 0
    h = _FNV_OFFSET
    in_word = False
    i = start
    while i < end:
        b = buf[i]
        if b < 0x80:
            cp = np.int64(b)
            width = 1
            if 65 <= b <= 90:  # ASCII uppercase (non-ASCII text arrives lowercased)
                b += 32
        elif b < 0xE0:
            cp = (np.int64(b & 0x1F) << 6) | np.int64(buf[i + 1] & 0x3F)
            width = 2
        elif b < 0xF0:
            cp = (np.int64(b & 0x0F) << 12) | (np.int64(buf[i + 1] & 0x3F) << 6) | np.int64(buf[i + 2] & 0x3F)
            width = 3
        else:
            cp = (
                (np.int64(b & 0x07) << 18)
                | (np.int64(buf[i + 1] & 0x3F) << 12)
                | (np.int64(buf[i + 2] & 0x3F) << 6)
                | np.int64(buf[i + 3] & 0x3F)
            )
            width = 4
        if mask[cp]:
            h = (h ^ np.uint64(b)) * _FNV_PRIME
            for k in range(1, width):
                h = (h ^ np.uint64(buf[i + k])) * _FNV_PRIME
            in_word = True
        elif in_word:
            out[count] = _mix(h)
            count += 1
            h = _FNV_OFFSET
            in_word = False
        i += width
    if in_word:
        out[count] = _mix(h)
        count += 1
    return count


@njit(cache=True)
def word_hashes_kernel(buf, ends, mask):
    """(flat word hashes, per-document offsets [N+1]) for documents ending at ``ends``."""
    flat = np.empty(len(buf), dtype=np.uint64)  # a word takes at least one byte
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    start = 0
    for d in range(len(ends)):
        n = _doc_words(buf, start, ends[d], mask, flat[offsets[d] :])
        offsets[d + 1] = offsets[d] + n
        start = ends[d]
    return flat[: offsets[-1]].copy(), offsets


@njit(cache=True)
def signatures_kernel(buf, ends, mask, ngram, perm_a, perm_b):
    """(exact hash u64 [N], MinHash signature u32 [N, P]) per document.

    exact: order-sensitive sum of mixed (word hash, position) pairs, mixed with the word count.
    shingles: polynomial over n consecutive word hashes (a shorter document is one shingle of
    all its words, an empty one the single token 0), mixed.
    MinHash: for permutation p the minimum of ``_permute(s, a_p, b_p)`` over the document's
    shingles s; the top 32 bits of that minimum are kept.
    """
    n_docs = len(ends)
    n_perm = len(perm_a)
    exact = np.empty(n_docs, dtype=np.uint64)
    sigs = np.empty((n_docs, n_perm), dtype=np.uint32)
    longest = 0
    start = 0
    for d in range(n_docs):
        longest = max(longest, ends[d] - start)
        start = ends[d]
    words = np.empty(longest + 1, dtype=np.uint64)
    acc = np.empty(n_perm, dtype=np.uint64)
    start = 0
    for d in range(n_docs):
        n = _doc_words(buf, start, ends[d], mask, words)
        start = ends[d]
        total = np.uint64(0)
        for k in range(n):
            total += _mix(words[k] ^ (np.uint64(k) * _GOLDEN))
        exact[d] = _mix(total + np.uint64(n))
        acc[:] = np.uint64(0xFFFFFFFFFFFFFFFF)
        windows = max(n - ngram + 1, 1)
        width = min(ngram, n)
        for w in range(windows):
            s = np.uint64(0)
            for k in range(width):
                s = s * _SHINGLE_BASE + words[w + k]
            s = _mix(s)
            for p in range(n_perm):
                v = _permute(s, perm_a[p], perm_b[p])
                if v < acc[p]:
                    acc[p] = v
        for p in range(n_perm):
            sigs[d, p] = np.uint32(acc[p] >> np.uint64(32))
    return exact, sigs
