"""Standard peft adapter directories: `adapter_config.json` + `adapter_model.safetensors`.

The files are what peft writes for an HF `LlamaForCausalLM`: keys under HF's names
(`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, `...lora_magnitude_vector`
for DoRA), `task_type: CAUSAL_LM` and the base's path, so
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir)` loads them.
Our peft model wraps `Transformer`, whose names lack HF's `model.` level; `lmforge.hf` maps them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from lmforge.hf import from_hf_name, to_hf_name
from lmforge.lora.wrap import whole_on_cpu
from lmforge.model import Transformer

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's own prefix, in front of the wrapped model's names
ADAPTER = "default"


def to_hf_adapter_key(name: str) -> str:
    return PEFT_PREFIX + to_hf_name(name.removeprefix(PEFT_PREFIX))


def from_hf_adapter_key(name: str) -> str:
    if not name.startswith(PEFT_PREFIX):
        raise KeyError(f"adapter key {name!r} does not start with peft's {PEFT_PREFIX!r}")
    return PEFT_PREFIX + from_hf_name(name.removeprefix(PEFT_PREFIX))


def adapter_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's tensors under HF adapter keys (collective under FSDP2)."""
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return {to_hf_adapter_key(name): whole_on_cpu(tensor) for name, tensor in state.items()}


def hf_adapter_config(model: PeftModel, base_model_name_or_path: str | None) -> LoraConfig:
    config = copy.deepcopy(model.peft_config[ADAPTER])
    config.task_type = "CAUSAL_LM"
    config.base_model_name_or_path = base_model_name_or_path
    config.inference_mode = True
    return config


def write_adapter(state: dict[str, torch.Tensor], config: LoraConfig, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))
    save_file(state, str(directory / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
    return directory


def save_adapter(model: PeftModel, directory: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write `model`'s adapter as a standard peft directory for an HF Llama base at `base_model_name_or_path`."""
    return write_adapter(adapter_state_dict(model), hf_adapter_config(model, base_model_name_or_path), directory)


def load_adapter(base: Transformer, directory: str | Path, trainable: bool = False) -> PeftModel:
    """Attach a standard peft adapter directory (ours or peft's, for an HF Llama) to our `Transformer`."""
    directory = Path(directory)
    for name in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} has no {name}: not a peft adapter directory")
    config = LoraConfig.from_pretrained(str(directory))
    if config.peft_type != "LORA":  # PeftType is a str enum
        raise ValueError(f"{directory / ADAPTER_CONFIG_FILE}: peft_type={config.peft_type}; only LORA is supported")
    config.task_type = None  # our forward is not HF's (see lmforge.lora.settings.LoraSettings.to_peft)
    config.inference_mode = not trainable
    wrapped = get_peft_model(base, config)
    try:
        state = {from_hf_adapter_key(k): v for k, v in load_file(str(directory / ADAPTER_WEIGHTS_FILE)).items()}
    except KeyError as err:  # e.g. lmforge's pre-HF-names layout, without the `model.` level
        raise ValueError(f"{directory / ADAPTER_WEIGHTS_FILE}: not HF Llama adapter keys: {err}") from None
    result = set_peft_model_state_dict(wrapped, state, adapter_name=ADAPTER)
    if result.unexpected_keys:
        raise ValueError(f"{directory / ADAPTER_WEIGHTS_FILE}: keys match no layer: {result.unexpected_keys[:5]}")
    expected = set(get_peft_model_state_dict(wrapped, adapter_name=ADAPTER))
    absent = sorted(expected - set(state))
    if absent:
        raise ValueError(f"{directory / ADAPTER_WEIGHTS_FILE} lacks adapter tensors {absent[:5]}")
    return wrapped
