"""Recall and speed of PII detection on one planted set: lmforge's regexes vs Presidio's pattern recognizers.

The set is paragraphs of the licence texts in /usr/share/common-licenses with planted e-mails
(plain and obfuscated), URL credentials, phones, payment cards, IPs and SSNs. Each backend runs
in the environment that has it (Presidio is not a project dependency):

    .venv/bin/python scripts/bench_pii.py --backend lmforge
    <venv with presidio-analyzer>/bin/python scripts/bench_pii.py --backend presidio

Presidio runs its predefined pattern recognizers without an NLP model (no model download): the
recognizers for e-mail, URL, phone, credit card, IP and US SSN.
A planted item counts as found when the backend redacts (lmforge) or reports a span covering
(Presidio) its secret part; for URL credentials Presidio's hit is its URL entity, which flags the
whole URL rather than the user:password part.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

FIRST = ["anna", "jonas", "marie", "li.wei", "o_brien", "sam+news"]
HOSTS = ["example.com", "beispiel.de", "exemple.fr", "mail.example.org"]


def planted(rng: random.Random) -> dict[str, tuple[str, str]]:
    """kind -> (text as written, the secret part that must disappear)."""
    user, host = rng.choice(FIRST), rng.choice(HOSTS)
    name, tld = host.rsplit(".", 1)
    card = "4111 1111 1111 1111"
    return {
        "email": (f"{user}@{host}", user),
        "email_at_dot": (f"{user} (at) {name} (dot) {tld}", user),
        "email_brackets": (f"{user} [at] {name} [dot] {tld}", user),
        "email_caps": (f"{user} AT {name} DOT {tld}", user),
        "email_spaced_at": (f"{user} @ {host}", user),
        "url_credentials": (f"https://{user}:pw{rng.randint(100, 999)}x@git.{host}/repo.git", "pw"),
        "phone": (f"+1 415-555-{rng.randint(1000, 9999)}", "555"),
        "card": (card, "4111"),
        "ip": (f"203.0.113.{rng.randint(1, 254)}", "203.0.113"),
        "ssn": (f"123-45-{rng.randint(1000, 9999)}", "123-45"),
    }


def build_set(n_docs: int, seed: int = 0) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """Documents and, per document, (kind, start, end) of the secret part of each planted item."""
    paragraphs = [
        p.strip()
        for f in sorted(Path("/usr/share/common-licenses").iterdir())
        if f.is_file()
        for p in f.read_text("utf-8", "replace").split("\n\n")
        if len(p.strip()) > 200
    ]
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        text, spans = "", []
        for kind, (written, secret) in rng.sample(sorted(planted(rng).items()), 3):
            text += rng.choice(paragraphs) + f"\n\nContact: {written}. "
            start = len(text) - len(written) - 2 + written.index(secret)
            spans.append((kind, start, start + len(secret)))
        docs.append((text + rng.choice(paragraphs), spans))
    return docs


def run_lmforge(docs):
    from data_pipeline.content import PiiConfig, PiiFilter

    pii = PiiFilter(PiiConfig())
    pii.find(docs[0][0])  # warm-up, as for Presidio
    started = time.perf_counter()
    outputs = [pii.find(text)[0] for text, _ in docs]
    seconds = time.perf_counter() - started
    found = [[text[s:e] not in out for _, s, e in spans] for (text, spans), out in zip(docs, outputs)]
    return found, seconds


def run_presidio(docs):
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    recognizers = [
        EmailRecognizer(),
        UrlRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(),
    ]
    for rec in recognizers:  # warm-up: tldextract's first call tries to fetch the public suffix list
        rec.analyze(docs[0][0], rec.supported_entities, None)
    started = time.perf_counter()
    results = [
        [r for rec in recognizers for r in rec.analyze(text, rec.supported_entities, None) or []] for text, _ in docs
    ]
    seconds = time.perf_counter() - started
    found = [
        [any(r.start <= s and r.end >= e for r in res) for _, s, e in spans] for (_, spans), res in zip(docs, results)
    ]
    return found, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["lmforge", "presidio"], default="lmforge")
    parser.add_argument("--docs", type=int, default=500)
    args = parser.parse_args()
    docs = build_set(args.docs)
    found, seconds = (run_lmforge if args.backend == "lmforge" else run_presidio)(docs)
    per_kind: dict[str, list[bool]] = {}
    for (_, spans), hits in zip(docs, found):
        for (kind, _, _), hit in zip(spans, hits):
            per_kind.setdefault(kind, []).append(hit)
    mb = sum(len(t) for t, _ in docs) / 1e6
    print(f"{args.backend}: {len(docs)} docs, {mb:.2f} MB, {len(docs) / seconds:.0f} docs/s, {mb / seconds:.1f} MB/s")
    for kind, hits in sorted(per_kind.items()):
        print(f"  {kind:<16} recall {sum(hits) / len(hits):.2f} ({sum(hits)}/{len(hits)})")


if __name__ == "__main__":
    main()
