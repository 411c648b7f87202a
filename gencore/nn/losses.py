"""Loss modules."""
from __future__ import annotations

import torch
from torch import nn

from gencore.ops import kl_normal
from gencore.ops._checks import REDUCTIONS


class KLDivergence(nn.Module):
    """KL(N(mu, exp(logvar)) || N(0, I)) as a loss module: `KLDivergence(reduction="sum")(mu, logvar)`.

    reduction: 'none' | 'sum' (default, the usual VAE term) | 'mean' | 'batchmean'.
    backend: None follows gencore's process-wide choice.
    """

    def __init__(self, reduction: str = "sum", backend: str | None = None) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"KLDivergence: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.backend = backend

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return kl_normal(mu, logvar, self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}" + (f", backend={self.backend!r}" if self.backend else "")
