"""Variational autoencoders: a convolutional one for images and the MLP one of Kingma & Welling."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from gencore.models.layers import batch_norm_activation, reparameterize_kl

CONV_VAE_IMAGE_SIZES = (16, 32, 64)


class VAEOutput(NamedTuple):
    recon_logits: torch.Tensor  # decoder output before the sigmoid: Bernoulli logits of pixels in [0, 1]
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    kl: torch.Tensor  # KL summed over the batch and latent dims


class _VAE(nn.Module):
    fused: bool
    latent_dim: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encode(x)
        z, kl = reparameterize_kl(mu, logvar, self.fused, generator)
        return VAEOutput(self.decode(z), mu, logvar, z, kl)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from the prior, mapped to [-1, 1] like the data."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return torch.sigmoid(self.decode(z)) * 2 - 1


class ConvVAE(_VAE):
    """Conv -> BN -> LeakyReLU(0.2) encoder down to 4x4, linear heads for mu and logvar; linear + ConvTranspose
    -> BN -> ReLU decoder. Pixels are modelled as Bernoulli: decode() returns logits, data in [-1, 1]
    maps to targets (x + 1) / 2."""

    def __init__(self, nc: int = 1, image_size: int = 32, latent_dim: int = 16, base_channels: int = 32,
                 fused: bool = True):
        super().__init__()
        if image_size not in CONV_VAE_IMAGE_SIZES:
            raise ValueError(f"ConvVAE: image_size must be one of {CONV_VAE_IMAGE_SIZES}, got {image_size!r}")
        if latent_dim < 1:
            raise ValueError(f"ConvVAE: latent_dim must be >= 1, got {latent_dim}")
        self.nc, self.image_size, self.latent_dim, self.fused = nc, image_size, latent_dim, fused
        n = int(math.log2(image_size)) - 2  # stride-2 convs from image_size down to 4x4
        enc: list[nn.Module] = []
        ch_in, ch = nc, base_channels
        for _ in range(n):
            enc += [nn.Conv2d(ch_in, ch, 4, 2, 1, bias=False), *batch_norm_activation(2, ch, 0.2, fused)]
            ch_in, ch = ch, ch * 2
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.top_channels = ch_in
        self.fc_mu = nn.Linear(ch_in * 16, latent_dim)
        self.fc_logvar = nn.Linear(ch_in * 16, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, ch_in * 16)
        dec: list[nn.Module] = []
        ch = ch_in
        for _ in range(n - 1):
            dec += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), *batch_norm_activation(2, ch // 2, 0.0, fused)]
            ch //= 2
        dec += [nn.ConvTranspose2d(ch, nc, 4, 2, 1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        h = torch.relu(self.fc_dec(z)).view(z.shape[0], self.top_channels, 4, 4)
        return self.decoder(h)


class MLPVAE(_VAE):
    """The VAE of Kingma & Welling for MNIST-like data: input_dim -> hidden (ReLU) -> (mu, logvar) of
    latent_dim; latent_dim -> hidden (ReLU) -> input_dim logits. Images are flattened; decode() returns
    them in the input's image shape when `image_shape` is given."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 400, latent_dim: int = 20,
                 image_shape: tuple[int, ...] | None = None, fused: bool = True):
        super().__init__()
        if image_shape is not None and math.prod(image_shape) != input_dim:
            raise ValueError(f"MLPVAE: image_shape {tuple(image_shape)} does not hold input_dim={input_dim} values")
        self.input_dim, self.latent_dim, self.fused = input_dim, latent_dim, fused
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        out = self.fc4(torch.relu(self.fc3(z)))
        return out.view(z.shape[0], *self.image_shape) if self.image_shape else out
