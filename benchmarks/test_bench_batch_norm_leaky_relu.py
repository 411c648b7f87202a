"""BatchNorm + LeakyReLU: each gencore backend vs nn.BatchNorm2d + nn.LeakyReLU (eager) and torch.compile of
the same, at the DCGAN discriminator's shapes, plus activation memory of a DCGAN-discriminator training step.

Every timing carries extra_info (benchmarks/conftest.py) with `bytes` = what the op must move at minimum
(forward: read x, write y; forward+backward: that plus read dy and x, write dx) and `floor_ms`, the time
three passes over x take at this machine's copy bandwidth (the forward target is within 1.5x of it).
Compare providers as ratios inside one run. Fresh large outputs would pay page faults under glibc's
default malloc (every tensor >= 32 MB is a new mmap); benchmarks/conftest.py makes the allocator keep
freed memory, as tcmalloc does (GENCORE_BENCH_MALLOC=system to time the page faults too).
extra_info["allocator"] says which one ran.
"""
import pytest
import torch
from torch import nn

from benchmarks.conftest import backend_providers, copy_bandwidth_gbps, devices, run_benchmark
from gencore.nn import BatchNormLeakyReLU2d

# DCGAN discriminator at 64x64 images, batch 64 and 128: (N, C, H, W) after each strided conv. The
# batch-128 first layer (128x128x32x32 float32, 64 MiB) is also the bandwidth-bound case.
SHAPES = [(n, c, hw, hw) for n in (64, 128) for c, hw in ((128, 32), (256, 16), (512, 8))]
DTYPES = [torch.float32, torch.bfloat16]
SLOPES = [0.2, 0.0]
MODES = ["forward", "forward+backward"]


def providers(device):
    # gencore-torch is the eager composition itself: not timed twice.
    return ["eager", "compile"] + [p for p in backend_providers(device) if p != "gencore-torch"]


def make_layer(provider, channels, slope, device, dtype):
    if provider in ("eager", "compile"):
        layer = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU() if slope == 0 else nn.LeakyReLU(slope))
    else:
        layer = BatchNormLeakyReLU2d(channels, negative_slope=slope, backend=provider.removeprefix("gencore-"))
    layer = layer.to(device)  # float32 parameters with bfloat16 input: mixed BatchNorm, as under autocast
    if provider == "compile":
        # A fresh dynamo cache per case: dozens of shapes through one Sequential.forward would hit the
        # recompile limit and silently fall back to eager. run_benchmark's warm-up calls compile it.
        torch._dynamo.reset()
        return torch.compile(layer)
    return layer


def forward_backward_step(layer, x):
    """A call of the layer and the gradients of x, weight and bias from a fixed random output gradient."""
    x.requires_grad_()
    grad = torch.randn_like(x)  # keeps x's memory format
    params = list(layer.parameters())
    return lambda: torch.autograd.grad(layer(x), [x] + params, grad)


def bn_bytes(numel, itemsize, mode):
    return numel * itemsize * (2 if mode == "forward" else 5)


CASES = [(d, p) for d in devices() for p in providers(d)]


@pytest.mark.parametrize("device,provider", CASES, ids=[f"{d}-{p}" for d, p in CASES])
@pytest.mark.parametrize("slope", SLOPES, ids=lambda s: f"slope{s}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mode", MODES)
def test_batch_norm_leaky_relu(benchmark, quick, device, provider, dtype, shape, slope, mode):
    if quick and (shape[0] == 128 and shape[1] != 128 or (slope == 0 and dtype != torch.float32)):
        pytest.skip("quick mode: batch-128 only at the bandwidth-bound shape; ReLU in float32 only")
    benchmark.group = f"batch_norm_leaky_relu {mode} {'x'.join(map(str, shape))} {str(dtype)[6:]} slope={slope} {device}"
    layer = make_layer(provider, shape[1], slope, device, dtype)
    layer.train()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    if mode == "forward":
        def step():
            with torch.no_grad():
                return layer(x)
    else:
        step = forward_backward_step(layer, x)
    nbytes = bn_bytes(x.numel(), x.element_size(), mode)
    run_benchmark(benchmark, step, op="batch_norm_leaky_relu", shape=shape, dtype=dtype, mode=mode,
                  provider=provider, device=device, nbytes=nbytes, quick=quick)
    # Three passes over x at copy bandwidth (copy_gbps counts read + write bytes).
    x_bytes = x.numel() * x.element_size()
    floor_s = 3 * x_bytes / (copy_bandwidth_gbps(2 * x_bytes, device) * 1e9)
    benchmark.extra_info["floor_ms"] = round(floor_s * 1e3, 3)
    benchmark.extra_info["negative_slope"] = slope
    if benchmark.stats:
        median = benchmark.stats.stats.median
        benchmark.extra_info["vs_floor"] = round(median / floor_s, 2)
        if mode == "forward":
            print(f"\n{benchmark.group} {provider}: {median * 1e3:.2f} ms, three-pass floor {floor_s * 1e3:.2f} ms "
                  f"({median / floor_s:.2f}x)")


def time_extra_case(benchmark, quick, device, provider, dtype, shape, layout):
    """Forward+backward (slope 0.2) of a case reported next to the issue's, not counted towards its targets
    (benchmarks/report.py): channels-last input, float16 input."""
    slope = 0.2
    what = "" if layout == "contiguous" else f" {layout}"
    benchmark.group = (f"batch_norm_leaky_relu forward+backward {'x'.join(map(str, shape))} {str(dtype)[6:]} "
                       f"slope={slope}{what} {device}")
    layer = make_layer(provider, shape[1], slope, device, dtype)
    layer.train()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    extra = {"negative_slope": slope, "layout": layout}
    run_benchmark(benchmark, forward_backward_step(layer, x), op="batch_norm_leaky_relu", shape=shape, dtype=dtype,
                  mode="forward+backward", provider=provider, device=device,
                  nbytes=bn_bytes(x.numel(), x.element_size(), "forward+backward"), quick=quick, extra=extra)


# ---- channels-last input ----------------------------------------------------------------------------------
# The layout oneDNN's convolutions prefer on the CPU. gencore reads it as rows of C channels (NSC): the
# statistics need a whole pass before the normalization (backward: before dx), so it moves 8 passes over
# the tensor in a forward+backward where the contiguous layout's cached channel groups move 5
# (docs/batch_norm_leaky_relu.md). Reported next to the contiguous cases; the targets are for those.
@pytest.mark.parametrize("device,provider", CASES, ids=[f"{d}-{p}" for d, p in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[0] == 64], ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_leaky_relu_channels_last(benchmark, quick, device, provider, dtype, shape):
    if quick and dtype != torch.float32:
        pytest.skip("quick mode: channels-last in float32 only")
    time_extra_case(benchmark, quick, device, provider, dtype, shape, "channels_last")


# ---- float16 ----------------------------------------------------------------------------------------------
# The GPU's half type (bfloat16 is the CPU's, and the targets are timed in float32 and bfloat16).
# Batch-64 shapes, contiguous, forward+backward; reported next to the cases, not counted towards
# its targets. Quick mode times them on GPUs only (benchmarks/gpu_check.sh runs quick mode).
@pytest.mark.parametrize("device,provider", CASES, ids=[f"{d}-{p}" for d, p in CASES])
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[0] == 64], ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_leaky_relu_float16(benchmark, quick, device, provider, shape):
    if quick and device == "cpu":
        pytest.skip("quick mode: float16 is timed on GPUs only")
    time_extra_case(benchmark, quick, device, provider, torch.float16, shape, "contiguous")


# ---- memory of a training step ----------------------------------------------------------------------------
def discriminator(variant, device, ndf=32):
    """DCGAN discriminator for 64x64 images (ndf=32 keeps it quick on a CPU)."""
    def block(cin, cout):
        conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=False)
        if variant == "eager":
            return [conv, nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        return [conv, BatchNormLeakyReLU2d(cout, negative_slope=0.2, inplace=variant == "fused+inplace")]
    layers = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
    layers += block(ndf, ndf * 2) + block(ndf * 2, ndf * 4) + block(ndf * 4, ndf * 8)
    layers += [nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Flatten()]
    return nn.Sequential(*layers).to(device)


def saved_activation_bytes(model, x):
    """Bytes of the distinct storages autograd keeps for backward after one forward (the activation memory)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return out, sum(n for ptr, n in storages.items() if ptr not in params)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("variant", ["eager", "fused", "fused+inplace"])
def test_discriminator_step_memory(benchmark, quick, device, variant):
    benchmark.group = f"dcgan discriminator training step memory {device}"
    torch.manual_seed(0)
    model = discriminator(variant, device)
    x = torch.randn(16 if quick else 64, 3, 64, 64, device=device)
    out, saved = saved_activation_bytes(model, x)
    out.sum().backward()
    peak = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model(x).sum().backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    run_benchmark(benchmark, step, op="dcgan_discriminator_step", shape=tuple(x.shape), dtype=x.dtype,
                  mode="forward+backward", provider=variant, device=device, nbytes=0, quick=quick)
    benchmark.extra_info["saved_activation_bytes"] = saved
    if peak is not None:
        benchmark.extra_info["peak_allocated_bytes"] = peak
    print(f"\n{variant} ({device}): activations kept for backward {saved / 2**20:.1f} MiB"
          + (f", peak allocated during a step {peak / 2**20:.1f} MiB" if peak is not None else ""))
