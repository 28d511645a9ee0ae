"""Model-based quality filter and its training CLI.

Positives are reference prose (the Python language reference shipped with every CPython,
``pydoc_data.topics``: encyclopaedic, edited, "Wikipedia-like"), negatives are random raw
web text (whole pages with menus, as a crawler sees them). The model is a hashed
n-gram logistic regression (``classifier.TextClassifier``), as in the GPT-3 / PaLM
quality filters, only smaller.

    python -m data_pipeline.quality --negatives crawl/*.warc.gz --out artifacts/quality_model
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.classifier import TextClassifier, TrainReport, train_classifier
from data_pipeline.extract import extract_text
from data_pipeline.readers import DomainLabeler, ReadStats, discover_shards, read_shard
from lmforge.formats.corpus import Document
from lmforge.formats.files import write_json

log = logging.getLogger(__name__)


@dataclass
class QualityConfig:
    enabled: bool = True
    model_path: str | None = None  # a TextClassifier dir; null: trained by the run (prepare step)
    threshold: float = 0.2  # P(reference-like) below this is dropped
    domains: list[str] | None = field(default_factory=lambda: ["web"])
    max_train_docs: int = 600  # per class, for the in-run training
    # Fewer raw pages than this in the input (JSONL or text only): no negatives to learn from,
    # so the step is skipped with a note in the funnel instead of training a meaningless model.
    min_negatives: int = 50


def reference_prose(limit: int, chunk_chars: int = 1200, seed: int = 0) -> list[str]:
    """Paragraph chunks of the Python language reference (shipped with CPython)."""
    from pydoc_data.topics import topics

    chunks: list[str] = []
    for name in sorted(topics):
        current = ""
        for para in re.split(r"\n\s*\n", topics[name]):
            para = para.strip()
            if not para or para.startswith(("*", "=")) or para.startswith("   "):
                continue  # headings' underlines and indented grammar/code blocks
            current = f"{current}\n\n{para}" if current else para
            if len(current) >= chunk_chars:
                chunks.append(current)
                current = ""
        if len(current) > chunk_chars // 3:
            chunks.append(current)
    random.Random(seed).shuffle(chunks)
    return chunks[:limit]


def raw_web_text(inputs: Sequence[str], limit: int, seed: int = 0) -> list[str]:
    """Whole-page text (no main-content extraction) of a seeded sample of the first 4 x ``limit`` pages."""
    texts: list[str] = []
    stats = ReadStats()
    labeler = DomainLabeler([], "web")
    for shard in discover_shards(inputs):
        if shard.kind not in ("warc", "html"):
            continue
        for doc in read_shard(shard, labeler, stats):
            text = extract_text(doc.html, main_content=False) if doc.html is not None else doc.text
            if text.strip():
                texts.append(text)
            if len(texts) >= 4 * limit:  # a sample to shuffle, not a pass over a whole crawl
                break
        if len(texts) >= 4 * limit:
            break
    random.Random(seed).shuffle(texts)
    return texts[:limit]


def train_quality_model(
    negative_inputs: Sequence[str], out_dir: Path, max_docs: int = 600, seed: int = 0
) -> tuple[TextClassifier, TrainReport]:
    positives = reference_prose(max_docs, seed=seed)
    negatives = raw_web_text(negative_inputs, max_docs, seed=seed)
    classifier, report = train_classifier(positives, negatives, seed=seed)
    classifier.report["positives"] = "pydoc_data.topics (Python language reference)"
    classifier.report["negatives"] = [str(p) for p in negative_inputs]
    classifier.save(out_dir)
    return classifier, report


def prepare_quality_model(inputs: Sequence[str], out_dir: Path, max_docs: int, seed: int, min_negatives: int) -> dict:
    """Train into ``out_dir``, or write ``skipped.json`` when the input has too few raw pages."""
    negatives = raw_web_text(inputs, max_docs, seed=seed)
    if len(negatives) < min_negatives:
        reason = (
            f"skipped: {len(negatives)} raw web pages (WARC/HTML) in the input, need "
            f"quality.min_negatives={min_negatives} to train; set quality.model_path to use a trained model"
        )
        log.warning("quality filter %s", reason)
        write_json(out_dir / "skipped.json", {"reason": reason})
        return {"skipped": reason}
    classifier, _ = train_classifier(reference_prose(max_docs, seed=seed), negatives, seed=seed)
    classifier.report["positives"] = "pydoc_data.topics (Python language reference)"
    classifier.report["negatives"] = [str(p) for p in inputs]
    classifier.save(out_dir)
    return classifier.report


class SkippedQualityFilter:
    """Stands in for the quality step when no model could be trained: keeps every document."""

    name = "quality"

    def __init__(self, cfg: QualityConfig, reason: str) -> None:
        self.domains = cfg.domains
        self.reason = reason

    def __call__(self, doc: Document) -> str | None:
        return None


class QualityFilter:
    name = "quality"

    def __init__(self, cfg: QualityConfig, classifier: TextClassifier) -> None:
        self.cfg = cfg
        self.classifier = classifier
        self.domains = cfg.domains

    def __call__(self, doc: Document) -> str | None:
        score = float(self.classifier.score([doc.text])[0])
        doc.metadata["quality_score"] = round(score, 4)
        return "quality_below_threshold" if score < self.cfg.threshold else None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the quality classifier and report held-out precision/recall.")
    parser.add_argument("--negatives", nargs="+", help="raw web inputs (WARC/HTML); default: the embedded crawl")
    parser.add_argument("--out", default="artifacts/quality_model", help="output directory")
    parser.add_argument("--max-docs", type=int, default=600, help="examples per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    negatives = args.negatives
    if not negatives:
        from data_pipeline.sample_input import build_sample_input

        negatives = [str(build_sample_input(Path(args.out) / "sample_input"))]
    _, report = train_quality_model(negatives, Path(args.out), args.max_docs, args.seed)
    print(json.dumps(report.__dict__, indent=2))
    print(f"quality model written to {args.out}")


if __name__ == "__main__":
    main()
