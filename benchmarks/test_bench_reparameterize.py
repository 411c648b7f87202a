"""reparameterize and reparameterize_kl: each gencore backend vs the eager PyTorch composition
(mu + exp(0.5 * logvar) * randn_like(mu), plus the KL reference) and torch.compile of it, forward and
forward+backward, at VAE latent sizes and at a bandwidth-bound size, in one run."""
import pytest
import torch

from benchmarks.conftest import backend_providers, devices, run_benchmark
from gencore.ops import kl_normal_reference, reparameterize, reparameterize_kl

SHAPES = [(128, 32), (128, 128), (4096, 1024)]
DTYPES = [torch.float32, torch.bfloat16]
MODES = ["forward", "forward+backward"]
OPS = ["reparameterize", "reparameterize_kl"]
_compiled = {}


def eager_reparameterize(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def eager_reparameterize_kl(mu, logvar):
    return eager_reparameterize(mu, logvar), kl_normal_reference(mu, logvar, "sum")


EAGER = {"reparameterize": eager_reparameterize, "reparameterize_kl": eager_reparameterize_kl}


def providers(device):
    return ["eager", "compile"] + backend_providers(device)


def op_fn(op, provider):
    if provider == "eager":
        return EAGER[op]
    if provider == "compile":
        if op not in _compiled:
            _compiled[op] = torch.compile(EAGER[op])
        return _compiled[op]
    backend = provider.removeprefix("gencore-")
    if op == "reparameterize":
        return lambda m, lv: reparameterize(m, lv, backend=backend)
    return lambda m, lv: reparameterize_kl(m, lv, reduction="sum", backend=backend)


def op_bytes(op, n, itemsize, mode):
    # forward reads mu, logvar and writes z. Backward of reparameterize reads dz, logvar and writes
    # dlogvar (dmu is dz); of reparameterize_kl reads dz, mu, logvar and writes dmu, dlogvar.
    backward = {"reparameterize": 3, "reparameterize_kl": 5}[op]
    return n * itemsize * (3 if mode == "forward" else 3 + backward)


CASES = [(d, p) for d in devices() for p in providers(d)]


@pytest.mark.parametrize("device,provider", CASES, ids=[f"{d}-{p}" for d, p in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
def test_reparameterize(benchmark, quick, op, device, provider, dtype, shape, mode):
    if provider == "gencore-torch" and shape[0] * shape[1] > 1 << 16 and device == "cpu":
        pytest.skip("the int64-Philox reference is an oracle, not a speed path, at large sizes")
    benchmark.group = f"{op} {mode} {'x'.join(map(str, shape))} {str(dtype)[6:]} {device}"
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=g).to(device, dtype)
    logvar = torch.randn(shape, generator=g).to(device, dtype)
    grad_z = torch.randn(shape, generator=g).to(device, dtype)
    fn = op_fn(op, provider)
    if mode == "forward":
        def step():
            with torch.no_grad():
                return fn(mu, logvar)
    else:
        mu.requires_grad_()
        logvar.requires_grad_()
        grad_kl = torch.ones((), device=device, dtype=dtype)

        def step():
            out = fn(mu, logvar)
            if op == "reparameterize":
                return torch.autograd.grad(out, (mu, logvar), grad_z)
            return torch.autograd.grad(out, (mu, logvar), (grad_z, grad_kl))
    run_benchmark(benchmark, step, op=op, shape=shape, dtype=dtype, mode=mode, provider=provider, device=device,
                  nbytes=op_bytes(op, mu.numel(), mu.element_size(), mode), quick=quick)
