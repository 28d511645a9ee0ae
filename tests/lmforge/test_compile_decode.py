"""Compiled decoding: static-cache decode step == eager within 1e-5 (fp32), same greedy tokens,
and one compiled graph per (batch, cache) bucket: a second batch in the bucket does not recompile.

Inductor's CPU backend compiles the step once for the module (~tens of seconds on 2 cores);
every test reuses that graph, so shapes stay tiny and identical on purpose.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch._dynamo.utils import counters

from lmforge import generate as gen
from lmforge.generate import SamplingConfig, generate
from lmforge.model import ModelConfig, build_model

VOCAB = 101
PAD = 0
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
# Same buckets as PROMPTS (batch 3 -> 4, 7 + 6 positions -> cache 16), other lengths and size.
OTHER_PROMPTS = [[20, 21, 22], [23, 24, 25, 26, 27, 28], [29], [30, 31]]
STEPS = 6
pytestmark = pytest.mark.slow  # one inductor compile of the decode step (~1 min on 2 shared cores)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    model = build_model(cfg)
    with torch.no_grad():  # peaked distributions: no near-ties in argmax
        for param in model.parameters():
            if param.dim() > 1:
                param.mul_(6)
    return model.eval()


@pytest.fixture(scope="module")
def compiled_run(model):
    """Greedy tokens of PROMPTS through the compiled step (compiles it) and the graph count after."""
    torch._dynamo.reset()
    gen._decode_shapes.clear()
    gen._compiled_steps.clear()
    gen._static_caches.clear()
    out = generate(model, PROMPTS, SamplingConfig(max_new_tokens=STEPS, temperature=0.0, compile=True), PAD)
    return out, counters["stats"]["unique_graphs"]


def test_compiled_greedy_tokens_equal_eager(model, compiled_run):
    eager = generate(model, PROMPTS, SamplingConfig(max_new_tokens=STEPS, temperature=0.0), PAD)
    assert compiled_run[0].completions == eager.completions
    assert all(len(c) == STEPS for c in eager.completions)


def test_second_batch_shape_does_not_recompile(model, compiled_run):
    graphs = compiled_run[1]
    assert graphs >= 1
    recompiles_before = counters["recompiles"].copy()
    out = generate(model, OTHER_PROMPTS, SamplingConfig(max_new_tokens=STEPS, temperature=0.0, compile=True), PAD)
    assert counters["stats"]["unique_graphs"] == graphs
    assert counters["recompiles"] == recompiles_before
    eager = generate(model, OTHER_PROMPTS, SamplingConfig(max_new_tokens=STEPS, temperature=0.0), PAD)
    assert out.completions == eager.completions


def test_compiled_step_logits_equal_eager_and_full_recompute(model, compiled_run):
    """fp32: the compiled step's logits match the same step run eagerly and a cache-free forward."""
    rows, cache_len = 4, 16
    prompts = PROMPTS + [[PAD]]
    ids, _, lengths = gen._right_pad(prompts, PAD, rows, torch.device("cpu"))
    width = ids.shape[1]
    caches = []
    for _ in range(2):
        cache = model.new_kv_cache(rows, cache_len, static=True)
        with torch.no_grad():
            model(ids, kv_cache=cache)
        cache.write_pos = torch.tensor([width])
        caches.append(cache)
    key_mask = torch.zeros(rows, cache_len, dtype=torch.bool)
    key_mask[:, :width] = torch.arange(width)[None] < lengths[:, None]
    key_mask[:, width] = True
    tokens = torch.tensor([[40], [41], [42], [43]])
    step = gen.compiled_decode_step("cpu")
    with torch.no_grad():
        compiled = step(model, tokens, lengths[:, None], key_mask[:, None, None], caches[0]).clone()
        eager = gen._decode_step(model, tokens, lengths[:, None], key_mask[:, None, None], caches[1])
        for row, prompt in enumerate(prompts):
            full = model(torch.tensor([[*prompt, int(tokens[row])]]))[0, -1]
            torch.testing.assert_close(compiled[row], full, rtol=0, atol=1e-5)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)


def test_compiles_are_bounded(model, compiled_run, monkeypatch, caplog):
    """Past MAX_DECODE_COMPILES shapes a new bucket decodes eagerly (same tokens) and says so."""
    monkeypatch.setattr(gen, "MAX_DECODE_COMPILES", len(gen._decode_shapes))
    graphs = counters["stats"]["unique_graphs"]
    prompts = [[5, 6], [7]]  # batch bucket 2: a shape not compiled yet
    with caplog.at_level(logging.WARNING, logger="lmforge.generate"):
        out = generate(model, prompts, SamplingConfig(max_new_tokens=STEPS, temperature=0.0, compile=True), PAD)
    assert "decodes eagerly" in caplog.text
    assert counters["stats"]["unique_graphs"] == graphs
    assert (
        out.completions
        == generate(model, prompts, SamplingConfig(max_new_tokens=STEPS, temperature=0.0), PAD).completions
    )


def test_frozen_step_follows_weight_updates(model, caplog):
    """freeze_weights folds the weights into the graph as constants. Its tokens equal eager, and
    after an in-place update (what an optimizer step does) the step is rebuilt, not reused: a
    stale frozen step would decode with the old weights. Unpeaked weights: the update must
    change the greedy tokens, or equality with eager would not tell the two apart."""
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    fresh = build_model(cfg).eval()
    frozen = SamplingConfig(max_new_tokens=STEPS, temperature=0.0, compile=True, freeze_weights=True)
    eager = SamplingConfig(max_new_tokens=STEPS, temperature=0.0)
    before = generate(fresh, PROMPTS, frozen, PAD).completions
    assert before == generate(fresh, PROMPTS, eager, PAD).completions
    with torch.no_grad():
        for param in fresh.parameters():
            if param.dim() > 1:
                param.mul_(-4)
    with caplog.at_level(logging.WARNING, logger="lmforge.generate"):
        after = generate(fresh, PROMPTS, frozen, PAD).completions
    assert after != before
    assert after == generate(fresh, PROMPTS, eager, PAD).completions
    assert "weights changed since the decode step was frozen" in caplog.text


def test_a_frozen_step_goes_with_its_model():
    """The frozen step holds a copy of the weights; deleting the model releases it."""
    import gc

    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    doomed = build_model(cfg).eval()
    key = gen._frozen_key(doomed, "cpu")
    gen._compiled_steps[key] = object()  # stands in for the compiled step; nothing is compiled here
    del doomed
    gc.collect()
    assert key not in gen._compiled_steps
