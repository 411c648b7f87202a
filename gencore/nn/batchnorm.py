"""BatchNorm + LeakyReLU/ReLU as one layer, with nn.BatchNorm{1,2,3}d's exact state dict, and a converter.

The modules derive from torch.nn.modules.batchnorm._NormBase, the base nn.BatchNorm*d share, so their
parameters, buffers (running_mean, running_var, num_batches_tracked), state-dict keys, version handling
and reset methods are BatchNorm's own. They deliberately do *not* derive from _BatchNorm: code that
rewrites every _BatchNorm (nn.SyncBatchNorm.convert_sync_batchnorm, BN freezing/folding utilities)
would otherwise replace the layer and silently drop its activation.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from gencore.ops.batch_norm_leaky_relu import eager_step, python_path

__all__ = ["BatchNormLeakyReLU1d", "BatchNormLeakyReLU2d", "BatchNormLeakyReLU3d", "SyncBatchNormLeakyReLU",
           "fuse_batchnorm_activations", "sync_batchnorm_activations"]


class _BatchNormLeakyReLU(_NormBase):
    _dims: tuple[int, ...] = ()
    _bn_name = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, negative_slope: float = 0.01, inplace: bool = False,
                 device=None, dtype=None, backend: str | None = None, process_group=None,
                 sync: bool = False) -> None:
        if inplace and not negative_slope > 0:
            raise ValueError(f"{type(self).__name__}: inplace=True needs negative_slope > 0 (the activation is "
                             f"inverted in backward), got {negative_slope}; ReLU layers must use inplace=False")
        if inplace and (sync or process_group is not None):
            raise ValueError(f"{type(self).__name__}: inplace=True is not supported with synchronized statistics "
                             "(process_group= / sync=True); use inplace=False")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        # Synchronized statistics (training mode only): process_group, or sync=True for the default group.
        self.process_group = process_group
        self.sync = bool(sync) or process_group is not None
        self.negative_slope = negative_slope
        self.inplace = inplace
        self.backend = backend

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in self._dims:
            want = " or ".join(f"{d}D" for d in self._dims)
            raise ValueError(f"{type(self).__name__}: expected {want} input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same decisions as nn.BatchNorm*d.forward (torch/nn/modules/batchnorm.py).
        self._check_input_dim(x)
        counts = self.training and self.track_running_stats and self.num_batches_tracked is not None
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_running else None
        running_var = self.running_var if use_running else None
        # The eager CPU fast path: counter, forward and running statistics in one C++ call. Never with a
        # process group or sync set (also in eval mode), like the in-place mode.
        y = eager_step(x, running_mean, running_var, self.weight, self.bias, bn_training,
                       self.momentum if counts else (self.momentum or 0.0), self.eps, self.negative_slope,
                       self.inplace, self.backend, self.process_group, self.sync,
                       self.num_batches_tracked if counts else None)
        if y is not None:
            return y
        exponential_average_factor = 0.0 if self.momentum is None else self.momentum
        if counts:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                exponential_average_factor = 1.0 / float(self.num_batches_tracked)
            else:
                exponential_average_factor = self.momentum
        return python_path(
            x, running_mean, running_var, self.weight, self.bias, bn_training, exponential_average_factor, self.eps,
            self.negative_slope, self.inplace, backend=self.backend,
            # Like nn.SyncBatchNorm: synchronize only in training mode (eval uses the running statistics).
            process_group=self.process_group if self.training else None, sync=self.sync and self.training)

    def extra_repr(self) -> str:
        extra = f", negative_slope={self.negative_slope}"
        if self.inplace:
            extra += ", inplace=True"
        if self.backend:
            extra += f", backend={self.backend!r}"
        if self.sync:
            extra += ", sync=True"
        return super().extra_repr() + extra


class BatchNormLeakyReLU1d(_BatchNormLeakyReLU):
    """nn.BatchNorm1d followed by nn.LeakyReLU(negative_slope) (ReLU when 0); input (N, C) or (N, C, L)."""
    _dims = (2, 3)
    _bn_name = "BatchNorm1d"


class BatchNormLeakyReLU2d(_BatchNormLeakyReLU):
    """nn.BatchNorm2d followed by nn.LeakyReLU(negative_slope) (ReLU when 0); input (N, C, H, W).

    State dict identical to nn.BatchNorm2d. inplace=True is the memory-saving mode (output written over
    the input, needs negative_slope > 0). backend=None follows gencore's process-wide choice.
    """
    _dims = (4,)
    _bn_name = "BatchNorm2d"


class BatchNormLeakyReLU3d(_BatchNormLeakyReLU):
    """nn.BatchNorm3d followed by nn.LeakyReLU(negative_slope) (ReLU when 0); input (N, C, D, H, W)."""
    _dims = (5,)
    _bn_name = "BatchNorm3d"


class SyncBatchNormLeakyReLU(_BatchNormLeakyReLU):
    """nn.SyncBatchNorm followed by nn.LeakyReLU(negative_slope) (ReLU when 0); input (N, C, *).

    In training mode the statistics are those of the global batch over all ranks of `process_group`
    (default: the default group), on CPU processes (gloo) too, which nn.SyncBatchNorm refuses. Without an
    initialized process group it is the plain fused layer. State dict identical to nn.SyncBatchNorm.
    """
    _dims = (2, 3, 4, 5)
    _bn_name = "SyncBatchNorm"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, negative_slope: float = 0.01,
                 device=None, dtype=None, backend: str | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, negative_slope, False,
                         device=device, dtype=dtype, backend=backend, process_group=process_group, sync=True)


_FUSED_FOR = {nn.BatchNorm1d: BatchNormLeakyReLU1d, nn.BatchNorm2d: BatchNormLeakyReLU2d,
              nn.BatchNorm3d: BatchNormLeakyReLU3d}


def _fused_from(bn: nn.Module, act: nn.Module, inplace: bool, backend: str | None) -> _BatchNormLeakyReLU:
    slope = float(act.negative_slope) if isinstance(act, nn.LeakyReLU) else 0.0
    # Built on the meta device, then handed bn's own Parameter and buffer objects: optimizers and other
    # references to them keep working, and device, dtype and values stay exactly what they were.
    if type(bn) is nn.SyncBatchNorm:  # keeps its group; synchronized layers have no in-place mode
        fused = SyncBatchNormLeakyReLU(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                       process_group=bn.process_group, negative_slope=slope, device="meta",
                                       backend=backend)
    else:
        fused = _FUSED_FOR[type(bn)](bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                     negative_slope=slope, inplace=inplace and slope > 0, device="meta",
                                     backend=backend)
    for name in ("weight", "bias"):
        setattr(fused, name, getattr(bn, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        fused._buffers[name] = bn._buffers.get(name)
    fused.train(bn.training)
    return fused


def fuse_batchnorm_activations(model: nn.Module, *, inplace: bool = False,
                               backend: str | None = None) -> nn.Module:
    """Replace each nn.BatchNorm{1,2,3}d directly followed by nn.LeakyReLU or nn.ReLU inside an
    nn.Sequential (at any depth, including `model` itself) by the fused BatchNormLeakyReLU*d layer.

    The fused layer takes the BatchNorm's place and the activation's place becomes nn.Identity(), so
    state-dict keys, indices and parameters (the same Parameter objects) are unchanged; device, dtype
    and train/eval mode are kept. Modifies `model` in place and returns it; the number of pairs fused is
    stored as `model.fused_batchnorm_activations` (an int). Only exact nn.BatchNorm*d and nn.SyncBatchNorm
    types are fused (not subclasses); an nn.SyncBatchNorm becomes SyncBatchNormLeakyReLU with the same
    process group (and never in-place). inplace=True turns on the memory-saving mode for LeakyReLU pairs
    (ReLU pairs stay out-of-place: ReLU cannot be inverted).
    """
    count = 0
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        keys = list(module._modules.keys())
        for first, second in zip(keys, keys[1:]):
            bn, act = module._modules[first], module._modules[second]
            if (type(bn) in _FUSED_FOR or type(bn) is nn.SyncBatchNorm) and type(act) in (nn.LeakyReLU, nn.ReLU):
                module._modules[first] = _fused_from(bn, act, inplace, backend)
                module._modules[second] = nn.Identity()
                count += 1
    model.fused_batchnorm_activations = count
    return model


def sync_batchnorm_activations(model: nn.Module, process_group=None) -> nn.Module:
    """Synchronize every gencore fused BatchNorm+activation layer of `model` over `process_group` (None:
    the default group, looked up at each forward), like nn.SyncBatchNorm.convert_sync_batchnorm does for
    nn.BatchNorm*d (which skips gencore's layers: they are not _BatchNorm). In place; returns `model`;
    the count is stored as `model.synced_batchnorm_activations`. In-place layers become out-of-place."""
    count = 0
    for module in model.modules():
        if isinstance(module, _BatchNormLeakyReLU):
            module.process_group, module.sync, module.inplace = process_group, True, False
            count += 1
    model.synced_batchnorm_activations = count
    return model
