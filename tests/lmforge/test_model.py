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
