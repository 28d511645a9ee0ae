"""Shared builders for the data_pipeline tests: generated English prose and JSONL shards."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

ADJECTIVES = [
    "quiet",
    "ancient",
    "narrow",
    "bright",
    "careful",
    "distant",
    "famous",
    "heavy",
    "modern",
    "local",
    "rural",
    "coastal",
    "northern",
    "gentle",
    "rapid",
    "common",
    "rare",
    "public",
    "private",
    "early",
]
NOUNS = [
    "river",
    "harbour",
    "village",
    "library",
    "bridge",
    "market",
    "railway",
    "garden",
    "museum",
    "council",
    "festival",
    "valley",
    "forest",
    "factory",
    "school",
    "castle",
    "island",
    "mountain",
    "theatre",
    "canal",
]
VERBS = [
    "described",
    "rebuilt",
    "visited",
    "studied",
    "mapped",
    "restored",
    "expanded",
    "funded",
    "recorded",
    "managed",
    "painted",
    "measured",
    "surveyed",
    "protected",
    "opened",
    "closed",
    "moved",
    "named",
]
SUBJECTS = ["The {a} {n}", "A {a} {n}", "Our {n}", "Every {n}", "That old {n}", "Each {a} {n}", "Their {n}"]
PREDICATES = [
    "was {v} by",
    "had been {v} near",
    "is still {v} beside",
    "got {v} after",
    "was partly {v} with",
    "will be {v} for",
    "has often been {v} like",
]
OBJECTS = ["the {a} {n}", "a {n}", "several {a} {n}s", "two {n}s", "its {n}", "some {a} {n}s"]
TAILS = [
    "in {y}.",
    "before {y}.",
    "around {y}.",
    "during the {a} years.",
    "for many decades.",
    "last spring.",
    "according to {y} records.",
    "and nobody objected.",
]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        a=rng.choice(ADJECTIVES), n=rng.choice(NOUNS), v=rng.choice(VERBS), y=rng.randint(1700, 2020)
    )


def prose_doc(rng: random.Random, n_sentences: int = 12) -> str:
    """Generated English prose that passes the Gopher/C4/FineWeb heuristics."""
    sentences = [
        " ".join(_fill(rng.choice(part), rng) for part in (SUBJECTS, PREDICATES, OBJECTS, TAILS))
        for _ in range(n_sentences)
    ]
    half = n_sentences // 2  # two paragraphs, like a short article
    return " ".join(sentences[:half]) + "\n\n" + " ".join(sentences[half:])


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def fast_config(input_path, output: Path, **overrides) -> dict:
    """A config that skips the trained classifiers (seconds, not tens of seconds)."""
    cfg = {
        "input": str(input_path),
        "output": str(output),
        "quality": {"enabled": False},
        "content": {"toxicity": {"train_classifier": False}},
        "executor": {"kind": "local", "num_workers": 1},
        "report": {"plot": False, "progress": False},
        "mix": {"targets": {"web": 1.0, "prose": 0.0, "code": 0.0}, "max_repeats": 1.0},
    }
    for key, value in overrides.items():
        cfg[key] = (
            {**cfg.get(key, {}), **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
        )
    return cfg


def read_corpus(out: Path) -> list[dict]:
    rows = []
    for part in sorted(out.glob("*/part-*.jsonl.gz")):
        with gzip.open(part, "rt") as f:
            rows.extend(json.loads(line) for line in f)
    return rows
