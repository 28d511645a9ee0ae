"""Typed pipeline configuration (Hydra structured config, registered as ``pipeline_schema``).

A typo such as ``dedup.bandz=20`` or ``dedup.bands=abc`` fails at compose time because
the YAML is merged onto these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from data_pipeline.content import ContentConfig
from data_pipeline.dedup import DedupConfig
from data_pipeline.extract import ExtractConfig
from data_pipeline.heuristics import HeuristicsConfig
from data_pipeline.langid import LangIdConfig
from data_pipeline.quality import QualityConfig


@dataclass
class DomainRuleConfig:
    pattern: str = ""  # regex over the crawled URL (a local file's path is never matched)
    domain: str = "web"
    content: str = ""  # regex over the first 4 KB of the text/HTML (multiline)


@dataclass
class DomainsConfig:
    """Regexes over a record's URL or content name its domain (first match wins)."""

    default: str = "web"
    rules: list[DomainRuleConfig] = field(
        default_factory=lambda: [
            DomainRuleConfig(r"books\.example\.org|/books?/|gutenberg", "prose"),
            DomainRuleConfig(r"code\.example\.org|github\.com|\.py$", "code"),
        ]
    )


@dataclass
class MixConfig:
    """Target share of documents per domain; up-sampling repeats a document at most ``max_repeats`` times."""

    targets: dict[str, float] = field(default_factory=lambda: {"web": 0.5, "prose": 0.3, "code": 0.2})
    max_repeats: float = 3.0
    total_docs: int | None = None  # null: as many documents as survived curation
    # Shares are rescaled over the targeted domains that have documents: a crawl with only
    # web pages is all web, not half of it thrown away to make room for absent domains.


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local | ray
    num_workers: int = 2
    ray_address: str | None = None  # null: start a local Ray with num_workers CPUs


@dataclass
class ReportConfig:
    plot: bool = True
    wandb: bool = False
    wandb_project: str = "lmforge-data"
    progress: bool = True


@dataclass
class SampleInputConfig:
    """The embedded default crawl, built when ``input`` is null."""

    seed: int = 0
    n_shards: int = 4
    max_web_pages: int = 300
    max_book_pages: int = 120
    max_docstrings: int = 120
    max_code_files: int = 150


@dataclass
class PipelineConfig:
    name: str = "default"
    input: Any = None  # path, list of paths, or null for the embedded default crawl
    output: str = "artifacts/corpus"
    work_dir: str | None = None  # null: "<output>.work" (markers, intermediate shards, models)
    seed: int = 0
    files_per_shard: int = 256
    split_bytes: int = 128_000_000  # a .warc.gz or .jsonl bigger than this is split into byte-range shards
    checkpoint_every: int = 5000  # records per checkpoint inside a shard (resume point after a crash)
    strict: bool = False  # true: the first record that raises stops the run (debugging); false: rejects/
    domains: DomainsConfig = field(default_factory=DomainsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    langid: LangIdConfig = field(default_factory=lambda: LangIdConfig(domains=["web", "prose"]))
    heuristics: HeuristicsConfig = field(default_factory=HeuristicsConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sample: SampleInputConfig = field(default_factory=SampleInputConfig)


def register_configs() -> None:
    ConfigStore.instance().store(name="pipeline_schema", node=PipelineConfig)


def to_pipeline_config(cfg: DictConfig | dict | PipelineConfig | None = None, **overrides: Any) -> PipelineConfig:
    """Validate any config form against the schema and return the dataclass."""
    if isinstance(cfg, PipelineConfig) and not overrides:
        return cfg
    schema = OmegaConf.structured(PipelineConfig)
    merged = OmegaConf.merge(schema, cfg if cfg is not None else {}, overrides)
    return OmegaConf.to_object(merged)


register_configs()
