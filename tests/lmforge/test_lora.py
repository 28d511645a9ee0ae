"""LoRA through peft: what trains, merging, QLoRA's int8 base, and the separately saved adapter
(parity with peft on an HF Llama: test_lora_peft_parity.py)."""

from __future__ import annotations

import pytest
import torch

from lmforge.lora import apply_lora, load_adapter, merge_lora, save_adapter
from lmforge.model import ModelConfig, Transformer, build_model

LORA = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def adapted_model(model_cfg, extra: dict | None = None) -> tuple[torch.nn.Module, dict]:
    base = build_model(ModelConfig(**model_cfg))
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(base, {**LORA, **(extra or {})})
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


def test_unknown_base_quantization_is_refused_naming_the_key(model_cfg):
    with pytest.raises(ValueError, match=r"peft.quantize_base='nf3'"):
        apply_lora(build_model(ModelConfig(**model_cfg)), {**LORA, "quantize_base": "nf3"})


def test_qlora_trains_only_the_adapter_over_an_int8_base(model_cfg):
    from torchao.utils import TorchAOBaseTensor

    model = apply_lora(build_model(ModelConfig(**model_cfg)), {**LORA, "quantize_base": "int8"})
    base = model.get_base_model()
    projections = [m.weight for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    quantized = [w for w in projections if isinstance(w, TorchAOBaseTensor)]
    assert len(quantized) == 7 * model_cfg["n_layers"]  # every decoder projection; lm_head stays dense
    assert not isinstance(base.lm_head.weight, TorchAOBaseTensor)
    model(torch.randint(0, 512, (2, 10))).logsumexp(-1).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in n for n in with_grad)


@pytest.mark.parity
def test_qlora_merge_is_the_dequantized_base_plus_the_update(model_cfg):
    model, _ = adapted_model(model_cfg, {"quantize_base": "int8"})
    ids = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        adapted = model(ids)
    merged = merge_lora(model)
    assert type(merged) is Transformer
    assert all(type(p) is torch.nn.Parameter for p in merged.parameters())  # dense again, exportable
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "option,use_dora,quantize_base", [("lora", False, None), ("dora", True, None), ("qlora", False, "int8")]
)
def test_peft_options_compose_to_settings_and_the_adapter_writer(
    compose_cfg, tmp_path, option, use_dora, quantize_base
):
    from omegaconf import OmegaConf

    from lmforge.lora import LoraSettings

    cfg = compose_cfg([f"peft={option}"], run_dir=tmp_path)
    settings = LoraSettings.from_dict(OmegaConf.to_container(cfg.peft, resolve=True))
    assert (settings.name, settings.use_dora, settings.quantize_base) == (option, use_dora, quantize_base)
    writer = cfg.callbacks.adapter_export
    assert writer._target_ == "lmforge.callbacks.adapter_export.AdapterExport"
    assert writer.dirpath == f"{tmp_path}/adapters"
    assert "adapter_export" not in compose_cfg(["peft=none"], run_dir=tmp_path).callbacks


def test_adapter_without_hf_names_is_refused_naming_the_file(model_cfg, tmp_path):
    from safetensors.torch import load_file, save_file

    model, _ = adapted_model(model_cfg)
    directory = save_adapter(model, tmp_path / "adapter")
    weights = directory / "adapter_model.safetensors"
    # The layout lmforge wrote before: peft's prefix straight onto our names, no HF `model.` level.
    old_layout = {k.replace("base_model.model.model.", "base_model.model."): v for k, v in load_file(weights).items()}
    save_file(old_layout, weights)
    with pytest.raises(ValueError, match="adapter_model.safetensors: not HF Llama adapter keys"):
        load_adapter(build_model(ModelConfig(**model_cfg)), directory)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="has no adapter_model.safetensors"):
        load_adapter(build_model(ModelConfig(**model_cfg)), directory)
