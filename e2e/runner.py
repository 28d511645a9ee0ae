"""Run a list of CLI steps in order, skipping the ones whose artifact is already complete.

Each step is the same command a user would type (so the end-to-end job exercises the real
entry points). A step is complete when its output directory holds `e2e_step.json` whose
key matches the step's command, its parents' keys and the contents of the config tree the
commands compose (``watched``): change a step's overrides, or edit a YAML file under ``conf/``,
and the affected steps and everything downstream rerun; kill the job and a rerun resumes at the
first unfinished step. Any edit under a watched tree reruns every step: the runner cannot tell
which files a command's Hydra composition read, and a stale cached stage is worse than a rerun.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DONE_FILE = "e2e_step.json"


@dataclass
class Step:
    name: str
    command: list[str]
    output: Path  # the artifact directory this step writes
    parents: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class StepResult:
    name: str
    status: str  # "ran" | "cached"
    seconds: float
    output: Path


class StepFailed(RuntimeError):
    pass


def step_key(step: Step, parent_keys: list[str], watched: str = "") -> str:
    payload = json.dumps({"command": step.command, "parents": parent_keys, "watched": watched}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def tree_fingerprint(roots: list[Path]) -> str:
    """sha256 over the relative paths and bytes of every file under ``roots`` (sorted)."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _read_done(output: Path) -> dict | None:
    try:
        return json.loads((output / DONE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _run_logged(command: list[str], log_path: Path, env: dict[str, str]) -> int:
    """Run `command`, streaming its output to our stdout and to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=40)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log_file.write(line)
            tail.append(line)
        code = proc.wait()
    if code != 0:
        raise StepFailed(f"exit code {code}: {' '.join(command)}\n--- last lines of {log_path} ---\n" + "".join(tail))
    return code


def run_steps(
    steps: list[Step], log_dir: Path, env: dict[str, str] | None = None, watched: list[Path] | None = None
) -> list[StepResult]:
    env = {**os.environ, **(env or {})}
    fingerprint = tree_fingerprint(watched or [])
    keys: dict[str, str] = {}
    results: list[StepResult] = []
    for index, step in enumerate(steps, 1):
        missing = [p for p in step.parents if p not in keys]
        if missing:
            raise ValueError(f"step {step.name!r} names parents {missing} that do not run before it")
        key = step_key(step, [keys[p] for p in step.parents], fingerprint)
        keys[step.name] = key
        done = _read_done(step.output)
        header = f"[{index}/{len(steps)}] {step.name}"
        if done is not None and done.get("key") == key:
            log.info("%s: cached (%s)", header, step.output)
            print(f"\n=== {header}: already complete in {step.output}, skipped ===", flush=True)
            results.append(StepResult(step.name, "cached", float(done.get("seconds", 0.0)), step.output))
            continue
        print(f"\n=== {header}: {step.description or ''}\n$ {' '.join(step.command)}", flush=True)
        start = time.perf_counter()
        try:
            _run_logged(step.command, log_dir / f"{index:02d}-{step.name}.log", env)
        except StepFailed as err:
            raise StepFailed(f"step {step.name!r} failed: {err}") from None
        seconds = time.perf_counter() - start
        step.output.mkdir(parents=True, exist_ok=True)
        record = {
            "step": step.name,
            "key": key,
            "command": step.command,
            "seconds": seconds,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = step.output / (DONE_FILE + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(step.output / DONE_FILE)
        results.append(StepResult(step.name, "ran", seconds, step.output))
        print(f"=== {header}: done in {seconds:.1f}s ===", flush=True)
    return results
