"""Compiled (numba) Gopher repetition statistics over a document's word ids.

Both statistics follow the Gopher paper's definitions as datatrove computes them (the
calibration tests hold us to datatrove's filter). N-grams are compared by a polynomial hash of
their word ids (u64 arithmetic wraps; only equality is used) in a small open-addressing table,
so one document costs O(words) per n instead of the sorts the numpy version needed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BASE = np.uint64(1_000_003)
_SLOT_MIX = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _gram(word_ids, start, n):
    h = np.uint64(0)
    for k in range(n):
        h = h * _BASE + word_ids[start + k]
    return h


@njit(cache=True, inline="always")
def _table_bits(items):
    bits = 4
    while (1 << bits) < 2 * items:
        bits += 1
    return bits


@njit(cache=True, inline="always")
def _find(keys, used, h, bits):
    """Slot holding ``h``, or the empty slot where it belongs (linear probing)."""
    mask = (1 << bits) - 1
    slot = np.int64((h * _SLOT_MIX) >> np.uint64(64 - bits))
    while used[slot] and keys[slot] != h:
        slot = (slot + 1) & mask
    return slot


@njit(cache=True)
def top_ngram_chars(word_ids, lengths, ns):
    """For each n: characters of the most frequent n-gram (its words joined by one space) times
    its count. Ties go to the n-gram seen first, as ``Counter.most_common`` does."""
    out = np.zeros(len(ns), dtype=np.int64)
    words = len(word_ids)
    for row in range(len(ns)):
        n = ns[row]
        windows = words - n + 1
        if windows <= 0:
            continue
        bits = _table_bits(windows)
        keys = np.empty(1 << bits, dtype=np.uint64)
        used = np.zeros(1 << bits, dtype=np.bool_)
        counts = np.zeros(1 << bits, dtype=np.int64)
        firsts = np.zeros(1 << bits, dtype=np.int64)
        best_count, best_first = 0, 0
        for i in range(windows):
            h = _gram(word_ids, i, n)
            slot = _find(keys, used, h, bits)
            if not used[slot]:
                used[slot] = True
                keys[slot] = h
                firsts[slot] = i
            counts[slot] += 1
            c = counts[slot]
            if c > best_count or (c == best_count and firsts[slot] < best_first):
                best_count, best_first = c, firsts[slot]
        chars = n - 1  # the joining spaces
        for k in range(n):
            chars += lengths[best_first + k]
        out[row] = chars * best_count
    return out


@njit(cache=True)
def dup_ngram_chars(word_ids, lengths, ns):
    """For each n: characters (words joined without spaces) of repeated n-grams, scanning left to
    right: a repeat of an n-gram the scan has visited counts and the scan jumps n words ahead;
    otherwise the n-gram is marked visited and the scan moves one word."""
    out = np.zeros(len(ns), dtype=np.int64)
    words = len(word_ids)
    for row in range(len(ns)):
        n = ns[row]
        windows = words - n + 1
        if windows <= 0:
            continue
        bits = _table_bits(windows)
        keys = np.empty(1 << bits, dtype=np.uint64)
        used = np.zeros(1 << bits, dtype=np.bool_)
        total = 0
        i = 0
        while i < windows:
            h = _gram(word_ids, i, n)
            slot = _find(keys, used, h, bits)
            if used[slot]:
                for k in range(n):
                    total += lengths[i + k]
                i += n
            else:
                used[slot] = True
                keys[slot] = h
                i += 1
        out[row] = total
    return out
