"""Training callbacks: throughput + MFU, non-finite loss guard, a `last.ckpt` saved at the end."""

from lmforge.callbacks.last_checkpoint import LastCheckpoint
from lmforge.callbacks.nan_guard import NonFiniteGuard, NonFiniteLossError
from lmforge.callbacks.throughput import ThroughputMFU

__all__ = ["LastCheckpoint", "NonFiniteGuard", "NonFiniteLossError", "ThroughputMFU"]
