"""Argument checks shared by the public ops: clear Python errors before any kernel runs."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
REDUCTIONS = ("none", "sum", "mean", "batchmean")


def check_float_tensor(t, op: str, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"gencore.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"gencore.{op}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def check_pair(a, b, op: str, name_a: str, name_b: str) -> None:
    """Two tensors read elementwise together: floating, same shape, dtype and device."""
    check_float_tensor(a, op, name_a)
    check_float_tensor(b, op, name_b)
    if a.shape != b.shape:
        raise ValueError(f"gencore.{op}: {name_a} and {name_b} must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"gencore.{op}: {name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise RuntimeError(f"gencore.{op}: {name_a} and {name_b} must be on the same device, "
                           f"got {a.device} and {b.device}")


def check_reduction(reduction, op: str, like: torch.Tensor) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"gencore.{op}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduction!r}")
    if reduction == "batchmean" and like.dim() == 0:
        raise ValueError(f"gencore.{op}: reduction='batchmean' needs at least one (batch) dimension")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and accumulation dtype: float32 for half types, the dtype itself otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def reduction_scale(reduction: str, like: torch.Tensor) -> float:
    """Factor on the sum: 1 for sum, 1/numel for mean (NaN when empty, as torch), 1/N for batchmean."""
    if reduction == "mean":
        return 1.0 / like.numel() if like.numel() else float("nan")
    if reduction == "batchmean":
        return 1.0 / like.shape[0] if like.shape[0] else float("nan")
    return 1.0


def refuse_double_backward(qualname: str) -> None:
    """Register an autograd formula for a backward op that raises a clear error when its output is
    differentiated again (double backward), instead of PyTorch's default for ops without one: a warning
    and silently zero second-order gradients. A first backward with create_graph=True still works.
    The native ops get the same behaviour in C++ (csrc/bindings/autograd.cpp)."""
    def backward(ctx, *grads):
        raise RuntimeError(
            f"derivative for {qualname} is not implemented: gencore's fused ops support one backward, not "
            "double backward (differentiating a gradient, e.g. a gradient penalty); use backend='torch' or "
            "unfused torch.nn layers for that part of the model")

    torch.library.register_autograd(qualname, backward)
