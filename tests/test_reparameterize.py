"""reparameterize / reparameterize_kl: the shared Philox header against Triton and Random123, the
transcendentals against float64, the same eps on every backend, values and gradients against the
reference, statistics of eps, seeding, compile, opcheck, modules and errors."""
import ctypes
import math

import pytest
import torch

import gencore
from gencore.nn import Reparameterize, ReparameterizeKL
from gencore.ops import (kl_normal_reference, philox_normal_reference, reparameterize, reparameterize_kl,
                         reparameterize_kl_with_seed, reparameterize_reference, reparameterize_with_seed)
from gencore.ops.reparameterize import philox_randint4x_reference
from helpers import assert_close, backend_device_params, build_native_probe, c_ptr, skip_unless_runs

REDUCTIONS = ["none", "sum", "mean", "batchmean"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SHAPES = [(1,), (37, 13), (5, 3, 7), (3, 2001)]
SEEDS = [0, 1234, 2**32 + 7, -5, 2**62 + 12345]  # key words: zero, low only, both, all-ones high, large


def eps_tolerance(device):
    # CPU/CUDA kernels use gencore's few-ulp log/sincos; Triton on a GPU uses the hardware approximations.
    return 2e-5 if device == "cuda" else 2e-6


def make_inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5
    logvar = torch.randn(shape, generator=g, dtype=torch.float64)
    return mu.to(device, dtype), logvar.to(device, dtype)


# ---- the shared header (csrc/common/philox.h, vec_math.h) through a ctypes probe --------------------------
@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return build_native_probe(tmp_path_factory, "philox_probe.cpp")


def test_header_philox_known_answers(probe):
    # Random123 kat_vectors for philox4x32_10 (counter, key) -> output.
    cases = [([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
             ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
             ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
              [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1])]
    for ctr, key, expected in cases:
        out = (ctypes.c_uint32 * 4)()
        probe.probe_philox((ctypes.c_uint32 * 4)(*ctr), (ctypes.c_uint32 * 2)(*key), out)
        assert list(out) == expected
    # The reference's int64 Philox on the same vectors (randint4x form: counter words 2, 3 are zero).
    r = philox_randint4x_reference(0, torch.tensor([0]))
    assert [int(x) for x in r] == cases[0][2]


@pytest.mark.parametrize("seed", SEEDS)
def test_header_integers_equal_reference(probe, seed):
    counters = torch.cat([torch.arange(0, 300), torch.tensor([2**32 - 1, 2**32, 2**40 + 3, 2**60])]).to(torch.int64)
    out = torch.empty(counters.numel() * 4, dtype=torch.int32)
    probe.probe_randint4x(ctypes.c_uint64(seed % 2**64), c_ptr(counters), c_ptr(out), ctypes.c_int64(counters.numel()))
    got = out.view(-1, 4).to(torch.int64) & 0xFFFFFFFF
    ref = torch.stack(philox_randint4x_reference(seed, counters), dim=1)
    assert torch.equal(got, ref)
    normals = torch.empty(counters.numel() * 4, dtype=torch.float32)
    probe.probe_randn4x(ctypes.c_uint64(seed % 2**64), c_ptr(counters), c_ptr(normals), ctypes.c_int64(counters.numel()))
    offsets = counters * 4  # element 4c is lane 0 of counter c
    expected = torch.stack([philox_normal_reference(4, seed, int(o)) for o in offsets]).reshape(-1)
    torch.testing.assert_close(normals, expected, atol=2e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_header_block_generator_equals_per_counter(probe, seed):
    """randn4x_block (explicit SIMD lanes, four vectors at a time) gives bit for bit the normals of
    randn4x counter by counter: ragged counts, and starts where the counter's low word wraps."""
    for counter0 in [0, 5, 2**32 - 37, 2**32 - 64, 2**32 - 1, 2**63 + 2**32 - 5]:
        for n in [1, 63, 64, 67, 256, 300]:
            block = torch.empty(4 * n, dtype=torch.float32)
            probe.probe_randn4x_block(ctypes.c_uint64(seed % 2**64), ctypes.c_uint64(counter0), c_ptr(block),
                                      ctypes.c_int64(n))
            counters = torch.tensor([(counter0 + j) % 2**64 - (2**64 if (counter0 + j) % 2**64 >= 2**63 else 0)
                                     for j in range(n)], dtype=torch.int64)
            single = torch.empty(4 * n, dtype=torch.float32)
            probe.probe_randn4x(ctypes.c_uint64(seed % 2**64), c_ptr(counters), c_ptr(single), ctypes.c_int64(n))
            assert torch.equal(block, single), (counter0, n)


def test_unchecked_transcendentals_on_box_muller_domain(probe):
    """log_f32<false> and sincos_f32<false> (no special-case handling, used by Box-Muller) keep the
    accuracy of the checked versions on u in [1e-7, 1] and angles in [0, 2 pi]. (Not bit-equal: the
    compiler contracts the shorter code into FMAs differently.)"""
    g = torch.Generator().manual_seed(1)
    u = torch.cat([torch.rand(1 << 16, generator=g).clamp_min(1e-7), torch.tensor([1e-7, 1.0, 0.5, 1 - 2**-24])])
    th = torch.cat([torch.rand(1 << 16, generator=g) * 6.2831855, torch.tensor([0.0, 6.2831855, 3.1415927])])
    out = torch.empty_like(u)
    probe.probe_log_unchecked(c_ptr(u), c_ptr(out), ctypes.c_int64(u.numel()))
    exact = torch.log(u.double())
    assert _ulp_error(out[exact != 0], exact[exact != 0]).max() <= 1.0 and out[u == 1.0].eq(0).all()
    s, c = torch.empty_like(th), torch.empty_like(th)
    probe.probe_sincos_unchecked(c_ptr(th), c_ptr(s), c_ptr(c), ctypes.c_int64(th.numel()))
    rs, rc = torch.sin(th.double()), torch.cos(th.double())
    assert _ulp_error(s[:-3], rs[:-3]).max() <= 2.0 and _ulp_error(c[:-3], rc[:-3]).max() <= 2.0
    assert (s - rs).abs().max() <= 2 * 2**-24 and (c - rc).abs().max() <= 2 * 2**-24


def _ulp_error(got, exact):
    e32 = exact.float().abs()
    spacing = (torch.nextafter(e32, torch.tensor(math.inf)) - e32).double()
    return (got.double() - exact).abs() / spacing


def test_vec_math_log_sincos_exp_against_float64(probe):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(1 << 16, generator=g) * 4, torch.exp(torch.empty(1 << 16).uniform_(-87, 88, generator=g)),
                   torch.tensor([1e-45, 1e-40, 1.17e-38, 1.0, 3.4e38, 1 - 2**-24, 1 + 2**-23])]).float()
    out = torch.empty_like(x)
    probe.probe_log(c_ptr(x), c_ptr(out), ctypes.c_int64(x.numel()))
    assert _ulp_error(out, torch.log(x.double())).max() <= 1.0  # measured 0.81
    special = torch.tensor([0.0, -0.0, -1.0, math.inf, -math.inf, math.nan])
    out = torch.empty_like(special)
    probe.probe_log(c_ptr(special), c_ptr(out), ctypes.c_int64(special.numel()))
    assert out[0] == -math.inf and out[1] == -math.inf and out[3] == math.inf
    assert torch.isnan(out[[2, 4, 5]]).all()

    th = torch.cat([torch.rand(1 << 16, generator=g) * 6.2831855, torch.empty(1 << 16).uniform_(-8192, 8192, generator=g)])
    s, c = torch.empty_like(th), torch.empty_like(th)
    probe.probe_sincos(c_ptr(th), c_ptr(s), c_ptr(c), ctypes.c_int64(th.numel()))
    rs, rc = torch.sin(th.double()), torch.cos(th.double())
    box = slice(0, 1 << 16)  # Box-Muller's range [0, 2 pi): a few ulp of the result
    assert _ulp_error(s[box], rs[box]).max() <= 2.0 and _ulp_error(c[box], rc[box]).max() <= 2.0  # measured 1.5
    assert (s - rs).abs().max() <= 2 * 2**-24 and (c - rc).abs().max() <= 2 * 2**-24  # absolute, |x| <= 8192
    special = torch.tensor([math.inf, -math.inf, math.nan, 1e30])
    s, c = torch.empty_like(special), torch.empty_like(special)
    probe.probe_sincos(c_ptr(special), c_ptr(s), c_ptr(c), ctypes.c_int64(4))
    assert torch.isnan(s[:3]).all() and torch.isnan(c[:3]).all() and s[3].abs() <= 1 and c[3].abs() <= 1

    x = torch.empty(1 << 16).uniform_(-87, 88, generator=g)
    out = torch.empty_like(x)
    probe.probe_exp(c_ptr(x), c_ptr(out), ctypes.c_int64(x.numel()))
    assert _ulp_error(out, torch.exp(x.double())).max() <= 2.0


# ---- Triton's own generator is the specification -----------------------------------------------------------
def test_reference_matches_triton_randint4x_and_randn4x():
    if "triton" not in gencore.available_backends("cpu") and not torch.cuda.is_available():
        pytest.skip("triton cannot run here")
    import triton
    import triton.language as tl

    @triton.jit
    def spec_kernel(seed, ints_ptr, normals_ptr, counter0, N: tl.constexpr):
        c = counter0 + tl.arange(0, N).to(tl.int64)
        r0, r1, r2, r3 = tl.randint4x(seed, c)
        n0, n1, n2, n3 = tl.randn4x(seed, c)
        k = tl.arange(0, N) * 4
        tl.store(ints_ptr + k, r0.to(tl.int64) & 0xFFFFFFFF)
        tl.store(ints_ptr + k + 1, r1.to(tl.int64) & 0xFFFFFFFF)
        tl.store(ints_ptr + k + 2, r2.to(tl.int64) & 0xFFFFFFFF)
        tl.store(ints_ptr + k + 3, r3.to(tl.int64) & 0xFFFFFFFF)
        tl.store(normals_ptr + k, n0)
        tl.store(normals_ptr + k + 1, n1)
        tl.store(normals_ptr + k + 2, n2)
        tl.store(normals_ptr + k + 3, n3)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for seed, counter0 in [(1234, 0), (2**40 + 99, 2**33 - 8)]:
        ints = torch.empty(64 * 4, dtype=torch.int64, device=device)
        normals = torch.empty(64 * 4, dtype=torch.float32, device=device)
        spec_kernel[(1,)](seed, ints, normals, counter0, N=64)
        counters = torch.arange(counter0, counter0 + 64, dtype=torch.int64)
        ref = torch.stack(philox_randint4x_reference(seed, counters), dim=1).reshape(-1)
        assert torch.equal(ints.cpu(), ref)
        expected = philox_normal_reference(256, seed, 4 * counter0)
        torch.testing.assert_close(normals.cpu(), expected, atol=eps_tolerance(device), rtol=1e-6)


# ---- the same eps on every backend ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend,device", backend_device_params())
@pytest.mark.parametrize("seed", SEEDS)
def test_same_eps_on_every_backend(backend, device, seed):
    skip_unless_runs(backend, device)
    n = 1024 + 7  # more than one Triton program, ragged end
    zeros = torch.zeros(n, device=device)
    for offset in [0, 1, 3, 2**33 + 2]:
        eps = reparameterize_with_seed(zeros, zeros, seed, offset, backend=backend)  # mu=0, std=1: z = eps
        expected = philox_normal_reference(n, seed, offset)
        torch.testing.assert_close(eps.cpu(), expected, atol=eps_tolerance(device), rtol=1e-6)
        z, kl = reparameterize_kl_with_seed(zeros, zeros, seed, offset, reduction="none", backend=backend)
        torch.testing.assert_close(z.cpu(), expected, atol=eps_tolerance(device), rtol=1e-6)


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_stream_depends_only_on_element_index(backend, device):
    """Slices with offsets 0, a, a+b reproduce one call on the whole tensor: no dependence on block size,
    program boundaries or thread partitioning, and unaligned offsets start mid-group."""
    skip_unless_runs(backend, device)
    mu, logvar = make_inputs((3001,), torch.float32, device)
    whole = reparameterize_with_seed(mu, logvar, 77, 5, backend=backend)
    parts, start = [], 0
    for size in [1, 2, 5, 1027, 1966]:
        parts.append(reparameterize_with_seed(mu[start:start + size], logvar[start:start + size], 77, 5 + start,
                                              backend=backend))
        start += size
    assert torch.equal(torch.cat(parts), whole)


def test_cpu_independent_of_thread_count():
    skip_unless_runs("cpu", "cpu")
    mu, logvar = make_inputs((300, 1001), torch.float32, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, max(2, threads)):
            torch.set_num_threads(t)
            z, kl = reparameterize_kl_with_seed(mu, logvar, 5, 0, reduction="sum", backend="cpu")
            results.append((z, kl))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


# ---- values and gradients against the reference ------------------------------------------------------------
def _reference_with_grads(mu, logvar, seed, offset, reduction, grad_z, grad_kl):
    m = mu.detach().double().requires_grad_()
    lv = logvar.detach().double().requires_grad_()
    if reduction is None:
        z = reparameterize_reference(m, lv, seed, offset)
        z.backward(grad_z.double())
        return z.detach(), None, m.grad, lv.grad
    z = reparameterize_reference(m, lv, seed, offset)
    kl = kl_normal_reference(m, lv, reduction)
    torch.autograd.backward((z, kl), (grad_z.double(), grad_kl.double()))
    return z.detach(), kl.detach(), m.grad, lv.grad


def _interpreter_skip(backend, device, shape, dtype):
    if backend == "triton" and device == "cpu" and (shape == (3, 2001) and dtype != torch.float32):
        pytest.skip("keep interpreter runs short: the large shape in float32 only")


@pytest.mark.parametrize("backend,device", backend_device_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", [None] + REDUCTIONS, ids=lambda r: f"kl-{r}" if r else "z-only")
def test_forward_backward_matches_reference(backend, device, dtype, shape, reduction):
    skip_unless_runs(backend, device)
    _interpreter_skip(backend, device, shape, dtype)
    mu, logvar = make_inputs(shape, dtype, device, seed=hash((shape, reduction)) % 1000)
    mu.requires_grad_()
    logvar.requires_grad_()
    seed, offset = 2**35 + 11, 6
    g = torch.Generator().manual_seed(1)
    grad_z = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.5).to(device, dtype)  # not all ones
    if reduction is None:
        z = reparameterize_with_seed(mu, logvar, seed, offset, backend=backend)
        z.backward(grad_z)
        grad_kl = None
    else:
        z, kl = reparameterize_kl_with_seed(mu, logvar, seed, offset, reduction=reduction, backend=backend)
        assert kl.dtype == dtype and kl.shape == (shape if reduction == "none" else ())
        grad_kl = (torch.rand(kl.shape, generator=g, dtype=torch.float64) + 0.5).to(device, dtype)
        torch.autograd.backward((z, kl), (grad_z, grad_kl))
    assert z.dtype == dtype and z.shape == mu.shape and z.device == mu.device
    ref_z, ref_kl, dmu, dlogvar = _reference_with_grads(mu, logvar, seed, offset, reduction, grad_z, grad_kl)
    # eps is a float32 number on every backend, equal to the reference's to a few float32 ulp (its
    # transcendentals): terms with eps are compared at float32 tolerance even for float64 inputs.
    eps_dtype = torch.float32 if dtype == torch.float64 else dtype
    eps_scale = eps_tolerance(device) / 2e-6
    assert_close(z, ref_z, eps_dtype, f"{backend} z", scale=eps_scale)
    if reduction is not None:
        scale = max(1.0, mu.numel() ** 0.5) if reduction != "none" else 1.0
        assert_close(kl, ref_kl, dtype, f"{backend} kl", scale)
    assert_close(mu.grad, dmu, dtype, f"{backend} dmu")
    assert_close(logvar.grad, dlogvar, eps_dtype, f"{backend} dlogvar", scale=eps_scale)


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_non_contiguous_inputs(backend, device):
    skip_unless_runs(backend, device)
    mu, logvar = make_inputs((19, 23), torch.float32, device)
    mu_t, lv_t = mu.t(), logvar.t()
    assert not mu_t.is_contiguous()
    z = reparameterize_with_seed(mu_t, lv_t, 3, 1, backend=backend)
    # Element i is the i-th in row-major order of the (logical) input, whatever its strides.
    assert_close(z, reparameterize_reference(mu_t.double(), lv_t.double(), 3, 1), torch.float32, "transposed")
    z, kl = reparameterize_kl_with_seed(mu[:, ::2], logvar[:, ::2], 3, 0, reduction="sum", backend=backend)
    assert_close(z, reparameterize_reference(mu[:, ::2].double(), logvar[:, ::2].double(), 3, 0), torch.float32, "z")
    assert_close(kl, kl_normal_reference(mu[:, ::2].double(), logvar[:, ::2].double()), torch.float32, "kl", scale=20)
    m, lv = mu_t.clone().requires_grad_(), lv_t.clone().requires_grad_()
    z = reparameterize_with_seed(m, lv, 3, 1, backend=backend)
    grad = torch.randn(19, 23, device=device).t()  # non-contiguous grad_output
    z.backward(grad)
    ref_m, ref_lv = mu_t.double().requires_grad_(), lv_t.double().requires_grad_()
    reparameterize_reference(ref_m, ref_lv, 3, 1).backward(grad.double())
    assert_close(m.grad, ref_m.grad, torch.float32, "dmu")
    assert_close(lv.grad, ref_lv.grad, torch.float32, "dlogvar")


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_gradcheck_float64(backend, device):
    skip_unless_runs(backend, device)
    interpreter = backend == "triton" and device == "cpu"  # every numerical-Jacobian column is a launch
    mu, logvar = make_inputs((2, 3) if interpreter else (4, 7), torch.float64, device)
    mu.requires_grad_()
    logvar.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, lv: reparameterize_with_seed(m, lv, 9, 2, backend=backend), (mu, logvar))
    for reduction in ["none"] if interpreter else ["none", "batchmean"]:
        assert torch.autograd.gradcheck(
            lambda m, lv: reparameterize_kl_with_seed(m, lv, 9, 2, reduction=reduction, backend=backend), (mu, logvar))


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_nan_inf_and_empty(backend, device):
    skip_unless_runs(backend, device)
    mu = torch.tensor([0.0, float("nan"), 1.0, 2.0, 0.5], device=device)
    logvar = torch.tensor([0.0, 0.0, float("nan"), 200.0, -float("inf")], device=device)
    z, kl = reparameterize_kl_with_seed(mu, logvar, 1, 0, reduction="none", backend=backend)
    ref = reparameterize_reference(mu.double(), logvar.double(), 1, 0)
    assert_close(z, ref, torch.float32, "nan/inf z")
    assert_close(kl, kl_normal_reference(mu.double(), logvar.double(), "none"), torch.float32, "nan/inf kl")
    empty = torch.empty(0, 3, device=device)
    assert reparameterize_with_seed(empty, empty, 1, backend=backend).shape == (0, 3)
    z, kl = reparameterize_kl_with_seed(empty, empty, 1, reduction="sum", backend=backend)
    assert z.shape == (0, 3) and kl.item() == 0.0


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_no_mu_sized_tensor_saved_beyond_inputs(backend, device):
    """Backward keeps mu, logvar and the one-element seed only: no eps and no z."""
    skip_unless_runs(backend, device)
    mu, logvar = make_inputs((64, 33), torch.float32, device)
    mu.requires_grad_()
    logvar.requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        reparameterize_kl_with_seed(mu, logvar, 1, reduction="sum", backend=backend)
        reparameterize_with_seed(mu, logvar, 1, backend=backend)
    if backend == "torch":
        pytest.skip("the reference saves what autograd of its composition saves")
    big = [t for t in saved if t.numel() > 1]
    assert all(t.data_ptr() in (mu.data_ptr(), logvar.data_ptr()) for t in big), [t.shape for t in big]


# ---- statistics of eps -----------------------------------------------------------------------------------------
def test_eps_distribution():
    backend = "cpu" if "cpu" in gencore.available_backends("cpu") else "torch"
    n = 1 << 20
    zeros = torch.zeros(n)
    eps = reparameterize_with_seed(zeros, zeros, 2024, 0, backend=backend).double()
    assert abs(eps.mean().item()) < 5 / math.sqrt(n)
    assert abs(eps.var().item() - 1) < 5 * math.sqrt(2 / n)
    # Kolmogorov-Smirnov against N(0, 1): the 1e-3 critical value is 1.95 / sqrt(n).
    sorted_eps, _ = torch.sort(eps)
    cdf = torch.special.ndtr(sorted_eps)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = torch.maximum(i / n - cdf, cdf - (i - 1) / n).max().item()
    assert ks < 1.95 / math.sqrt(n), ks
    # No correlation between neighbours (same Philox call and across calls) nor between two draws.
    for lag in (1, 2, 3, 4, 5):
        corr = torch.corrcoef(torch.stack([eps[:-lag], eps[lag:]]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(n), (lag, corr)
    other = reparameterize(zeros, zeros, backend=backend).double()
    assert abs(torch.corrcoef(torch.stack([eps, other]))[0, 1].item()) < 5 / math.sqrt(n)
    assert (eps.abs() < 6).all()  # Box-Muller's clamp u1 >= 1e-7 bounds |eps| by 5.68


# ---- seeding -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend,device", backend_device_params())
def test_manual_seed_repeats_and_calls_differ(backend, device):
    skip_unless_runs(backend, device)
    mu, logvar = make_inputs((5, 17), torch.float32, device)
    torch.manual_seed(123)
    a1 = reparameterize(mu, logvar, backend=backend)
    a2, k2 = reparameterize_kl(mu, logvar, backend=backend)
    torch.manual_seed(123)
    b1 = reparameterize(mu, logvar, backend=backend)
    b2, _ = reparameterize_kl(mu, logvar, backend=backend)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)  # two calls: two streams
    g1 = torch.Generator(device=device).manual_seed(7)
    g2 = torch.Generator(device=device).manual_seed(7)
    state = torch.get_rng_state()
    c1 = reparameterize(mu, logvar, generator=g1, backend=backend)
    c2 = reparameterize(mu, logvar, generator=g2, backend=backend)
    assert torch.equal(c1, c2) and not torch.equal(c1, a1)
    assert torch.equal(torch.get_rng_state(), state)  # generator= leaves the default generator alone
    assert not torch.equal(reparameterize(mu, logvar, generator=g1, backend=backend), c1)


# ---- torch.library: opcheck and torch.compile ------------------------------------------------------------------
@pytest.mark.parametrize("backend,device", [p for p in backend_device_params() if p.values[0] != "torch"])
def test_opcheck(backend, device):
    skip_unless_runs(backend, device)
    ns = torch.ops.gencore_triton if backend == "triton" else torch.ops.gencore
    mu, logvar = make_inputs((6, 5), torch.float32, device)
    seed = torch.tensor(11, dtype=torch.int64, device=device)
    torch.library.opcheck(ns.reparameterize, (mu.requires_grad_(), logvar.requires_grad_(), seed, 3))
    for reduction in ["none", "sum", "batchmean"]:
        torch.library.opcheck(ns.reparameterize_kl, (mu, logvar, seed, 1, reduction))
    grad = torch.randn(6, 5, device=device)
    torch.library.opcheck(ns.reparameterize_backward, (grad, logvar.detach(), seed, 3))
    torch.library.opcheck(ns.reparameterize_kl_backward,
                          (grad, torch.tensor(0.5, device=device), mu.detach(), logvar.detach(), seed, 3, "sum"))


# The native ops (opaque custom ops). The `torch` backend also compiles, but Inductor's codegen of the
# reference's 10-round int64 Philox graph takes minutes on the 2-core CI machine.
@pytest.mark.parametrize("backend,device", [p for p in backend_device_params() if p.values[0] != "torch"
                                            and not (p.values[0] == "triton" and p.values[1] == "cpu")])
def test_torch_compile_fullgraph_vae_step(backend, device):
    skip_unless_runs(backend, device)
    torch._dynamo.reset()
    torch.manual_seed(0)
    encoder, decoder = torch.nn.Linear(12, 8).to(device), torch.nn.Linear(4, 12).to(device)
    latent = ReparameterizeKL(reduction="batchmean", backend=backend)

    def step(x):
        mu, logvar = encoder(x).chunk(2, dim=1)
        z, kl = latent(mu, logvar)
        return ((decoder(z) - x) ** 2).sum() + kl

    x = torch.randn(6, 12, device=device)
    compiled = torch.compile(step, fullgraph=True)
    torch.manual_seed(5)  # seeds the CUDA generators too
    loss1 = compiled(x)
    loss1.backward()
    grads1 = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    torch.manual_seed(5)
    loss2 = compiled(x)
    loss2.backward()
    assert torch.equal(loss1, loss2)  # manual_seed repeats compiled runs too
    assert all(torch.equal(a, p.grad) for a, p in zip(grads1, encoder.parameters()))

    def seeded(mu, logvar):  # explicit stream: compiled and eager must agree
        z, kl = reparameterize_kl_with_seed(mu * 2, logvar, 42, 3, reduction="sum", backend=backend)
        return (z * z).sum() + kl

    mu, logvar = make_inputs((8, 16), torch.float32, device)
    m1, l1 = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    m2, l2 = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    out_c = torch.compile(seeded, fullgraph=True)(m1, l1)
    out_e = seeded(m2, l2)
    out_c.backward()
    out_e.backward()
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(m1.grad, m2.grad)
    torch.testing.assert_close(l1.grad, l2.grad)


# ---- modules -------------------------------------------------------------------------------------------------
def test_modules():
    mu, logvar = make_inputs((10, 4), torch.float32, "cpu")
    module = Reparameterize()
    torch.manual_seed(3)
    z = module(mu, logvar)
    torch.manual_seed(3)
    assert torch.equal(z, reparameterize(mu, logvar))
    module.eval()
    assert module(mu, logvar) is mu
    assert not torch.equal(Reparameterize(sample=True).eval()(mu, logvar), mu)
    fused = ReparameterizeKL(reduction="mean")
    torch.manual_seed(3)
    z2, kl = fused(mu, logvar)
    assert torch.equal(z2, z)
    torch.testing.assert_close(kl, kl_normal_reference(mu, logvar, "mean"))
    fused.eval()
    z3, kl3 = fused(mu, logvar)
    assert z3 is mu
    torch.testing.assert_close(kl3, kl)
    assert "mean" in repr(fused)
    with pytest.raises(ValueError, match="reduction"):
        ReparameterizeKL(reduction="avg")


# ---- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_bad_input(backend):
    skip_unless_runs(backend, "cpu")
    mu = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        reparameterize(mu, torch.randn(4, 2), backend=backend)
    with pytest.raises(TypeError, match="float32"):
        reparameterize(mu.long(), mu.long(), backend=backend)
    with pytest.raises(TypeError, match="same dtype"):
        reparameterize_kl(mu, mu.double(), backend=backend)
    with pytest.raises(RuntimeError, match="same device"):
        reparameterize(mu, mu.to("meta"), backend=backend)
    with pytest.raises(ValueError, match="reduction"):
        reparameterize_kl(mu, mu, reduction="avg", backend=backend)
    with pytest.raises(ValueError, match="offset"):
        reparameterize_with_seed(mu, mu, 1, -1, backend=backend)
    with pytest.raises(TypeError, match="seed"):
        reparameterize_with_seed(mu, mu, 1.5, backend=backend)
    with pytest.raises(TypeError, match="seed"):
        reparameterize_with_seed(mu, mu, torch.tensor([1.0]), backend=backend)
    with pytest.raises(TypeError, match="generator"):
        reparameterize(mu, mu, generator=3, backend=backend)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator"):
            reparameterize(mu, mu, generator=torch.Generator("cuda"), backend=backend)


def test_native_op_checks_its_arguments():
    skip_unless_runs("cpu", "cpu")
    mu = torch.randn(4, 3)
    seed = torch.tensor(1)
    with pytest.raises(ValueError, match="same shape"):
        torch.ops.gencore.reparameterize(mu, torch.randn(3, 4), seed, 0)
    with pytest.raises(TypeError, match="seed must be an int64"):
        torch.ops.gencore.reparameterize(mu, mu, seed.float(), 0)
    with pytest.raises(ValueError, match="offset"):
        torch.ops.gencore.reparameterize_kl(mu, mu, seed, -2, "sum")
    with pytest.raises(ValueError, match="reduction"):
        torch.ops.gencore.reparameterize_kl(mu, mu, seed, 0, "avg")
    with pytest.raises(ValueError, match="grad"):
        torch.ops.gencore.reparameterize_kl_backward(mu, torch.ones(2), mu, mu, seed, 0, "sum")
