"""HF parity both ways: our export loads in `LlamaForCausalLM`, and an HF Llama imports into ours,
with the same logits. Norm weights are randomised too, so a mis-mapped RMSNorm cannot hide."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from lmforge.hf import export_hf, from_hf_config, load_hf, to_hf_config
from lmforge.model import ModelConfig, build_model

TOLERANCE = 1e-4  # fp32 max abs logit difference


def randomize_(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.05 * noise)


def tiny_config(tie: bool, vocab: int = 320) -> ModelConfig:
    # GQA (4 query heads share 2 kv heads) and a non-default theta: both must survive the trip.
    return ModelConfig(
        vocab_size=vocab,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=96,
        max_seq_len=64,
        rope_theta=500000.0,
        norm_eps=1e-6,
        tie_embeddings=tie,
        name="t",
    )


def max_logit_diff(ours, hf, ids) -> float:
    with torch.no_grad():
        return (ours(ids) - hf(ids).logits).abs().max().item()


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parity
def test_export_loads_in_transformers_with_equal_logits(tmp_path, tie, bpe):
    model = build_model(tiny_config(tie, vocab=bpe.vocab_size))
    randomize_(model, seed=1)
    model.eval()
    export_hf(model, tmp_path, tokenizer=bpe, manifest={"parent": "unit-test"})
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert hf.config.tie_word_embeddings is tie
    assert (hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()) is tie
    ids = torch.randint(0, bpe.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    assert max_logit_diff(model, hf, ids) < TOLERANCE

    generation = GenerationConfig.from_pretrained(tmp_path)
    assert generation.eos_token_id == [bpe.end_of_turn_id, bpe.eos_id]
    assert generation.pad_token_id == bpe.pad_id
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tokenizer("hello world", add_special_tokens=False)["input_ids"] == bpe.encode("hello world")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tokenizer_fingerprint"] == bpe.fingerprint and manifest["parent"] == "unit-test"


def test_config_json_is_the_flat_portable_form():
    config = to_hf_config(tiny_config(tie=False))
    assert config["rope_theta"] == 500000.0 and "rope_parameters" not in config
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["torch_dtype"] == "float32"
    assert from_hf_config(config) == tiny_config(tie=False)


def test_sharded_export_round_trips(tmp_path):
    model = build_model(tiny_config(tie=False))
    randomize_(model, seed=2)
    export_hf(model, tmp_path, max_shard_bytes=60_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    reloaded, _ = load_hf(tmp_path)
    ids = torch.randint(0, 320, (1, 20), generator=torch.Generator().manual_seed(1))
    assert max_logit_diff(model.eval(), hf, ids) < TOLERANCE
    with torch.no_grad():
        assert torch.equal(reloaded(ids), model(ids))


def test_bf16_export_stores_bf16(tmp_path):
    model = build_model(tiny_config(tie=True))
    export_hf(model, tmp_path, dtype=torch.bfloat16)
    reloaded, _ = load_hf(tmp_path)
    assert reloaded.embed_tokens.weight.dtype == torch.bfloat16
    assert reloaded.lm_head.weight is reloaded.embed_tokens.weight
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parity
def test_hf_llama_imports_with_equal_logits(tmp_path, tie):
    torch.manual_seed(0)
    hf_config = LlamaConfig(
        vocab_size=300,
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=160,
        max_position_embeddings=128,
        rope_theta=20000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
    )
    hf = LlamaForCausalLM(hf_config)
    randomize_(hf, seed=3)
    hf.eval().save_pretrained(tmp_path)
    model, cfg = load_hf(tmp_path)
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.rope_theta, cfg.tie_embeddings) == (6, 2, 20000.0, tie)
    assert (model.lm_head.weight is model.embed_tokens.weight) is tie
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(2))
    assert max_logit_diff(model.eval(), hf, ids) < TOLERANCE


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}),
        ("attention_bias", True),
        ("mlp_bias", True),
        ("hidden_act", "gelu"),
        ("model_type", "gpt2"),
    ],
)
def test_import_refuses_unsupported_configs_naming_the_key(key, value):
    config = {**to_hf_config(tiny_config(tie=False)), key: value}
    with pytest.raises(ValueError, match=key):
        from_hf_config(config)


def test_import_reads_the_transformers_5_rope_parameters_form():
    config = to_hf_config(tiny_config(tie=False))
    del config["rope_theta"]
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": 123456.0}
    assert from_hf_config(config).rope_theta == 123456.0
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1.0, "factor": 4.0}
    with pytest.raises(ValueError, match="rope_type"):
        from_hf_config(config)
