"""KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar))  (DESIGN §3.3).

Backends: the reference below (`torch`), the C++ kernels for CPU and CUDA (torch.ops.gencore.kl_normal),
and Triton (torch.ops.gencore_triton.kl_normal). All compiled ops are torch.library custom ops with a
fake kernel and a registered autograd formula, so torch.compile(fullgraph=True) sees them as one node.
"""
from __future__ import annotations

import torch

from gencore import _native, backends
from gencore.ops._checks import check_pair, check_reduction, compute_dtype, reduction_scale, refuse_double_backward

OP = "kl_normal"


def kl_normal_reference(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Pure-PyTorch KL term (the oracle and the `torch` backend); accumulates in float32 or better."""
    ct = compute_dtype(mu.dtype)
    m, lv = mu.to(ct), logvar.to(ct)
    term = -0.5 * (1 + lv - m * m - torch.exp(lv))
    if reduction == "none":
        return term.to(mu.dtype)
    return (term.sum() * reduction_scale(reduction, mu)).to(mu.dtype)


def kl_normal_backward_reference(grad, mu, logvar, reduction):
    ct = compute_dtype(mu.dtype)
    g = grad.to(ct) * reduction_scale(reduction, mu)
    m, lv = mu.to(ct), logvar.to(ct)
    return (g * m).to(mu.dtype), (0.5 * g * (torch.exp(lv) - 1)).to(mu.dtype)


# ---- torch.library registration ---------------------------------------------------------------------
def _triton_forward(mu, logvar, reduction):
    from gencore.triton_kernels.kl_normal import kl_normal_forward
    return kl_normal_forward(mu, logvar, reduction)


def _triton_backward(grad, mu, logvar, reduction):
    from gencore.triton_kernels.kl_normal import kl_normal_backward
    return kl_normal_backward(grad, mu, logvar, reduction)


torch.library.define("gencore_triton::kl_normal", "(Tensor mu, Tensor logvar, str reduction) -> Tensor")
torch.library.define("gencore_triton::kl_normal_backward",
                     "(Tensor grad, Tensor mu, Tensor logvar, str reduction) -> (Tensor, Tensor)")
torch.library.impl("gencore_triton::kl_normal", ("CPU", "CUDA"))(_triton_forward)
torch.library.impl("gencore_triton::kl_normal_backward", ("CPU", "CUDA"))(_triton_backward)


def _register_meta_and_autograd(ns: str, autograd: bool = True) -> None:
    """Fake kernels, and the autograd formula unless the namespace registers it in C++ (`gencore`:
    csrc/bindings/autograd.cpp, which saves the ~27 us of a Python autograd wrapper per step)."""
    forward_name, backward_name = f"{ns}::kl_normal", f"{ns}::kl_normal_backward"

    @torch.library.register_fake(forward_name)
    def _(mu, logvar, reduction):
        shape = mu.shape if reduction == "none" else ()
        return mu.new_empty(shape)

    @torch.library.register_fake(backward_name)
    def _(grad, mu, logvar, reduction):
        return mu.new_empty(mu.shape), mu.new_empty(mu.shape)

    if not autograd:
        return
    backward_op = getattr(getattr(torch.ops, ns), "kl_normal_backward")

    def setup_context(ctx, inputs, output):
        mu, logvar, reduction = inputs
        ctx.save_for_backward(mu, logvar)
        ctx.reduction = reduction

    def backward(ctx, grad):
        mu, logvar = ctx.saved_tensors
        dmu, dlogvar = backward_op(grad, mu, logvar, ctx.reduction)
        return dmu, dlogvar, None

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)
    refuse_double_backward(backward_name)


_register_meta_and_autograd("gencore_triton")
if _native.loaded:
    _register_meta_and_autograd("gencore", autograd=False)


# ---- public op ----------------------------------------------------------------------------------------
def kl_normal(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "sum", *,
              backend: str | None = None) -> torch.Tensor:
    """KL divergence of N(mu, exp(logvar)) from N(0, I).

    reduction: 'none' (elementwise), 'sum' (default, the usual VAE term), 'mean' (over all elements),
    'batchmean' (sum over all but dim 0, averaged over dim 0). Accumulates in float32 or better and
    returns mu's dtype. Deterministic: the same input gives the same bits on every call.
    """
    check_pair(mu, logvar, OP, "mu", "logvar")
    check_reduction(reduction, OP, mu)
    name = backends.select(OP, mu, backend)
    if name == "torch":
        return kl_normal_reference(mu, logvar, reduction)
    if name == "triton":
        return torch.ops.gencore_triton.kl_normal(mu, logvar, reduction)
    return torch.ops.gencore.kl_normal(mu, logvar, reduction)
