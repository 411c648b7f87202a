"""y = leaky_relu(batch_norm(x, ...), negative_slope): BatchNorm + LeakyReLU/ReLU fused (DESIGN §3.1).

Backends: the reference (`torch`: F.batch_norm followed by the activation), the C++ kernels for CPU and
CUDA (torch.ops.gencore.batch_norm_leaky_relu_*) and Triton (torch.ops.gencore_triton.*, launchers in
gencore/triton_kernels/batch_norm_leaky_relu.py, imported lazily). The kernel ops are functional
(they return the batch statistics instead of mutating running stats) so they can carry a registered
autograd formula; the running statistics are updated here, with in-place ops under no_grad, which
torch.compile(fullgraph=True) traces. The memory-saving (in-place) mode is an autograd.Function with
mark_dirty around the mutating `forward_inplace` op. Design notes: docs/batch_norm_leaky_relu.md.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from gencore import _native, backends
from gencore.ops._checks import FLOAT_DTYPES, compute_dtype, refuse_double_backward

OP = "batch_norm_leaky_relu"
_NAMES = ("forward", "backward", "forward_inplace", "backward_from_output")

# In-place mode: x̂ = (z - bias) / weight loses precision as |bias| / |weight| grows (the output's rounding
# error is amplified by that ratio). Channels with weight == 0 or |bias| > this ratio * |weight| keep a
# copy of their input instead (usually none do; see docs/batch_norm_leaky_relu.md).
INPLACE_MAX_BIAS_WEIGHT_RATIO = 16.0


# ---- reference ------------------------------------------------------------------------------------------
def _activation(y: torch.Tensor, negative_slope: float, inplace: bool = False) -> torch.Tensor:
    # negative_slope == 0 is ReLU exactly (relu(-inf) = 0, unlike leaky_relu(-inf, 0) = nan).
    if negative_slope == 0:
        return F.relu(y, inplace=inplace)
    return F.leaky_relu(y, negative_slope, inplace=inplace)


def batch_norm_leaky_relu_reference(x, running_mean, running_var, weight=None, bias=None, training=False,
                                    momentum=0.1, eps=1e-5, negative_slope=0.01):
    """The composition itself: F.batch_norm (updates running stats in training) then the activation."""
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return _activation(y, negative_slope)


# Pure-PyTorch versions of the four kernel ops (the contract in code; also the `torch` backend of the
# in-place mode and an oracle for kernel tests). Statistics in float32 (float64 for float64 x).
def _channel_shape(x):
    return (1, -1) + (1,) * (x.dim() - 2)


def _per_channel(t, x, default):
    ct = compute_dtype(x.dtype)
    if t is None:
        return torch.full((x.shape[1],), default, dtype=ct, device=x.device)
    return t.to(ct)


def _reduce_dims(x):
    return [0] + list(range(2, x.dim()))


def forward_reference(x, weight, bias, running_mean, running_var, training, eps, negative_slope):
    ct = compute_dtype(x.dtype)
    xc = x.to(ct)
    if training:
        var, mean = torch.var_mean(xc, dim=_reduce_dims(x), unbiased=False)
    else:
        mean, var = running_mean.to(ct).clone(), running_var.to(ct).clone()
    shape = _channel_shape(x)
    invstd = torch.rsqrt(var + eps)
    pre = (xc - mean.view(shape)) * (invstd * _per_channel(weight, x, 1.0)).view(shape) \
        + _per_channel(bias, x, 0.0).view(shape)
    y = _activation(pre, negative_slope).to(x.dtype)
    return y, mean, var


def _backward_core(grad_y, xhat, pre_positive, weight, save_var, training, eps, negative_slope, x):
    ct = compute_dtype(x.dtype)
    dims = _reduce_dims(x)
    shape = _channel_shape(x)
    g = grad_y.to(ct)
    dz = torch.where(pre_positive, g, torch.zeros_like(g) if negative_slope == 0 else g * negative_slope)
    w = _per_channel(weight, x, 1.0)
    grad_bias = dz.sum(dims)
    grad_weight = (dz * xhat).sum(dims)
    a = (w * torch.rsqrt(save_var.to(ct) + eps)).view(shape)
    if training:
        m = x.numel() // max(x.shape[1], 1)
        dx = a * (dz - (grad_bias / m).view(shape) - xhat * (grad_weight / m).view(shape))
    else:
        dx = a * dz
    out_dtype = weight.dtype if weight is not None else ct
    return dx.to(x.dtype), grad_weight.to(out_dtype), grad_bias.to(out_dtype)


def backward_reference(grad_y, x, weight, bias, save_mean, save_var, training, eps, negative_slope):
    ct = compute_dtype(x.dtype)
    shape = _channel_shape(x)
    xhat = (x.to(ct) - save_mean.to(ct).view(shape)) * torch.rsqrt(save_var.to(ct) + eps).view(shape)
    pre = xhat * _per_channel(weight, x, 1.0).view(shape) + _per_channel(bias, x, 0.0).view(shape)
    return _backward_core(grad_y, xhat, pre > 0, weight, save_var, training, eps, negative_slope, x)


def forward_inplace_reference(x, weight, bias, running_mean, running_var, training, eps, negative_slope):
    y, mean, var = forward_reference(x, weight, bias, running_mean, running_var, training, eps, negative_slope)
    x.copy_(y)
    return mean, var


def backward_from_output_reference(grad_y, y, weight, bias, save_mean, save_var, training, eps, negative_slope):
    ct = compute_dtype(y.dtype)
    shape = _channel_shape(y)
    yc = y.to(ct)
    z = torch.where(yc > 0, yc, yc / negative_slope)
    xhat = (z - _per_channel(bias, y, 0.0).view(shape)) / _per_channel(weight, y, 1.0).view(shape)
    return _backward_core(grad_y, xhat, yc > 0, weight, save_var, training, eps, negative_slope, y)


# ---- torch.library registration -------------------------------------------------------------------------
_SCHEMAS = {
    "forward": "(Tensor x, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var, "
               "bool training, float eps, float negative_slope) -> (Tensor, Tensor, Tensor)",
    "backward": "(Tensor grad_y, Tensor x, Tensor? weight, Tensor? bias, Tensor save_mean, Tensor save_var, "
                "bool training, float eps, float negative_slope) -> (Tensor, Tensor, Tensor)",
    "forward_inplace": "(Tensor(a!) x, Tensor? weight, Tensor? bias, Tensor? running_mean, "
                       "Tensor? running_var, bool training, float eps, float negative_slope) -> (Tensor, Tensor)",
    "backward_from_output": "(Tensor grad_y, Tensor y, Tensor? weight, Tensor? bias, Tensor save_mean, "
                            "Tensor save_var, bool training, float eps, float negative_slope) "
                            "-> (Tensor, Tensor, Tensor)",
}
_TRITON_MODULE = "gencore.triton_kernels.batch_norm_leaky_relu"


def _triton_launcher(name):
    def run(*args):
        from gencore.triton_kernels import batch_norm_leaky_relu as kernels  # lazy: Triton only when used
        return getattr(kernels, f"batch_norm_leaky_relu_{name}")(*args)
    run.__name__ = f"_triton_{name}"
    return run


for _name in _NAMES:
    torch.library.define(f"gencore_triton::{OP}_{_name}", _SCHEMAS[_name])
    torch.library.impl(f"gencore_triton::{OP}_{_name}", ("CPU", "CUDA"))(_triton_launcher(_name))


def _is_channels_last_like(x) -> bool:
    """Dense with channels innermost, for any rank (size-1 dims may have any stride). Mirrors the C++ glue."""
    if x.dim() < 3:
        return False
    expected = 1
    for d in [1] + list(range(x.dim() - 1, 1, -1)) + [0]:
        if x.shape[d] != 1 and x.stride(d) != expected:
            return False
        expected *= x.shape[d]
    return True


def _output_like(x):
    """The layout rule of every backend: outputs keep x's strides when x is contiguous or channels-last,
    else they are contiguous (the kernels work on a contiguous copy)."""
    if x.is_contiguous() or _is_channels_last_like(x):
        return torch.empty_like(x)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _param_grad_dtype(x, weight):
    return weight.dtype if weight is not None else compute_dtype(x.dtype)


def _register_fake_and_autograd(ns: str, autograd: bool = True) -> None:
    """Fake kernels of the four ops of namespace ns, and (autograd=True) the forward's autograd; the native
    ops' autograd is registered in C++ (csrc/bindings/autograd.cpp), where it costs far less per call."""
    name = f"{ns}::{OP}"

    @torch.library.register_fake(f"{name}_forward")
    def _(x, weight, bias, running_mean, running_var, training, eps, negative_slope):
        c = x.shape[1]
        stats = x.new_empty((c,), dtype=compute_dtype(x.dtype))
        return _output_like(x), stats, torch.empty_like(stats)

    def fake_backward(grad_y, x, weight, bias, save_mean, save_var, training, eps, negative_slope):
        g = x.new_empty((x.shape[1],), dtype=_param_grad_dtype(x, weight))
        return _output_like(x), g, torch.empty_like(g)

    torch.library.register_fake(f"{name}_backward")(fake_backward)
    torch.library.register_fake(f"{name}_backward_from_output")(fake_backward)

    @torch.library.register_fake(f"{name}_forward_inplace")
    def _(x, weight, bias, running_mean, running_var, training, eps, negative_slope):
        stats = x.new_empty((x.shape[1],), dtype=compute_dtype(x.dtype))
        return stats, torch.empty_like(stats)

    if not autograd:
        return
    backward_op = getattr(getattr(torch.ops, ns), f"{OP}_backward")

    def setup_context(ctx, inputs, output):
        x, weight, bias, _, _, training, eps, negative_slope = inputs
        _, save_mean, save_var = output
        ctx.mark_non_differentiable(save_mean, save_var)
        ctx.save_for_backward(x, weight, bias, save_mean, save_var)
        ctx.args = (training, eps, negative_slope)
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None

    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, bias, save_mean, save_var = ctx.saved_tensors
        dx, dw, db = backward_op(grad_y, x, weight, bias, save_mean, save_var, *ctx.args)
        return dx, dw if ctx.has_weight else None, db if ctx.has_bias else None, None, None, None, None, None

    torch.library.register_autograd(f"{name}_forward", backward, setup_context=setup_context)
    refuse_double_backward(f"{name}_backward")
    refuse_double_backward(f"{name}_backward_from_output")


_register_fake_and_autograd("gencore_triton")
if _native.loaded:
    # The extension registers the native op's autograd in C++; an older build of it did not.
    _register_fake_and_autograd("gencore", autograd=not torch._C._dispatch_has_kernel_for_dispatch_key(
        f"gencore::{OP}_forward", "Autograd"))


def _has_native_kernel(device_type: str) -> bool:
    return _native.loaded and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"gencore::{OP}_forward", device_type.upper())


# Which backends implement this op in this build (a branch may lack the Triton launchers or CUDA kernels).
SUPPORTED = tuple(
    b for b, ok in (("torch", True), ("cpu", _has_native_kernel("cpu")), ("cuda", _has_native_kernel("cuda")),
                    ("triton", importlib.util.find_spec(_TRITON_MODULE) is not None)) if ok)


def _ops(name: str):
    """(forward, backward, forward_inplace, backward_from_output) of a backend (looked up once: ~4 us). A
    plain dict, not functools.cache, which torch.compile warns about on every traced call."""
    ops = _ops_cache.get(name)
    if ops is None:
        if name == "torch":
            ops = forward_reference, backward_reference, forward_inplace_reference, backward_from_output_reference
        else:
            ns = torch.ops.gencore_triton if name == "triton" else torch.ops.gencore
            ops = tuple(getattr(ns, f"{OP}_{n}") for n in _NAMES)
        _ops_cache[name] = ops
    return ops


_ops_cache: dict[str, tuple] = {}


# ---- memory-saving mode ---------------------------------------------------------------------------------
class _InplaceFunction(torch.autograd.Function):
    """y overwrites x; backward rebuilds x̂ from y. Channels whose weight cannot be inverted keep a copy."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, eps, negative_slope, backend):
        fwd, _, fwd_inplace, _ = _ops(backend)
        idx = None
        if weight is not None:
            w = weight.detach().abs()
            b = bias.detach().abs() if bias is not None else torch.zeros_like(w)
            keep = (w == 0) | (b > INPLACE_MAX_BIAS_WEIGHT_RATIO * w)
            if bool(keep.any()):
                idx = keep.nonzero().squeeze(1)
        x_kept = x.index_select(1, idx) if idx is not None else None
        save_mean, save_var = fwd_inplace(x, weight, bias, running_mean, running_var, training, eps, negative_slope)
        ctx.mark_dirty(x)
        ctx.mark_non_differentiable(save_mean, save_var)
        ctx.save_for_backward(x, weight, bias, save_mean, save_var, x_kept, idx)
        ctx.args = (training, eps, negative_slope)
        ctx.backend = backend
        return x, save_mean, save_var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        y, weight, bias, save_mean, save_var, x_kept, idx = ctx.saved_tensors
        _, bwd, _, bwd_from_output = _ops(ctx.backend)
        dx, dw, db = bwd_from_output(grad_y, y, weight, bias, save_mean, save_var, *ctx.args)
        if idx is not None:
            # Channels kept as input: the ordinary backward from x, written over the rebuilt ones.
            sel = (lambda t: None if t is None else t.index_select(0, idx))
            dx_k, dw_k, db_k = bwd(grad_y.index_select(1, idx), x_kept, sel(weight), sel(bias), sel(save_mean),
                                   sel(save_var), *ctx.args)
            dx = dx.index_copy(1, idx, dx_k)
            dw = dw.index_copy(0, idx, dw_k)
            db = db.index_copy(0, idx, db_k)
        return (dx, dw if weight is not None else None, db if bias is not None else None,
                None, None, None, None, None, None)


# Which channels need a kept copy depends on the weight's values: data-dependent control flow that
# torch.compile cannot put in one graph. The in-place mode with autograd therefore runs eagerly (a graph
# break; fullgraph=True models should use inplace=False, which compiles into the graph).
@torch.compiler.disable
def _apply_inplace(x, weight, bias, running_mean, running_var, training, eps, negative_slope, backend):
    _, mean, var = _InplaceFunction.apply(x, weight, bias, running_mean, running_var, training, eps,
                                          negative_slope, backend)
    return mean, var


# ---- synchronized (multi-process) mode ------------------------------------------------------------------
def sync_group(process_group=None, sync: bool = False):
    """The process group a synchronized layer uses now, or None when it runs unsynchronized: no group asked
    for, torch.distributed not initialized, or a group of one process (exactly the plain layer then)."""
    if process_group is None and not sync:
        return None
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _collective(fn, what, group):
    """Run a collective; a dead, hung or absent peer becomes an error naming this op (not a bare gloo one)."""
    try:
        fn()
    except RuntimeError as exc:
        import torch.distributed as dist
        raise RuntimeError(f"gencore.{OP}: synchronizing {what} over {dist.get_world_size(group)} processes failed "
                           "(a process died, stopped, or did not call this layer; every rank must run it, also "
                           f"with an empty batch): {exc}") from exc


def _combine_stats(x, group):
    """Global (mean, biased var, count) of x's channels over every rank of `group`, as nn.SyncBatchNorm
    combines them: each rank's (count, mean, var) in ONE all_gather (not invstd: uneven and empty batches
    stay exact), merged in float64 with Chan's formula (no E[x^2] - E[x]^2 cancellation)."""
    import torch.distributed as dist
    c = x.shape[1]
    local = torch.zeros(2 * c + 1, dtype=torch.float64, device=x.device)
    if x.numel() > 0:  # an empty rank sends count 0 and still joins the collective
        var, mean = torch.var_mean(x.to(compute_dtype(x.dtype)), dim=_reduce_dims(x), unbiased=False)
        local[0] = x.numel() // c
        local[1:c + 1] = mean
        local[c + 1:] = var
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    _collective(lambda: dist.all_gather(parts, local, group=group), "batch statistics", group)
    g = torch.stack(parts)
    counts, means, variances = g[:, :1], g[:, 1:c + 1], g[:, c + 1:]
    total = counts.sum()
    mean = (counts * means).sum(0) / total.clamp(min=1)
    m2 = (counts * (variances + (means - mean) ** 2)).sum(0)
    return mean, m2 / total.clamp(min=1), int(total.item())


class _SyncFunction(torch.autograd.Function):
    """Training-mode BatchNorm+activation with statistics of the global batch (all ranks of a group).

    The backend's kernels are used unchanged: the local statistics are gathered and merged, the backend's
    eval-style forward normalizes with the global (mean, var), and in backward the backend's eval-style
    backward gives dx_eval = a*dz together with the local sums (Σdz, Σdz·x̂); those two sums are all-reduced
    in ONE collective and dx = dx_eval - a*(Σdz + x̂ Σdz·x̂) / N_global is applied elementwise. Returned
    weight/bias gradients are this rank's own sums, as nn.SyncBatchNorm's are (DDP averages them)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, negative_slope, backend, group):
        ct = compute_dtype(x.dtype)
        mean64, var64, total = _combine_stats(x, group)
        if total == 1:  # every rank sees the same total, so every rank raises (no deadlock)
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()} "
                             "on this rank and 1 value per channel over all ranks")
        mean, var = mean64.to(ct), var64.to(ct)
        if x.numel() > 0:
            y, _, _ = _ops(backend)[0](x, weight, bias, mean, var, False, eps, negative_slope)
        else:
            y = _output_like(x)
        if running_mean is not None and total > 1:
            _update_running_stats(running_mean, running_var, mean64, var64, momentum, total)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.args = (eps, negative_slope, backend, group, total)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        import torch.distributed as dist
        x, weight, bias, mean, var = ctx.saved_tensors
        eps, negative_slope, backend, group, total = ctx.args
        c = x.shape[1]
        ct = compute_dtype(x.dtype)
        if x.numel() > 0:
            dx, dw, db = _ops(backend)[1](grad_y, x, weight, bias,
                                          mean, var, False, eps, negative_slope)
        else:
            dx = _output_like(x)
            dw = db = torch.zeros(c, dtype=_param_grad_dtype(x, weight), device=x.device)
        if ctx.needs_input_grad[0]:
            sums = torch.cat([db, dw]).to(torch.float64)
            # Peers block here, so an empty rank joins too.
            _collective(lambda: dist.all_reduce(sums, group=group), "gradient sums", group)
            if x.numel() > 0:
                invstd = torch.rsqrt(var.to(torch.float64) + eps)
                a = invstd * (weight.to(torch.float64) if weight is not None else 1.0)
                k_x = a * invstd * sums[c:] / total           # coefficient of (x - mean)
                k_0 = a * sums[:c] / total - k_x * mean.to(torch.float64)  # the constant part
                shape = _channel_shape(x)
                dx32 = dx.to(ct)
                dx32 = dx32.addcmul_(x.to(ct), k_x.to(ct).view(shape), value=-1).sub_(k_0.to(ct).view(shape))
                dx = dx32.to(x.dtype)
        else:
            dx = None
        return (dx, dw if ctx.needs_input_grad[1] else None, db if ctx.needs_input_grad[2] else None,
                None, None, None, None, None, None, None)


# Collectives inside: run eagerly under torch.compile (a graph break), as the in-place mode does.
@torch.compiler.disable
def _apply_sync(*args):
    return _SyncFunction.apply(*args)


# ---- argument checks ------------------------------------------------------------------------------------
def _check_channel_tensor(t, x, name):
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"gencore.{OP}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"gencore.{OP}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
    if t.dim() != 1 or t.shape[0] != x.shape[1]:
        raise ValueError(f"gencore.{OP}: {name} must have shape ({x.shape[1]},) (one value per channel of x), "
                         f"got {tuple(t.shape)}")
    if t.device != x.device:
        raise RuntimeError(f"gencore.{OP}: {name} is on {t.device} but x is on {x.device}")


def _check_args(x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope, inplace,
                check_count=True):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"gencore.{OP}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"gencore.{OP}: x must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"gencore.{OP}: x must have shape (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W), "
                         f"got {tuple(x.shape)}")
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                    (bias, "bias")):
        _check_channel_tensor(t, x, name)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"gencore.{OP}: running_mean and running_var must either both be None or neither be None")
    if not training and running_mean is None:
        raise ValueError(f"gencore.{OP}: running_mean and running_var are required when training=False "
                         "(the modules use batch statistics in eval mode when track_running_stats=False)")
    if momentum is None or not isinstance(momentum, (int, float)):
        raise TypeError(f"gencore.{OP}: momentum must be a float (momentum=None, the cumulative average, is "
                        f"handled by the BatchNormLeakyReLU modules), got {momentum!r}")
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"gencore.{OP}: eps must be a float >= 0, got {eps!r}")
    if not isinstance(negative_slope, (int, float)):
        raise TypeError(f"gencore.{OP}: negative_slope must be a float, got {negative_slope!r}")
    if inplace and not negative_slope > 0:
        raise ValueError(f"gencore.{OP}: inplace=True rebuilds the input by inverting the activation, which "
                         f"needs negative_slope > 0; got {negative_slope} (ReLU cannot be inverted). "
                         "Use inplace=False for ReLU")
    if training and check_count:  # synchronized: the global count is checked after the gather instead
        per_channel = x.numel() // x.shape[1] if x.shape[1] else 0
        if per_channel == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")


def _update_running_stats(running_mean, running_var, mean, var, momentum, per_channel):
    # What F.batch_norm does: biased variance normalizes, the unbiased one enters the running average.
    # The kernels' statistics never require grad; without running stats that do (a user's choice), no
    # graph can be recorded and the no_grad context (~4 us) is skipped.
    if running_mean.requires_grad or running_var.requires_grad or mean.requires_grad or var.requires_grad:
        with torch.no_grad():
            _update_running_stats(running_mean.detach(), running_var.detach(), mean.detach(), var.detach(),
                                  momentum, per_channel)
        return
    unbiased = var * (per_channel / (per_channel - 1))
    if mean.dtype != running_mean.dtype or var.dtype != running_var.dtype:
        mean, unbiased = mean.to(running_mean.dtype), unbiased.to(running_var.dtype)
    torch._foreach_lerp_((running_mean, running_var), (mean, unbiased), float(momentum))  # one call for both


# ---- public op ------------------------------------------------------------------------------------------
# The eager CPU fast path (csrc/bindings/batch_norm_leaky_relu_step.cpp): the forward op and the running-
# statistics update in one C++ call, ~30 us less per call than `python_path` (more with cold caches). It
# takes only calls it runs as `python_path` does (it updates the running statistics in double, rounding
# once, as nn.BatchNorm's CPU kernel does; `_update_running_stats` may differ in the last bit) and returns
# None for anything else: then `python_path` runs and raises any error. Not under torch.compile (which
# traces `python_path`) and not for tensor subclasses.
_eager_step = getattr(_native.module, "batch_norm_leaky_relu_step", None)


# Argument types the fast path takes; anything else (tensor subclasses, NumPy or 0-d tensor scalars, ...)
# goes to the Python path, which handles or rejects it as it always did.
_PLAIN_TENSOR = frozenset((torch.Tensor, torch.nn.Parameter, type(None)))


def _plain_number(v) -> bool:
    """A Python float, or an int that converts to a double exactly (not 10**400: float() raises there)."""
    return type(v) is float or (type(v) is int and -(1 << 53) <= v <= (1 << 53))


def eager_step(x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope, inplace,
               backend, process_group, sync, num_batches_tracked=None):
    """The op through the fast path: y, or None when it must take the Python path (then nothing was
    changed), as always for the in-place and synchronized modes. With `num_batches_tracked` (a module's
    counter) it is incremented first, and momentum=None means the cumulative average."""
    if (_eager_step is None or inplace or process_group is not None or sync or type(x) is not torch.Tensor
            or type(training) is not bool
            or type(running_mean) not in _PLAIN_TENSOR or type(running_var) not in _PLAIN_TENSOR
            or type(weight) not in _PLAIN_TENSOR or type(bias) not in _PLAIN_TENSOR
            or type(num_batches_tracked) not in _PLAIN_TENSOR
            or not (_plain_number(momentum) or momentum is None and num_batches_tracked is not None)
            or not _plain_number(eps) or not _plain_number(negative_slope) or torch.compiler.is_compiling()):
        return None
    try:
        name = backends.select(OP, x, backend, SUPPORTED)
    except (ValueError, RuntimeError):  # the Python path raises it, after its own argument checks
        return None
    if name != "cpu":
        return None
    return _eager_step(x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope,
                       num_batches_tracked)


def batch_norm_leaky_relu(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                          weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                          training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                          negative_slope: float = 0.01, inplace: bool = False, *,
                          backend: str | None = None, process_group=None, sync: bool = False) -> torch.Tensor:
    """leaky_relu(F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps), negative_slope).

    Arguments are those of torch.nn.functional.batch_norm plus the slope; negative_slope=0 is ReLU.
    training=True normalizes with the batch statistics and, when running stats are given, updates them
    in place (momentum-weighted, unbiased variance) exactly as F.batch_norm does.
    x: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); contiguous or channels-last (the output keeps
    the layout; other strides are copied). weight/bias may be float32 while x is float16/bfloat16.
    inplace=True (memory-saving mode, needs negative_slope > 0) writes the output over x and returns x;
    autograd then keeps only the output (plus a copy of channels whose weight is 0 or tiny against the
    bias), so one activation per layer is freed.
    process_group= (a torch.distributed group) or sync=True (the default group): with training=True the
    statistics are those of the global batch over all ranks of the group, like nn.SyncBatchNorm (every
    rank must call it, also with an empty batch). Without an initialized process group, or a group of one
    process, or training=False, this is the unsynchronized op. Not with inplace=True.
    """
    y = eager_step(x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope, inplace,
                   backend, process_group, sync)
    if y is not None:
        return y
    return python_path(x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope, inplace,
                       backend=backend, process_group=process_group, sync=sync)


def python_path(x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope, inplace,
                *, backend, process_group, sync):
    """batch_norm_leaky_relu without the eager fast path: every backend and mode, the argument checks."""
    group = sync_group(process_group, sync) if training else None
    if group is not None and inplace:
        raise ValueError(f"gencore.{OP}: inplace=True is not supported with process_group/sync (synchronized "
                         "statistics); use inplace=False")
    _check_args(x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope, inplace,
                check_count=group is None)
    name = backends.select(OP, x, backend, SUPPORTED)
    eps, negative_slope = float(eps), float(negative_slope)
    if group is not None:
        return _apply_sync(x, weight, bias, running_mean, running_var, momentum, eps, negative_slope, name, group)
    if (name == "torch" and not inplace) or x.numel() == 0:
        y = batch_norm_leaky_relu_reference(x, running_mean, running_var, weight, bias, training, momentum, eps,
                                            negative_slope)
        return x.copy_(y) if inplace else y
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if inplace:
        if needs_grad and x.is_leaf and x.requires_grad:
            raise RuntimeError(f"gencore.{OP}(inplace=True): x is a leaf tensor that requires grad and cannot be "
                               "overwritten; use inplace=False or pass a non-leaf tensor (e.g. a conv output)")
        if needs_grad:
            mean, var = _apply_inplace(x, weight, bias, running_mean, running_var, training, eps,
                                       negative_slope, name)
        else:
            mean, var = _ops(name)[2](x, weight, bias, running_mean, running_var, training, eps, negative_slope)
        y = x
    else:
        forward_op = _ops(name)[0]
        y, mean, var = forward_op(x, weight, bias, running_mean, running_var, training, eps, negative_slope)
    if training and running_mean is not None:
        _update_running_stats(running_mean, running_var, mean, var, momentum, x.numel() // x.shape[1])
    return y
