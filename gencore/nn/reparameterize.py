"""Latent sampling modules for VAEs: z = mu + exp(0.5 * logvar) * eps with in-kernel Philox noise."""
from __future__ import annotations

import torch
from torch import nn

from gencore.ops import kl_normal, reparameterize, reparameterize_kl
from gencore.ops._checks import REDUCTIONS


class Reparameterize(nn.Module):
    """`Reparameterize()(mu, logvar)` -> z = mu + exp(0.5 * logvar) * eps.

    In training mode it samples; in eval mode it returns mu (the posterior mean) unless `sample=True`.
    generator: a torch.Generator on the tensors' device (None: PyTorch's default generator).
    backend: None follows gencore's process-wide choice.
    """

    def __init__(self, sample: bool = False, generator: torch.Generator | None = None,
                 backend: str | None = None) -> None:
        super().__init__()
        self.sample = sample
        self.generator = generator
        self.backend = backend

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if not (self.training or self.sample):
            return mu
        return reparameterize(mu, logvar, generator=self.generator, backend=self.backend)

    def extra_repr(self) -> str:
        return f"sample={self.sample}" + (f", backend={self.backend!r}" if self.backend else "")


class ReparameterizeKL(nn.Module):
    """`ReparameterizeKL(reduction="sum")(mu, logvar)` -> (z, kl) from one fused pass over mu and logvar:
    z as in Reparameterize (mu in eval mode unless `sample=True`) and KL(N(mu, exp(logvar)) || N(0, I))
    reduced by 'none' | 'sum' (default) | 'mean' | 'batchmean'."""

    def __init__(self, reduction: str = "sum", sample: bool = False, generator: torch.Generator | None = None,
                 backend: str | None = None) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"ReparameterizeKL: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.sample = sample
        self.generator = generator
        self.backend = backend

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not (self.training or self.sample):
            return mu, kl_normal(mu, logvar, self.reduction, backend=self.backend)
        return reparameterize_kl(mu, logvar, reduction=self.reduction, generator=self.generator,
                                 backend=self.backend)

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction!r}, sample={self.sample}"
                + (f", backend={self.backend!r}" if self.backend else ""))
