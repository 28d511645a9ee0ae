"""Parameter counts of every named size, on the meta device, against HF's own Llama."""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from lmforge.config_paths import conf_dir
from lmforge.hf import to_hf_config
from lmforge.model import ModelConfig, build_model

CONF_DIR = conf_dir() / "model"
MODEL_YAMLS = sorted(CONF_DIR.glob("*.yaml"))


def meta_count(cfg: ModelConfig) -> int:
    model = build_model(cfg, device="meta")
    return sum(p.numel() for p in model.parameters())  # tied weights are yielded once


def hf_meta_count(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**to_hf_config(cfg)))
    return sum(p.numel() for p in model.parameters())


def load_yaml(name: str) -> ModelConfig:
    return ModelConfig(**yaml.safe_load((CONF_DIR / f"{name}.yaml").read_text()))


@pytest.mark.parametrize(("name", "expected"), [("7b", 6_738_415_616), ("8b", 8_030_261_248)])
def test_llama_sizes_have_the_published_parameter_counts(name, expected):
    cfg = load_yaml(name)
    assert meta_count(cfg) == expected
    assert cfg.num_params() == expected


def test_every_model_yaml_is_listed():
    assert {p.stem for p in MODEL_YAMLS} >= {"tiny", "125m", "1b", "7b", "8b", "70b"}


@pytest.mark.parametrize("path", MODEL_YAMLS, ids=lambda p: p.stem)
def test_model_yaml_builds_on_meta_and_matches_hf_count(path):
    cfg = ModelConfig(**yaml.safe_load(path.read_text()))
    count = meta_count(cfg)
    assert count == cfg.num_params()
    assert count == hf_meta_count(cfg)


def test_logits_at_equals_the_full_forward_gathered():
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64))
    ids = torch.randint(0, 97, (3, 9))
    at = torch.tensor([[8, 2], [0, 5], [4, 4]])
    with torch.no_grad():
        full = model(ids)
        picked = model(ids, logits_at=at)
    torch.testing.assert_close(picked, full.gather(1, at[..., None].expand(-1, -1, 97)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_one_query_attention_equals_sdpa(kv_heads):
    """The compiled decode step's written-out attention against SDPA with GQA and a key mask."""
    import torch.nn.functional as F

    from lmforge.model import _one_query_attention

    torch.manual_seed(kv_heads)
    q = torch.randn(3, 4, 1, 8)
    k, v = torch.randn(3, kv_heads, 11, 8), torch.randn(3, kv_heads, 11, 8)
    mask = torch.rand(3, 1, 1, 11) > 0.4
    mask[..., 0] = True  # every row sees at least one key
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != 4)
    torch.testing.assert_close(_one_query_attention(q, k, v, mask), want, rtol=0, atol=1e-6)
