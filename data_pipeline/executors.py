"""Executors map a picklable task over work items: local processes or Ray tasks.

Both run the same task functions on the same config; only scheduling differs. Results
come back in item order so that downstream steps are deterministic.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


def _parent_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed parent that nobody has reaped yet is a zombie, still "alive" to kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def _watch_parent(pid: int, interval: float = 0.05) -> None:
    """Pool initializer: the worker dies with the driver, even when the driver gets SIGKILL.

    Pool workers hang off the forkserver, not the driver, and a worker busy with a long shard
    would otherwise run to its end as an orphan. PR_SET_PDEATHSIG covers the worker's direct
    parent (Linux); the thread covers the driver itself.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while not _parent_gone(pid):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="watch-driver", daemon=True).start()


class LocalExecutor:
    def __init__(self, num_workers: int = 2, progress: bool = True) -> None:
        self.num_workers = max(1, num_workers)
        self.progress = progress

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str) -> list[Any]:
        if not items:
            return []
        bar = tqdm(total=len(items), desc=desc, unit="shard", disable=not self.progress)
        if self.num_workers == 1 or len(items) == 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.update()
            bar.close()
            return results
        # forkserver, not fork: a fork taken while another library's thread holds a lock (BLAS,
        # tokenizers, spaCy in the benchmark) deadlocks the child. The server imports the
        # pipeline and warms its compiled kernels once, so workers start with both ready.
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["data_pipeline.pipeline", "data_pipeline.warm_kernels"])
        workers = min(self.num_workers, len(items))
        with ctx.Pool(workers, initializer=_watch_parent, initargs=(os.getpid(),), maxtasksperchild=None) as pool:
            results = []
            for result in pool.imap(fn, items):
                results.append(result)
                bar.update()
        bar.close()
        return results

    def close(self) -> None:
        pass


class RayExecutor:
    """Ray tasks, one per shard. Connects to ``address`` or starts a local Ray."""

    def __init__(self, num_workers: int = 2, address: str | None = None, progress: bool = True) -> None:
        import ray

        self.ray = ray
        self.progress = progress
        self._started_here = not ray.is_initialized()
        if self._started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_workers, **kwargs)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str) -> list[Any]:
        if not items:
            return []
        remote_fn = self.ray.remote(num_cpus=1)(fn)
        refs = [remote_fn.remote(item) for item in items]
        pending = list(refs)
        with tqdm(total=len(refs), desc=f"{desc} (ray)", unit="shard", disable=not self.progress) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return self.ray.get(refs)  # raises the task's exception, with its traceback

    def close(self) -> None:
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(kind: str, num_workers: int, ray_address: str | None = None, progress: bool = True):
    if kind == "local":
        return LocalExecutor(num_workers, progress)
    if kind == "ray":
        return RayExecutor(num_workers, ray_address, progress)
    raise ValueError(f"executor.kind must be 'local' or 'ray', got {kind!r}")
