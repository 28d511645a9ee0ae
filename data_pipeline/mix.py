"""Domain balancing: per-domain sampling factors toward target ratios, with a repeat cap.

Copies per document are decided by a hash of (seed, doc id), not by a random stream, so
the result is the same whatever the shard order, worker count or executor.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


@dataclass
class MixPlan:
    factors: dict[str, float]  # expected copies per document
    target_docs: dict[str, float]
    available: dict[str, int]

    def to_dict(self) -> dict:
        return {"factors": self.factors, "target_docs": self.target_docs, "available": self.available}


def plan_mix(
    available: dict[str, int], targets: dict[str, float], max_repeats: float, total_docs: int | None = None
) -> MixPlan:
    """Factor per domain = target share x total / available, capped at ``max_repeats``.

    Domains absent from ``targets`` are dropped (factor 0); a target domain with no
    documents cannot be filled and is reported as such by the achieved ratios.
    """
    weight_sum = sum(targets.values())
    if weight_sum <= 0:
        raise ValueError(f"mix.targets must have a positive sum, got {targets}")
    total = total_docs if total_docs is not None else sum(n for d, n in available.items() if d in targets)
    factors, target_docs = {}, {}
    for domain, n in sorted(available.items()):
        share = targets.get(domain, 0.0) / weight_sum
        target_docs[domain] = share * total
        factors[domain] = min(target_docs[domain] / n, max_repeats) if n else 0.0
    return MixPlan(factors=factors, target_docs=target_docs, available=dict(sorted(available.items())))


def copies(doc_id: str, factor: float, seed: int) -> int:
    """floor(factor) copies, plus one more with probability frac(factor)."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    whole = math.floor(factor)
    return whole + (1 if u < factor - whole else 0)


def achieved_ratios(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {d: round(n / total, 4) for d, n in sorted(counts.items())}
