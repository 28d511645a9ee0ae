"""Packed rows attend block-diagonally from document ids, with no dense mask: logits and
gradients equal today's dense [B, 1, T, T] path (`block_causal_mask`) in fp32."""

from __future__ import annotations

import torch

from lmforge.data.chat import block_causal_mask
from lmforge.model import DocumentMask, ModelConfig, build_model


def packed_inputs():
    torch.manual_seed(1)
    # Row 0: three documents then padding; row 1: one document filling the row.
    doc_ids = torch.tensor([[0] * 5 + [1] * 7 + [2] * 3 + [-1] * 5, [3] * 20])
    positions = torch.zeros_like(doc_ids)
    for row in range(doc_ids.shape[0]):
        for doc in doc_ids[row].unique():
            where = doc_ids[row] == doc
            positions[row, where] = torch.arange(int(where.sum()))
    ids = torch.randint(1, 97, doc_ids.shape)
    return ids, positions, doc_ids


def test_document_ids_match_the_dense_block_causal_mask():
    cfg = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32)
    torch.manual_seed(0)
    model = build_model(cfg)
    ids, positions, doc_ids = packed_inputs()
    dense_logits = model(ids, position_ids=positions, attn_mask=block_causal_mask(doc_ids))
    dense_logits.square().mean().backward()
    dense_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    doc_logits = model(ids, position_ids=positions, attn_mask=doc_ids)
    doc_logits.square().mean().backward()
    torch.testing.assert_close(doc_logits, dense_logits, rtol=0, atol=1e-5)
    for p, ref in zip(model.parameters(), dense_grads, strict=True):
        torch.testing.assert_close(p.grad, ref, rtol=1e-4, atol=1e-6)
    # Not vacuous: plain causal attention over the row (documents see each other) differs.
    leaky = model(ids, position_ids=positions)
    assert (leaky - dense_logits).abs().max() > 1e-3


def test_document_runs_and_dense_form():
    doc_ids = torch.tensor([[4, 4, 7, 7, 7, -1], [2, 2, 2, 2, 2, 2]])
    mask = DocumentMask(doc_ids)
    assert mask.runs == [[(0, 2), (2, 5), (5, 6)], [(0, 6)]]
    assert torch.equal(mask.dense(), block_causal_mask(doc_ids))
