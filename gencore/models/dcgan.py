"""DCGAN generator and discriminator (Radford et al. 2016), for square images of 32 or 64 pixels."""
from __future__ import annotations

import math

import torch
from torch import nn

from gencore.models.layers import batch_norm_activation, is_batch_norm

SUPPORTED_IMAGE_SIZES = (32, 64)


def _check_size(cls: str, image_size: int) -> int:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(f"{cls}: image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size!r}")
    # Number of stride-2 (transposed) convs between 4x4 and the full image.
    return int(math.log2(image_size)) - 3


def dcgan_init(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif is_batch_norm(m) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (N, nz) or (N, nz, 1, 1) -> image (N, nc, image_size, image_size) in [-1, 1].

    4x4 transposed convs: nz -> ngf*2^k at 4x4, halving the channels and doubling the size per
    stride-2 layer, BatchNorm + ReLU after each but the last, Tanh at the end.
    fused=True puts gencore's BatchNorm+ReLU module where nn.BatchNorm2d is; same state dict.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, image_size: int = 64, fused: bool = True):
        super().__init__()
        n_up = _check_size("DCGANGenerator", image_size)
        self.nz, self.ngf, self.nc, self.image_size, self.fused = nz, ngf, nc, image_size, fused
        ch = ngf * 2 ** n_up
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False),
                                   *batch_norm_activation(2, ch, 0.0, fused)]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                       *batch_norm_activation(2, ch // 2, 0.0, fused)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    """image (N, nc, image_size, image_size) -> logits (N,).

    4x4 stride-2 convs doubling the channels down to 4x4, LeakyReLU(0.2) after the first and
    BatchNorm + LeakyReLU(0.2) after the others, then a 4x4 conv to one logit (no sigmoid: train
    with BCEWithLogits or hinge).
    """

    def __init__(self, ndf: int = 64, nc: int = 3, image_size: int = 64, fused: bool = True):
        super().__init__()
        n_down = _check_size("DCGANDiscriminator", image_size)
        self.ndf, self.nc, self.image_size, self.fused = ndf, nc, image_size, fused
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), *batch_norm_activation(2, ch * 2, 0.2, fused)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()
