"""Drop two import-time log lines that say nothing on the machines lmforge runs on, so a user's
first screen shows lmforge's own output:
- torchao tries to load its CUDA-only kernels (`_C_mxfp8`, `_C_cutlass_90a`) and logs a warning
  for each when there is no GPU;
- torch logs a deprecation warning each time torchao registers one of its Enums with pytree.
Everything else from both loggers passes. Installed when `lmforge` is imported."""

from __future__ import annotations

import logging


class _DropCudaKernelLoadOnCpu(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not (message.startswith("Failed to load") and "/torchao/_C" in message):
            return True
        import torch

        return torch.cuda.is_available()  # on a GPU a kernel that fails to load matters


class _DropEnumRegistrationNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Calling register_constant() on Enum subclasses is deprecated" not in record.getMessage()


def install() -> None:
    logging.getLogger("torchao").addFilter(_DropCudaKernelLoadOnCpu())
    logging.getLogger("torch.utils._pytree").addFilter(_DropEnumRegistrationNotice())
