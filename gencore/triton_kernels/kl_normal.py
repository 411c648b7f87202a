"""Triton kernels for the KL term. Kernels see pointers and sizes; these launchers are the glue."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gencore.ops._checks import reduction_scale

BLOCK = 1024


@triton.jit
def _load_compute(ptr, offs, mask):
    x = tl.load(ptr + offs, mask=mask, other=0.0)
    if x.dtype != tl.float64:
        x = x.to(tl.float32)
    return x


@triton.jit
def _kl_term(m, lv):
    return -0.5 * (1.0 + lv - m * m - tl.exp(lv))


@triton.jit
def _kl_none_kernel(mu_ptr, lv_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    term = _kl_term(_load_compute(mu_ptr, offs, mask), _load_compute(lv_ptr, offs, mask))
    tl.store(out_ptr + offs, term.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _kl_partial_sum_kernel(mu_ptr, lv_ptr, partial_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    term = _kl_term(_load_compute(mu_ptr, offs, mask), _load_compute(lv_ptr, offs, mask))
    tl.store(partial_ptr + pid, tl.sum(tl.where(mask, term, 0.0), axis=0).to(tl.float64))


@triton.jit
def _kl_backward_kernel(grad_ptr, grad_stride, scale, mu_ptr, lv_ptr, dmu_ptr, dlv_ptr, n,
                        BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    m = _load_compute(mu_ptr, offs, mask)
    lv = _load_compute(lv_ptr, offs, mask)
    g = tl.load(grad_ptr + offs * grad_stride, mask=mask, other=0.0).to(m.dtype) * scale
    tl.store(dmu_ptr + offs, (g * m).to(dmu_ptr.dtype.element_ty), mask=mask)
    tl.store(dlv_ptr + offs, (0.5 * g * (tl.exp(lv) - 1.0)).to(dlv_ptr.dtype.element_ty), mask=mask)


def kl_normal_forward(mu: torch.Tensor, logvar: torch.Tensor, reduction: str) -> torch.Tensor:
    m, lv = mu.contiguous(), logvar.contiguous()
    n = m.numel()
    grid = (triton.cdiv(n, BLOCK),)
    if reduction == "none":
        out = torch.empty_like(m)
        if n:
            _kl_none_kernel[grid](m, lv, out, n, BLOCK=BLOCK)
        return out
    # Deterministic two-stage sum: one float64 partial per block, then a fixed-size torch sum.
    partial = torch.zeros(max(grid[0], 1), dtype=torch.float64, device=m.device)
    if n:
        _kl_partial_sum_kernel[grid](m, lv, partial, n, BLOCK=BLOCK)
    return (partial.sum() * reduction_scale(reduction, m)).to(m.dtype)


def kl_normal_backward(grad, mu, logvar, reduction):
    m, lv = mu.contiguous(), logvar.contiguous()
    g = grad.to(m.dtype).contiguous()
    n = m.numel()
    dmu, dlv = torch.empty_like(m), torch.empty_like(m)
    if n:
        _kl_backward_kernel[(triton.cdiv(n, BLOCK),)](
            g, 1 if reduction == "none" else 0, reduction_scale(reduction, m), m, lv, dmu, dlv, n, BLOCK=BLOCK)
    return dmu, dlv
