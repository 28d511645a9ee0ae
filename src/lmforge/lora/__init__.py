"""LoRA, DoRA and QLoRA through `peft`, and standard peft adapter directories.

Our module names equal HF Llama's (`q_proj`, ..., `down_proj`), so a `peft` config written for
an HF Llama targets the same layers here. `settings` reads `conf/peft/*.yaml`; `wrap` applies
and merges adapters; `quantize` holds QLoRA's frozen int8 base; `adapter_files` writes and reads
the `adapter_config.json` + `adapter_model.safetensors` pair peft loads onto an HF Llama export.
"""

from lmforge.lora.adapter_files import load_adapter, save_adapter
from lmforge.lora.settings import ALL_LINEAR, LoraSettings
from lmforge.lora.wrap import apply_lora, base_transformer, is_lora, merge_lora

__all__ = [
    "ALL_LINEAR",
    "LoraSettings",
    "apply_lora",
    "base_transformer",
    "is_lora",
    "load_adapter",
    "merge_lora",
    "save_adapter",
]
