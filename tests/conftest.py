"""Session-wide test settings. Area fixtures live in tests/<area>/conftest.py."""

import os

# wandb fails with no key and no mode; tests never reach the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCHAO_NO_KERNEL_WARNINGS", "1")
