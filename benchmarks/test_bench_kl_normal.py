"""kl_normal: each gencore backend vs the eager PyTorch composition and torch.compile of it."""
import pytest
import torch

from benchmarks.conftest import backend_providers, devices, run_benchmark
from gencore.ops import kl_normal, kl_normal_reference

SHAPES = [(128, 128), (4096, 1024)]
DTYPES = [torch.float32, torch.bfloat16]
MODES = ["forward", "forward+backward"]
_compiled = {}


def providers(device):
    return ["eager", "compile"] + backend_providers(device)


def kl_fn(provider, reduction):
    if provider == "eager":
        return lambda m, lv: kl_normal_reference(m, lv, reduction)
    if provider == "compile":
        if reduction not in _compiled:
            _compiled[reduction] = torch.compile(lambda m, lv: kl_normal_reference(m, lv, reduction))
        return _compiled[reduction]
    backend = provider.removeprefix("gencore-")
    return lambda m, lv: kl_normal(m, lv, reduction, backend=backend)


def kl_bytes(n, itemsize, mode):
    # forward reads mu and logvar; backward reads them again and writes dmu and dlogvar.
    return n * itemsize * (2 if mode == "forward" else 6)


CASES = [(d, p) for d in devices() for p in providers(d)]


@pytest.mark.parametrize("device,provider", CASES, ids=[f"{d}-{p}" for d, p in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mode", MODES)
def test_kl_normal(benchmark, quick, device, provider, dtype, shape, mode):
    benchmark.group = f"kl_normal {mode} {'x'.join(map(str, shape))} {str(dtype)[6:]} {device}"
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=g).to(device, dtype)
    logvar = torch.randn(shape, generator=g).to(device, dtype)
    fn = kl_fn(provider, "sum")
    if mode == "forward":
        def step():
            with torch.no_grad():
                return fn(mu, logvar)
    else:
        mu.requires_grad_()
        logvar.requires_grad_()

        def step():
            out = fn(mu, logvar)
            return torch.autograd.grad(out, (mu, logvar))
    run_benchmark(benchmark, step, op="kl_normal", shape=shape, dtype=dtype, mode=mode, provider=provider,
                  device=device, nbytes=kl_bytes(mu.numel(), mu.element_size(), mode), quick=quick)
