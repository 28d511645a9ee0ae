"""LoRA through peft: what trains, merging, and the separately saved adapter."""

from __future__ import annotations

import pytest
import torch

from lmforge.lora import apply_lora, load_adapter, merge_lora, save_adapter
from lmforge.model import ModelConfig, Transformer, build_model

LORA = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def adapted_model(model_cfg) -> tuple[torch.nn.Module, dict]:
    base = build_model(ModelConfig(**model_cfg))
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(base, LORA)
    with torch.no_grad():  # peft starts lora_B at zero; make the adapter actually do something
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return model, base_state


def test_only_adapter_parameters_get_gradients(model_cfg):
    model, _ = adapted_model(model_cfg)
    ids = torch.randint(0, 512, (2, 10))
    model(ids).logsumexp(-1).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad, "no gradients at all"
    assert all("lora_A" in n or "lora_B" in n for n in with_grad)
    targeted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in with_grad}
    assert targeted == set(LORA["target_modules"])


@pytest.mark.parity
def test_merge_and_unload_gives_the_same_logits(model_cfg):
    model, base_state = adapted_model(model_cfg)
    ids = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        adapted = model(ids)
        with model.disable_adapter():
            base_logits = model(ids)
    merged = merge_lora(model)
    assert type(merged) is Transformer
    assert set(merged.state_dict()) == set(base_state)  # plain Transformer names again
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), adapted, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(adapted, base_logits, atol=1e-4)  # the adapter mattered


def test_adapter_saved_separately_and_reloaded(model_cfg, tmp_path):
    model, base_state = adapted_model(model_cfg)
    ids = torch.randint(0, 512, (1, 9))
    with torch.no_grad():
        expected = model(ids)
    directory = save_adapter(model, tmp_path / "adapter")
    assert (directory / "adapter_config.json").is_file() and (directory / "adapter_model.safetensors").is_file()
    adapter_bytes = (directory / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < sum(v.numel() * 4 for v in base_state.values()) / 4  # adapter only
    fresh = build_model(ModelConfig(**model_cfg))
    fresh.load_state_dict(base_state)
    with torch.no_grad():
        torch.testing.assert_close(load_adapter(fresh, directory)(ids), expected)


def test_unknown_target_module_is_refused(model_cfg):
    with pytest.raises(ValueError, match="qkv_proj"):
        apply_lora(build_model(ModelConfig(**model_cfg)), {"rank": 4, "target_modules": ["qkv_proj"]})
