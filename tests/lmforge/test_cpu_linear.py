"""`lmforge.cpu_linear`: oneDNN linears for compile=true on CPU, checked against F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.cpu_linear import cpu_linear, use_onednn_linears
from lmforge.model import ModelConfig, build_model


@pytest.mark.parametrize("shape", [(5, 48), (3, 17, 48)])
def test_forward_and_both_gradients_equal_f_linear(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(40, 48, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 40)
    want = F.linear(x, weight)
    want_x, want_w = torch.autograd.grad(want, (x, weight), upstream)
    got = cpu_linear(x, weight)
    got_x, got_w = torch.autograd.grad(got, (x, weight), upstream)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_x, want_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-5)


def test_a_frozen_weight_gets_no_gradient_work():
    x = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(6, 8)  # LoRA's frozen base weight
    (grad_x,) = torch.autograd.grad(cpu_linear(x, weight).sum(), (x,))
    torch.testing.assert_close(grad_x, weight.sum(0).expand(4, -1), rtol=1e-6, atol=1e-6)


def test_routing_keeps_names_and_falls_back_where_it_cannot_serve(monkeypatch):
    import lmforge.cpu_linear as module

    routed = []

    def spy(x, weight):
        routed.append(tuple(weight.shape))
        return cpu_linear(x, weight)

    monkeypatch.setattr(module, "cpu_linear", spy)
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=48))
    names = [n for n, _ in model.named_parameters()]
    ids = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        before = model(ids)
        assert use_onednn_linears(model) == 8  # q, k, v, o, gate, up, down, head
        torch.testing.assert_close(model(ids), before, rtol=1e-5, atol=1e-5)
    assert len(routed) == 8
    assert [n for n, _ in model.named_parameters()] == names

    routed.clear()
    biased, bf16 = nn.Linear(8, 4), nn.Linear(8, 4, bias=False).to(torch.bfloat16)
    use_onednn_linears(biased)
    use_onednn_linears(bf16)
    x = torch.randn(3, 8)
    torch.testing.assert_close(biased(x), F.linear(x, biased.weight, biased.bias))
    bf16(x.bfloat16())
    assert routed == []  # a bias or a non-fp32 weight goes to F.linear


def test_without_onednn_nothing_is_routed(monkeypatch):
    import lmforge.cpu_linear as module

    monkeypatch.setattr(module, "ONEDNN_LINEARS", False)
    linear = nn.Linear(8, 4, bias=False)
    assert use_onednn_linears(linear) == 0
    assert "forward" not in vars(linear)
