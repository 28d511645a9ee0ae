"""Adapter files against peft itself: the keys and config peft writes for an HF Llama, and
`PeftModel.from_pretrained` on our HF export reproducing lmforge's LoRA, DoRA and QLoRA logits
and merged weights.

References, per variant (all on the same random weights, exported by `lmforge.hf.export_hf`):
- LoRA / DoRA: transformers' `LlamaForCausalLM` + peft's LoRA layers (`use_dora` from the file).
- QLoRA: transformers loads the same dense export with `TorchAoConfig(Int8WeightOnlyConfig())`
  (lm_head left dense), so torchao quantizes the identical fp32 weights identically, and peft
  wraps the quantized layers with its own torchao LoRA layer. That is peft's QLoRA path,
  independent of ours; only the quantization library is shared. Its merge re-quantizes to int8
  while ours exports the dense sum, so the merge check quantizes ours the same way and compares.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from torchao.utils import TorchAOBaseTensor
from transformers import LlamaForCausalLM, TorchAoConfig

from lmforge.hf import export_hf
from lmforge.lora import apply_lora, load_adapter, merge_lora, save_adapter
from lmforge.lora.quantize import quantize_base, torchao_config
from lmforge.model import ModelConfig, build_model

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
VARIANTS = {
    "lora": {},
    "dora": {"use_dora": True},
    "qlora": {"quantize_base": "int8"},
}


def settings(variant: str) -> dict:
    return {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": TARGETS, **VARIANTS[variant]}


def perturb_adapter(model: torch.nn.Module) -> None:
    """peft starts lora_B at zero (and DoRA's magnitude at the weight norm): move both."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_magnitude_vector" in name:
                param.add_(torch.randn_like(param) * 0.1)


def hf_base(directory, variant: str) -> LlamaForCausalLM:
    quant = {}
    if VARIANTS[variant].get("quantize_base"):
        quant["quantization_config"] = TorchAoConfig(torchao_config("int8"), modules_to_not_convert=["lm_head"])
    return LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32, **quant).eval()


@pytest.fixture
def trained(model_cfg, tmp_path, request):
    """(variant, lmforge peft model, base export dir, adapter dir)"""
    variant = request.param
    base = build_model(ModelConfig(**{**model_cfg, "tie_embeddings": variant == "dora"}))
    base_dir = export_hf(base, tmp_path / "base")  # dense, before QLoRA quantizes it in place
    model = apply_lora(base, settings(variant)).eval()
    perturb_adapter(model)
    adapter_dir = save_adapter(model, tmp_path / "adapter", str(base_dir))
    return variant, model, base_dir, adapter_dir


@pytest.mark.parity
@pytest.mark.parametrize("trained", list(VARIANTS), indirect=True)
def test_peft_on_the_hf_export_reproduces_lmforge_logits(trained):
    variant, model, base_dir, adapter_dir = trained
    ids = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        ours = model(ids)
        base_logits = hf_base(base_dir, variant)(ids).logits
        theirs = PeftModel.from_pretrained(hf_base(base_dir, variant), adapter_dir).eval()(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (theirs - base_logits).abs().max().item() > 1e-2  # the adapter was loaded and matters


@pytest.mark.parity
@pytest.mark.parametrize("trained", list(VARIANTS), indirect=True)
def test_peft_merge_and_unload_equals_lmforge_merged_export(trained, tmp_path):
    variant, model, base_dir, adapter_dir = trained
    peft_merged = PeftModel.from_pretrained(hf_base(base_dir, variant), adapter_dir).merge_and_unload()
    ours_dir = export_hf(merge_lora(model), tmp_path / "merged")
    ours = LlamaForCausalLM.from_pretrained(ours_dir, dtype=torch.float32).state_dict()
    theirs = peft_merged.state_dict()
    assert set(ours) == set(theirs)
    requantized = {}
    if variant == "qlora":
        # peft re-quantizes each merged weight; quantize our dense merge the same way. Layers
        # without an adapter stay peft's original int8, which our export holds dequantized.
        requantized = quantize_base(LlamaForCausalLM.from_pretrained(ours_dir, dtype=torch.float32), "int8")
        requantized = requantized.state_dict()
    for name, tensor in theirs.items():
        mine = ours[name]
        if isinstance(tensor, TorchAOBaseTensor):
            merged = any(f".{target}." in name for target in TARGETS)
            tensor, mine = tensor.dequantize(), requantized[name].dequantize() if merged else mine
        torch.testing.assert_close(mine, tensor, rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_adapter_files_are_what_peft_writes_for_hf_llama(model_cfg, tmp_path):
    """Same key set and config (but for the base path) as peft's own save of the same adapter on HF Llama."""
    for variant in ("lora", "dora"):
        base = build_model(ModelConfig(**model_cfg))
        base_dir = export_hf(base, tmp_path / variant / "base")
        ours_dir = save_adapter(apply_lora(base, settings(variant)), tmp_path / variant / "ours", str(base_dir))
        config = LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM", **VARIANTS[variant]
        )
        reference = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), config)
        reference.save_pretrained(tmp_path / variant / "peft")

        def keys(directory):
            with safe_open(str(directory / "adapter_model.safetensors"), "pt") as f:
                return set(f.keys()), f.metadata()

        assert keys(ours_dir) == keys(tmp_path / variant / "peft")
        ours_cfg = json.loads((ours_dir / "adapter_config.json").read_text())
        peft_cfg = json.loads((tmp_path / variant / "peft" / "adapter_config.json").read_text())
        assert ours_cfg["base_model_name_or_path"] == str(base_dir)
        differing = {k for k in ours_cfg.keys() | peft_cfg.keys() if ours_cfg.get(k) != peft_cfg.get(k)}
        # peft records its base as the path the HF model was loaded from (the same directory here).
        assert differing <= {"target_modules"}, differing
        assert set(ours_cfg["target_modules"]) == set(peft_cfg["target_modules"])
        assert ours_cfg["task_type"] == "CAUSAL_LM" and ours_cfg["use_dora"] is (variant == "dora")


@pytest.mark.parity
def test_an_adapter_peft_wrote_for_hf_llama_loads_into_lmforge(model_cfg, tmp_path):
    base = build_model(ModelConfig(**model_cfg))
    base_dir = export_hf(base, tmp_path / "base")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM", use_dora=True)
    reference = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32), config).eval()
    perturb_adapter(reference)
    reference.save_pretrained(tmp_path / "peft")
    ids = torch.randint(0, 512, (1, 12))
    with torch.no_grad():
        expected = reference(ids).logits
        got = load_adapter(base, tmp_path / "peft").eval()(ids)
    assert (got - expected).abs().max().item() <= 1e-5
