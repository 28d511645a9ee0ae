"""The curation pipeline: prepare -> process (per shard) -> dedup (global) -> mix (per shard) -> report.

Resumability: every per-shard step writes its outputs atomically and then a marker
``<work>/markers/<step>/<shard>.json`` holding that shard's funnel stats. A rerun skips
shards whose marker exists and recomputes the rest from their inputs, so a crash at any
point loses no document and duplicates none. Inside a shard, the process step checkpoints
every ``checkpoint_every`` records (survivors + funnel of that chunk); a rerun skips the
records already checkpointed. Global steps (dedup, mix plan) are cheap and keyed by the
same markers.

Fault isolation: an exception while one record goes through any step drops that record
only. It is counted under ``error:<step>:<ExceptionType>`` and written, with its id, URL,
source and the error, to ``<output>/rejects/<shard>.jsonl`` (so are corrupt records the
readers skipped). ``strict=true`` re-raises instead, naming the record.
"""

from __future__ import annotations

import copy
import functools
import glob
import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from data_pipeline.classifier import TextClassifier, train_classifier
from data_pipeline.config import PipelineConfig, to_pipeline_config
from data_pipeline.content import MalwareFilter, PiiFilter, ToxicityFilter
from data_pipeline.dedup import find_duplicates, load_signatures, save_signatures, signatures
from data_pipeline.executors import make_executor
from data_pipeline.extract import HtmlExtractor
from data_pipeline.funnel import Funnel, write_report
from data_pipeline.heuristics import HeuristicFilter
from data_pipeline.langid import LanguageFilter
from data_pipeline.mix import achieved_ratios, copies, plan_mix
from data_pipeline.quality import QualityFilter, SkippedQualityFilter, prepare_quality_model, reference_prose
from data_pipeline.readers import DomainLabeler, ReadStats, Shard, discover_shards, read_shard
from lmforge.formats.corpus import Document
from lmforge.formats.corpus import write_manifest as write_corpus_manifest
from lmforge.formats.corpus import write_part as write_corpus_part
from lmforge.formats.files import atomic_path, iter_jsonl_gz, read_json, write_json, write_jsonl_gz

log = logging.getLogger(__name__)


class WorkDir:
    """Paths of intermediate artifacts and markers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def marker(self, step: str, shard: str) -> Path:
        return self.root / "markers" / step / f"{shard}.json"

    def processed(self, shard: str) -> Path:
        return self.root / "process" / f"{shard}.jsonl.gz"

    def signatures(self, shard: str) -> Path:
        return self.root / "process" / f"{shard}.sig.npz"

    def rejects(self, shard: str) -> Path:
        """The work copy of a shard's rejects: it restores `<output>/rejects/` when that was deleted."""
        return self.root / "process" / f"{shard}.rejects.jsonl"

    def chunk(self, shard: str, index: int) -> Path:
        return self.root / "process" / "chunks" / shard / f"{index:06d}.jsonl.gz"

    def chunk_marker(self, shard: str, index: int) -> Path:
        return self.root / "markers" / "chunks" / shard / f"{index:06d}.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def dedup_decisions(self) -> Path:
        return self.root / "dedup" / "decisions.json"


# ----------------------------------------------------------------------------- steps
_STEP_CACHE: dict[str, list] = {}


def build_steps(cfg: PipelineConfig, models_dir: Path) -> list:
    """The per-document chain; built once per worker process and reused across shards.

    Each step is ``step(doc) -> removal reason | None`` (it may rewrite ``doc.text``), with a
    ``name`` for the funnel and ``domains`` (None: all) it applies to.
    """
    key = json.dumps(asdict(cfg), sort_keys=True, default=str) + str(models_dir)
    if key in _STEP_CACHE:
        return _STEP_CACHE[key]
    steps: list = [HtmlExtractor(cfg.extract), LanguageFilter(cfg.langid), HeuristicFilter(cfg.heuristics)]
    content = cfg.content
    if content.malware.enabled:
        steps.append(MalwareFilter(content.malware, content.domains))
    if content.toxicity.enabled:
        path = content.toxicity.classifier_path or (models_dir / "toxicity" if _trains_toxicity(cfg) else None)
        steps.append(ToxicityFilter(content.toxicity, TextClassifier.load(path) if path else None, content.domains))
    if content.pii.enabled:
        steps.append(PiiFilter(content.pii, content.domains))
    if cfg.quality.enabled:
        skipped = models_dir / "quality" / "skipped.json"
        if not cfg.quality.model_path and skipped.exists():
            steps.append(SkippedQualityFilter(cfg.quality, read_json(skipped)["reason"]))
        else:
            model = TextClassifier.load(cfg.quality.model_path or models_dir / "quality")
            steps.append(QualityFilter(cfg.quality, model))
    _STEP_CACHE.clear()
    _STEP_CACHE[key] = steps
    return steps


def _size(doc: Document) -> int:
    return len((doc.html if doc.html is not None else doc.text).encode("utf-8", "surrogatepass"))


class RecordError(RuntimeError):
    """strict=true: a step raised on one record; the message names the record and the step."""


def _run_chain(doc: Document, steps: list, funnel: Funnel, rejects: list[dict], strict: bool) -> bool:
    """One record through the chain; True if it survives. Exceptions drop the record only."""
    size = _size(doc)
    for step in steps:
        stats = funnel.step(step.name)
        stats.docs_in += 1
        stats.bytes_in += size
        if step.domains is not None and doc.domain not in step.domains:
            stats.docs_out += 1
            stats.bytes_out += size
            continue
        started = time.perf_counter()
        try:
            reason = step(doc)
        except Exception as err:
            if strict:
                raise RecordError(
                    f"step {step.name!r} raised on record {doc.url or doc.id} in {doc.source}: "
                    f"{type(err).__name__}: {err}"
                ) from err
            reason = f"error:{step.name}:{type(err).__name__}"
            rejects.append(
                {
                    "step": step.name,
                    "reason": reason,
                    "id": doc.id,
                    "url": doc.url,
                    "source": doc.source,
                    "error": f"{type(err).__name__}: {err}"[:2000],
                }
            )
            log.warning("%s on %s (%s); record rejected", reason, doc.url or doc.id, err)
        stats.seconds += time.perf_counter() - started
        if reason:
            stats.removed[reason] += 1
            return False
        size = _size(doc)
        stats.docs_out += 1
        stats.bytes_out += size
        if step.name == "pii" and "pii_redacted" in doc.metadata:
            stats.modified.update(doc.metadata["pii_redacted"])
    return True


def _guarded(records, shard: Shard, rejects: list[dict], strict: bool):
    """The reader's records; a reader that raises ends this shard's reading, counted, not the run."""
    try:
        yield from records
    except Exception as err:
        if strict:
            raise RecordError(f"reading {', '.join(shard.paths)} raised {type(err).__name__}: {err}") from err
        reason = f"error:read:{type(err).__name__}"
        rejects.append(
            {
                "step": "read",
                "reason": reason,
                "where": ", ".join(shard.paths),
                "error": f"{type(err).__name__}: {err}"[:2000],
            }
        )
        log.warning("%s while reading %s (%s); the rest of this shard is lost", reason, shard.paths, err)


def _chunk_markers(work: WorkDir, shard: str) -> list[dict]:
    """Checkpoints of a shard, in order, up to the first gap."""
    markers = []
    while (path := work.chunk_marker(shard, len(markers))).exists():
        markers.append(read_json(path))
    return markers


def _published(cfg: PipelineConfig, work: WorkDir, shard: str, rejects_file: str | None) -> bool:
    """Whether the shard's rejects file is in the output folder, copying the work copy back when
    the folder was deleted since; False when neither exists (the shard must run again)."""
    if rejects_file is None or (Path(cfg.output) / rejects_file).exists():
        return True
    source = work.rejects(shard)
    if not source.exists():
        return False
    with atomic_path(Path(cfg.output) / rejects_file) as tmp:
        shutil.copyfile(source, tmp)
    return True


@functools.lru_cache(maxsize=4)
def _validated(cfg_json: str) -> PipelineConfig:
    return to_pipeline_config(json.loads(cfg_json))


def _task_config(cfg_dict: dict) -> PipelineConfig:
    """The task's config, validated once per worker process: OmegaConf's schema merge takes
    ~0.1 s, and every shard task carries the same config."""
    return copy.deepcopy(_validated(json.dumps(cfg_dict, sort_keys=True, default=str)))


def process_shard(task: tuple[dict, dict, str]) -> dict[str, Any]:
    """Read one shard, run the document chain, write survivors + their dedup signatures."""
    cfg_dict, shard_dict, work_root = task
    cfg, shard, work = _task_config(cfg_dict), Shard(**shard_dict), WorkDir(Path(work_root))
    marker = work.marker("process", shard.name)
    if marker.exists():
        result = read_json(marker)
        if _published(cfg, work, shard.name, result.get("rejects_file")):
            return result
        log.warning("%s: its rejects file left the output folder and has no work copy; processing it again", shard.name)
        marker.unlink()
    steps = build_steps(cfg, work.models)
    labeler = DomainLabeler([asdict(r) for r in cfg.domains.rules], cfg.domains.default)
    read_stats = ReadStats()
    funnel = Funnel()
    for step in steps:  # fixed order of funnel rows, even for steps that see nothing
        funnel.step(step.name)
    done = _chunk_markers(work, shard.name)
    for chunk in done:
        funnel.merge(Funnel.from_dict(chunk["funnel"]))
    skip = sum(chunk["records"] for chunk in done)
    rejects = [row for chunk in done for row in chunk["rejects"]]
    read = Funnel().step("read")
    reader_rejects: list[dict] = []
    every = max(1, cfg.checkpoint_every)
    chunk_docs: list[dict] = []
    chunk_funnel, chunk_rejects, chunk_records = Funnel(), [], 0

    def checkpoint() -> None:
        nonlocal chunk_docs, chunk_funnel, chunk_rejects, chunk_records
        index = len(done)
        write_jsonl_gz(work.chunk(shard.name, index), chunk_docs, compresslevel=1)
        entry = {"records": chunk_records, "funnel": chunk_funnel.to_dict(), "rejects": chunk_rejects}
        write_json(work.chunk_marker(shard.name, index), entry, sort_keys=False)
        done.append(entry)
        funnel.merge(chunk_funnel)
        rejects.extend(chunk_rejects)
        chunk_docs, chunk_funnel, chunk_rejects, chunk_records = [], Funnel(), [], 0

    for n, doc in enumerate(_guarded(read_shard(shard, labeler, read_stats), shard, reader_rejects, cfg.strict)):
        size = _size(doc)
        read.docs_in += 1
        read.docs_out += 1
        read.bytes_in += size
        read.bytes_out += size
        if n < skip:  # checkpointed by an earlier, interrupted run
            continue
        chunk_records += 1
        if _run_chain(doc, steps, chunk_funnel, chunk_rejects, cfg.strict):
            chunk_docs.append(doc.to_json())
        if chunk_records == every:
            checkpoint()
    if chunk_records or not done:
        checkpoint()
    read.docs_in += sum(read_stats.corrupt.values()) + len(reader_rejects)
    read.removed.update(read_stats.corrupt)
    read.removed.update(r["reason"] for r in reader_rejects)
    read.modified.update(read_stats.modified)
    rejects = read_stats.rejects + reader_rejects + rejects

    kept = [row for i in range(len(done)) for row in iter_jsonl_gz(work.chunk(shard.name, i))]
    started = time.perf_counter()
    hashes, sigs = signatures([r["text"] for r in kept], cfg.dedup)
    signature_seconds = time.perf_counter() - started  # reported on the dedup row
    write_jsonl_gz(work.processed(shard.name), kept, compresslevel=1)
    save_signatures(
        work.signatures(shard.name),
        [r["id"] for r in kept],
        hashes,
        sigs,
        np.array([len(r["text"].encode("utf-8", "surrogatepass")) for r in kept], dtype=np.int64),
    )
    rejects_file = None
    if rejects:
        rejects_file = Path(cfg.output) / "rejects" / f"{shard.name}.jsonl"
        with atomic_path(work.rejects(shard.name)) as tmp:
            tmp.write_text("".join(json.dumps({"shard": shard.name, **r}, ensure_ascii=False) + "\n" for r in rejects))
        _published(cfg, work, shard.name, str(rejects_file.relative_to(cfg.output)))
    result = {
        "shard": shard.name,
        "funnel": {"read": read.to_dict(), **funnel.to_dict()},
        "signature_seconds": signature_seconds,
        "domains": [r["domain"] for r in kept],
        "corrupt_examples": read_stats.examples,
        "rejects": dict(Counter(r["reason"] for r in rejects)),
        "rejects_file": str(rejects_file.relative_to(cfg.output)) if rejects_file else None,
    }
    write_json(marker, result, sort_keys=False)
    shutil.rmtree(work.chunk(shard.name, 0).parent, ignore_errors=True)  # the shard file holds them now
    shutil.rmtree(work.chunk_marker(shard.name, 0).parent, ignore_errors=True)
    return result


def mix_shard(task: tuple[dict, int, str, str, dict[str, float], dict[str, str]]) -> dict[str, Any]:
    """Write one shard's survivors into ``<output>/<domain>/part-<index>.jsonl.gz`` with mix copies."""
    cfg_dict, index, shard_name, work_root, factors, drops = task
    cfg, work = _task_config(cfg_dict), WorkDir(Path(work_root))
    marker = work.marker("mix", shard_name)
    if marker.exists():
        result = read_json(marker)
        if all((Path(cfg.output) / name).exists() for name in result["files"]):
            return result
        # Its corpus parts were deleted with the output folder: write them again from the work dir.
    by_domain: dict[str, list[dict]] = {}
    stats = Funnel().step("mix")
    for row_index, row in enumerate(iter_jsonl_gz(work.processed(shard_name))):
        if str(row_index) in drops:
            continue
        size = len(row["text"].encode("utf-8", "surrogatepass"))
        stats.docs_in += 1
        stats.bytes_in += size
        n = copies(row["id"], factors.get(row["domain"], 0.0), cfg.seed)
        if n == 0:
            stats.removed["mix_downsampled" if row["domain"] in cfg.mix.targets else "mix_domain_not_targeted"] += 1
            continue
        for k in range(n):
            # Repeats get distinct ids so that "no duplicate ids" stays checkable downstream.
            by_domain.setdefault(row["domain"], []).append(row if k == 0 else {**row, "id": f"{row['id']}#rep{k}"})
        stats.docs_out += n
        stats.bytes_out += n * size
        if n > 1:
            stats.modified["mix_repeats"] += n - 1
    output = Path(cfg.output)
    files, counts, nbytes = [], {}, {}
    for domain, rows in sorted(by_domain.items()):
        path = output / domain / f"part-{index:05d}.jsonl.gz"
        write_corpus_part(path, rows)
        files.append(str(path.relative_to(output)))
        counts[domain] = len(rows)
        nbytes[domain] = sum(len(r["text"].encode("utf-8", "surrogatepass")) for r in rows)
    result = {"shard": shard_name, "files": files, "counts": counts, "bytes": nbytes, "funnel": stats.to_dict()}
    write_json(marker, result, sort_keys=False)
    return result


# -------------------------------------------------------------------------- driver
def _config_fingerprint(cfg: PipelineConfig) -> str:
    # Scheduling, reporting, strictness and checkpoint spacing do not change the result.
    ignored = ("executor", "report", "strict", "checkpoint_every")
    relevant = {k: v for k, v in asdict(cfg).items() if k not in ignored}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _inputs(cfg: PipelineConfig, work: WorkDir) -> list[str]:
    if cfg.input is None or cfg.input == "":
        from data_pipeline.sample_input import build_sample_input

        s = cfg.sample
        return [
            str(
                build_sample_input(
                    work.root / "sample_input",
                    s.seed,
                    s.n_shards,
                    s.max_web_pages,
                    s.max_book_pages,
                    s.max_docstrings,
                    s.max_code_files,
                )
            )
        ]
    items = cfg.input if isinstance(cfg.input, (list, tuple)) else str(cfg.input).split(",")
    paths = []
    for item in (str(Path(str(i).strip()).expanduser()) for i in items if str(i).strip()):
        # A quoted glob ('input=/data/cc/*.warc.gz') is expanded here; one matching nothing stays
        # as written, so the reader's "input not found" names it.
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") and not Path(item).exists() else []
        paths.extend(matches or [item])
    return paths


def _trains_toxicity(cfg: PipelineConfig) -> bool:
    """The run trains its own toxicity classifier, unless one is given or no domain is filtered
    (``content.domains: []``)."""
    tox = cfg.content.toxicity
    return tox.enabled and tox.train_classifier and not tox.classifier_path and cfg.content.domains != []


def prepare_models(cfg: PipelineConfig, work: WorkDir, inputs: list[str]) -> dict[str, Any]:
    """Train the classifiers the config asks the run to train (skipped when already saved)."""
    reports: dict[str, Any] = {}
    if cfg.quality.enabled and not cfg.quality.model_path:
        out = work.models / "quality"
        if (out / "skipped.json").exists():
            reports["quality"] = read_json(out / "skipped.json")
        elif (out / "classifier.json").exists():
            reports["quality"] = TextClassifier.load(out).report
        else:
            log.info("training the quality classifier into %s", out)
            q = cfg.quality
            reports["quality"] = prepare_quality_model(inputs, out, q.max_train_docs, cfg.seed, q.min_negatives)
    if _trains_toxicity(cfg):
        out = work.models / "toxicity"
        if not (out / "classifier.json").exists():
            from data_pipeline.synthetic import toxicity_training_set

            toxic, neutral = toxicity_training_set(400, cfg.seed)
            clean = neutral + reference_prose(400, chunk_chars=300, seed=cfg.seed)
            classifier, _ = train_classifier(toxic, clean, seed=cfg.seed)
            classifier.report["data"] = "generated abuse templates vs. neutral templates + reference prose"
            classifier.save(out)
        reports["toxicity"] = TextClassifier.load(out).report
    return reports


def run_pipeline(cfg: PipelineConfig | dict | Any = None, **overrides: Any) -> Path:
    """Run (or resume) the pipeline; return the corpus directory.

    ``cfg`` may be a ``PipelineConfig``, a dict/DictConfig (e.g. Hydra's), or None for the
    embedded default; keyword overrides use the config's field names
    (``run_pipeline(output="artifacts/corpus", executor={"kind": "ray"})``).
    """
    cfg = to_pipeline_config(cfg, **overrides)
    started = time.perf_counter()
    output = Path(cfg.output)
    work = WorkDir(Path(cfg.work_dir) if cfg.work_dir else output.with_name(output.name + ".work"))
    fingerprint = _config_fingerprint(cfg)
    stamp = work.root / "config_fingerprint.json"
    if stamp.exists() and read_json(stamp)["fingerprint"] != fingerprint:
        raise RuntimeError(
            f"{work.root} holds a run with a different config (fingerprint "
            f"{read_json(stamp)['fingerprint']} != {fingerprint}); delete it or choose another output"
        )
    work.root.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"fingerprint": fingerprint})
    cfg_dict = asdict(cfg)

    inputs = _inputs(cfg, work)
    shards = discover_shards(inputs, cfg.files_per_shard, cfg.split_bytes)
    if not shards:
        raise ValueError(f"no readable input files under {inputs}")
    log.info("%d shards from %s -> %s", len(shards), inputs, output)
    model_reports = prepare_models(cfg, work, inputs)

    executor = make_executor(cfg.executor.kind, cfg.executor.num_workers, cfg.executor.ray_address, cfg.report.progress)
    try:
        processed = executor.map(process_shard, [(cfg_dict, asdict(s), str(work.root)) for s in shards], "process")
        decisions = _global_dedup(cfg, work, shards)
        available: dict[str, int] = {}
        for shard, result in zip(shards, processed):
            drops = decisions["drops"].get(shard.name, {})
            for row, domain in enumerate(result["domains"]):
                if str(row) not in drops:
                    available[domain] = available.get(domain, 0) + 1
        plan = plan_mix(available, cfg.mix.targets, cfg.mix.max_repeats, cfg.mix.total_docs)
        mixed = executor.map(
            mix_shard,
            [
                (cfg_dict, i, s.name, str(work.root), plan.factors, decisions["drops"].get(s.name, {}))
                for i, s in enumerate(shards)
            ],
            "mix",
        )
    finally:
        executor.close()

    funnel = Funnel()
    for result in processed:
        funnel.merge(Funnel.from_dict(result["funnel"]))
    funnel.merge(Funnel.from_dict({"dedup": decisions["funnel"]}))
    funnel.step("dedup").seconds += sum(r["signature_seconds"] for r in processed)
    for m in mixed:
        funnel.merge(Funnel.from_dict({"mix": m["funnel"]}))
    counts: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    for m in mixed:
        for d, n in m["counts"].items():
            counts[d] = counts.get(d, 0) + n
            nbytes[d] = nbytes.get(d, 0) + m["bytes"][d]
    weight_sum = sum(cfg.mix.targets.values())
    warnings = list(plan.warnings)
    quality_note = model_reports.get("quality", {}).get("skipped")
    if quality_note and "quality" in funnel.steps:
        funnel.step("quality").note = quality_note
        warnings.append(f"quality {quality_note}")
    rejects: Counter = Counter()
    for result in processed:
        rejects.update(result["rejects"])
    manifest = {
        "counts": dict(sorted(counts.items())),
        "bytes": dict(sorted(nbytes.items())),
        "total_docs": sum(counts.values()),
        "files": sorted(f for m in mixed for f in m["files"]),
        # The targets as applied: rescaled over the targeted domains that had documents.
        "target_ratios": plan.target_ratios,
        "configured_target_ratios": {d: round(w / weight_sum, 4) for d, w in sorted(cfg.mix.targets.items())},
        "achieved_ratios": achieved_ratios(counts, (d for d, w in cfg.mix.targets.items() if w > 0)),
        "mix_plan": plan.to_dict(),
        "dedup": {k: v for k, v in decisions.items() if k not in ("drops", "funnel")},
        "read_errors": dict(funnel.steps["read"].removed),
        "corrupt_examples": [e for r in processed for e in r["corrupt_examples"]][:20],
        "rejects": dict(rejects.most_common()),
        "rejects_files": [r["rejects_file"] for r in processed if r["rejects_file"]],
        "warnings": warnings,
        "models": model_reports,
        "parent": {"inputs": inputs, "shards": [s.name for s in shards]},
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
        "config_fingerprint": fingerprint,
    }  # no timings here: a rerun must write the same manifest (the shard writer keys its cache on it)
    # W&B files go to the work dir: the corpus dir holds only domains and reports.
    wandb_cfg = (
        {"project": cfg.report.wandb_project, "config": manifest["config"], "dir": str(work.root)}
        if cfg.report.wandb
        else None
    )
    write_report(
        funnel,
        output,
        {
            "manifest": "manifest.json",
            "achieved_ratios": manifest["achieved_ratios"],
            "rejects": manifest["rejects"],
            "warnings": warnings,
            "elapsed_s": round(time.perf_counter() - started, 2),
        },
        plot=cfg.report.plot,
        wandb_cfg=wandb_cfg,
    )
    write_corpus_manifest(output, manifest)
    log.info("funnel:\n%s", funnel.table())
    return output


def _global_dedup(cfg: PipelineConfig, work: WorkDir, shards: list[Shard]) -> dict[str, Any]:
    """Exact + MinHash-LSH over every shard's signatures at once; rows keyed by (shard, line)."""
    if work.dedup_decisions.exists():
        return read_json(work.dedup_decisions)
    sizes, hashes, sigs, owners = [], [], [], []
    for shard in shards:
        shard_ids, shard_hashes, shard_sigs, shard_sizes = load_signatures(work.signatures(shard.name))
        sizes.append(shard_sizes)
        hashes.append(shard_hashes)
        sigs.append(shard_sigs)
        owners.extend((shard.name, row) for row in range(len(shard_ids)))
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    all_sigs = np.concatenate(sigs) if sigs else np.zeros((0, cfg.dedup.num_perm), np.uint32)
    eligible = None
    if cfg.dedup.domains is not None:
        domains = [d for s in shards for d in read_json(work.marker("process", s.name))["domains"]]
        eligible = np.array([d in cfg.dedup.domains for d in domains], dtype=bool)
    started = time.perf_counter()
    result = find_duplicates(all_hashes, all_sigs, cfg.dedup, eligible)
    drops: dict[str, dict[str, str]] = {}
    stats = Funnel().step("dedup")
    stats.docs_in = len(all_hashes)
    for row, reason in sorted(result.drop.items()):
        shard_name, line = owners[row]
        drops.setdefault(shard_name, {})[str(line)] = reason
        stats.removed[reason] += 1
    stats.docs_out = stats.docs_in - len(result.drop)
    stats.seconds = time.perf_counter() - started
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    stats.bytes_in = int(all_sizes.sum())
    stats.bytes_out = stats.bytes_in - int(sum(all_sizes[row] for row in result.drop))
    decisions = {
        "drops": drops,
        "funnel": stats.to_dict(),
        "exact_groups": result.exact_groups,
        "near_clusters": result.near_clusters,
        "largest_cluster": result.largest_cluster,
        "params": {"ngram": cfg.dedup.ngram, "bands": cfg.dedup.bands, "rows": cfg.dedup.rows},
    }
    write_json(work.dedup_decisions, decisions)
    return decisions
