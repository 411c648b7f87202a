"""Small MLP GAN for 2-D data, as in the PacGAN / VEEGAN mixture-of-Gaussians experiments."""
from __future__ import annotations

import torch
from torch import nn

from gencore.models.layers import batch_norm_activation


class MLPGenerator(nn.Module):
    """z (N, nz) -> points (N, out_dim): n_layers x (Linear -> BatchNorm -> ReLU) of `hidden` units,
    then Linear. Defaults are PacGAN's 2-D generator (4 x 400, 2-d Gaussian z)."""

    def __init__(self, nz: int = 2, hidden: int = 400, n_layers: int = 4, out_dim: int = 2, fused: bool = True):
        super().__init__()
        self.nz, self.fused = nz, fused
        layers: list[nn.Module] = []
        d = nz
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden), *batch_norm_activation(1, hidden, 0.0, fused)]
            d = hidden
        layers.append(nn.Linear(d, out_dim))
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class MLPDiscriminator(nn.Module):
    """points (N, in_dim) -> logits (N // pack,).

    PacGAN packing: `pack` consecutive samples (all real or all generated) are concatenated into one
    input of pack*in_dim values, so the discriminator judges sets of samples, which penalizes mode
    collapse. Blocks are Linear -> LeakyReLU(0.2) (PacGAN's discriminator has no BatchNorm: it would
    mix samples across packs); batch_norm=True adds BatchNorm before the activation.
    """

    def __init__(self, in_dim: int = 2, hidden: int = 200, n_layers: int = 3, pack: int = 1,
                 batch_norm: bool = False, fused: bool = True):
        super().__init__()
        if pack < 1:
            raise ValueError(f"MLPDiscriminator: pack must be >= 1, got {pack}")
        self.in_dim, self.pack, self.fused = in_dim, pack, fused
        layers: list[nn.Module] = []
        d = in_dim * pack
        for _ in range(n_layers):
            layers.append(nn.Linear(d, hidden))
            layers += batch_norm_activation(1, hidden, 0.2, fused) if batch_norm else [nn.LeakyReLU(0.2, inplace=True)]
            d = hidden
        layers.append(nn.Linear(d, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.pack:
            raise ValueError(f"MLPDiscriminator: batch of {x.shape[0]} is not divisible by pack={self.pack}")
        return self.main(x.reshape(x.shape[0] // self.pack, self.pack * self.in_dim)).flatten()
