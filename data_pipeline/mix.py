"""Domain balancing: per-domain sampling factors toward target ratios, with a repeat cap.

Copies per document are decided by a hash of (seed, doc id), not by a random stream, so
the result is the same whatever the shard order, worker count or executor.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class MixPlan:
    factors: dict[str, float]  # expected copies per document
    target_docs: dict[str, float]
    available: dict[str, int]
    target_ratios: dict[str, float] = field(default_factory=dict)  # rescaled over domains present
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "factors": self.factors,
            "target_docs": self.target_docs,
            "available": self.available,
            "target_ratios": self.target_ratios,
            "warnings": self.warnings,
        }


def plan_mix(
    available: dict[str, int], targets: dict[str, float], max_repeats: float, total_docs: int | None = None
) -> MixPlan:
    """Factor per domain = rescaled target share x total / available, capped at ``max_repeats``.

    Shares are renormalised over the targeted domains that have documents, so an absent
    domain takes no room (a one-domain crawl keeps all of it). Domains absent from ``targets``
    (or with weight 0) are dropped. When no targeted domain has a document at all, every
    document is kept once and the plan says why.
    """
    if sum(targets.values()) <= 0 or any(w < 0 for w in targets.values()):
        raise ValueError(f"mix.targets must be non-negative with a positive sum, got {targets}")
    present = {d: w for d, w in targets.items() if w > 0 and available.get(d, 0) > 0}
    warnings = [
        f"mix target {d}={w} has no documents; its share went to the domains present"
        for d, w in sorted(targets.items())
        if w > 0 and d not in present
    ]
    if not present:
        warnings.append(f"no targeted domain {sorted(targets)} has documents; kept every document once")
        factors = {d: 1.0 for d in sorted(available)}
        return MixPlan(
            factors, {d: float(n) for d, n in sorted(available.items())}, dict(sorted(available.items())), {}, warnings
        )
    weight_sum = sum(present.values())
    total = total_docs if total_docs is not None else sum(available[d] for d in present)
    factors, target_docs = {}, {}
    for domain, n in sorted(available.items()):
        share = present.get(domain, 0.0) / weight_sum
        target_docs[domain] = share * total
        factors[domain] = min(target_docs[domain] / n, max_repeats) if n else 0.0
    ratios = {d: round(w / weight_sum, 4) for d, w in sorted(present.items())}
    return MixPlan(factors, target_docs, dict(sorted(available.items())), ratios, warnings)


def copies(doc_id: str, factor: float, seed: int) -> int:
    """floor(factor) copies, plus one more with probability frac(factor)."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    whole = math.floor(factor)
    return whole + (1 if u < factor - whole else 0)


def achieved_ratios(counts: dict[str, int], domains: Iterable[str] = ()) -> dict[str, float]:
    """Share of written documents per domain; ``domains`` (e.g. the targets) appear even at 0."""
    total = sum(counts.values()) or 1
    return {d: round(counts.get(d, 0) / total, 4) for d in sorted(set(counts) | set(domains))}
