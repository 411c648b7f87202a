"""The Triton launchers of batch_norm_leaky_relu, called directly, against a float64 PyTorch computation
(F.batch_norm + F.leaky_relu, autograd for the gradients). Runs on CPU tensors under TRITON_INTERPRET
(tests/conftest.py) and on CUDA tensors when a GPU exists; there the C++/CUDA kernels are compared too."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import DEVICES, assert_close

K = pytest.importorskip("gencore.triton_kernels.batch_norm_leaky_relu")

EPS = 1e-5
CUDA = torch.cuda.is_available()


def to_channels_last(t: torch.Tensor) -> torch.Tensor:
    """Same values, strides (S*C, 1, C) for any rank >= 3 (also 3-D, which torch has no format for)."""
    perm = (0, *range(2, t.dim()), 1)
    inverse = [perm.index(i) for i in range(t.dim())]
    return t.permute(perm).contiguous().permute(inverse)


def make_case(shape, dtype, device, channels_last=False, seed=0, param_dtype=None, affine=(True, True)):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    # Offset mean and non-unit scale: the statistics must not rely on x being standardized.
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.7 + 0.6
    gy = torch.randn(shape, generator=g, dtype=torch.float64) + 0.3  # not all ones
    w = torch.randn(C, generator=g, dtype=torch.float64) if affine[0] else None
    b = torch.randn(C, generator=g, dtype=torch.float64) if affine[1] else None
    rm = torch.randn(C, generator=g, dtype=torch.float64)
    rv = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    pd = param_dtype or dtype
    x, gy = x.to(device, dtype), gy.to(device, dtype)
    if channels_last:
        x, gy = to_channels_last(x), to_channels_last(gy)
    cast = (lambda t: None if t is None else t.to(device, pd))
    return x, gy, cast(w), cast(b), cast(rm), cast(rv)


def reference(x, gy, w, b, rm, rv, training, slope):
    """float64 torch: y, batch mean, biased batch var, grad_x, grad_w, grad_b."""
    x64 = x.detach().to("cpu", torch.float64).requires_grad_()
    w64 = None if w is None else w.detach().to("cpu", torch.float64).requires_grad_()
    b64 = None if b is None else b.detach().to("cpu", torch.float64).requires_grad_()
    rm64 = None if training else rm.to("cpu", torch.float64)
    rv64 = None if training else rv.to("cpu", torch.float64)
    y = F.leaky_relu(F.batch_norm(x64, rm64, rv64, w64, b64, training, 0.0, EPS), slope)
    y.backward(gy.to("cpu", torch.float64))
    dims = [0] + list(range(2, x.dim()))
    mean = x64.detach().mean(dims) if training else rm64
    var = x64.detach().var(dims, unbiased=False) if training else rv64
    return (y.detach(), mean, var, x64.grad, None if w is None else w64.grad, None if b is None else b64.grad)


def check_against_reference(x, gy, w, b, rm, rv, training, slope, what):
    y, mean, var = K.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, EPS, slope)
    gx, gw, gb = K.batch_norm_leaky_relu_backward(gy, x, w, b, mean, var, training, EPS, slope)
    ry, rmean, rvar, rgx, rgw, rgb = reference(x, gy, w, b, rm, rv, training, slope)
    stat = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_dtype = w.dtype if w is not None else stat
    assert y.dtype == x.dtype and y.shape == x.shape and y.device == x.device
    assert y.stride() == x.stride(), f"{what}: output layout {y.stride()} != input {x.stride()}"
    assert gx.stride() == x.stride() and gx.dtype == x.dtype
    assert mean.dtype == stat and var.dtype == stat and mean.shape == (x.shape[1],)
    assert gw.dtype == grad_dtype and gb.dtype == grad_dtype and gw.shape == (x.shape[1],)
    count = x.numel() // x.shape[1]
    assert_close(mean, rmean, x.dtype if x.dtype == torch.float64 else torch.float32, f"{what} mean")
    assert_close(var, rvar, x.dtype if x.dtype == torch.float64 else torch.float32, f"{what} var", scale=4.0)
    assert_close(y, ry, x.dtype, f"{what} y")
    assert_close(gx, rgx, x.dtype, f"{what} grad_x")
    # Sums over N*S values: absolute error grows like sqrt(count).
    if w is not None:
        assert_close(gw, rgw, x.dtype, f"{what} grad_weight", scale=math.sqrt(count))
    if b is not None:
        assert_close(gb, rgb, x.dtype, f"{what} grad_bias", scale=math.sqrt(count))
    return y, mean, var, gx, gw, gb


# (shape, channels_last): C = 1, S = 1 with N > 1, 2-D, non-powers of two, several tiles and chunks per
# channel in both walks (S = 2500 > TILE; N*S = 5000 rows for C = 3 channels-last), C > MAX_BLOCK_C.
CASES = [
    ((4, 3), False),
    ((5, 1, 7), False),
    ((6, 4, 1, 1), False),
    ((3, 5, 6, 7), False),
    ((3, 5, 6, 7), True),
    ((2, 3, 2500), False),
    ((2, 3, 2500), True),
    ((2, 3, 3, 4, 5), True),
    ((2, 130, 3, 3), True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["batch-stats", "running-stats"])
@pytest.mark.parametrize("shape,channels_last", CASES, ids=[f"{s}-{'cl' if c else 'nc'}" for s, c in CASES])
def test_float32_matches_reference(shape, channels_last, training, device):
    for slope in (0.2, 0.0):
        case = make_case(shape, torch.float32, device, channels_last, seed=len(shape) + shape[1])
        check_against_reference(*case, training, slope, f"f32 {shape} cl={channels_last} slope={slope}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,channels_last", [CASES[1], CASES[4], CASES[6], CASES[8]],
                         ids=["C1", "odd-cl", "long-cl", "wide-cl"])
def test_float64_matches_reference(shape, channels_last, device):
    for training in (True, False):
        case = make_case(shape, torch.float64, device, channels_last, seed=3)
        check_against_reference(*case, training, 0.2, f"f64 {shape} training={training}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("param_dtype", [None, torch.float32], ids=["same-params", "f32-params"])
def test_half_matches_reference(dtype, param_dtype, device):
    for channels_last in (False, True):
        for training in (True, False):
            case = make_case((3, 5, 4, 3), dtype, device, channels_last, seed=5, param_dtype=param_dtype)
            check_against_reference(*case, training, 0.2, f"{dtype} cl={channels_last} training={training}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("affine", [(False, False), (True, False), (False, True)], ids=["none", "w", "b"])
def test_without_weight_or_bias(affine, device):
    case = make_case((4, 3, 5, 2), torch.float32, device, channels_last=affine == (True, False), affine=affine)
    for training in (True, False):
        check_against_reference(*case, training, 0.2, f"affine={affine} training={training}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nc", "cl"])
@pytest.mark.parametrize("training", [True, False], ids=["batch-stats", "running-stats"])
def test_inplace_round_trip(channels_last, training, device):
    """forward_inplace then backward_from_output == forward then backward (negative weights included)."""
    x, gy, w, b, rm, rv = make_case((3, 6, 5, 7), torch.float32, device, channels_last, seed=11)
    w[1] = -abs(w[1]) - 0.3
    slope = 0.2
    y, mean, var = K.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, EPS, slope)
    gx, gw, gb = K.batch_norm_leaky_relu_backward(gy, x, w, b, mean, var, training, EPS, slope)
    x_in = x.clone()
    ptr = x_in.data_ptr()
    saved = K.batch_norm_leaky_relu_forward_inplace(x_in, w, b, rm, rv, training, EPS, slope)
    assert x_in.data_ptr() == ptr and x_in.stride() == x.stride()
    assert_close(x_in, y, torch.float32, "in-place y")
    torch.testing.assert_close(saved[0], mean, rtol=0, atol=0)
    torch.testing.assert_close(saved[1], var, rtol=0, atol=0)
    gx2, gw2, gb2 = K.batch_norm_leaky_relu_backward_from_output(gy, x_in, w, b, *saved, training, EPS, slope)
    assert gx2.stride() == x.stride()
    # x-hat rebuilt from y carries y's rounding divided by |w|: a slightly looser float32 bound.
    assert_close(gx2, gx.double(), torch.float32, "from-output grad_x", scale=10.0)
    assert_close(gw2, gw.double(), torch.float32, "from-output grad_weight", scale=100.0)
    assert_close(gb2, gb.double(), torch.float32, "from-output grad_bias", scale=10.0)
    ref = reference(x, gy, w, b, rm, rv, training, slope)
    assert_close(gx2, ref[3], torch.float32, "from-output grad_x vs float64", scale=10.0)


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_non_native_strides(device):
    """x with strides neither layout has: the result still lands in x itself."""
    x, gy, w, b, rm, rv = make_case((3, 4, 6, 5), torch.float32, device, seed=2)
    x_odd = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, strides (120, 30, 1, 6)
    assert not x_odd.is_contiguous()
    y, mean, var = K.batch_norm_leaky_relu_forward(x, w, b, rm, rv, True, EPS, 0.1)
    y_odd, _, _ = K.batch_norm_leaky_relu_forward(x_odd, w, b, rm, rv, True, EPS, 0.1)
    assert_close(y_odd, y, torch.float32, "odd-strides forward")
    K.batch_norm_leaky_relu_forward_inplace(x_odd, w, b, rm, rv, True, EPS, 0.1)
    assert_close(x_odd, y, torch.float32, "odd-strides in-place")
    # grad_y in a layout other than x's.
    gx, _, _ = K.batch_norm_leaky_relu_backward(gy, x, w, b, mean, var, True, EPS, 0.1)
    gx_cl, _, _ = K.batch_norm_leaky_relu_backward(to_channels_last(gy), x, w, b, mean, var, True, EPS, 0.1)
    torch.testing.assert_close(gx_cl, gx, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,channels_last", [((3, 2, 1500), False), ((3, 5, 600), True)], ids=["nc", "cl"])
def test_several_tiles_per_chunk(shape, channels_last, device, monkeypatch):
    """Fewer programs than tiles: each program merges several tiles (the in-program Welford/Chan steps,
    uneven last chunk). Real sizes only reach this on large inputs."""
    monkeypatch.setattr(K, "TARGET_PROGRAMS", 3)
    x = make_case(shape, torch.float32, device, channels_last)[0]
    plan = K._Plan(K._native_layout(x)[0], channels_last)
    assert plan.tiles_per_chunk > 1 and plan.tiles % plan.tiles_per_chunk != 0
    case = make_case(shape, torch.float32, device, channels_last, seed=8)
    check_against_reference(*case, True, 0.2, f"few chunks {shape} cl={channels_last}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nc", "cl"])
def test_negative_slope(channels_last, device):
    """F.leaky_relu accepts a negative slope; so do the kernels (not the memory-saving mode)."""
    case = make_case((3, 4, 5, 2), torch.float32, device, channels_last, seed=6)
    for training in (True, False):
        check_against_reference(*case, training, -0.3, f"slope -0.3 training={training}")


@pytest.mark.parametrize("device", DEVICES)
def test_relu_infinities_like_torch(device):
    """ReLU: relu(-inf) = 0 (not -inf * 0 = NaN) and a zero gradient where pre <= 0 even for inf dy."""
    x, gy, w, b, rm, rv = make_case((4, 3, 5), torch.float32, device, seed=7)
    w = w.abs() + 0.5
    x[0, 1, 2], x[2, 0, 0] = float("-inf"), float("inf")
    gy[0, 1, 2], gy[1, 2, 3] = float("inf"), float("nan")
    y, mean, var = K.batch_norm_leaky_relu_forward(x, w, b, rm, rv, False, EPS, 0.0)
    gx, _, _ = K.batch_norm_leaky_relu_backward(gy, x, w, b, mean, var, False, EPS, 0.0)
    x_ref = x.detach().double().requires_grad_()
    y_ref = F.relu(F.batch_norm(x_ref, rm.double(), rv.double(), w.double(), b.double(), False, 0.0, EPS))
    y_ref.backward(gy.double())
    assert y[0, 1, 2] == 0 and y[2, 0, 0] == float("inf")
    assert_close(y, y_ref, torch.float32, "relu y with infinities")
    assert_close(gx, x_ref.grad, torch.float32, "relu grad_x with inf/nan grad_y")


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x, gy, w, b, rm, rv = make_case((4, 3, 40, 30), torch.float32, device, seed=9)
    first = K.batch_norm_leaky_relu_forward(x, w, b, rm, rv, True, EPS, 0.2)
    first += K.batch_norm_leaky_relu_backward(gy, x, w, b, first[1], first[2], True, EPS, 0.2)
    second = K.batch_norm_leaky_relu_forward(x, w, b, rm, rv, True, EPS, 0.2)
    second += K.batch_norm_leaky_relu_backward(gy, x, w, b, second[1], second[2], True, EPS, 0.2)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@pytest.mark.parametrize("device", DEVICES)
def test_eval_saves_copies_of_running_stats(device):
    x, _, w, b, rm, rv = make_case((2, 3, 4), torch.float16, device, param_dtype=torch.float16)
    _, mean, var = K.batch_norm_leaky_relu_forward(x, w, b, rm, rv, False, EPS, 0.2)
    assert mean.dtype == torch.float32 and mean.data_ptr() != rm.data_ptr()
    torch.testing.assert_close(mean, rm.float(), rtol=0, atol=0)
    torch.testing.assert_close(var, rv.float(), rtol=0, atol=0)


def test_bad_input_errors():
    x, gy, w, b, rm, rv = make_case((2, 3, 4), torch.float32, "cpu")
    with pytest.raises(ValueError, match="negative_slope > 0"):
        K.batch_norm_leaky_relu_backward_from_output(gy, x, w, b, rm, rv, True, EPS, 0.0)
    with pytest.raises(ValueError, match="weight must have 3 elements"):
        K.batch_norm_leaky_relu_forward(x, w[:2], b, rm, rv, True, EPS, 0.2)
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        K.batch_norm_leaky_relu_forward(x, w, b, None, None, False, EPS, 0.2)
    with pytest.raises(TypeError, match="float32, float64"):
        K.batch_norm_leaky_relu_forward(x.to(torch.int32), w, b, rm, rv, True, EPS, 0.2)
    with pytest.raises(ValueError, match="grad_y has shape"):
        K.batch_norm_leaky_relu_backward(gy[:1], x, w, b, rm, rv, True, EPS, 0.2)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        K.batch_norm_leaky_relu_forward(x[:1, :, :1], w, b, rm, rv, True, EPS, 0.2)


# ---- GPU only: large shapes (many chunks per channel) and the C++/CUDA kernels ---------------------------
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("shape,channels_last", [((256, 3, 64, 64), False), ((256, 3, 64, 64), True),
                                                 ((64, 128, 32, 32), False), ((64, 128, 32, 32), True),
                                                 ((4096, 700), False), ((1, 2, 300001), False)])
def test_gpu_large_shapes(shape, channels_last):
    case = make_case(shape, torch.float32, "cuda", channels_last, seed=1)
    check_against_reference(*case, True, 0.2, f"gpu {shape} cl={channels_last}")


def _native_cuda_kernel() -> bool:
    try:
        import gencore  # noqa: F401  (loads the native extension when it is built)
        return CUDA and torch._C._dispatch_has_kernel_for_dispatch_key(
            "gencore::batch_norm_leaky_relu_forward", "CUDA")
    except (ImportError, RuntimeError, AttributeError):
        return False


@pytest.mark.skipif(not _native_cuda_kernel(), reason="no gencore CUDA kernel for batch_norm_leaky_relu")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("shape,channels_last", CASES + [((256, 3, 64, 64), False), ((64, 128, 32, 32), True)])
def test_cuda_backend_matches_reference(shape, channels_last, dtype):
    ops = torch.ops.gencore
    for training in (True, False):
        x, gy, w, b, rm, rv = make_case(shape, dtype, "cuda", channels_last, seed=4)
        y, mean, var = ops.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, EPS, 0.2)
        gx, gw, gb = ops.batch_norm_leaky_relu_backward(gy, x, w, b, mean, var, training, EPS, 0.2)
        ry, rmean, rvar, rgx, rgw, rgb = reference(x, gy, w, b, rm, rv, training, 0.2)
        count = x.numel() // x.shape[1]
        assert y.stride() == x.stride() and gx.stride() == x.stride()
        stat = torch.float64 if dtype == torch.float64 else torch.float32
        assert_close(mean, rmean, stat, "cuda mean")
        assert_close(var, rvar, stat, "cuda var", scale=4.0)
        assert_close(y, ry, dtype, "cuda y")
        assert_close(gx, rgx, dtype, "cuda grad_x")
        assert_close(gw, rgw, dtype, "cuda grad_weight", scale=math.sqrt(count))
        assert_close(gb, rgb, dtype, "cuda grad_bias", scale=math.sqrt(count))
        # Deterministic, and the in-place pair agrees with the normal one.
        y2, _, _ = ops.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, EPS, 0.2)
        assert torch.equal(y, y2)
        x_in = x.clone()
        saved = ops.batch_norm_leaky_relu_forward_inplace(x_in, w, b, rm, rv, training, EPS, 0.2)
        assert torch.equal(x_in, y)
        gx2 = ops.batch_norm_leaky_relu_backward_from_output(gy, x_in, w, b, *saved[:2], training, EPS, 0.2)[0]
        assert_close(gx2, rgx, dtype, "cuda from-output grad_x", scale=10.0)
