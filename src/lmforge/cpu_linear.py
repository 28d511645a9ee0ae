"""fp32 linear layers through oneDNN on CPU, for `compile=true` training.

torch sends an fp32 `mm` on CPU to MKL. oneDNN (the library inductor's frozen inference graphs
call) runs the same products 1.1-1.6x faster on an AVX2 EPYC and 1.4-2.8x on an AVX-512 one, at
a training step's shapes. `cpu_linear` is a custom op whose forward and both backward GEMMs go
through oneDNN, so dynamo traces it as one node and autograd stays exact. The results differ from
MKL's only in summation order (about 1e-6 relative).

`use_onednn_linears(module)` points each bias-free `nn.Linear` in `module` at it, on x86 builds of
torch with oneDNN (elsewhere, e.g. Apple silicon, it changes nothing). The module keeps
its class and parameter names (checkpoints, peft's LoRA targets, FSDP plans), and any call it
cannot serve (not CPU, not fp32, a DTensor or quantized weight) goes to `F.linear` as before.
"""

from __future__ import annotations

import platform
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# oneDNN's fp32 GEMMs were measured against MKL's on x86 only; other builds may lack the op.
ONEDNN_LINEARS = (
    platform.machine().lower() in ("x86_64", "amd64")
    and torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
)


def _onednn_mm_t(x: Tensor, weight: Tensor) -> Tensor:
    """x [M, K] @ weight[N, K].T through oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight.contiguous(), None, "none", [], "")


@torch.library.custom_op("lmforge::cpu_linear", mutates_args=())
def cpu_linear(x: Tensor, weight: Tensor) -> Tensor:
    """F.linear(x, weight) without bias, for fp32 CPU tensors."""
    return _onednn_mm_t(x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[0])


@cpu_linear.register_fake
def _(x: Tensor, weight: Tensor) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _save_inputs(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor):
    x, weight = ctx.saved_tensors
    grad_2d, x_2d = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:  # grad [M, N] @ weight [N, K]
        grad_x = cpu_linear(grad_2d, weight.t().contiguous()).view_as(x)
    if ctx.needs_input_grad[1]:  # grad.T [N, M] @ x [M, K]
        grad_w = cpu_linear(grad_2d.t().contiguous(), x_2d.t().contiguous())
    return grad_x, grad_w


cpu_linear.register_autograd(_backward, setup_context=_save_inputs)


def _forward(self: nn.Linear, x: Tensor) -> Tensor:
    weight = self.weight
    if self.bias is None and type(weight) is nn.Parameter and x.device.type == "cpu":
        if x.dtype == torch.float32 and weight.dtype == torch.float32:
            return cpu_linear(x, weight)
    return F.linear(x, weight, self.bias)


def use_onednn_linears(module: nn.Module) -> int:
    """Route every plain `nn.Linear` under `module` through `cpu_linear`; returns how many."""
    if not ONEDNN_LINEARS:
        return 0
    count = 0
    for sub in module.modules():
        if type(sub) is nn.Linear:
            sub.forward = types.MethodType(_forward, sub)
            count += 1
    return count
