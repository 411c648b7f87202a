"""Whole training steps: gencore's fused models vs the same models with fused=False (plain torch.nn
layers, provider "eager") vs torch.compile of the fused=False models (provider "compile").

One step is what a training loop does per batch, optimizer included:
- DCGAN (32x32 and 64x64): the discriminator step on a real and a generated batch, then the generator
  step, with BCE-with-logits losses and Adam(2e-4, betas=(0.5, 0.999)) as in the DCGAN paper and
  PyTorch's example;
- ConvVAE: Bernoulli reconstruction loss + KL, backward, Adam step.
Time and peak memory (see benchmarks/conftest.py `peak_memory`) are recorded; the report puts the
ratios to fused=False next to them.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.conftest import devices, run_benchmark

try:
    from gencore import models as gm
except ImportError as exc:  # the models land in their own change; until then this file skips
    gm = None
    _MODELS_MISSING = f"gencore.models is not available yet ({exc})"

PROVIDERS = ["eager", "compile", "fused"]
# (case, image size); batch sizes per device and mode below keep quick mode short on a 2-core CPU.
CASES = [("dcgan", 32), ("dcgan", 64), ("convvae", 32)]
BATCH = {("cpu", True): 8, ("cpu", False): 32, ("cuda", True): 128, ("cuda", False): 256}
NZ, LATENT = 100, 128


def _require_models(provider):
    if gm is None:
        pytest.skip(_MODELS_MISSING)
    if provider == "fused" and not gm.fused_layers_available():
        pytest.skip("fused=True needs gencore.nn.BatchNormLeakyReLU2d, which this build does not have yet")


def _adam(module):
    return torch.optim.Adam(module.parameters(), lr=2e-4, betas=(0.5, 0.999))


def _maybe_compile(module, provider):
    return torch.compile(module, dynamic=False) if provider == "compile" else module


def dcgan_step_fn(image_size, batch, device, provider):
    fused = provider == "fused"
    torch.manual_seed(0)
    g = gm.DCGANGenerator(nz=NZ, ngf=64, nc=3, image_size=image_size, fused=fused).to(device)
    d = gm.DCGANDiscriminator(ndf=64, nc=3, image_size=image_size, fused=fused).to(device)
    opt_g, opt_d = _adam(g), _adam(d)
    g_run, d_run = _maybe_compile(g, provider), _maybe_compile(d, provider)
    real = torch.rand(batch, 3, image_size, image_size, device=device) * 2 - 1
    z = torch.randn(batch, NZ, device=device)
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)

    def step():
        opt_d.zero_grad(set_to_none=True)
        fake = g_run(z)
        loss_d = (F.binary_cross_entropy_with_logits(d_run(real), ones)
                  + F.binary_cross_entropy_with_logits(d_run(fake.detach()), zeros))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        loss_g = F.binary_cross_entropy_with_logits(d_run(fake), ones)
        loss_g.backward()
        opt_g.step()
        return loss_g.detach()

    return step, list(real.shape)


def convvae_step_fn(image_size, batch, device, provider):
    fused = provider == "fused"
    torch.manual_seed(0)
    vae = gm.ConvVAE(nc=3, image_size=image_size, latent_dim=LATENT, fused=fused).to(device)
    opt = _adam(vae)
    vae_run = _maybe_compile(vae, provider)
    x = torch.rand(batch, 3, image_size, image_size, device=device) * 2 - 1
    target = (x + 1) / 2

    def step():
        opt.zero_grad(set_to_none=True)
        out = vae_run(x)
        recon, kl = out.recon_logits, out.kl
        loss = (F.binary_cross_entropy_with_logits(recon, target, reduction="sum") + kl) / batch
        loss.backward()
        opt.step()
        return loss.detach()

    return step, list(x.shape)


STEP_FNS = {"dcgan": dcgan_step_fn, "convvae": convvae_step_fn}
PARAMS = [(dev, case, size, p) for dev in devices() for case, size in CASES for p in PROVIDERS]


@pytest.mark.parametrize("device,case,image_size,provider", PARAMS,
                         ids=[f"{d}-{c}{s}-{p}" for d, c, s, p in PARAMS])
def test_training_step(benchmark, quick, device, case, image_size, provider):
    _require_models(provider)
    batch = BATCH[(device, quick)]
    benchmark.group = f"train_step_{case} {image_size}x{image_size} batch {batch} {device}"
    step, shape = STEP_FNS[case](image_size, batch, device, provider)
    # torch.compile compiles forward and backward graphs (and a second discriminator graph for an input
    # that needs grad) over the first two steps; a third untimed step makes sure timing starts warm.
    run_benchmark(benchmark, step, op=f"train_step_{case}", shape=shape, dtype=torch.float32,
                  mode="train-step", provider=provider, device=device, nbytes=None, quick=quick,
                  warmup=3 if provider == "compile" else 2, memory=True,
                  # Issue 7: the fused DCGAN step is faster than fused=False and its peak memory lower
                  # (0.99: memory is deterministic, a tie is common and is not "lower").
                  extra={"targets": {"min_speedup_vs_eager": 1.0, "max_memory_vs_eager": 0.99},
                         "target_provider": "fused"} if case == "dcgan" else None)
