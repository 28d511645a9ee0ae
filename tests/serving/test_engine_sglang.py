"""SGLang's own code (in .venv-sglang, run by serving/sglang_conformance.py) reads every export format:
its ModelConfig, the compressed-tensors scheme it picks for each layer, and the tensors its
DefaultModelLoader loads into its LlamaForCausalLM, compared here bit for bit with the export.

A change on either side (our export format, or SGLang's parsing) changes what is asserted here."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.serving.engine_env import FORMATS, run_engine

pytestmark = pytest.mark.slow

# The linear scheme SGLang 0.5.23 picks (README, Serving); None: the dense path.
EXPECTED_SCHEME = {
    "none": None,
    "w8a8": "CompressedTensorsW8A8Int8",
    "w4a16": "CompressedTensorsWNA16",
    "int8wo": "CompressedTensorsWNA16",
    "fp8": "CompressedTensorsW8A16Fp8",
}
# SGLang fuses these projections; its loader stacks the parts along the output dim.
FUSED = {
    "self_attn.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    "mlp.gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"],
}
LINEARS = ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def conformance(engine_exports, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sglang_conformance")
    # -P: the script's folder (serving/, whose module names could shadow others) stays off sys.path.
    paths = [str(engine_exports[quant]) for quant in FORMATS]
    run_engine("sglang", ["-P", "serving/sglang_conformance.py", "--out", str(out), *paths], timeout=600)
    report = json.loads((out / "sglang_conformance.json").read_text())
    assert report["sglang"] == "0.5.23", "serving/ targets SGLang 0.5.23; update the expectations with it"
    return dict(zip(FORMATS, report["exports"], strict=True))


@pytest.mark.parametrize("quant", FORMATS)
def test_model_config_reads_the_export(conformance, memorised_checkpoint, quant):
    config = conformance[quant]["model_config"]
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["quantization"] == (None if quant == "none" else "compressed-tensors")
    assert config["dtype"] == "bfloat16"
    assert config["context_len"] == memorised_checkpoint.config.max_seq_len
    assert config["num_hidden_layers"] == memorised_checkpoint.config.n_layers
    assert conformance[quant]["model_class"] == "LlamaForCausalLM"
    assert conformance[quant]["quant_config"] == (None if quant == "none" else "CompressedTensorsConfig")


@pytest.mark.parametrize("quant", FORMATS)
def test_scheme_picked_for_every_linear(conformance, memorised_checkpoint, quant):
    layers = memorised_checkpoint.config.n_layers
    linears = [f"model.layers.{i}.{name}" for i in range(layers) for name in LINEARS]
    result = conformance[quant]
    if EXPECTED_SCHEME[quant] is None:
        assert result["schemes"] == {}
        assert set(result["linear_methods"].values()) == {"UnquantizedLinearMethod"}
    else:
        # lm_head and the embeddings stay dense (`ignore: ["lm_head"]`).
        assert result["schemes"] == dict.fromkeys(linears, EXPECTED_SCHEME[quant])
        assert set(result["linear_methods"].values()) == {"CompressedTensorsLinearMethod"}
    assert sorted(result["linear_methods"]) == sorted(linears)


@pytest.mark.parametrize("quant", FORMATS)
def test_loaded_tensors_equal_the_export(conformance, engine_exports, quant):
    ours = load_file(engine_exports[quant] / "model.safetensors")
    loaded = load_file(conformance[quant]["loaded"])
    consumed = set()
    for name, tensor in loaded.items():
        sources = [name]
        for fused, parts in FUSED.items():
            if f".{fused}." in name:
                sources = [name.replace(fused, part) for part in parts]
        consumed.update(sources)
        if name.endswith(".weight_shape"):
            # SGLang keeps one [out, in] per fused layer: the last part's (its kernels use only `in`).
            assert tensor.tolist() == ours[sources[-1]].tolist(), name
            continue
        expected = torch.cat([ours[s] for s in sources]) if len(sources) > 1 else ours[name]
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape, name
        # Compared as bits, so fp8 and NaN payloads count too.
        assert torch.equal(tensor.view(torch.uint8), expected.view(torch.uint8)), name
    assert consumed == set(ours), f"export tensors SGLang did not load: {sorted(set(ours) - consumed)}"


@pytest.mark.parametrize("quant", FORMATS)
def test_post_load_repacking_is_where_cuda_starts(conformance, quant):
    """Dense and W8A8Int8 finish loading on the CPU; WNA16 and W8A16Fp8 repack for the Marlin
    kernels, which is the first step that needs an NVIDIA GPU (scripts/gpu_check.sh runs it)."""
    post_load = conformance[quant]["post_load"]
    if quant in ("none", "w8a8"):
        assert post_load == "ok"
    else:
        assert post_load.startswith("RuntimeError: Found no NVIDIA driver"), post_load
