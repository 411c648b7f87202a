"""batch_norm_leaky_relu on every backend against nn.BatchNorm*d + nn.LeakyReLU / nn.ReLU (float64 oracle):
outputs, dx / dweight / dbias, running statistics, train and eval, dtypes, layouts, odd shapes, in-place
mode, modules, state dicts, converter, torch.compile, opcheck, autocast and bad input."""
import copy
import math
import importlib

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import gencore
from gencore.nn import (BatchNormLeakyReLU1d, BatchNormLeakyReLU2d, BatchNormLeakyReLU3d,
                        fuse_batchnorm_activations)
from gencore.ops import batch_norm_leaky_relu
from gencore.ops import batch_norm_leaky_relu as bnl_module  # noqa: F401  (the function)
from gencore.ops.batch_norm_leaky_relu import SUPPORTED
from helpers import TOLERANCES, assert_close, backend_device_params, skip_unless_runs

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Odd shapes: C = 1, H*W = 1 with N > 1, (N, C) and (N, C, L) and 5-D input, non-powers of two, a
# channel with N*H*W = 24200 values (more than one CPU chunk or any Triton block), and (40, 50, 7, 9):
# the CPU's cached schedule with short runs as spans of 3 channels (a last group of 2, 63-value runs
# that start off the 64-byte lines, lane sums flushed after 32 of the 40 samples and at the end).
SHAPES = [(3, 5, 7, 9), (5, 1, 9, 11), (7, 6, 1, 1), (9, 4), (4, 6, 13), (2, 3, 3, 4, 5), (2, 3, 110, 110),
          (4, 40, 5, 3), (40, 50, 7, 9)]
BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
FUSED = {2: BatchNormLeakyReLU1d, 3: BatchNormLeakyReLU1d, 4: BatchNormLeakyReLU2d, 5: BatchNormLeakyReLU3d}


def skip_unless_op_runs(backend, device):
    skip_unless_runs(backend, device)
    if backend not in SUPPORTED:
        pytest.skip(f"backend {backend} does not implement batch_norm_leaky_relu in this build ({SUPPORTED})")


def to_layout(x, layout):
    if layout == "channels_last" and x.dim() >= 3:
        perm = [0] + list(range(2, x.dim())) + [1]
        inverse = [0, x.dim() - 1] + list(range(1, x.dim() - 1))
        return x.permute(perm).contiguous().permute(inverse)
    if layout == "strided":  # neither layout the kernels take: every other element of a wider tensor
        wide = torch.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


def activation(slope):
    return nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)


def make_pair(shape, slope, device, param_dtype=torch.float32, seed=0, **kwargs):
    """nn.BatchNorm*d + activation in float64 (the oracle) and the fused module, same random state."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    ref_bn = BN[len(shape)](c, dtype=torch.float64, **kwargs)
    fused = FUSED[len(shape)](c, negative_slope=slope, device=device, dtype=param_dtype, **kwargs)
    with torch.no_grad():
        if ref_bn.affine:
            ref_bn.weight.copy_(torch.randn(c, generator=g, dtype=torch.float64))
            ref_bn.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        if ref_bn.track_running_stats:
            ref_bn.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
            ref_bn.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
    fused.load_state_dict({k: v.to(param_dtype) if v.is_floating_point() else v
                           for k, v in ref_bn.state_dict().items()})
    with torch.no_grad():  # the oracle starts from exactly the (rounded) values the fused module has
        for k, v in fused.state_dict().items():
            ref_bn.state_dict()[k].copy_(v)
    return nn.Sequential(ref_bn, activation(slope)), fused


def random_input(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    # Offset and scale per channel so the statistics matter; values rounded to dtype first.
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5
    return x.to(dtype).to(device)


def check_step(ref, fused, x, dtype, what, train=True, keep_storage=False):
    """One forward/backward of both; compares output, dx, dweight, dbias. grad_output is not all ones.
    The fused module gets a copy of x, or with keep_storage x's own storage (its offset and alignment)."""
    xr = x.detach().to("cpu", torch.float64).requires_grad_()
    xf = (x.detach() if keep_storage else x.detach().clone()).requires_grad_()
    yr = ref(xr)
    yf = fused(xf)
    assert yf.dtype == x.dtype and yf.shape == x.shape
    if x.is_contiguous() or x.dim() < 3:
        assert yf.stride() == x.stride(), f"{what}: output strides {yf.stride()} != input {x.stride()}"
    elif x.dim() >= 3 and x.permute([0] + list(range(2, x.dim())) + [1]).is_contiguous() and not (
            getattr(fused, "backend", None) == "torch" and x.dim() == 3):
        # (The torch backend is F.batch_norm itself, which returns (N, C, L) channels-last as contiguous.)
        assert yf.stride() == x.stride(), f"{what}: channels-last output strides {yf.stride()} != {x.stride()}"
    g = (torch.randn(x.shape, dtype=torch.float64) * 0.5 + 0.25).to(dtype)
    yr.backward(g.double())
    yf.backward(g.to(x.device))
    assert_close(yf, yr, dtype, f"{what} y")
    # dx = a * (dz - mean(dz) - x̂ * mean(dz x̂)): cancellation makes the absolute error scale with |a|.
    assert_close(xf.grad, xr.grad, dtype, f"{what} dx", scale=4.0)
    if fused.affine:
        m = x.numel() // x.shape[1]
        scale = 4 * max(1.0, m ** 0.5)  # a sum of m rounded terms (PyTorch's own channels-last BN needs the 4)
        assert_close(fused.weight.grad, ref[0].weight.grad, dtype, f"{what} dweight", scale=scale)
        assert_close(fused.bias.grad, ref[0].bias.grad, dtype, f"{what} dbias", scale=scale)
        fused.weight.grad = fused.bias.grad = None
        ref[0].weight.grad = ref[0].bias.grad = None


@pytest.mark.parametrize("backend,device", backend_device_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_matches_batchnorm_and_activation(backend, device, dtype, shape, layout, slope):
    skip_unless_op_runs(backend, device)
    interpreter = backend == "triton" and device == "cpu"
    if interpreter and (dtype in (torch.float16, torch.float64) or shape[2:] == (110, 110) or shape[0] == 40
                        or (slope == 0 and dtype != torch.float32)):
        pytest.skip("keep Triton interpreter runs short")
    if layout == "channels_last" and len(shape) == 2:
        pytest.skip("(N, C) has one layout")
    # float32 parameters with half input (mixed BatchNorm); float64 input needs float64 parameters.
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    ref, fused = make_pair(shape, slope, device, param_dtype=param_dtype, seed=len(shape))
    fused.backend = backend
    what = f"{backend} {dtype} {shape} {layout} slope={slope}"
    for step in range(2):  # training: batch statistics, running-stat updates
        check_step(ref, fused, to_layout(random_input(shape, dtype, device, step), layout), dtype,
                   f"{what} train step {step}")
    assert_close(fused.running_mean, ref[0].running_mean, torch.float32, f"{what} running_mean", scale=10)
    assert_close(fused.running_var, ref[0].running_var, torch.float32, f"{what} running_var", scale=10)
    assert int(fused.num_batches_tracked) == int(ref[0].num_batches_tracked) == 2
    ref.eval()
    fused.eval()
    check_step(ref, fused, to_layout(random_input(shape, dtype, device, 7), layout), dtype, f"{what} eval")


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_non_native_strides(backend, device):
    """Strides that are neither contiguous nor channels-last: correct result, contiguous output."""
    skip_unless_op_runs(backend, device)
    shape = (3, 4, 5, 6)
    ref, fused = make_pair(shape, 0.2, device)
    fused.backend = backend
    x = to_layout(random_input(shape, torch.float32, device, 3), "strided")
    assert not x.is_contiguous()
    check_step(ref, fused, x, torch.float32, f"{backend} strided")
    xt = random_input((6, 5, 4, 3), torch.float32, device, 4).transpose(1, 3)  # (6, 3, 4, 5), C strided
    ref2, fused2 = make_pair(tuple(xt.shape), 0.0, device)
    fused2.backend = backend
    check_step(ref2, fused2, xt, torch.float32, f"{backend} transposed")


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_functional_matches_f_batch_norm(backend, device):
    """The functional op: no affine, no running stats (training only), eval with running stats, momentum."""
    skip_unless_op_runs(backend, device)
    x = random_input((6, 5, 7), torch.float32, device, 0)
    rm, rv = torch.randn(5, device=device), torch.rand(5, device=device) + 0.5
    for training, stats, momentum in [(True, False, 0.1), (True, True, 0.3), (False, True, 0.1)]:
        rm1, rv1, rm2, rv2 = rm.clone(), rv.clone(), rm.clone(), rv.clone()
        got = batch_norm_leaky_relu(x, rm1 if stats else None, rv1 if stats else None, None, None, training,
                                    momentum, 1e-3, 0.1, backend=backend)
        want = torch.nn.functional.leaky_relu(torch.nn.functional.batch_norm(
            x.double(), rm2.double() if stats else None, rv2.double() if stats else None, None, None, training,
            momentum, 1e-3), 0.1)
        assert_close(got, want, torch.float32, f"{backend} training={training} stats={stats}")
        if stats and training:
            ref_rm, ref_rv = rm.double().clone(), rv.double().clone()
            torch.nn.functional.batch_norm(x.double(), ref_rm, ref_rv, None, None, True, momentum)
            assert_close(rm1, ref_rm, torch.float32, "running_mean")
            assert_close(rv1, ref_rv, torch.float32, "running_var")


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_momentum_none_affine_false_no_running_stats(backend, device):
    skip_unless_op_runs(backend, device)
    for kwargs in [dict(momentum=None), dict(affine=False), dict(track_running_stats=False)]:
        ref, fused = make_pair((4, 3, 5, 5), 0.2, device, **kwargs)
        fused.backend = backend
        for step in range(3):
            check_step(ref, fused, random_input((4, 3, 5, 5), torch.float32, device, step), torch.float32,
                       f"{backend} {kwargs} step {step}")
        ref.eval()
        fused.eval()  # track_running_stats=False: eval still uses batch statistics, like nn.BatchNorm2d
        check_step(ref, fused, random_input((4, 3, 5, 5), torch.float32, device, 9), torch.float32,
                   f"{backend} {kwargs} eval")
        assert fused.state_dict().keys() == ref[0].state_dict().keys()
        for k, v in ref[0].state_dict().items():
            if v is not None and v.is_floating_point():
                assert_close(fused.state_dict()[k], v, torch.float32, f"{kwargs} {k}")


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_float32_params_with_half_input_and_grad_dtypes(backend, device):
    """Mixed BatchNorm (float32 parameters, half input) and half parameters: grads in the parameters' dtype."""
    skip_unless_op_runs(backend, device)
    for param_dtype in (torch.float32, torch.bfloat16):
        ref, fused = make_pair((4, 3, 6, 5), 0.2, device, param_dtype=param_dtype)
        fused.backend = backend
        check_step(ref, fused, random_input((4, 3, 6, 5), torch.bfloat16, device, 0), torch.bfloat16,
                   f"{backend} params {param_dtype}")
        assert fused.running_mean.dtype == param_dtype


@pytest.mark.parametrize("backend,device", backend_device_params())
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_float64(backend, device, training):
    skip_unless_op_runs(backend, device)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 2, 4, generator=g, dtype=torch.float64) * 2).to(device).requires_grad_()
    w = torch.randn(2, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(2, generator=g, dtype=torch.float64).to(device).requires_grad_()
    rm = torch.randn(2, dtype=torch.float64, device=device)
    rv = torch.rand(2, dtype=torch.float64, device=device) + 0.5

    def f(x, w, b):
        return batch_norm_leaky_relu(x, None if training else rm, None if training else rv, w, b, training,
                                     0.1, 1e-5, 0.2, backend=backend)

    def f_inplace(x, w, b):
        return batch_norm_leaky_relu(x * 1, None if training else rm, None if training else rv, w, b, training,
                                     0.1, 1e-5, 0.2, inplace=True, backend=backend)

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradcheck(f_inplace, (x, w, b))
    if backend == "cpu" and training:
        # 16 samples x 32 channels of 3 values: the CPU's span schedule (groups of 2 channels).
        x = (torch.randn(16, 32, 3, generator=g, dtype=torch.float64) * 2).requires_grad_()
        w = torch.randn(32, generator=g, dtype=torch.float64).requires_grad_()
        b = torch.randn(32, generator=g, dtype=torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(f, (x, w, b))


def opcheck_samples(device):
    g = torch.Generator().manual_seed(0)
    c = 3
    w, b = torch.randn(c, generator=g).to(device), torch.randn(c, generator=g).to(device)
    rm, rv = torch.randn(c, generator=g).to(device), (torch.rand(c, generator=g) + 0.5).to(device)
    x4 = torch.randn(2, c, 4, 5, generator=g).to(device)
    return [
        (x4, w, b, None, None, True),
        (x4.to(memory_format=torch.channels_last), w, b, rm, rv, False),
        (torch.randn(6, c, generator=g).to(device), None, None, rm, rv, True),
    ]


@pytest.mark.parametrize("backend,device", [p for p in backend_device_params() if p.values[0] != "torch"])
def test_opcheck(backend, device):
    skip_unless_op_runs(backend, device)
    ns = torch.ops.gencore_triton if backend == "triton" else torch.ops.gencore
    for x, w, b, rm, rv, training in opcheck_samples(device):
        args = (w, b, rm, rv, training, 1e-5, 0.2)
        torch.library.opcheck(ns.batch_norm_leaky_relu_forward, (x.clone().requires_grad_(), *args))
        y, mean, var = ns.batch_norm_leaky_relu_forward(x, *args)
        grad = torch.randn_like(y)
        torch.library.opcheck(ns.batch_norm_leaky_relu_backward, (grad, x, w, b, mean, var, training, 1e-5, 0.2))
        torch.library.opcheck(ns.batch_norm_leaky_relu_forward_inplace, (x.clone(), *args))
        torch.library.opcheck(ns.batch_norm_leaky_relu_backward_from_output,
                              (grad, y, w, b, mean, var, training, 1e-5, 0.2))


class SmallDiscriminator(nn.Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), BatchNormLeakyReLU2d(8, negative_slope=0.2, inplace=inplace),
            nn.Conv2d(8, 16, 3, 2, 1, bias=False), BatchNormLeakyReLU2d(16, negative_slope=0.0),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 1))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("inplace", [False, True])
def test_torch_compile_fullgraph(backend, inplace):
    skip_unless_op_runs(backend, "cpu")
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = SmallDiscriminator(inplace)
    for m in eager.modules():
        if hasattr(m, "backend"):
            m.backend = backend
    compiled_model = copy.deepcopy(eager)
    # In-place mode picks the channels that keep a copy from the weight's values (data-dependent): it
    # runs as a graph break, so only the out-of-place layers are asked to compile into one graph.
    compiled = torch.compile(compiled_model, fullgraph=not inplace)
    for step in range(2):
        x = torch.randn(4, 3, 16, 16)
        out_e, out_c = eager(x), compiled(x)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        out_e.square().sum().backward()
        out_c.square().sum().backward()
    for (name, pe), pc in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, be), bc in zip(eager.named_buffers(), compiled_model.buffers()):
        torch.testing.assert_close(bc, be, rtol=1e-5, atol=1e-6, msg=name)
    eager.eval()
    compiled_model.eval()
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_autograd_edge_cases(backend):
    """The op's autograd (C++ for the native op, Python for the Triton one): the batch statistics do not
    require grad; weight requiring grad while x does not; weight None with a bias; an in-place change of
    x after the forward is caught at backward; a backward under compiled autograd (which asserted on
    outputs marked non-differentiable in a C++ autograd node) matches the eager one."""
    skip_unless_op_runs(backend, "cpu")
    if backend == "triton":
        pytest.importorskip("triton")
    ops = torch.ops.gencore_triton if backend == "triton" else torch.ops.gencore
    forward = ops.batch_norm_leaky_relu_forward
    x = random_input((4, 3, 5, 5), torch.float32, "cpu", 0)
    w = (torch.rand(3) + 0.5).requires_grad_()
    b = torch.randn(3).requires_grad_()
    y, mean, var = forward(x, w, b, None, None, True, 1e-5, 0.2)
    assert not mean.requires_grad and not var.requires_grad and y.requires_grad
    dw, db = torch.autograd.grad(y.square().sum(), [w, b])
    xr = x.double().requires_grad_(False)
    yr = F.leaky_relu(F.batch_norm(xr, None, None, w.double(), b.double(), True), 0.2)
    dwr, dbr = torch.autograd.grad(yr.square().sum(), [w, b])
    torch.testing.assert_close(dw, dwr.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(db, dbr.float(), rtol=1e-4, atol=1e-4)
    # weight None, bias present: the bias gradient only.
    xg = x.clone().requires_grad_()
    y, _, _ = forward(xg, None, b, None, None, True, 1e-5, 0.2)
    dx, db = torch.autograd.grad(y.sum(), [xg, b])
    yr = F.leaky_relu(F.batch_norm(xg.double(), None, None, None, b.double(), True), 0.2)
    dxr, dbr = torch.autograd.grad(yr.sum(), [xg, b])
    torch.testing.assert_close(dx, dxr.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(db, dbr.float(), rtol=1e-4, atol=1e-4)
    # x changed in place after the forward: autograd's version check refuses the backward.
    xg = x.clone().requires_grad_()
    xi = xg * 1.0
    y, _, _ = forward(xi, w, b, None, None, True, 1e-5, 0.2)
    xi.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    if backend == "cpu":  # compiled autograd (the Triton interpreter would make this slow)
        import torch._dynamo.compiled_autograd as compiled_autograd
        torch._dynamo.reset()
        grads = []
        for compiled in (False, True):
            xg = x.clone().requires_grad_()
            y, _, _ = forward(xg, w, b, None, None, True, 1e-5, 0.2)
            if compiled:
                with compiled_autograd._enable(torch.compile(backend="eager")):
                    y.square().sum().backward()
            else:
                y.square().sum().backward()
            grads.append(xg.grad)
        torch.testing.assert_close(grads[1], grads[0])


def test_running_stats_of_other_dtypes():
    """Running statistics whose dtypes differ from the batch statistics' and from each other, and a
    momentum given as an int, update as F.batch_norm updates them."""
    skip_unless_op_runs("cpu", "cpu")
    x = random_input((6, 4, 3, 3), torch.float32, "cpu", 0)
    for mean_dtype, var_dtype in ((torch.float32, torch.float64), (torch.float64, torch.float32),
                                  (torch.float64, torch.float64)):
        for momentum in (0.1, 1):
            rm, rv = torch.zeros(4, dtype=mean_dtype), torch.ones(4, dtype=var_dtype)
            rm_ref, rv_ref = rm.double(), rv.double()
            batch_norm_leaky_relu(x, rm, rv, None, None, True, momentum, 1e-5, 0.2, backend="cpu")
            F.batch_norm(x.double(), rm_ref, rv_ref, None, None, True, momentum, 1e-5)
            assert rm.dtype == mean_dtype and rv.dtype == var_dtype
            torch.testing.assert_close(rm, rm_ref.to(mean_dtype), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(rv, rv_ref.to(var_dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_autocast_like_batchnorm(backend):
    """Under CPU autocast, BatchNorm keeps its input's dtype (float32 stays float32, a bf16 conv output
    stays bf16); the fused layer does the same and matches the composition."""
    skip_unless_op_runs(backend, "cpu")
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    ref = nn.Sequential(nn.BatchNorm2d(4), nn.LeakyReLU(0.2))
    fused = BatchNormLeakyReLU2d(4, negative_slope=0.2, backend=backend)
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        yr, yf = ref(h), fused(h)
        assert yf.dtype == yr.dtype == torch.bfloat16
        x4 = torch.randn(2, 4, 6, 6)
        yr32, yf32 = ref(x4), fused(x4)
        assert yf32.dtype == yr32.dtype == torch.float32
    torch.testing.assert_close(yf.float(), yr.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(yf32, yr32, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.running_var, ref[0].running_var, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trips():
    for bn_cls, fused_cls in [(nn.BatchNorm1d, BatchNormLeakyReLU1d), (nn.BatchNorm2d, BatchNormLeakyReLU2d),
                              (nn.BatchNorm3d, BatchNormLeakyReLU3d)]:
        for kwargs in [{}, dict(affine=False), dict(track_running_stats=False), dict(momentum=None)]:
            bn = bn_cls(5, **kwargs)
            with torch.no_grad():
                for t in bn.state_dict().values():
                    if t.is_floating_point():
                        t.copy_(torch.randn_like(t))
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.fill_(7)
            fused = fused_cls(5, negative_slope=0.2, **kwargs)
            fused.load_state_dict(bn.state_dict())  # strict: same keys
            back = bn_cls(5, **kwargs)
            back.load_state_dict(fused.state_dict())
            assert list(fused.state_dict()) == list(bn.state_dict())
            for k, v in bn.state_dict().items():
                assert torch.equal(back.state_dict()[k], v) and torch.equal(fused.state_dict()[k], v), k
            # Old checkpoints without num_batches_tracked load as into BatchNorm (version handling).
            old = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
            if "running_mean" in old:
                fused_old = fused_cls(5, **kwargs)
                fused_old._load_from_state_dict(old, "", {"version": 1}, True, [], [], [])
    assert "negative_slope=0.2" in repr(BatchNormLeakyReLU2d(3, negative_slope=0.2))


def dcgan_generator(nz=8, ngf=4):
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, 3, 4, 2, 1, bias=False), nn.Tanh())


class Discriminator(nn.Module):
    """Nested containers: Sequential inside a Module inside a Sequential."""

    def __init__(self, ndf=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True))
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
                          nn.LeakyReLU(0.2, inplace=True)),
            nn.Conv2d(ndf * 2, ndf * 4, 3, 1, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ndf * 4 * 4 * 4, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                  nn.Linear(8, 1))

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


@pytest.mark.parametrize("inplace", [False, True])
def test_converter_on_dcgan_models(inplace):
    torch.manual_seed(0)
    for model, x, pairs in [(dcgan_generator(), torch.randn(4, 8, 1, 1), 2),
                            (Discriminator(), torch.randn(4, 3, 16, 16), 3)]:
        # Non-default statistics so a converter that lost them would be caught.
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                with torch.no_grad():
                    m.running_mean.normal_()
                    m.running_var.uniform_(0.5, 2)
                    m.weight.normal_()
        ref = copy.deepcopy(model)
        params_before = [id(p) for p in model.parameters()]
        keys_before = list(model.state_dict())
        fused = fuse_batchnorm_activations(model, inplace=inplace)
        assert fused is model and model.fused_batchnorm_activations == pairs
        assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) for m in model.modules())
        assert [id(p) for p in model.parameters()] == params_before
        assert list(model.state_dict()) == keys_before
        for mode in ("train", "eval"):
            getattr(ref, mode)()
            getattr(model, mode)()
            xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
            out_r, out_f = ref(xr), model(xf)
            torch.testing.assert_close(out_f, out_r, rtol=1e-4, atol=1e-5)
            out_r.sum().backward()
            out_f.sum().backward()
            torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-4, atol=1e-5)
            for (name, pr), pf in zip(ref.named_parameters(), model.parameters()):
                torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-4, atol=1e-4, msg=name)
            for (name, br), bf in zip(ref.named_buffers(), model.buffers()):
                torch.testing.assert_close(bf, br, msg=name)
            ref.zero_grad()
            model.zero_grad()
        assert fuse_batchnorm_activations(model).fused_batchnorm_activations == 0  # idempotent


def test_converter_keeps_device_dtype_mode_and_skips_others():
    # nn.SyncBatchNorm + activation is fused too (SyncBatchNormLeakyReLU; tests/test_distributed.py).
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Tanh(), nn.SyncBatchNorm(3), nn.Tanh(), nn.BatchNorm2d(3),
                          nn.Sequential(nn.ReLU()), nn.BatchNorm1d(3).double(), nn.LeakyReLU(0.1))
    model[6].eval()
    fuse_batchnorm_activations(model)
    assert model.fused_batchnorm_activations == 1
    fused = model[6]
    assert isinstance(fused, BatchNormLeakyReLU1d) and isinstance(model[7], nn.Identity)
    assert fused.weight.dtype == torch.float64 and not fused.training and fused.negative_slope == 0.1
    assert isinstance(model[2], nn.SyncBatchNorm) and isinstance(model[4], nn.BatchNorm2d)


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_inplace_mode(backend, device):
    """Memory-saving mode: output written over x; grads right with zero, negative and tiny weights. On the
    CPU also through the cached schedule's spans and runs, whose statistics sweeps read several samples
    at once (23 samples of 6x6, 7 samples of 32x33)."""
    skip_unless_op_runs(backend, device)
    shapes = [(4, 6, 5, 7)] + ([(23, 40, 6, 6), (7, 32, 32, 33)] if backend == "cpu" else [])
    for shape, training in ((shape, training) for shape in shapes for training in (True, False)):
        ref, fused = make_pair(shape, 0.2, device)
        fused.inplace = True
        fused.backend = backend
        with torch.no_grad():
            # channel 0: weight 0; 1: negative; 2: |bias| >> |weight|; 3: tiny weight, no bias
            for m, cast in ((ref[0], torch.float64), (fused, torch.float32)):
                m.weight[:4] = torch.tensor([0.0, -1.5, 1e-3, 1e-6], dtype=cast)
                m.bias[:4] = torch.tensor([0.5, 0.3, 2.0, 0.0], dtype=cast)
        ref.train(training)
        fused.train(training)
        x = random_input(shape, torch.float32, device, 1)
        xr = x.double().requires_grad_()
        leaf = x.clone().requires_grad_()
        h = leaf * 1  # a non-leaf input, as a conv output would be
        y = fused(h)
        assert y.data_ptr() == h.data_ptr(), "in-place mode must return x overwritten"
        yr = ref(xr)
        g = torch.randn(shape, dtype=torch.float64)
        yr.backward(g)
        y.backward(g.float().to(device))
        what = f"{backend} inplace {shape} training={training}"
        assert_close(y, yr, torch.float32, f"{what} y")
        assert_close(leaf.grad, xr.grad, torch.float32, f"{what} dx", scale=4)
        m = x.numel() / shape[1]
        assert_close(fused.weight.grad, ref[0].weight.grad, torch.float32, f"{what} dweight", scale=m ** 0.5)
        assert_close(fused.bias.grad, ref[0].bias.grad, torch.float32, f"{what} dbias", scale=m ** 0.5)
        assert_close(fused.running_var, ref[0].running_var, torch.float32, f"{what} running_var")


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_inplace_mode_errors(backend, device):
    skip_unless_op_runs(backend, device)
    with pytest.raises(ValueError, match="negative_slope > 0"):
        BatchNormLeakyReLU2d(3, negative_slope=0.0, inplace=True)
    x = torch.randn(2, 3, 4, 4, device=device)
    with pytest.raises(ValueError, match="ReLU"):
        batch_norm_leaky_relu(x, None, None, training=True, negative_slope=0.0, inplace=True, backend=backend)
    leaf = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="leaf"):
        batch_norm_leaky_relu(leaf, None, None, training=True, negative_slope=0.2, inplace=True, backend=backend)
    # The overwritten input is needed by another op's backward: autograd refuses at backward time.
    h = leaf.sigmoid()  # sigmoid saves its output h
    y = batch_norm_leaky_relu(h, None, None, training=True, negative_slope=0.2, inplace=True, backend=backend)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    # Without autograd the in-place op simply overwrites x.
    x2 = x.clone()
    with torch.no_grad():
        out = batch_norm_leaky_relu(x2, None, None, training=True, negative_slope=0.2, inplace=True,
                                    backend=backend)
    assert out is x2
    torch.testing.assert_close(out, torch.nn.functional.leaky_relu(
        torch.nn.functional.batch_norm(x, None, None, training=True), 0.2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_nan_propagates_per_channel(backend, device):
    skip_unless_op_runs(backend, device)
    x = random_input((3, 4, 5), torch.float32, device, 0)
    x[1, 2, 3] = float("nan")
    got = batch_norm_leaky_relu(x, None, None, training=True, negative_slope=0.2, backend=backend)
    want = torch.nn.functional.leaky_relu(torch.nn.functional.batch_norm(x.double(), None, None, training=True), 0.2)
    assert_close(got, want, torch.float32, f"{backend} nan")
    assert torch.isnan(got[:, 2]).all() and not torch.isnan(got[:, [0, 1, 3]]).any()


@pytest.mark.parametrize("backend,device", backend_device_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_special_values_match_activation(backend, device, dtype, slope, layout):
    """Eval mode keeps inf, NaN and signed zeros intact through the affine step, so the activation's
    edge cases show: relu(-inf) = 0, relu(NaN) = NaN, leaky(-inf) = -inf, both in every layout (the CPU
    kernels compile ReLU and LeakyReLU as separate loops)."""
    skip_unless_op_runs(backend, device)
    if backend == "triton" and device == "cpu" and dtype != torch.float32:
        pytest.skip("keep Triton interpreter runs short")
    special = torch.tensor([float("-inf"), float("inf"), float("nan"), -0.0, 0.0, -1e-30, 1e-30, -3.0, 2.5])
    x = special.repeat(201).reshape(67, 3, 3, 3).to(dtype)  # every channel sees every special value
    x = to_layout(x, layout).to(device)
    c = x.shape[1]
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    got = batch_norm_leaky_relu(x, rm, rv, training=False, negative_slope=slope, backend=backend)
    pre = torch.nn.functional.batch_norm(x.double().cpu(), rm.double().cpu(), rv.double().cpu(), training=False)
    want = torch.relu(pre) if slope == 0 else torch.nn.functional.leaky_relu(pre, slope)
    torch.testing.assert_close(got.cpu().double(), want.to(dtype).double(), equal_nan=True, rtol=1e-2, atol=1e-30)
    assert torch.equal(torch.isnan(got.cpu()), torch.isnan(want)), "NaN positions differ"


# ---- the eager CPU fast path (csrc/bindings/batch_norm_leaky_relu_step.cpp) -------------------------------
BNL = importlib.import_module("gencore.ops.batch_norm_leaky_relu")


def counting_fast_path():
    """The fast path, wrapped: the list gets True for each call it ran, False for each it declined."""
    real, taken = BNL._eager_step, []

    def counted(*args):
        y = real(*args)
        taken.append(y is not None)
        return y

    return counted, taken


@pytest.mark.parametrize("dtype,shape", [(torch.float32, (6, 5, 7, 3)), (torch.float32, (9, 4)),
                                         (torch.float64, (4, 3, 11)), (torch.bfloat16, (5, 6, 4, 4))], ids=str)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("config", ["affine", "no_affine", "no_running_stats", "eval"])
def test_cpu_fast_path_matches_python_path(monkeypatch, dtype, shape, momentum, config):
    """Modules and the op through the fast path and through the Python path (fast path off), three
    training steps and an eval step: identical outputs and gradients in training, the same
    num_batches_tracked (cumulative average: momentum=None), running statistics equal up to the last bit
    (the fast path rounds the update once from double), so eval results equal within rounding; and the
    fast path really ran."""
    skip_unless_op_runs("cpu", "cpu")
    kwargs = {"affine": config != "no_affine", "track_running_stats": config != "no_running_stats",
              "momentum": momentum}
    fast = FUSED[len(shape)](shape[1], negative_slope=0.2, backend="cpu", **kwargs,
                             dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    with torch.no_grad():
        for t in fast.parameters():
            t.uniform_(0.5, 1.5)
    slow = copy.deepcopy(fast)
    counted, taken = counting_fast_path()
    tol = {"rtol": 1e-15, "atol": 0} if dtype == torch.float64 else {"rtol": 2e-7, "atol": 1e-30}
    for step in range(4):
        train = config != "eval" and step < 3
        x = random_input(shape, dtype, "cpu", step)
        g = torch.randn(shape, generator=torch.Generator().manual_seed(10 + step)).to(dtype)
        outs = []
        for module, path in ((fast, counted), (slow, None)):
            monkeypatch.setattr(BNL, "_eager_step", path)
            module.train(train)
            xi = x.clone().requires_grad_()
            y = module(xi)
            y.backward(g)
            outs.append((y, xi.grad) + tuple(p.grad for p in module.parameters()))
        for a, b in zip(*outs):
            if train:
                assert torch.equal(a, b), f"step {step}"
            else:  # normalized with the running statistics, which may differ in the last bit
                assert_close(a, b.double(), dtype, f"eval step {step}", scale=4.0)
        for name, buf in fast.named_buffers():
            if buf.is_floating_point():
                torch.testing.assert_close(buf, slow.get_buffer(name), **tol)
            else:
                assert torch.equal(buf, slow.get_buffer(name)), name
    assert taken == [True] * 4, "the module's fast path did not run"
    # The op itself, with running statistics.
    taken.clear()
    rm = torch.zeros(shape[1], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    rv = torch.ones_like(rm)
    rm_slow, rv_slow = rm.clone(), rv.clone()
    x = random_input(shape, dtype, "cpu", 7)
    monkeypatch.setattr(BNL, "_eager_step", counted)
    y = batch_norm_leaky_relu(x, rm, rv, None, None, True, 0.3, 1e-5, 0.2, backend="cpu")
    assert taken == [True]
    monkeypatch.setattr(BNL, "_eager_step", None)
    y_slow = batch_norm_leaky_relu(x, rm_slow, rv_slow, None, None, True, 0.3, 1e-5, 0.2, backend="cpu")
    assert torch.equal(y, y_slow)
    torch.testing.assert_close(rm, rm_slow, **tol)
    torch.testing.assert_close(rv, rv_slow, **tol)


def test_cpu_fast_path_bumps_versions_and_declines_what_it_cannot_run():
    """The fast path changes the running statistics and the counter as in-place ops would (their version
    counters move), and returns None, changing nothing, for whatever the Python path must run: running
    statistics of another dtype or not contiguous, momentum=None without a counter, a counter that is not
    one int64, inference tensors, bad arguments, dispatch modes, torch-function modes, functorch
    transforms and jit tracing."""
    skip_unless_op_runs("cpu", "cpu")
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    step = gencore._native.module.batch_norm_leaky_relu_step
    x = torch.randn(4, 3, 5)
    rm, rv, count = torch.zeros(3), torch.ones(3), torch.tensor(0)
    versions = rm._version, rv._version, count._version
    assert step(x, rm, rv, None, None, True, None, 1e-5, 0.2, count) is not None
    assert count.item() == 1 and all(a > b for a, b in zip((rm._version, rv._version, count._version), versions))
    assert not torch.equal(rm, torch.zeros(3))

    cases = {
        "float64 running stats": dict(running_mean=rm.double(), running_var=rv.double()),
        "strided running stats": dict(running_mean=torch.zeros(6)[::2], running_var=torch.ones(6)[::2]),
        "momentum None, no counter": dict(momentum=None, num_batches_tracked=None),
        "int32 counter": dict(num_batches_tracked=torch.tensor(0, dtype=torch.int32)),
        "integer x": dict(x=x.int()),
        "one value per channel": dict(x=torch.randn(1, 3)),
        "negative eps": dict(eps=-1.0),
        "eval without running stats": dict(training=False, running_mean=None, running_var=None),
        "one running stat": dict(running_var=None),
        "weight of 2 channels": dict(weight=torch.ones(2)),
        "meta weight": dict(weight=torch.ones(3, device="meta")),
        "empty x": dict(x=torch.randn(0, 3, 5)),
    }
    base = dict(x=x, running_mean=rm, running_var=rv, weight=None, bias=None, training=True, momentum=0.1,
                eps=1e-5, negative_slope=0.2, num_batches_tracked=count)
    for what, change in cases.items():
        before = rm.clone(), rv.clone(), count.clone()
        assert step(**{**base, **change}) is None, what
        assert all(torch.equal(a, b) for a, b in zip(before, (rm, rv, count))), f"{what}: changed state"
    with torch.inference_mode():
        inference_stats = dict(running_mean=torch.zeros(3), running_var=torch.ones(3))
        inference_count = torch.tensor(0)
    assert step(**{**base, **inference_stats}) is None
    assert step(**{**base, "num_batches_tracked": inference_count}) is None
    with TorchDispatchMode():
        assert step(**base) is None
    with TorchFunctionMode():
        assert step(**base) is None
    results = []
    torch.func.vmap(lambda t: results.append(step(**{**base, "x": t})) or t)(torch.randn(2, 4, 3, 5))
    torch.jit.trace(lambda t: results.append(step(**{**base, "x": t})) or t * 2, torch.randn(4, 3, 5),
                    check_trace=False)
    assert results == [None, None]
    assert count.item() == 1


def test_cpu_fast_path_declines_what_python_path_handles_differently(monkeypatch):
    """Arguments the Python path rejects or treats specially never run on the fast path: NumPy and 0-d
    tensor scalars (rejected), __torch_function__ subclasses as parameters (their override runs), lazy
    negation views (PyTorch's in-place update refuses them) and aliased running statistics, and an
    unknown backend name (the argument checks' error comes first)."""
    skip_unless_op_runs("cpu", "cpu")
    np = pytest.importorskip("numpy")
    counted, taken = counting_fast_path()
    monkeypatch.setattr(BNL, "_eager_step", counted)
    x = torch.randn(4, 3, 5)

    def call(rm=None, rv=None, weight=None, **kw):
        rm = torch.zeros(3) if rm is None else rm
        rv = torch.ones(3) if rv is None else rv
        args = {"training": True, "momentum": 0.1, "eps": 1e-5, "negative_slope": 0.2, **kw}
        return batch_norm_leaky_relu(x, rm, rv, weight, None, args["training"], args["momentum"], args["eps"],
                                     args["negative_slope"], backend=args.get("backend", "cpu"))

    for bad in (dict(momentum=torch.tensor(0.5)), dict(eps=np.float32(1e-5)),
                dict(negative_slope=torch.tensor(0.2))):
        with pytest.raises((TypeError, ValueError)):
            call(**bad)
    with pytest.raises(OverflowError):  # float(eps), as ever; not pybind's "incompatible function arguments"
        call(eps=10 ** 400)

    class Logged(torch.Tensor):
        calls = 0

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            Logged.calls += 1
            return super().__torch_function__(func, types, args, kwargs or {})

    assert type(call(weight=torch.ones(3).as_subclass(Logged))) is Logged and Logged.calls > 0
    base = torch.zeros(3)
    with pytest.raises(RuntimeError, match="negation"):  # PyTorch's own error, from the Python path's update
        call(rm=torch._neg_view(base))
    shared = torch.zeros(4)
    call(rm=shared[:3], rv=shared[1:] + 1)  # not aliased: a copy
    call(rm=shared[:3], rv=shared[1:])
    with pytest.raises(TypeError, match="float32"):
        batch_norm_leaky_relu(x.int(), torch.zeros(3), torch.ones(3), training=True, backend="nope")
    # The C++ side saw the negation view (declined), the unaliased and the aliased statistics (ran, declined);
    # the rest never got past the Python wrapper's type and backend checks.
    assert taken == [False, True, False], taken


def test_cpu_fast_path_with_saved_tensor_hooks(monkeypatch):
    """Saved-tensor hooks run inside the fast path's forward: one that shrinks a running statistic or
    swaps the saved batch statistics for larger ones gives a clear error (never an access past their
    memory), and one that raises leaves the counter counted once and is not called again by a retry."""
    skip_unless_op_runs("cpu", "cpu")
    real, entered = BNL._eager_step, []
    monkeypatch.setattr(BNL, "_eager_step", lambda *args: entered.append(True) or real(*args))
    rm, rv = torch.zeros(64), torch.ones(64)

    def shrink(t):
        if rm.numel() == 64:
            rm.set_(torch.zeros(1))
        return t

    with torch.autograd.graph.saved_tensors_hooks(shrink, lambda t: t):
        with pytest.raises(RuntimeError, match="changed shape, dtype or layout"):
            batch_norm_leaky_relu(torch.randn(4, 64, 5, requires_grad=True), rm, rv, None, None, True, 0.5,
                                  1e-5, 0.2, backend="cpu")
    c = 8
    spare_mean, spare_var = torch.zeros(c + 1024), torch.ones(c + 1024)

    def grow(t):  # the saved batch mean/var get 1032 values behind the autograd checks' back
        if t.dim() == 1 and t.numel() == c:
            t.data = torch.full((c + 1024,), 5.0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(grow, lambda t: t):
        with pytest.raises(RuntimeError, match="changed shape, dtype or layout"):
            batch_norm_leaky_relu(torch.randn(4, c, 5, requires_grad=True), spare_mean[:c], spare_var[:c], None,
                                  None, True, 0.5, 1e-5, 0.2, backend="cpu")
    assert torch.equal(spare_mean[c:], torch.zeros(1024)) and torch.equal(spare_var[c:], torch.ones(1024))
    layer = BatchNormLeakyReLU2d(3, backend="cpu")
    packed = []

    def refuse(t):
        packed.append(t)
        raise TypeError("this hook refuses")

    with torch.autograd.graph.saved_tensors_hooks(refuse, lambda t: t):
        with pytest.raises(TypeError, match="this hook refuses"):
            layer(torch.randn(4, 3, 5, 5, requires_grad=True))
    assert layer.num_batches_tracked.item() == 1 and len(packed) == 1
    assert len(entered) == 3, "each case must have run on the fast path"


def test_cpu_module_with_a_process_group_takes_the_python_path(monkeypatch):
    """A layer given a process_group after construction (as people do with nn.SyncBatchNorm) synchronizes
    in training, which only the Python path does: the module must not try the fast path."""
    skip_unless_op_runs("cpu", "cpu")
    entered = []
    monkeypatch.setattr(BNL, "_eager_step", lambda *args: entered.append(True))
    layer = BatchNormLeakyReLU2d(3, backend="cpu")
    layer.process_group = object()  # never used: torch.distributed is not initialized here
    layer(torch.randn(4, 3, 2, 2))
    assert entered == [] and layer.num_batches_tracked.item() == 1


def test_cpu_module_under_dispatch_mode_takes_the_python_path():
    """Under a TorchDispatchMode (here one that logs ops) the running-statistics update must be visible as
    ops: the fast path declines and the Python path runs."""
    skip_unless_op_runs("cpu", "cpu")
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    layer = BatchNormLeakyReLU2d(3, backend="cpu").train()
    with Log() as log:
        layer(torch.randn(4, 3, 2, 2))
    assert any("batch_norm_leaky_relu_forward" in op for op in log.ops)
    assert any("lerp" in op for op in log.ops), log.ops
    assert layer.num_batches_tracked.item() == 1


def test_cpu_deterministic_across_thread_counts():
    skip_unless_op_runs("cpu", "cpu")
    x = random_input((3, 2, 120, 100), torch.float32, "cpu", 0)  # few channels: the chunked schedule
    # ... and many channels: the cached schedule with long runs, and with short runs as spans.
    xs = [x, random_input((8, 40, 30, 30), torch.float32, "cpu", 1),
          random_input((40, 64, 9, 9), torch.float32, "cpu", 2)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append([torch.ops.gencore.batch_norm_leaky_relu_forward(t, None, None, None, None, True,
                                                                            1e-5, 0.2) for t in xs])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(23, 48, 8, 8), (19, 40, 20, 30), (7, 32, 32, 33)], ids=str)
def test_cpu_statistics_rows(shape, dtype):
    """The CPU statistics sweeps read up to four samples at once (kStatRows in
    csrc/cpu/batch_norm_leaky_relu.cpp), falling back to two and one for the samples left over and at the
    flush points of the span schedule: 23 samples of 8x8 spans (flushes every 32 samples: 4 x 5 + 2 + 1),
    19 samples of 600-value spans (flushes every 3 samples: 2 + 1 per window) and 7 samples of
    1056-value runs (the cached run schedule: 4 + 2 + 1). A dropped or doubled sample shows in the
    statistics, the output and every gradient."""
    skip_unless_op_runs("cpu", "cpu")
    ref, fused = make_pair(shape, 0.2, "cpu", param_dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    fused.backend = "cpu"
    check_step(ref, fused, random_input(shape, dtype, "cpu", 3), dtype, f"rows {shape}")


def cpu_pair(shape, train):
    """make_pair with slope 0.2 on the CPU backend, both in training or both in eval mode."""
    skip_unless_op_runs("cpu", "cpu")
    ref, fused = make_pair(shape, 0.2, "cpu")
    fused.backend = "cpu"
    ref.train(train)
    fused.train(train)
    return ref, fused


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,train", [((8, 256, 16, 16), False), ((9, 60, 7, 7), False), ((24, 20, 5, 5), True)],
                         ids=str)
def test_cpu_normalize_sample_spans(shape, train, dtype):
    """The CPU normalize pass outside the cached schedule (eval mode; training with C < 32) normalizes
    each sample's C*S values as one span when runs are short (normalize_sample_spans): a sample cut into
    four pieces for the threads (8 samples of 65536 values), an odd span length, and training with
    few channels (statistics from the chunked pass)."""
    ref, fused = cpu_pair(shape, train)
    check_step(ref, fused, random_input(shape, dtype, "cpu", 4), dtype, f"sample spans {shape}", train=train)


def offset_copy(t, offset=1):
    """A copy of t whose data starts `offset` elements into its storage (for bfloat16: 2 bytes off a word)."""
    return torch.empty(t.numel() + offset, dtype=t.dtype)[offset:].view(t.shape).copy_(t)


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "offset1"])
@pytest.mark.parametrize("shape,train", [((23, 48, 8, 8), True), ((17, 32, 32, 34), True), ((7, 32, 32, 34), True),
                                         ((3, 2, 120, 100), True), ((9, 40, 6, 6), False), ((5, 6, 2, 3), False)],
                         ids=str)
def test_cpu_bfloat16_pairs(shape, train, offset):
    """The CPU kernels read bfloat16 NCS data two values per 32-bit word (bfloat16_pair in
    csrc/cpu/scalar_types.h) when S is even and every pointer is 4-byte aligned, with S halved in the
    schedules: the cached spans (8x8) and runs (32x34, as 2-channel groups read four and two samples at
    once), the chunked few-channel pass, eval-mode sample spans and short eval runs. A swapped half, a
    value count taken in words instead of values, or a lost last pair shows in the outputs and the
    gradients. offset1 starts the input one value (2 bytes) into its storage: the one-value view."""
    ref, fused = cpu_pair(shape, train)
    x = random_input(shape, torch.bfloat16, "cpu", 5)
    if offset:
        x = offset_copy(x, offset)
        assert x.data_ptr() % 4 == 2
    check_step(ref, fused, x, torch.bfloat16, f"bfloat16 pairs {shape} offset {offset}", train=train,
               keep_storage=True)


@pytest.mark.parametrize("slope", [0.2, 0.0])
@pytest.mark.parametrize("shape", [(23, 48, 8, 8), (7, 32, 32, 34), (17, 32, 32, 34), (3, 2, 120, 100),
                                   (9, 40, 6, 6), (5, 6, 2, 3), (1, 33, 1, 2), (16, 33, 1, 2), (6, 1, 3, 7)],
                         ids=str)
def test_cpu_bfloat16_pairs_match_one_value_path(shape, slope):
    """Every kernel op on bfloat16 pairs (aligned data, S even) against the same op on an offset copy (the
    one-value loops), with the input and gradient streams of each op. Eval mode computes every value
    alone: the outputs must be bit-identical. Training statistics are sums grouped differently: they
    must agree to float32 rounding, and the outputs to one bfloat16 step. Includes ReLU, the memory-saving
    ops (in-place forward, backward from the output), one-word runs (N = 1, S = 2), one-word spans, and
    C = 1 with odd S (S*N even: the one-value path for a shape the chunked pass could pair)."""
    skip_unless_op_runs("cpu", "cpu")
    op = torch.ops.gencore
    c = shape[1]
    x = random_input(shape, torch.bfloat16, "cpu", 6)
    g = random_input(shape, torch.bfloat16, "cpu", 7)
    w, b = torch.rand(c) + 0.5, torch.randn(c)
    rm, rv = torch.randn(c), torch.rand(c) + 0.5

    def run(x, g, given=None):
        """Every op; the backward ops take their saved tensors from `given` (the pair path's forward) when
        set, so that each backward compares kernels on the same inputs."""
        def same_storage(t):
            return t.clone() if x.data_ptr() % 4 == 0 else offset_copy(t)

        out = {}
        for training in (True, False):
            y, mean, var = op.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, 1e-5, slope)
            out[training] = dict(y=y, mean=mean, var=var)
            if slope > 0:
                xi = same_storage(x)
                mean_i, var_i = op.batch_norm_leaky_relu_forward_inplace(xi, w, b, rm, rv, training, 1e-5, slope)
                out[training].update(y_inplace=xi, mean_inplace=mean_i, var_inplace=var_i)
            saved = given[training] if given else out[training]
            out[training].update(zip(("dx", "dw", "db"), op.batch_norm_leaky_relu_backward(
                g, x, w, b, saved["mean"], saved["var"], training, 1e-5, slope)))
            if slope > 0:
                out[training].update(zip(("dx_from_output", "dw_from_output", "db_from_output"),
                                         op.batch_norm_leaky_relu_backward_from_output(
                                             g, same_storage(saved["y_inplace"]), w, b, saved["mean_inplace"],
                                             saved["var_inplace"], training, 1e-5, slope)))
        return out

    paired = run(x, g)
    single = run(offset_copy(x), offset_copy(g), given=paired)
    assert offset_copy(x).data_ptr() % 4 == 2
    for name, a in paired[False].items():  # eval: every value computed alone, so bit for bit
        e = single[False][name]
        if a.dtype == torch.bfloat16:
            assert torch.equal(a, e), f"eval {name} differs between the pair and one-value paths"
    m = x.numel() // c
    for name, a in paired[True].items():
        e = single[True][name]
        if a.dtype == torch.bfloat16:  # outputs: one bfloat16 step apart at most (statistics in the last bits)
            torch.testing.assert_close(a.float(), e.float(), rtol=2 ** -7, atol=2 ** -7 * e.float().abs().max().item(),
                                       msg=f"training {name}")
        else:  # float32 statistics and parameter gradients: sums of m terms grouped differently
            torch.testing.assert_close(a, e, rtol=1e-6 * max(1.0, m ** 0.5), atol=1e-6 * max(1.0, m ** 0.5),
                                       msg=f"training {name}")


@pytest.mark.parametrize("slope", [0.2, 0.0])
@pytest.mark.parametrize("shape", [(23, 48, 8, 8), (2, 32, 40, 40), (17, 32, 32, 34)], ids=str)
def test_cpu_bfloat16_pairs_subnormal_and_special_outputs(shape, slope):
    """Outputs that are float32 subnormals (and NaN, inf inputs): the AVX-512 BF16 normalize and dx loops
    of bfloat16 pairs (where the build has them) round with an instruction that reads subnormals as zero
    and must hand such blocks to the exact portable loop. Eval forward (spans, runs) must match the
    one-value path bit for bit; training forward and dx (a float32-subnormal weight) to a bfloat16 step."""
    skip_unless_op_runs("cpu", "cpu")
    op = torch.ops.gencore
    c = shape[1]
    clean = random_input(shape, torch.bfloat16, "cpu", 8)  # training: outputs ~ weight = 1e-39
    special = (clean.float() * 1e-36).to(torch.bfloat16)  # eval: x * 1e-3 (no NaN in training: all would be)
    flat = special.view(-1)
    flat[::97] = float("nan")
    flat[5::89] = float("inf")
    flat[7::83] = -float("inf")
    rm, rv, b = torch.zeros(c), torch.ones(c), torch.zeros(c)
    for training, x, w in ((False, special, torch.full((c,), 1e-3)), (True, clean, torch.full((c,), 1e-39))):
        y_pair = op.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, 1e-5, slope)[0]
        y_one = op.batch_norm_leaky_relu_forward(offset_copy(x), w, b, rm, rv, training, 1e-5, slope)[0]
        finite = y_one.float().isfinite()
        assert (y_one.float()[finite] != 0).any(), "no nonzero outputs: the test would not see a flush"
        if not training:
            tiny = y_one.float().abs() < torch.finfo(torch.float32).tiny
            assert (tiny & (y_one.float() != 0)).any(), "no subnormal outputs"
            assert torch.equal(y_pair.view(torch.int16), y_one.view(torch.int16)), "eval outputs differ"
        else:  # and dx (training: the dx loop), ~ weight = 1e-39 as well
            torch.testing.assert_close(y_pair.float(), y_one.float(), rtol=2 ** -7, atol=1e-44, equal_nan=True)
            _, mean, var = op.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, 1e-5, slope)
            g = random_input(shape, torch.bfloat16, "cpu", 9)
            dx_pair = op.batch_norm_leaky_relu_backward(g, x, w, b, mean, var, training, 1e-5, slope)[0]
            dx_one = op.batch_norm_leaky_relu_backward(offset_copy(g), offset_copy(x), w, b, mean, var, training, 1e-5,
                                                       slope)[0]
            assert (dx_one.float().abs() < torch.finfo(torch.float32).tiny).logical_and(dx_one != 0).any()
            torch.testing.assert_close(dx_pair.float(), dx_one.float(), rtol=2 ** -7, atol=1e-44)


@pytest.mark.parametrize("slope", [0.2, 0.0])
@pytest.mark.parametrize("shape", [(23, 48, 8, 8), (2, 32, 40, 40), (17, 32, 32, 34)], ids=str)
def test_cpu_float16_nan_payloads_and_subnormal_outputs(shape, slope):
    """float16: the AVX-512 normalize and dx loops (where the build has them) convert with VCVTPH2PS /
    VCVTPS2PH, which keep a NaN's payload where the portable store writes the quiet NaN 0x7e00 (with the
    sign), so a block with a NaN result must go to the portable loop: NaN inputs with payloads give
    exactly 0x7e00 / 0xfe00, forward and dx. Half-subnormal outputs must match a float64 reference."""
    skip_unless_op_runs("cpu", "cpu")
    op = torch.ops.gencore
    c = shape[1]
    canonical = {0x7E00, 0xFE00 - 0x10000}  # as int16
    x = random_input(shape, torch.float16, "cpu", 8)
    flat = x.view(-1)
    flat[5::83] = float("inf")
    flat[7::79] = -float("inf")
    bits = x.view(torch.int16).view(-1)
    bits[::97] = 0x7D55  # signaling NaN with a payload
    bits[3::89] = 0xFD2A - 0x10000  # negative signaling NaN with another payload
    rm, rv, b = torch.zeros(c), torch.ones(c), torch.zeros(c)
    w = torch.full((c,), 3e-5)  # outputs below the smallest normal half (6.1e-5)
    y = op.batch_norm_leaky_relu_forward(x, w, b, rm, rv, False, 1e-5, slope)[0]
    assert torch.equal(y.isnan(), x.isnan())
    assert set(y.view(torch.int16)[y.isnan()].unique().tolist()) <= canonical
    pre = x.double() * (3e-5 / (1 + 1e-5) ** 0.5)
    ref = torch.where(pre > 0, pre, pre * slope) if slope else pre.clamp(min=0)
    ref = torch.where(x.isnan(), x.double(), ref).half()
    finite = ref.float().isfinite() & (ref != 0)
    assert (finite & (ref.float().abs() < torch.finfo(torch.float16).tiny)).any(), "no subnormal outputs"
    torch.testing.assert_close(y.float(), ref.float(), rtol=2 ** -10, atol=2 ** -24, equal_nan=True)
    # dx: one NaN with a payload in dy makes its channel's sums, and so all of its dx, NaN.
    xt = random_input(shape, torch.float16, "cpu", 10)
    w1 = torch.ones(c)
    _, mean, var = op.batch_norm_leaky_relu_forward(xt, w1, b, rm, rv, True, 1e-5, slope)
    g = random_input(shape, torch.float16, "cpu", 11)
    top = int(xt[0, 1].float().argmax())  # x above the channel mean: pre > 0, so ReLU passes dy on too
    g.view(torch.int16)[0, 1].view(-1)[top] = 0x7D55
    dx = op.batch_norm_leaky_relu_backward(g, xt, w1, b, mean, var, True, 1e-5, slope)[0]
    assert dx[:, 1].isnan().all() and dx[:, [0] + list(range(2, c))].isfinite().all()
    assert set(dx.view(torch.int16)[:, 1].unique().tolist()) <= canonical


@pytest.mark.parametrize("shape,layout", [((5, 32, 33, 35), "contiguous"), ((21, 40, 7, 9), "contiguous"),
                                          ((19, 40, 20, 30), "contiguous"), ((7, 3, 61, 67), "contiguous"),
                                          ((37, 70), "contiguous"), ((6, 300, 3, 5), "channels_last"),
                                          ((4, 3000, 2, 2), "channels_last")], ids=str)
def test_cpu_float16_statistics_tiles(shape, layout):
    """float16 loops through float32 tiles (where the build has F16C: the statistics sweeps, the channels-last
    backward sums; with neither AVX-512 nor AVX2 the normalize and dx loops too). Shapes chosen for the
    schedules: runs of 1155 values read 4 rows at a time, then 1 (several tiles per run, a tail that is not
    a multiple of 16); spans over 21 samples (4-row blocks, a 1-row block); spans of 1200 values (more than
    one 512-lane tile: per-lane constants at an offset); long runs of few channels; (N, C); channels-last
    rows of 300 and of 3000 channels (two tiles). Module steps (train, then eval) against float64
    nn.BatchNorm + LeakyReLU, then the ops on float32 copies of the data: the float16 statistics are those
    of the same values, so they agree to float32 rounding."""
    skip_unless_op_runs("cpu", "cpu")
    ref, fused = make_pair(shape, 0.2, "cpu", seed=3)
    x = to_layout(random_input(shape, torch.float16, "cpu", 12), layout)
    check_step(ref, fused, x, torch.float16, f"float16 {shape} {layout}")
    ref.eval()
    fused.eval()
    check_step(ref, fused, x, torch.float16, f"float16 {shape} {layout} eval")
    op = torch.ops.gencore
    c = shape[1]
    w, b = torch.rand(c) + 0.5, torch.randn(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    _, mean16, var16 = op.batch_norm_leaky_relu_forward(x, w, b, rm, rv, True, 1e-5, 0.2)
    _, mean32, var32 = op.batch_norm_leaky_relu_forward(x.float(), w, b, rm, rv, True, 1e-5, 0.2)
    torch.testing.assert_close(mean16, mean32, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var16, var32, rtol=1e-6, atol=1e-6)
    g = to_layout(random_input(shape, torch.float16, "cpu", 13), layout)
    _, gw16, gb16 = op.batch_norm_leaky_relu_backward(g, x, w, b, mean32, var32, True, 1e-5, 0.2)
    _, gw32, gb32 = op.batch_norm_leaky_relu_backward(g.float(), x.float(), w, b, mean32, var32, True, 1e-5, 0.2)
    m = x.numel() // c
    torch.testing.assert_close(gw16, gw32, rtol=1e-5, atol=1e-6 * m)
    torch.testing.assert_close(gb16, gb32, rtol=1e-5, atol=1e-6 * m)


# Shapes for the exact-rounding tests: spans of short runs over 16 samples (cached groups), runs of 256
# values (cached groups, 2 samples), runs of 63 values of 5 channels (two-pass), and (N, C). Each channel
# has at most 512 values, so the dyadic gradients below sum exactly in float32. (bfloat16 reaches its
# codec loops, which read pairs of values, only in contiguous layout with even runs: the first two shapes.)
HALF_ROUNDING_SHAPES = [(16, 40, 4, 8), (2, 36, 16, 16), (4, 5, 9, 7), (32, 48)]


def _half_tie_slope(dtype):
    """A LeakyReLU slope in (0, 1) whose products with `dtype` values often fall exactly halfway between
    two `dtype` values, with an odd value below as often as an even one: 0.5 * (1 + 3 * 2^-p) for a p-bit
    significand (with 2^-p alone, every tie is that of a power of two, whose lower neighbour is even, so
    rounding half down would pass too)."""
    return 0.5 * (1 + 3 * 2.0 ** -(8 if dtype == torch.bfloat16 else 11))


def _same_bits(actual, expected, what):
    """Bit-for-bit equal where expected is not NaN (NaN where it is: its sign is the CPU's operand order)."""
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan), f"{what}: NaN positions differ"
    bits = actual.view(torch.int16)[~nan], expected.view(torch.int16)[~nan]
    bad = (bits[0] != bits[1]).nonzero()
    assert bad.numel() == 0, (f"{what}: {bad.numel()} values differ in their bits, first "
                              f"{actual[~nan][bad[0]].item()} vs {expected[~nan][bad[0]].item()}")


@pytest.mark.parametrize("slope", ["tie", 0.0], ids=["leaky_tie", "relu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", HALF_ROUNDING_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cpu_half_outputs_round_exactly(dtype, shape, layout, slope):
    """bfloat16 and float16 outputs are the float32 kernel's results on the same values rounded to
    nearest even, bit for bit, in every loop that writes them (the codec loops of AVX2 / AVX-512 builds,
    the portable loops) and after a NaN (the AVX2 codec loops store that block value by value, the AVX-512
    ones hand the rest of the run to the portable loop).
    1. Rounding ties: with identity statistics (eval) and with statistics and gradient sums made exactly 0
       and 1 (training: x = +-1 in equal numbers per channel, gradients in pairs of opposite values),
       y = leaky_relu(x) and dx = dy or dy * slope, and the slope's products fall halfway between two
       half values, with odd and even neighbours.
    2. Random weight, bias and statistics (eval; training with x = +-1 and dyadic gradients, whose sums
       float32 takes exactly in any order, so both kernels get the same sums): the same arithmetic before
       the rounding. (A change of order in float32 shows in a half result only about once per 2^16
       values: benchmarks/native/bn_half_bits.cpp, run by CI, compares builds over many more.)
    NaN, infinities and -0 in the data; one channel's gradient holds a NaN (LeakyReLU: that channel's dx
    is NaN)."""
    skip_unless_op_runs("cpu", "cpu")
    if layout == "channels_last" and len(shape) == 2:
        pytest.skip("(N, C) has one layout")
    op = torch.ops.gencore
    slope = _half_tie_slope(dtype) if slope == "tie" else slope
    c = shape[1]
    m = math.prod(shape) // c
    gen = torch.Generator().manual_seed(5)
    ones, zeros = torch.ones(c), torch.zeros(c)
    weight = (torch.rand(c, generator=gen) + 0.5) * torch.where(torch.rand(c, generator=gen) < 0.3, -1.0, 1.0)
    bias = torch.randn(c, generator=gen)

    def both(fn, *tensors):  # (the op on the half tensors, the op on their float32 values rounded back)
        half = fn(*tensors)
        ref = fn(*[t.float() if t.dtype == dtype else t for t in tensors])
        return half, ref.to(dtype)

    def channelwise(values):  # (C, m) -> the op's shape and layout
        v = values.reshape([c] + [shape[0]] + list(shape[2:])).movedim(0, 1).contiguous()
        return to_layout(v, layout)

    x = (torch.randn(shape, generator=gen) * 3).to(dtype)
    flat = x.view(-1)
    for i, v in zip(torch.randint(0, flat.numel(), (6,), generator=gen).tolist(),
                    [math.nan, math.inf, -math.inf, math.nan, -0.0, 1e-30]):
        flat[i] = v
    x = to_layout(x, layout)
    sign = torch.ones(c, m)
    for ch in range(c):
        sign[ch, torch.randperm(m, generator=gen)[: m // 2]] = -1
    x_pm = channelwise(sign).to(dtype)
    nan_channel = c // 2
    # Pairs of opposite gradients k/8 within each sign of x: both channel sums are exactly 0.
    k = torch.randint(1, 8, (c, m // 2), generator=gen).float() / 8
    paired = torch.zeros(c, m)
    for ch in range(c):
        for s_ in (1.0, -1.0):
            where = (sign[ch] == s_).nonzero().squeeze(1)
            half = where.numel() // 2
            paired[ch, where[:half]] = k[ch, :half]
            paired[ch, where[half: 2 * half]] = -k[ch, :half]
    dyadic = torch.randint(1, 8, (c, m), generator=gen).float() / 8
    dyadic *= torch.where(torch.rand(c, m, generator=gen) < 0.5, -1.0, 1.0)
    rm, rv = torch.randn(c, generator=gen) * 0.3, torch.rand(c, generator=gen) + 0.5
    cases = [("ties", ones, zeros, zeros, ones, paired), ("random", weight, bias, rm, rv, dyadic)]
    for name, w, b, run_mean, run_var, grad in cases:
        what = f"{dtype} {shape} {layout} slope {slope} {name}"
        y, y_ref = both(lambda t: op.batch_norm_leaky_relu_forward(t, w, b, run_mean, run_var, False, 0.0,
                                                                  slope)[0], x)
        assert y.stride() == x.stride()
        _same_bits(y, y_ref, what + " eval forward")
        y, y_ref = both(lambda t: op.batch_norm_leaky_relu_forward(t, w, b, None, None, True, 0.0, slope)[0], x_pm)
        _same_bits(y, y_ref, what + " training forward")
        _, mean, var = op.batch_norm_leaky_relu_forward(x_pm, w, b, None, None, True, 0.0, slope)
        assert torch.equal(mean, zeros) and torch.equal(var, ones)
        grad = grad.clone()
        grad[nan_channel, m // 3] = math.nan
        g = channelwise(grad).to(dtype)
        dx, dx_ref = both(lambda gg, t: op.batch_norm_leaky_relu_backward(gg, t, w, b, mean, var, True, 0.0,
                                                                         slope)[0], g, x_pm)
        assert dx.stride() == x_pm.stride()
        if slope > 0:  # (with ReLU a NaN gradient where the input is negative gives 0)
            assert bool(dx.select(1, nan_channel).isnan().all())
        _same_bits(dx, dx_ref, what + " training dx")


@pytest.mark.parametrize("shape", [(1, 32, 300, 300), (300, 32, 30, 30)], ids=str)
def test_large_channel_slice_cpu(shape):
    """C >= 32 with one channel larger than the cached (fused) schedule takes (1 MiB): the two-pass path,
    with one long run per channel, or with 300 samples of 900-value runs (statistics per channel over
    300 runs, then the normalize pass as one span per sample)."""
    ref, fused = cpu_pair(shape, True)
    check_step(ref, fused, random_input(shape, torch.float32, "cpu", 0), torch.float32, f"large slice {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cpu_streaming_stores_are_exact(dtype):
    """Outputs above the streaming threshold are written through an L1 buffer with non-temporal stores
    (csrc/cpu/stream_store.h). Forcing that path on must change no bit of any output, in every schedule:
    few channels (chunked), many channels (cached groups, as runs or as spans of short runs), many short
    (sample, channel) runs, runs that are not a multiple of 64 bytes (unaligned line heads and tails) and
    runs or spans longer than one L1 buffer."""
    skip_unless_op_runs("cpu", "cpu")
    from gencore import _native
    op = torch.ops.gencore
    # (16, 64, 15, 15): spans of 4 channels x 225 = 900 values, longer than one 512-value buffer.
    # (9, 40, 33, 31): eval-mode sample spans of 40920 values cut into two pieces off a line boundary.
    shapes = [(3, 5, 7, 9), (3, 2, 120, 100), (70, 4, 3, 3), (2, 40, 5, 3), (5, 33, 31, 37), (40, 50, 7, 9),
              (17, 64, 11, 11), (16, 64, 15, 15), (9, 40, 33, 31)]
    default = _native.module.stream_min_bytes()
    assert default >= 0

    def run_all(x, g, w, b, rm, rv):
        out = []
        for training in (True, False):
            y, mean, var = op.batch_norm_leaky_relu_forward(x, w, b, rm, rv, training, 1e-5, 0.2)
            out += [y, mean, var, *op.batch_norm_leaky_relu_backward(g, x, w, b, mean, var, training, 1e-5, 0.2)]
            xi = x.clone()
            mean_i, var_i = op.batch_norm_leaky_relu_forward_inplace(xi, w, b, rm, rv, training, 1e-5, 0.2)
            out += [xi, mean_i, var_i,
                    *op.batch_norm_leaky_relu_backward_from_output(g, xi, w, b, mean_i, var_i, training, 1e-5, 0.2)]
        return out

    try:
        for shape in shapes:
            c = shape[1]
            x = random_input(shape, dtype, "cpu", 0)
            g = random_input(shape, dtype, "cpu", 1)
            pdt = torch.float64 if dtype == torch.float64 else torch.float32
            w, b = torch.rand(c, dtype=pdt) + 0.5, torch.randn(c, dtype=pdt)
            rm, rv = torch.randn(c, dtype=pdt), torch.rand(c, dtype=pdt) + 0.5
            _native.module.set_stream_min_bytes(1 << 62)
            cached = run_all(x, g, w, b, rm, rv)
            _native.module.set_stream_min_bytes(0)
            assert _native.module.stream_min_bytes() == 0
            streamed = run_all(x, g, w, b, rm, rv)
            for i, (a, e) in enumerate(zip(streamed, cached)):
                assert torch.equal(a, e), f"{dtype} {shape}: output {i} differs with streaming stores"
    finally:
        _native.module.set_stream_min_bytes(-1)
    assert _native.module.stream_min_bytes() == default


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_bad_input(backend):
    skip_unless_op_runs(backend, "cpu")
    x = torch.randn(4, 3, 5)
    rm, rv = torch.zeros(3), torch.ones(3)

    def call(x=x, rm=rm, rv=rv, **kw):
        kw.setdefault("training", True)
        return batch_norm_leaky_relu(x, rm, rv, backend=backend, **kw)

    with pytest.raises(ValueError, match="shape"):
        call(torch.randn(4))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        call(rm=torch.zeros(4))
    with pytest.raises(ValueError, match=r"weight must have shape"):
        call(weight=torch.ones(2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        call(torch.randn(1, 3, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNormLeakyReLU1d(3, backend=backend)(torch.randn(1, 3))
    with pytest.raises(TypeError, match="float32"):
        call(x.int())
    with pytest.raises(TypeError, match="float32"):
        call(weight=torch.ones(3, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="meta"):
        call(weight=torch.ones(3, device="meta"))
    with pytest.raises(ValueError, match="both be None"):
        call(rv=None)
    with pytest.raises(ValueError, match="required when training=False"):
        call(rm=None, rv=None, training=False)
    with pytest.raises(TypeError, match="momentum"):
        call(momentum=None)
    with pytest.raises(TypeError, match="torch.Tensor"):
        call([1.0, 2.0])
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        BatchNormLeakyReLU2d(3)(x)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        BatchNormLeakyReLU1d(3)(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="expected 5D input"):
        BatchNormLeakyReLU3d(3)(torch.randn(2, 3, 4, 5))
    with pytest.raises(RuntimeError, match="does not implement|cannot run"):
        batch_norm_leaky_relu(x, rm, rv, backend="cuda")


def test_native_op_checks_its_arguments():
    """torch.ops.gencore.* called directly (bypassing the Python checks) still errors clearly."""
    skip_unless_op_runs("cpu", "cpu")
    op = torch.ops.gencore
    x = torch.randn(4, 3, 5)
    with pytest.raises(ValueError, match="one value per channel"):
        op.batch_norm_leaky_relu_forward(x, torch.ones(4), None, None, None, True, 1e-5, 0.2)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        op.batch_norm_leaky_relu_forward(torch.randn(1, 3), None, None, None, None, True, 1e-5, 0.2)
    with pytest.raises(ValueError, match="required when training=False"):
        op.batch_norm_leaky_relu_forward(x, None, None, None, None, False, 1e-5, 0.2)
    with pytest.raises(TypeError, match="float32"):
        op.batch_norm_leaky_relu_forward(x.int(), None, None, None, None, True, 1e-5, 0.2)
    with pytest.raises(ValueError, match="at least 2 dims"):
        op.batch_norm_leaky_relu_forward(torch.randn(5), None, None, None, None, True, 1e-5, 0.2)
    y, mean, var = op.batch_norm_leaky_relu_forward(x, None, None, None, None, True, 1e-5, 0.2)
    with pytest.raises(ValueError, match="negative_slope > 0"):
        op.batch_norm_leaky_relu_backward_from_output(y, y, None, None, mean, var, True, 1e-5, 0.0)
    with pytest.raises(ValueError, match="grad_y must have x's shape"):
        op.batch_norm_leaky_relu_backward(y[:2], x, None, None, mean, var, True, 1e-5, 0.2)


def test_empty_batch_and_backend_listing():
    x = torch.randn(0, 3, 4)
    for backend in gencore.available_backends("cpu"):
        if backend in SUPPORTED and backend != "triton":
            out = batch_norm_leaky_relu(x, torch.zeros(3), torch.ones(3), training=False, backend=backend)
            assert out.shape == x.shape
    assert "torch" in SUPPORTED


def test_reference_kernel_ops_match_composition():
    """The pure-PyTorch versions of the four kernel ops (the contract the Triton launchers implement)."""
    from gencore.ops.batch_norm_leaky_relu import (backward_from_output_reference, backward_reference,
                                                   forward_inplace_reference, forward_reference)
    x = random_input((4, 3, 6), torch.float64, "cpu", 0).requires_grad_()
    w = torch.tensor([1.5, -0.7, 0.3], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64, requires_grad=True)
    y_ref = torch.nn.functional.leaky_relu(torch.nn.functional.batch_norm(x, None, None, w, b, True), 0.2)
    g = torch.randn_like(y_ref)
    dx_ref, dw_ref, db_ref = torch.autograd.grad(y_ref, (x, w, b), g)
    with torch.no_grad():
        y, mean, var = forward_reference(x, w, b, None, None, True, 1e-5, 0.2)
        torch.testing.assert_close(y, y_ref)
        for got in (backward_reference(g, x, w, b, mean, var, True, 1e-5, 0.2),
                    backward_from_output_reference(g, y, w, b, mean, var, True, 1e-5, 0.2)):
            for a, e in zip(got, (dx_ref, dw_ref, db_ref)):
                torch.testing.assert_close(a, e)
        x2 = x.detach().clone()
        forward_inplace_reference(x2, w, b, None, None, True, 1e-5, 0.2)
        torch.testing.assert_close(x2, y_ref)


def test_tolerance_table_has_all_dtypes():
    assert set(DTYPES) <= set(TOLERANCES)
