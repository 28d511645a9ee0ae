"""Per-step document/byte accounting: JSON report, PNG plot, optional W&B log."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.formats.files import write_json

log = logging.getLogger(__name__)


@dataclass
class StepStats:
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    removed: Counter = field(default_factory=Counter)  # reason -> docs
    modified: Counter = field(default_factory=Counter)  # e.g. pii kind -> spans redacted
    seconds: float = 0.0  # CPU time in this step, summed over shards
    note: str = ""  # e.g. why a step was skipped; shown in the table and funnel.json

    def to_dict(self) -> dict[str, Any]:
        note = {"note": self.note} if self.note else {}
        return {
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "removed": dict(self.removed.most_common()),
            "modified": dict(self.modified.most_common()),
            "seconds": round(self.seconds, 4),
            **note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepStats:
        return cls(
            d["docs_in"],
            d["docs_out"],
            d["bytes_in"],
            d["bytes_out"],
            Counter(d["removed"]),
            Counter(d.get("modified", {})),
            d.get("seconds", 0.0),
            d.get("note", ""),
        )

    def merge(self, other: StepStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.removed.update(other.removed)
        self.modified.update(other.modified)
        self.seconds += other.seconds
        self.note = self.note or other.note


class Funnel:
    """Ordered mapping step name -> StepStats."""

    def __init__(self) -> None:
        self.steps: dict[str, StepStats] = {}

    def step(self, name: str) -> StepStats:
        return self.steps.setdefault(name, StepStats())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: s.to_dict() for name, s in self.steps.items()}

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, Any]]) -> Funnel:
        funnel = cls()
        for name, s in d.items():
            funnel.steps[name] = StepStats.from_dict(s)
        return funnel

    def merge(self, other: Funnel) -> None:
        for name, s in other.steps.items():
            self.step(name).merge(s)

    def top_reasons(self, k: int = 10) -> list[tuple[str, str, int]]:
        rows = [(step, reason, n) for step, s in self.steps.items() for reason, n in s.removed.items()]
        return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))[:k]

    def table(self) -> str:
        lines = [
            f"{'step':<12}{'docs in':>9}{'docs out':>9}{'MB in':>8}{'MB out':>8}{'docs/s':>9}  top removal reasons"
        ]
        for name, s in self.steps.items():
            reasons = ", ".join(f"{r} {n}" for r, n in s.removed.most_common(3))
            if s.note:
                reasons = f"[{s.note}] {reasons}".rstrip()
            speed = f"{s.docs_in / s.seconds:>9.0f}" if s.seconds > 0 else f"{'-':>9}"
            lines.append(
                f"{name:<12}{s.docs_in:>9}{s.docs_out:>9}{s.bytes_in / 1e6:>8.2f}"
                f"{s.bytes_out / 1e6:>8.2f}{speed}  {reasons}"
            )
        return "\n".join(lines)


def write_report(
    funnel: Funnel, out_dir: Path, extra: dict[str, Any], plot: bool = True, wandb_cfg: dict[str, Any] | None = None
) -> dict[str, Path]:
    paths = {"json": out_dir / "funnel.json"}
    write_json(
        paths["json"],
        {
            "steps": funnel.to_dict(),
            "top_removal_reasons": [{"step": s, "reason": r, "docs": n} for s, r, n in funnel.top_reasons(15)],
            **extra,
        },
        sort_keys=False,
    )  # steps stay in pipeline order
    if plot:
        paths["png"] = _plot(funnel, out_dir / "funnel.png")
    if wandb_cfg:
        _log_wandb(funnel, paths, wandb_cfg)
    return paths


def _plot(funnel: Funnel, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(funnel.steps)
    docs = [funnel.steps[n].docs_out for n in names]
    mbytes = [funnel.steps[n].bytes_out / 1e6 for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.bar(names, docs, color="#3b7dd8")
    ax1.set_title("documents after each step")
    ax2.bar(names, mbytes, color="#d8843b")
    ax2.set_title("MB of text after each step")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=45)
    reasons = funnel.top_reasons(6)
    if reasons:
        fig.text(0.01, 0.01, "top removals: " + "; ".join(f"{r} ({n})" for _, r, n in reasons), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    from lmforge.formats.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _log_wandb(funnel: Funnel, paths: dict[str, Path], wandb_cfg: dict[str, Any]) -> None:
    import wandb

    run = wandb.init(
        project=wandb_cfg.get("project", "lmforge-data"),
        job_type="data_pipeline",
        config=wandb_cfg.get("config"),
        dir=wandb_cfg.get("dir", str(paths["json"].parent)),
        reinit="finish_previous",
    )
    table = wandb.Table(columns=["step", "docs_in", "docs_out", "bytes_in", "bytes_out"])
    for name, s in funnel.steps.items():
        table.add_data(name, s.docs_in, s.docs_out, s.bytes_in, s.bytes_out)
        run.summary[f"funnel/{name}/docs_out"] = s.docs_out
    run.log({"funnel": table, **({"funnel_plot": wandb.Image(str(paths["png"]))} if "png" in paths else {})})
    run.finish()
