"""Triton kernels for reparameterize / reparameterize_kl. eps is tl.randn4x itself (the specification
of gencore's generator) on counter (offset + i) // 4, lane (offset + i) % 4 (docs/reparameterize.md).

Each program handles GROUPS counters as a [GROUPS, 4] tile of elements: one randn4x call yields the
tile's four columns, and element (g, k) is 4 * (group0 + g) + k - offset. The KL part reuses the
kl_normal kernels' term and its deterministic two-stage sum."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gencore.ops._checks import reduction_scale
from gencore.triton_kernels.kl_normal import _kl_term, _load_compute

GROUPS = 256  # Philox counters per program: 1024 elements


@triton.jit
def _tile(seed_ptr, group0, lead, n, GROUPS: tl.constexpr):
    """Element indices, mask and eps of this program's [GROUPS, 4] tile."""
    g = tl.program_id(0).to(tl.int64) * GROUPS + tl.arange(0, GROUPS)
    lane = tl.arange(0, 4)[None, :]
    idx = 4 * g[:, None] + lane - lead
    mask = (idx >= 0) & (idx < n)
    seed = tl.load(seed_ptr)
    n0, n1, n2, n3 = tl.randn4x(seed, group0 + g)
    eps = tl.where(lane == 0, n0[:, None], tl.where(lane == 1, n1[:, None], tl.where(lane == 2, n2[:, None],
                                                                                      n3[:, None])))
    return idx, mask, eps


@triton.jit
def _forward_kernel(mu_ptr, lv_ptr, z_ptr, kl_ptr, partial_ptr, seed_ptr, group0, lead, n,
                    KL: tl.constexpr, KL_NONE: tl.constexpr, GROUPS: tl.constexpr):
    idx, mask, eps = _tile(seed_ptr, group0, lead, n, GROUPS)
    m = _load_compute(mu_ptr, idx, mask)
    lv = _load_compute(lv_ptr, idx, mask)
    z = m + tl.exp(0.5 * lv) * eps.to(m.dtype)
    tl.store(z_ptr + idx, z.to(z_ptr.dtype.element_ty), mask=mask)
    if KL:
        term = _kl_term(m, lv)
        if KL_NONE:
            tl.store(kl_ptr + idx, term.to(kl_ptr.dtype.element_ty), mask=mask)
        else:
            block_sum = tl.sum(tl.sum(tl.where(mask, term, 0.0), axis=1), axis=0)
            tl.store(partial_ptr + tl.program_id(0), block_sum.to(tl.float64))


@triton.jit
def _backward_kernel(gz_ptr, gk_ptr, gk_stride, scale, mu_ptr, lv_ptr, dmu_ptr, dlv_ptr, seed_ptr, group0, lead, n,
                     KL: tl.constexpr, GROUPS: tl.constexpr):
    idx, mask, eps = _tile(seed_ptr, group0, lead, n, GROUPS)
    lv = _load_compute(lv_ptr, idx, mask)
    gz = _load_compute(gz_ptr, idx, mask)
    sd = tl.exp(0.5 * lv)
    dlv = 0.5 * gz * eps.to(lv.dtype) * sd
    if KL:
        m = _load_compute(mu_ptr, idx, mask)
        gk = tl.load(gk_ptr + idx * gk_stride, mask=mask, other=0.0).to(lv.dtype) * scale
        tl.store(dmu_ptr + idx, (gz + gk * m).to(dmu_ptr.dtype.element_ty), mask=mask)
        dlv += 0.5 * gk * (tl.exp(lv) - 1.0)
    tl.store(dlv_ptr + idx, dlv.to(dlv_ptr.dtype.element_ty), mask=mask)


def _grid(n: int, offset: int) -> tuple[int, ...]:
    return (triton.cdiv((offset & 3) + n, 4 * GROUPS),)


def _forward(mu, logvar, seed, offset, reduction):
    m, lv = mu.contiguous(), logvar.contiguous()
    n = m.numel()
    z = torch.empty_like(m)
    grid = _grid(n, offset)
    kl = torch.empty_like(m) if reduction == "none" else None
    partial = torch.zeros(max(grid[0], 1), dtype=torch.float64, device=m.device)
    if n:
        _forward_kernel[grid](m, lv, z, kl if kl is not None else z, partial, seed, offset >> 2, offset & 3, n,
                              KL=reduction is not None, KL_NONE=reduction == "none", GROUPS=GROUPS)
    if reduction is None:
        return z
    if reduction == "none":
        return z, kl
    return z, (partial.sum() * reduction_scale(reduction, m)).to(m.dtype)


def reparameterize(mu, logvar, seed, offset):
    return _forward(mu, logvar, seed, offset, None)


def reparameterize_kl(mu, logvar, seed, offset, reduction):
    return _forward(mu, logvar, seed, offset, reduction)


def _backward(grad_z, grad_kl, mu, logvar, seed, offset, reduction):
    lv = logvar.contiguous()
    gz = grad_z.to(lv.dtype).contiguous()
    n = lv.numel()
    dlv = torch.empty_like(lv)
    kl = reduction is not None
    m = mu.contiguous() if kl else lv
    gk = grad_kl.to(lv.dtype).contiguous() if kl else lv
    dmu = torch.empty_like(lv) if kl else dlv
    scale = reduction_scale(reduction, lv) if kl else 1.0
    if n:
        _backward_kernel[_grid(n, offset)](gz, gk, 1 if reduction == "none" else 0, scale, m, lv, dmu, dlv, seed,
                                           offset >> 2, offset & 3, n, KL=kl, GROUPS=GROUPS)
    return (dmu, dlv) if kl else dlv


def reparameterize_backward(grad, logvar, seed, offset):
    return _backward(grad, None, None, logvar, seed, offset, None)


def reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, seed, offset, reduction):
    return _backward(grad_z, grad_kl, mu, logvar, seed, offset, reduction)
