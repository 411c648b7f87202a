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


class Maxout(nn.Module):
    """Linear maxout (Goodfellow et al. 2013; Blocks' LinearMaxout used by PacGAN/VEEGAN): one Linear to
    pieces * out_features values, output = max over the `pieces` values of each unit. The Linear's
    output is laid out piece-major, (pieces, out_features), which reduces faster on the CPU."""

    def __init__(self, in_features: int, out_features: int, pieces: int):
        super().__init__()
        if pieces < 2:
            raise ValueError(f"Maxout: pieces must be >= 2, got {pieces}")
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(*y.shape[:-1], self.pieces, self.out_features).amax(-2)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, pieces={self.pieces}"


class MLPDiscriminator(nn.Module):
    """points (N, in_dim) -> logits (N // pack,).

    PacGAN packing: `pack` consecutive samples (all real or all generated) are concatenated into one
    input of pack*in_dim values, so the discriminator judges sets of samples, which penalizes mode
    collapse. Blocks are Linear -> LeakyReLU(0.2) (PacGAN's discriminator has no BatchNorm: it would
    mix samples across packs); batch_norm=True adds BatchNorm before the activation.

    maxout=K > 1 makes every hidden block a linear maxout layer with K pieces (PacGAN's and VEEGAN's 2-D
    discriminator: 3 x 200 units, 5 pieces, no BatchNorm) instead of Linear -> LeakyReLU. Maxout has
    no fused variant, so the state dict is the same for fused=True and fused=False.
    """

    def __init__(self, in_dim: int = 2, hidden: int = 200, n_layers: int = 3, pack: int = 1,
                 batch_norm: bool = False, fused: bool = True, maxout: int = 1):
        super().__init__()
        if pack < 1:
            raise ValueError(f"MLPDiscriminator: pack must be >= 1, got {pack}")
        if maxout < 1:
            raise ValueError(f"MLPDiscriminator: maxout must be >= 1 (1: LeakyReLU blocks), got {maxout}")
        if maxout > 1 and batch_norm:
            raise ValueError("MLPDiscriminator: maxout and batch_norm cannot be combined")
        self.in_dim, self.pack, self.fused, self.maxout = in_dim, pack, fused, maxout
        layers: list[nn.Module] = []
        d = in_dim * pack
        for _ in range(n_layers):
            if maxout > 1:
                layers.append(Maxout(d, hidden, maxout))
            else:
                layers.append(nn.Linear(d, hidden))
                layers += batch_norm_activation(1, hidden, 0.2, fused) if batch_norm else [nn.LeakyReLU(0.2, inplace=True)]
            d = hidden
        layers.append(nn.Linear(d, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.pack:
            raise ValueError(f"MLPDiscriminator: batch of {x.shape[0]} is not divisible by pack={self.pack}")
        return self.main(x.reshape(x.shape[0] // self.pack, self.pack * self.in_dim)).flatten()


def pacgan_init(module: nn.Module, std: float = 0.02) -> nn.Module:
    """PacGAN's / VEEGAN's initialization of the 2-D GAN: every Linear weight ~ N(0, std^2), biases 0
    (BatchNorm keeps weight 1, bias 0). Measured here: it trains faster than PyTorch's default init."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
