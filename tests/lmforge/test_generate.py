"""Sampling loop: cached greedy == full recompute, batching/padding invisible, filters vs brute force."""

from __future__ import annotations

import pytest
import torch

from lmforge.generate import SamplingConfig, generate, generate_chat, top_k_filter, top_p_filter
from lmforge.model import ModelConfig, build_model

VOCAB = 101
PAD = 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
    model = build_model(cfg)
    with torch.no_grad():  # larger weights: peaked distributions, no near-ties in argmax
        for param in model.parameters():
            if param.dim() > 1:
                param.mul_(6)
    return model.eval()


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [18]]


def full_recompute_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Reference: no cache, no padding, the whole sequence re-run for every token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parity
def test_cached_batched_greedy_equals_full_recompute(model):
    steps = 16
    batched = generate(model, PROMPTS, SamplingConfig(max_new_tokens=steps, temperature=0), pad_id=PAD)
    for prompt, completion in zip(PROMPTS, batched.completions):
        assert completion == full_recompute_greedy(model, prompt, steps)
        alone = generate(model, [prompt], SamplingConfig(max_new_tokens=steps, temperature=0), pad_id=PAD)
        assert alone.completions[0] == completion
    assert batched.finished == [False] * len(PROMPTS)


def test_stop_tokens_end_rows_independently(model):
    free = generate(model, PROMPTS, SamplingConfig(max_new_tokens=12, temperature=0), pad_id=PAD).completions
    stop = free[0][4]  # row 0 stops at its 5th token; other rows stop wherever this token appears
    out = generate(model, PROMPTS, SamplingConfig(max_new_tokens=12, temperature=0, stop_token_ids=[stop]), PAD)
    for row, completion in enumerate(free):
        expected = completion[: completion.index(stop)] if stop in completion else completion
        assert out.completions[row] == expected
        assert out.finished[row] == (stop in completion)
    assert out.finished[0]


@pytest.mark.parity
def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(model):
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.3, top_k=20, top_p=0.9, seed=7)
    first = generate(model, PROMPTS, cfg, PAD).completions
    assert first == generate(model, PROMPTS, cfg, PAD).completions
    other_seed = generate(model, PROMPTS, SamplingConfig(**{**cfg.__dict__, "seed": 8}), PAD).completions
    assert other_seed != first
    greedy = generate(model, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=0), PAD).completions
    top1 = generate(model, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=2.0, top_k=1, seed=0), PAD)
    assert top1.completions == greedy


def test_generate_restores_training_mode_and_builds_no_graph(model):
    model.train()
    try:
        generate(model, PROMPTS[:1], SamplingConfig(max_new_tokens=2, temperature=0), PAD)
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())


def brute_force_top_k(row: list[float], k: int) -> set[int]:
    kth = sorted(row, reverse=True)[k - 1]
    return {i for i, x in enumerate(row) if x >= kth}


def brute_force_top_p(row: list[float], p: float) -> set[int]:
    probs = torch.tensor(row).softmax(-1).tolist()
    kept, mass = set(), 0.0
    for i in sorted(range(len(row)), key=lambda j: -probs[j]):
        kept.add(i)
        mass += probs[i]
        if mass >= p:
            break
    return kept


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parity
def test_top_k_and_top_p_match_brute_force(seed):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(seed)) * 3
    for k in (1, 3, 17, 50):
        kept = top_k_filter(logits, k).isfinite()
        for row in range(4):
            assert set(kept[row].nonzero().flatten().tolist()) == brute_force_top_k(logits[row].tolist(), k)
    for p in (0.05, 0.5, 0.9, 0.999):
        kept = top_p_filter(logits, p).isfinite()
        for row in range(4):
            assert set(kept[row].nonzero().flatten().tolist()) == brute_force_top_p(logits[row].tolist(), p)


def constant_model(vocab_size: int, favourite: int):
    """A model whose next token is always `favourite`: zero blocks leave the (all-ones)
    embedding as the hidden state, and only the favourite's lm_head row is non-zero."""
    model = build_model(ModelConfig(vocab_size=vocab_size, d_model=32, n_layers=1, n_heads=2, ffn_dim=64))
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(1.0 if name.endswith(("norm.weight", "embed_tokens.weight")) else 0.0)
        model.lm_head.weight[favourite] = 1.0
    return model


def test_generate_chat_stops_at_end_of_turn_and_decodes(bpe):
    convs = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "how are you?"}]]
    cfg = SamplingConfig(max_new_tokens=5, temperature=0)
    assert generate_chat(constant_model(bpe.vocab_size, bpe.end_of_turn_id), bpe, convs, cfg) == ["", ""]
    assert generate_chat(constant_model(bpe.vocab_size, bpe.eos_id), bpe, convs, cfg) == ["", ""]
    word = bpe.encode(" the")
    assert len(word) == 1
    replies = generate_chat(constant_model(bpe.vocab_size, word[0]), bpe, convs, cfg)
    assert replies == [" the" * 5] * 2


def test_draw_follows_the_distribution():
    """Frequencies of 40,000 draws against the probabilities themselves; a zero entry never comes up."""
    from lmforge.generate import draw

    probs = torch.tensor([0.5, 0.0, 0.25, 0.125, 0.0625, 0.0625, 0.0])
    gen = torch.Generator().manual_seed(0)
    n = 40_000
    counts = torch.zeros(len(probs))
    for _ in range(n // 1000):
        counts += torch.bincount(draw(probs.expand(1000, -1), gen), minlength=len(probs))
    assert counts[probs == 0].sum() == 0
    freq = counts / n
    # 4 standard errors of a binomial frequency at each entry
    assert torch.all((freq - probs).abs() <= 4 * (probs * (1 - probs) / n).sqrt() + 1e-9), freq
