"""Training callbacks: throughput + MFU, non-finite loss guard."""

from lmforge.callbacks.nan_guard import NonFiniteGuard, NonFiniteLossError
from lmforge.callbacks.throughput import ThroughputMFU

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "ThroughputMFU"]
