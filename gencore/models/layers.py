"""The ONE place that decides between gencore's fused layers and plain torch.nn layers.

Models ask for "BatchNorm followed by an activation" and for "reparameterize + KL"; with fused=True
they get gencore's fused module/op, with fused=False the plain torch.nn composition. The fused module
takes the BatchNorm's slot and an nn.Identity takes the activation's slot, so both variants have the
same module indices and therefore the same state dict (checkpoints load across fused=True/False).
"""
from __future__ import annotations

import torch
from torch import nn

import gencore.nn as gnn
import gencore.ops as gops

_FUSED_BN = {1: "BatchNormLeakyReLU1d", 2: "BatchNormLeakyReLU2d"}
_PLAIN_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def fused_layers_available() -> bool:
    """True when this install has the fused BatchNorm+activation modules."""
    return all(hasattr(gnn, name) for name in _FUSED_BN.values())


def batch_norm_activation(dims: int, num_features: int, negative_slope: float, fused: bool) -> list[nn.Module]:
    """[BatchNorm, activation] as two modules: fused -> [gencore fused module, Identity];
    unfused -> [nn.BatchNorm{dims}d, nn.ReLU or nn.LeakyReLU]. negative_slope == 0 means ReLU."""
    if fused:
        name = _FUSED_BN[dims]
        cls = getattr(gnn, name, None)
        if cls is None:
            raise RuntimeError(
                f"fused=True needs gencore.nn.{name}, which this gencore build does not have; "
                "pass fused=False (CLI: --no-fused) to use plain torch.nn layers")
        return [cls(num_features, negative_slope=negative_slope), nn.Identity()]
    act = nn.ReLU(inplace=True) if negative_slope == 0 else nn.LeakyReLU(negative_slope, inplace=True)
    return [_PLAIN_BN[dims](num_features), act]


def is_batch_norm(module: nn.Module) -> bool:
    """BatchNorm-like (plain or fused): has the BatchNorm parameters that DCGAN's init touches."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    return any(isinstance(module, getattr(gnn, name)) for name in _FUSED_BN.values() if hasattr(gnn, name))


def is_fused(module: nn.Module) -> bool:
    return any(isinstance(module, getattr(gnn, name)) for name in _FUSED_BN.values() if hasattr(gnn, name))


def reparameterize_kl(mu: torch.Tensor, logvar: torch.Tensor, fused: bool,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """z = mu + exp(logvar/2) * eps and KL(N(mu, exp(logvar)) || N(0, I)) summed over all elements.

    fused: gencore.ops.reparameterize_kl (eps drawn inside the kernel, never stored); where this build
    lacks it, gencore's kl_normal plus torch sampling. Unfused: plain torch.
    """
    if fused:
        op = getattr(gops, "reparameterize_kl", None)
        if op is not None:
            return op(mu, logvar, reduction="sum", generator=generator)
        kl = gops.kl_normal(mu, logvar, "sum")
    else:
        kl = -0.5 * torch.sum(1 + logvar.float() - mu.float() ** 2 - logvar.float().exp()).to(mu.dtype)
    eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps, kl
