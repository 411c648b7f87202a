"""Triton kernels for fused BatchNorm + LeakyReLU (DESIGN §3.1, docs/batch_norm_leaky_relu_gpu.md).

x is viewed as (N, C, S). Both native layouts are one 2-D "tile" walk:
  contiguous NC(S):   per channel c, rows = n (stride C*S), cols = s (stride 1); one program group per channel
  channels-last N(S)C: rows = m = n*S + s (stride C), cols = channels (stride 1); one group per channel block
The per-channel reductions are split: a group's tiles are cut into chunks, one program per (group, chunk)
writes a partial (Welford count/mean/M2 for the statistics, plain sums for backward), then a tiny combine
kernel merges the chunks of each channel in a fixed order. So small C with a large N*S still fills the GPU,
and the result is deterministic (no atomics). Every block size and chunk count depends on shapes only.

Launchers take and return plain tensors with exactly the gencore_triton:: schemas of BN_CONTRACT.md.
"""
from __future__ import annotations

import math
import struct

import torch
import triton
import triton.language as tl

# Elements per tile (one program's working set per step). 2048 keeps 8 values per thread at 8 warps on a
# GPU and stays quick under TRITON_INTERPRET.
TILE = 2048
# Channels per tile in channels-last (columns are channels there).
MAX_BLOCK_C = 128
# Aim for about this many programs in the split reductions: a few waves on any current GPU.
TARGET_PROGRAMS = 1024
# Channels per program in the combine kernels.
COMBINE_BLOCK = 128
NUM_WARPS = 8


# ---- shared jit helpers ------------------------------------------------------------------------------
@triton.jit
def _joined(hi, lo, ACC: tl.constexpr):
    """hi + lo in the compute type: ~48 significant bits in float64, the rounded value in float32."""
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _tile(g, t, R, Q, S, stride_r, tiles_q, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr,
          BLOCK_Q: tl.constexpr):
    """Offsets, mask, columns and number of valid rows of tile t of group g (module docstring)."""
    ar = tl.arange(0, BLOCK_R)
    aq = tl.arange(0, BLOCK_Q)
    if CHANNELS_LAST:
        row0 = t.to(tl.int64) * BLOCK_R
        cols = g * BLOCK_Q + aq
        base = tl.zeros([], dtype=tl.int64)
    else:
        tr = t // tiles_q
        row0 = tr.to(tl.int64) * BLOCK_R
        cols = (t - tr * tiles_q) * BLOCK_Q + aq
        base = g.to(tl.int64) * S
    rows = row0 + ar
    offs = base + rows[:, None] * stride_r + cols[None, :]
    mask = (rows < R)[:, None] & (cols < Q)[None, :]
    valid_rows = tl.minimum(tl.maximum(R - row0, 0), BLOCK_R)
    return offs, mask, cols, valid_rows


@triton.jit
def _channel_params(g, cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, CHANNELS_LAST: tl.constexpr,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr):
    """mean, invstd, weight, bias of the tile's channels: [1, BLOCK_Q] rows (channels-last) or scalars."""
    if CHANNELS_LAST:
        cmask = cols < C
        mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
        var = tl.load(var_ptr + cols, mask=cmask, other=1.0).to(ACC)[None, :]
        if HAS_WEIGHT:
            w = tl.load(w_ptr + cols, mask=cmask, other=1.0).to(ACC)[None, :]
        else:
            w = tl.full([1, 1], 1.0, ACC)
        if HAS_BIAS:
            b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
        else:
            b = tl.full([1, 1], 0.0, ACC)
    else:
        mean = tl.load(mean_ptr + g).to(ACC)
        var = tl.load(var_ptr + g).to(ACC)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + g).to(ACC)
        else:
            w = tl.full([], 1.0, ACC)
        if HAS_BIAS:
            b = tl.load(b_ptr + g).to(ACC)
        else:
            b = tl.full([], 0.0, ACC)
    if ACC == tl.float64:
        invstd = 1.0 / tl.sqrt(var + eps)  # float64 sqrt is correctly rounded
    else:
        invstd = 1.0 / tl.sqrt_rn(var + eps)  # not the approximate sqrt: match torch's invstd closely
    return mean, invstd, w, b


@triton.jit
def _xhat_and_positive(v, mean, invstd, w, b, slope, FROM_OUTPUT: tl.constexpr, RELU: tl.constexpr):
    """x-hat and the activation mask (pre > 0), from x, or from y by inverting the LeakyReLU."""
    if FROM_OUTPUT:
        positive = v > 0
        # pre > 0 exactly where y > 0 (slope > 0); pre == 0 gives y == 0 -> slope branch, as torch.
        z = tl.where(positive, v, v / slope)
        xhat = (z - b) / w
    else:
        xhat = (v - mean) * invstd
        pre = xhat * w + b  # the forward's expression: both agree at pre ~ 0
        if RELU:
            positive = (pre > 0) | (pre != pre)  # torch's threshold_backward passes NaN's gradient
        else:
            positive = pre > 0
    return xhat, positive


@triton.jit
def _activate(pre, slope, RELU: tl.constexpr):
    if RELU:
        return tl.where(pre <= 0, 0.0, pre)  # relu(-inf) = 0 (not -inf * 0); NaN passes
    else:
        return tl.where(pre > 0, pre, pre * slope)


@triton.jit
def _activation_grad(dy, positive, slope, RELU: tl.constexpr):
    if RELU:
        return tl.where(positive, dy, 0.0)  # exactly 0, even for an inf/NaN dy (as torch)
    else:
        return tl.where(positive, dy, dy * slope)


# ---- forward ---------------------------------------------------------------------------------------------
@triton.jit
def _stats_partial_kernel(x_ptr, cnt_ptr, mean_ptr, m2_ptr, R, Q, S, stride_r, tiles_q, tiles_per_chunk,
                          chunks, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr,
                          ACC: tl.constexpr):
    pid = tl.program_id(0)
    g = pid // chunks
    k = pid - g * chunks
    cnt = tl.zeros([BLOCK_Q], dtype=ACC)
    mean = tl.zeros([BLOCK_Q], dtype=ACC)
    m2 = tl.zeros([BLOCK_Q], dtype=ACC)
    for i in range(0, tiles_per_chunk):
        # Tiles past the end have rows >= R and are fully masked.
        offs, mask, cols, valid_rows = _tile(g, k * tiles_per_chunk + i, R, Q, S, stride_r, tiles_q, CHANNELS_LAST,
                                 BLOCK_R, BLOCK_Q)
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
        # Per column: the tile's own mean and M2 (two passes in registers), merged by Chan's formula.
        # More robust than sum/sum-of-squares when |mean| >> std.
        n_t = tl.where(cols < Q, valid_rows, 0).to(ACC)  # values per column, without a reduction
        mean_t = tl.sum(v, axis=0) / tl.maximum(n_t, 1.0)
        d = tl.where(mask, v - mean_t[None, :], 0.0)
        m2_t = tl.sum(d * d, axis=0)
        n_new = cnt + n_t
        delta = mean_t - mean
        frac = n_t / tl.maximum(n_new, 1.0)
        mean = mean + delta * frac
        m2 = m2 + m2_t + delta * delta * cnt * frac
        cnt = n_new
    if CHANNELS_LAST:
        cols = g * BLOCK_Q + tl.arange(0, BLOCK_Q)
        out = cols * chunks + k
        cmask = cols < Q
        tl.store(cnt_ptr + out, cnt, mask=cmask)
        tl.store(mean_ptr + out, mean, mask=cmask)
        tl.store(m2_ptr + out, m2, mask=cmask)
    else:
        # All columns belong to channel g: merge them at once (parallel variance formula).
        total = tl.sum(cnt, axis=0)
        gmean = tl.sum(cnt * mean, axis=0) / tl.maximum(total, 1.0)
        dm = mean - gmean
        gm2 = tl.sum(m2 + cnt * dm * dm, axis=0)
        tl.store(cnt_ptr + pid, total)
        tl.store(mean_ptr + pid, gmean)
        tl.store(m2_ptr + pid, gm2)


@triton.jit
def _stats_combine_kernel(cnt_ptr, mean_part_ptr, m2_ptr, mean_ptr, var_ptr, C, chunks, BLOCK: tl.constexpr,
                          ACC: tl.constexpr):
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cmask = c < C
    cnt = tl.zeros([BLOCK], dtype=ACC)
    mean = tl.zeros([BLOCK], dtype=ACC)
    m2 = tl.zeros([BLOCK], dtype=ACC)
    for k in range(0, chunks):  # fixed order: deterministic
        idx = c * chunks + k
        n_k = tl.load(cnt_ptr + idx, mask=cmask, other=0.0)
        mean_k = tl.load(mean_part_ptr + idx, mask=cmask, other=0.0)
        m2_k = tl.load(m2_ptr + idx, mask=cmask, other=0.0)
        n_new = cnt + n_k
        delta = mean_k - mean
        frac = n_k / tl.maximum(n_new, 1.0)
        mean = mean + delta * frac
        m2 = m2 + m2_k + delta * delta * cnt * frac
        cnt = n_new
    tl.store(mean_ptr + c, mean, mask=cmask)
    # Biased variance; 0/0 = NaN for an empty batch (masked lanes divide by 1 to stay quiet).
    tl.store(var_ptr + c, m2 / tl.where(cmask, cnt, 1.0), mask=cmask)


@triton.jit
def _normalize_kernel(x_ptr, y_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, R, Q, C, S, stride_r, tiles_q,
                      tiles_total, eps, eps_lo, slope, slope_lo, CHANNELS_LAST: tl.constexpr,
                      HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr,
                      BLOCK_Q: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr):
    # Float arguments reach compiled kernels as fp32: each comes as fp32 hi + lo parts (see _split).
    eps = _joined(eps, eps_lo, ACC)
    slope = _joined(slope, slope_lo, ACC)
    pid = tl.program_id(0)
    g = pid // tiles_total
    offs, mask, cols, valid_rows = _tile(g, pid - g * tiles_total, R, Q, S, stride_r, tiles_q, CHANNELS_LAST, BLOCK_R,
                             BLOCK_Q)
    mean, invstd, w, b = _channel_params(g, cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, CHANNELS_LAST,
                                         HAS_WEIGHT, HAS_BIAS, ACC)
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    # The same expression as the backward's mask recomputation, so forward and backward agree at pre ~ 0.
    pre = (v - mean) * invstd * w + b
    y = _activate(pre, slope, RELU)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


# ---- backward ----------------------------------------------------------------------------------------------
@triton.jit
def _backward_partial_kernel(dy_ptr, v_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sum_g_ptr, sum_gx_ptr, R, Q, C, S,
                             stride_r, tiles_q, tiles_per_chunk, chunks, eps, eps_lo, slope, slope_lo,
                             CHANNELS_LAST: tl.constexpr, FROM_OUTPUT: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                             HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr,
                             RELU: tl.constexpr, ACC: tl.constexpr):
    # Float arguments reach compiled kernels as fp32: each comes as fp32 hi + lo parts (see _split).
    eps = _joined(eps, eps_lo, ACC)
    slope = _joined(slope, slope_lo, ACC)
    pid = tl.program_id(0)
    g = pid // chunks
    k = pid - g * chunks
    cols0 = g * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mean, invstd, w, b = _channel_params(g, cols0, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, CHANNELS_LAST,
                                         HAS_WEIGHT, HAS_BIAS, ACC)
    acc_g = tl.zeros([BLOCK_R, BLOCK_Q], dtype=ACC)
    acc_gx = tl.zeros([BLOCK_R, BLOCK_Q], dtype=ACC)
    for i in range(0, tiles_per_chunk):
        offs, mask, cols, valid_rows = _tile(g, k * tiles_per_chunk + i, R, Q, S, stride_r, tiles_q, CHANNELS_LAST,
                                 BLOCK_R, BLOCK_Q)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(ACC)
        xhat, positive = _xhat_and_positive(v, mean, invstd, w, b, slope, FROM_OUTPUT, RELU)
        gact = tl.where(mask, _activation_grad(dy, positive, slope, RELU), 0.0)
        acc_g += gact
        acc_gx += tl.where(mask, gact * xhat, 0.0)
    s_g = tl.sum(acc_g, axis=0)
    s_gx = tl.sum(acc_gx, axis=0)
    if CHANNELS_LAST:
        out = cols0 * chunks + k
        tl.store(sum_g_ptr + out, s_g, mask=cols0 < Q)
        tl.store(sum_gx_ptr + out, s_gx, mask=cols0 < Q)
    else:
        tl.store(sum_g_ptr + pid, tl.sum(s_g, axis=0))
        tl.store(sum_gx_ptr + pid, tl.sum(s_gx, axis=0))


@triton.jit
def _backward_combine_kernel(part_g_ptr, part_gx_ptr, sums_ptr, grad_w_ptr, grad_b_ptr, C, chunks,
                             BLOCK: tl.constexpr, ACC: tl.constexpr):
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cmask = c < C
    s_g = tl.zeros([BLOCK], dtype=ACC)
    s_gx = tl.zeros([BLOCK], dtype=ACC)
    for k in range(0, chunks):  # fixed order: deterministic
        s_g += tl.load(part_g_ptr + c * chunks + k, mask=cmask, other=0.0)
        s_gx += tl.load(part_gx_ptr + c * chunks + k, mask=cmask, other=0.0)
    # Full-precision sums for the elementwise pass; grad_weight/grad_bias in weight's dtype.
    tl.store(sums_ptr + c, s_g, mask=cmask)
    tl.store(sums_ptr + C + c, s_gx, mask=cmask)
    tl.store(grad_b_ptr + c, s_g.to(grad_b_ptr.dtype.element_ty), mask=cmask)
    tl.store(grad_w_ptr + c, s_gx.to(grad_w_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _backward_elementwise_kernel(dy_ptr, v_ptr, dx_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sums_ptr, R, Q, C, S,
                                 stride_r, tiles_q, tiles_total, count, count_lo, eps, eps_lo, slope, slope_lo,
                                 CHANNELS_LAST: tl.constexpr, FROM_OUTPUT: tl.constexpr, TRAINING: tl.constexpr,
                                 HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr,
                                 BLOCK_Q: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr):
    # Float arguments reach compiled kernels as fp32: each comes as fp32 hi + lo parts (see _split).
    eps = _joined(eps, eps_lo, ACC)
    slope = _joined(slope, slope_lo, ACC)
    count = _joined(count, count_lo, ACC)
    pid = tl.program_id(0)
    g = pid // tiles_total
    offs, mask, cols, valid_rows = _tile(g, pid - g * tiles_total, R, Q, S, stride_r, tiles_q, CHANNELS_LAST, BLOCK_R,
                             BLOCK_Q)
    mean, invstd, w, b = _channel_params(g, cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, CHANNELS_LAST,
                                         HAS_WEIGHT, HAS_BIAS, ACC)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(ACC)
    xhat, positive = _xhat_and_positive(v, mean, invstd, w, b, slope, FROM_OUTPUT, RELU)
    gact = _activation_grad(dy, positive, slope, RELU)
    scale = w * invstd
    if TRAINING:
        if CHANNELS_LAST:
            cmask = cols < C
            s_g = tl.load(sums_ptr + cols, mask=cmask, other=0.0)[None, :]
            s_gx = tl.load(sums_ptr + C + cols, mask=cmask, other=0.0)[None, :]
        else:
            s_g = tl.load(sums_ptr + g)
            s_gx = tl.load(sums_ptr + C + g)
        dx = scale * (gact - s_g / count - xhat * (s_gx / count))
    else:
        dx = scale * gact
    if FROM_OUTPUT:
        # weight == 0: x-hat is not recoverable (inf/NaN) but its coefficient is exactly 0.
        dx = tl.where(scale == 0, 0.0, dx)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---- launch planning -------------------------------------------------------------------------------------
def _split(value: float) -> tuple[float, float]:
    """value as float32 hi + float32 lo. Triton passes Python floats to compiled kernels as fp32, which
    would perturb float64 results (slope 0.2 in fp32 is off by 1.5e-8 relative)."""
    hi = struct.unpack("f", struct.pack("f", value))[0]
    lo = struct.unpack("f", struct.pack("f", value - hi))[0]
    return hi, lo


def _scalars(eps: float, negative_slope: float) -> dict:
    """Scalar kernel arguments; slope == 0 is ReLU exactly (compiled as its own variant)."""
    (eps, eps_lo), (slope, slope_lo) = _split(float(eps)), _split(float(negative_slope))
    return dict(eps=eps, eps_lo=eps_lo, slope=slope, slope_lo=slope_lo, RELU=negative_slope == 0)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


class _Plan:
    """How a (N, C, S) tensor is walked: layout, tile shape, groups, tiles and chunks. Sizes only."""

    def __init__(self, x: torch.Tensor, channels_last: bool):
        self.N, self.C = x.shape[0], x.shape[1]
        self.S = math.prod(x.shape[2:])
        self.channels_last = channels_last
        self.acc = tl.float64 if x.dtype == torch.float64 else tl.float32
        if channels_last:
            self.R, self.Q = self.N * self.S, self.C
            self.stride_r = self.C
            self.BLOCK_Q = min(_next_pow2(self.C), MAX_BLOCK_C)
            self.BLOCK_R = max(1, min(TILE // self.BLOCK_Q, _next_pow2(self.R)))
            self.groups = triton.cdiv(self.C, self.BLOCK_Q)
            self.tiles_q = 1
            self.tiles = triton.cdiv(self.R, self.BLOCK_R)
        else:
            self.R, self.Q = self.N, self.S
            self.stride_r = self.C * self.S
            self.BLOCK_Q = min(_next_pow2(self.S), TILE)
            self.BLOCK_R = max(1, min(TILE // self.BLOCK_Q, _next_pow2(self.N)))
            self.groups = self.C
            self.tiles_q = triton.cdiv(self.S, self.BLOCK_Q)
            self.tiles = triton.cdiv(self.N, self.BLOCK_R) * self.tiles_q
        # Split each group's tiles into chunks so that groups * chunks ~ TARGET_PROGRAMS; no empty chunks.
        chunks = max(1, min(self.tiles, triton.cdiv(TARGET_PROGRAMS, self.groups)))
        self.tiles_per_chunk = max(1, triton.cdiv(self.tiles, chunks))
        self.chunks = max(1, triton.cdiv(self.tiles, self.tiles_per_chunk))

    def walk(self):
        return dict(R=self.R, Q=self.Q, S=self.S, stride_r=self.stride_r, tiles_q=self.tiles_q)

    def blocks(self):
        return dict(CHANNELS_LAST=self.channels_last, BLOCK_R=self.BLOCK_R, BLOCK_Q=self.BLOCK_Q, ACC=self.acc)


def _permutation(dim: int):
    return (0, *range(2, dim), 1)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() > 2 and x.permute(_permutation(x.dim())).is_contiguous()


def _native_layout(x: torch.Tensor):
    """(x in a native layout, channels_last walk?). S == 1 is one layout: walk it as channels-last
    (columns = channels, coalesced); other strides are copied to contiguous."""
    if x.dim() == 2 or math.prod(x.shape[2:]) == 1:
        x = x.contiguous()
        return x, True
    if x.is_contiguous():
        return x, False
    if _is_channels_last(x):
        return x, True
    return x.contiguous(), False


def _to_layout(t: torch.Tensor, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t with like's memory layout (grad_y may arrive in any layout)."""
    if t.stride() == like.stride():
        return t
    if channels_last and like.dim() > 2 and math.prod(like.shape[2:]) > 1:
        perm = _permutation(t.dim())
        inverse = [perm.index(i) for i in range(t.dim())]
        return t.permute(perm).contiguous().permute(inverse)
    return t.contiguous()


def _check(x: torch.Tensor, name: str, op: str, eps: float) -> None:
    if x.dim() < 2:
        raise ValueError(f"gencore.{op}: {name} must have at least 2 dimensions (N, C, ...), got {x.dim()}")
    if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"gencore.{op}: {name} must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if not eps >= 0:
        raise ValueError(f"gencore.{op}: eps must be >= 0, got {eps}")


def _param(t: torch.Tensor | None, C: int, name: str, op: str, device) -> torch.Tensor | None:
    if t is None:
        return None
    if t.numel() != C:
        raise ValueError(f"gencore.{op}: {name} must have {C} elements (one per channel), got {t.numel()}")
    if t.device != device:
        raise RuntimeError(f"gencore.{op}: {name} is on {t.device}, expected {device}")
    return t.reshape(C).contiguous()


def _eval_stats(running_mean, running_var, C, stat_dtype, device, op):
    if running_mean is None or running_var is None:
        raise ValueError(f"gencore.{op}: running_mean and running_var are required when training=False")
    mean = _param(running_mean, C, "running_mean", op, device)
    var = _param(running_var, C, "running_var", op, device)
    return mean.to(stat_dtype, copy=True), var.to(stat_dtype, copy=True)


def _batch_stats(xv: torch.Tensor, plan: _Plan):
    stat = _stat_dtype(xv.dtype)
    parts = torch.empty(3, plan.C * plan.chunks, dtype=stat, device=xv.device)
    mean = torch.empty(plan.C, dtype=stat, device=xv.device)
    var = torch.empty(plan.C, dtype=stat, device=xv.device)
    _stats_partial_kernel[(plan.groups * plan.chunks,)](
        xv, parts[0], parts[1], parts[2], tiles_per_chunk=plan.tiles_per_chunk, chunks=plan.chunks,
        **plan.walk(), **plan.blocks(), num_warps=NUM_WARPS)
    _stats_combine_kernel[(triton.cdiv(plan.C, COMBINE_BLOCK),)](
        parts[0], parts[1], parts[2], mean, var, plan.C, plan.chunks, BLOCK=COMBINE_BLOCK, ACC=plan.acc)
    return mean, var


def _forward_into(xv, y, weight, bias, running_mean, running_var, training, eps, negative_slope, channels_last,
                  op):
    C = xv.shape[1]
    plan = _Plan(xv, channels_last)
    w = _param(weight, C, "weight", op, xv.device)
    b = _param(bias, C, "bias", op, xv.device)
    if training:
        if C and xv.numel() // C == 1:
            raise ValueError(f"gencore.{op}: Expected more than 1 value per channel when training, got input size "
                             f"{tuple(xv.shape)}")
        mean, var = _batch_stats(xv, plan) if C else (xv.new_empty(0, dtype=_stat_dtype(xv.dtype)),) * 2
    else:
        mean, var = _eval_stats(running_mean, running_var, C, _stat_dtype(xv.dtype), xv.device, op)
    if xv.numel():
        _normalize_kernel[(plan.groups * plan.tiles,)](
            xv, y, mean, var, xv if w is None else w, xv if b is None else b, C=C, tiles_total=plan.tiles,
            **_scalars(eps, negative_slope), HAS_WEIGHT=w is not None, HAS_BIAS=b is not None,
            **plan.walk(), **plan.blocks(), num_warps=NUM_WARPS)
    return mean, var


def _backward(grad_y, v, weight, bias, save_mean, save_var, training, eps, negative_slope, from_output, op):
    _check(v, "y" if from_output else "x", op, eps)
    vv, channels_last = _native_layout(v)
    if grad_y.shape != v.shape:
        raise ValueError(f"gencore.{op}: grad_y has shape {tuple(grad_y.shape)}, expected {tuple(v.shape)}")
    dy = _to_layout(grad_y, vv, channels_last)
    C = vv.shape[1]
    plan = _Plan(vv, channels_last)
    w = _param(weight, C, "weight", op, vv.device)
    b = _param(bias, C, "bias", op, vv.device)
    stat = _stat_dtype(vv.dtype)
    mean = _param(save_mean, C, "save_mean", op, vv.device).to(stat)
    var = _param(save_var, C, "save_var", op, vv.device).to(stat)
    grad_dtype = weight.dtype if weight is not None else stat  # as the C++ glue
    grad_w = torch.empty(C, dtype=grad_dtype, device=vv.device)
    grad_b = torch.empty(C, dtype=grad_dtype, device=vv.device)
    grad_x = torch.empty_like(vv)
    if C == 0:
        return grad_x, grad_w, grad_b
    common = dict(**_scalars(eps, negative_slope), FROM_OUTPUT=from_output,
                  HAS_WEIGHT=w is not None, HAS_BIAS=b is not None)
    wp, bp = (vv if w is None else w), (vv if b is None else b)
    parts = torch.empty(2, C * plan.chunks, dtype=stat, device=vv.device)
    sums = torch.empty(2 * C, dtype=stat, device=vv.device)
    _backward_partial_kernel[(plan.groups * plan.chunks,)](
        dy, vv, mean, var, wp, bp, parts[0], parts[1], C=C, tiles_per_chunk=plan.tiles_per_chunk,
        chunks=plan.chunks, **common, **plan.walk(), **plan.blocks(), num_warps=NUM_WARPS)
    _backward_combine_kernel[(triton.cdiv(C, COMBINE_BLOCK),)](
        parts[0], parts[1], sums, grad_w, grad_b, C, plan.chunks, BLOCK=COMBINE_BLOCK, ACC=plan.acc)
    if vv.numel():
        count, count_lo = _split(float(plan.N * plan.S))
        _backward_elementwise_kernel[(plan.groups * plan.tiles,)](
            dy, vv, grad_x, mean, var, wp, bp, sums, C=C, tiles_total=plan.tiles, count=count, count_lo=count_lo,
            TRAINING=bool(training), **common, **plan.walk(), **plan.blocks(), num_warps=NUM_WARPS)
    return grad_x, grad_w, grad_b


# ---- launchers (the gencore_triton:: schemas) ----------------------------------------------------------------
def batch_norm_leaky_relu_forward(x, weight, bias, running_mean, running_var, training: bool, eps: float,
                                  negative_slope: float):
    """-> (y, save_mean, save_var); y keeps x's memory format (other strides give a contiguous y)."""
    op = "batch_norm_leaky_relu_forward"
    _check(x, "x", op, eps)
    xv, channels_last = _native_layout(x)
    y = torch.empty_like(xv)
    mean, var = _forward_into(xv, y, weight, bias, running_mean, running_var, training, eps, negative_slope,
                              channels_last, op)
    return y, mean, var


def batch_norm_leaky_relu_forward_inplace(x, weight, bias, running_mean, running_var, training: bool, eps: float,
                                          negative_slope: float):
    """Writes y over x; -> (save_mean, save_var)."""
    op = "batch_norm_leaky_relu_forward_inplace"
    _check(x, "x", op, eps)
    xv, channels_last = _native_layout(x)
    # Each element is read before it is written by the same program, so y may alias x.
    mean, var = _forward_into(xv, xv, weight, bias, running_mean, running_var, training, eps, negative_slope,
                              channels_last, op)
    if xv.data_ptr() != x.data_ptr() or xv.stride() != x.stride():
        x.copy_(xv)  # x had strides the kernels do not walk natively
    return mean, var


def batch_norm_leaky_relu_backward(grad_y, x, weight, bias, save_mean, save_var, training: bool, eps: float,
                                   negative_slope: float):
    """-> (grad_x, grad_weight, grad_bias); the activation mask is recomputed from x."""
    return _backward(grad_y, x, weight, bias, save_mean, save_var, training, eps, negative_slope, False,
                     "batch_norm_leaky_relu_backward")


def batch_norm_leaky_relu_backward_from_output(grad_y, y, weight, bias, save_mean, save_var, training: bool,
                                               eps: float, negative_slope: float):
    """Backward of the in-place forward from y alone (x-hat rebuilt by inverting the LeakyReLU)."""
    op = "batch_norm_leaky_relu_backward_from_output"
    if not negative_slope > 0:
        raise ValueError(f"gencore.{op}: the memory-saving mode needs negative_slope > 0 to invert the "
                         f"activation, got {negative_slope} (ReLU cannot be inverted)")
    return _backward(grad_y, y, weight, bias, save_mean, save_var, training, eps, negative_slope, True, op)
