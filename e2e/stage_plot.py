"""The per-stage figure: rates on a 0-1 axis with n and a 95% Wilson interval on every bar, and the
preference margin with its bootstrap interval, so 2 right answers out of 100 look like what they are."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from e2e.significance import wilson_interval  # noqa: E402

COLORS = ["#8a9a9a", "#4f7fb0", "#b04f7f", "#4fb07f", "#b0904f"]
# One colour per checkpoint in every figure (the main job's lineage order, then the CAI branch).
STAGE_COLORS = dict(zip(("pretrain", "sft", "dpo", "rl", "cai"), COLORS, strict=True))


def _rate(report: dict, key: str) -> tuple[float, float, float, int] | None:
    outcomes = (report.get("items") or {}).get(key)
    if outcomes:
        k, n = int(sum(outcomes)), len(outcomes)
    elif report.get(key if key != "correct" else "accuracy") is not None and report.get("n"):
        n = int(report["n"])
        k = round(report[key if key != "correct" else "accuracy"] * n)
    else:
        return None
    low, high = wilson_interval(k, n)
    return k / n, low, high, n


def _margin(report: dict) -> tuple[float, float, float, int] | None:
    margins = report.get("pair_margins")
    if not margins:
        return None
    values = np.asarray(margins, dtype=np.float64)
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high), len(values)


def plot_stages(tasks: dict[str, dict | None], order: list[str], path: Path) -> Path | None:
    names = [n for n in order if tasks.get(n)]
    if not names:
        return None
    panels = (
        ("answer format rate", lambda r: _rate(r, "formatted"), True),
        ("held-out task accuracy", lambda r: _rate(r, "correct"), True),
        ("chosen - rejected log-prob", _margin, False),
    )
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for ax, (title, value_of, is_rate) in zip(axes, panels, strict=True):
        rows = [(n, value_of(tasks[n])) for n in names]
        rows = [(n, v) for n, v in rows if v is not None]
        if not rows:
            ax.set_axis_off()
            continue
        x = np.arange(len(rows))
        means = [v[0] for _, v in rows]
        errors = [[max(0.0, v[0] - v[1]) for _, v in rows], [max(0.0, v[2] - v[0]) for _, v in rows]]
        colors = [STAGE_COLORS.get(n, COLORS[i % len(COLORS)]) for i, (n, _) in enumerate(rows)]
        ax.bar(x, means, color=colors, yerr=errors, capsize=4, ecolor="#333")
        ax.set_xticks(x, [f"{n}\nn={v[3]}" for n, v in rows], fontsize=8)
        for xi, m, top in zip(x, means, errors[1], strict=True):
            inside = is_rate and m > 0.85  # near the top of the 0-1 axis: label inside the bar
            ax.annotate(
                f"{m:.2f}",
                (xi, m if inside else m + top),  # above the interval, not across its cap
                textcoords="offset points",
                xytext=(0, -12 if inside else 3),
                ha="center",
                fontsize=8,
                color="white" if inside else "#222",
            )
        if is_rate:
            ax.set_ylim(0, 1)  # rates always on their whole range
        else:
            ax.axhline(0, color="#333", linewidth=0.8)
            highest = max(m + top for m, top in zip(means, errors[1], strict=True))
            ax.set_ylim(top=max(highest * 1.15, ax.get_ylim()[1]))  # room for the labels
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Each stage on held-out generated tasks (bars: 95% intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_claims(rows: list[dict], stage: str, path: Path) -> Path | None:
    """One panel per claim of `stage` whose outcome is a rate (RL's two accuracy rows, CAI's two safety
    rows; not DPO's margin): parent and stage rates on a 0-1
    axis, each bar with n and its 95% Wilson interval, the paired gain with its interval, p and the
    verdict in the panel's title; an untested claim's panel says why."""
    claims = [r for r in rows if r["stage"] == stage]
    if not claims or all(r["verdict"] == "untested" for r in claims):
        return None
    fig, axes = plt.subplots(1, len(claims), figsize=(4.2 * len(claims), 3.8), squeeze=False)
    for ax, row in zip(axes[0], claims, strict=True):
        if row["verdict"] == "untested":
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{row['metric']}\nuntested:\n{row['reason']}", ha="center", va="center", wrap=True)
            continue
        n = row["n"]
        bars = []
        for rate in (row["before"], row["after"]):
            low, high = wilson_interval(round(rate * n), n)
            bars.append((rate, max(0.0, rate - low), max(0.0, high - rate)))
        x = np.arange(2)
        ax.bar(
            x,
            [b[0] for b in bars],
            color=[STAGE_COLORS.get(row["parent"], COLORS[1]), STAGE_COLORS.get(row["stage"], COLORS[2])],
            yerr=[[b[1] for b in bars], [b[2] for b in bars]],
            capsize=4,
            ecolor="#333",
        )
        ax.set_xticks(x, [f"{row['parent']}\nn={n}", f"{row['stage']}\nn={n}"], fontsize=8)
        for xi, (rate, _, high) in zip(x, bars, strict=True):
            ax.annotate(
                f"{rate:.2f}", (xi, rate + high), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8
            )
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(
            f"{row['metric']}\n{row['gain']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}], "
            f"p={row['p']:.2g}: {row['verdict']}",
            fontsize=9,
            color="#222" if row.get("holds", True) else "#b00",
        )
    fig.suptitle(f"{stage} vs {claims[0]['parent']}, paired by item (bars: 95% Wilson intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
