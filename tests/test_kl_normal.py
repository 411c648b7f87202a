"""kl_normal on every backend against the float64 reference: values, gradients, dtypes, shapes, errors."""
import pytest
import torch

from gencore.ops import kl_normal, kl_normal_reference
from gencore.nn import KLDivergence
from helpers import assert_close, backend_device_params, skip_unless_runs

REDUCTIONS = ["none", "sum", "mean", "batchmean"]
SHAPES = [(1,), (37, 13), (5, 3, 7, 11), (3, 20000), (1, 1, 1)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def make_inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5
    logvar = torch.randn(shape, generator=g, dtype=torch.float64)
    return mu.to(device, dtype), logvar.to(device, dtype)


def reference_with_grads(mu, logvar, reduction, grad):
    m = mu.detach().double().requires_grad_()
    lv = logvar.detach().double().requires_grad_()
    out = kl_normal_reference(m, lv, reduction)
    out.backward(grad.double())
    return out.detach(), m.grad, lv.grad


@pytest.mark.parametrize("backend,device", backend_device_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_forward_backward_matches_reference(backend, device, dtype, shape, reduction):
    skip_unless_runs(backend, device)
    if backend == "triton" and device == "cpu" and shape == (3, 20000) and dtype != torch.float32:
        pytest.skip("keep interpreter runs short: large shape in float32 only")
    mu, logvar = make_inputs(shape, dtype, device, seed=hash((shape, reduction)) % 1000)
    mu.requires_grad_()
    logvar.requires_grad_()
    out = kl_normal(mu, logvar, reduction, backend=backend)
    assert out.dtype == dtype and out.device == mu.device
    grad = (torch.rand(out.shape, dtype=torch.float64) + 0.5).to(device, dtype)  # not all ones
    out.backward(grad)
    ref, dmu, dlogvar = reference_with_grads(mu, logvar, reduction, grad)
    n = mu.numel()
    # A reduced value sums n rounded terms: scale the absolute tolerance with sqrt(n).
    scale = max(1.0, n ** 0.5) if reduction != "none" else 1.0
    assert_close(out, ref, dtype, f"{backend} forward", scale)
    assert_close(mu.grad, dmu, dtype, f"{backend} dmu")
    assert_close(logvar.grad, dlogvar, dtype, f"{backend} dlogvar")


@pytest.mark.parametrize("backend,device", backend_device_params())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(backend, device, reduction):
    skip_unless_runs(backend, device)
    mu, logvar = make_inputs((4, 7), torch.float64, device)
    mu.requires_grad_()
    logvar.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, lv: kl_normal(m, lv, reduction, backend=backend), (mu, logvar))


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_non_contiguous_inputs(backend, device):
    skip_unless_runs(backend, device)
    mu, logvar = make_inputs((19, 23), torch.float32, device)
    mu_t, lv_t = mu.t(), logvar.t()[:, ::1]
    assert not mu_t.is_contiguous()
    for reduction in REDUCTIONS:
        got = kl_normal(mu_t, lv_t, reduction, backend=backend)
        ref = kl_normal_reference(mu_t.double(), lv_t.double(), reduction)
        assert_close(got, ref, torch.float32, f"{backend} {reduction} transposed", scale=23)
    strided = kl_normal(mu[:, ::2], logvar[:, ::2], "none", backend=backend)
    assert_close(strided, kl_normal_reference(mu[:, ::2].double(), logvar[:, ::2].double(), "none"),
                 torch.float32, "strided")


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_nan_and_inf_propagate(backend, device):
    skip_unless_runs(backend, device)
    mu = torch.tensor([0.0, float("nan"), 1.0, 2.0, 0.5], device=device)
    logvar = torch.tensor([0.0, 0.0, float("nan"), float("inf"), -float("inf")], device=device)
    got = kl_normal(mu, logvar, "none", backend=backend)
    ref = kl_normal_reference(mu.double(), logvar.double(), "none")
    assert_close(got, ref, torch.float32, f"{backend} nan/inf")
    assert torch.isnan(kl_normal(mu, logvar, "sum", backend=backend))


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_empty_input(backend, device):
    skip_unless_runs(backend, device)
    mu = torch.empty(0, 5, device=device)
    assert kl_normal(mu, mu, "sum", backend=backend).item() == 0.0
    assert kl_normal(mu, mu, "none", backend=backend).shape == (0, 5)
    assert torch.isnan(kl_normal(mu, mu, "mean", backend=backend))


@pytest.mark.parametrize("backend,device", backend_device_params())
def test_deterministic(backend, device):
    skip_unless_runs(backend, device)
    mu, logvar = make_inputs((64, 3000), torch.float32, device)
    first = kl_normal(mu, logvar, "sum", backend=backend)
    for _ in range(3):
        assert torch.equal(kl_normal(mu, logvar, "sum", backend=backend), first)


def test_cpu_sum_independent_of_thread_count():
    skip_unless_runs("cpu", "cpu")
    mu, logvar = make_inputs((300, 1001), torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kl_normal(mu, logvar, "sum", backend="cpu")
        torch.set_num_threads(max(2, threads))
        many = kl_normal(mu, logvar, "sum", backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@pytest.mark.parametrize("backend,device", [p for p in backend_device_params() if p.values[0] != "torch"])
def test_opcheck(backend, device):
    skip_unless_runs(backend, device)
    ns = torch.ops.gencore_triton if backend == "triton" else torch.ops.gencore
    mu, logvar = make_inputs((6, 5), torch.float32, device)
    for reduction in ["none", "sum", "batchmean"]:
        torch.library.opcheck(ns.kl_normal, (mu.requires_grad_(), logvar.requires_grad_(), reduction))


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_torch_compile_fullgraph(backend):
    skip_unless_runs(backend, "cpu")
    torch._dynamo.reset()

    def loss(mu, logvar):
        return kl_normal(mu * 2, logvar, "batchmean", backend=backend) + mu.sum()

    mu, logvar = make_inputs((8, 16), torch.float32, "cpu")
    compiled = torch.compile(loss, fullgraph=True)
    m1, l1 = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    m2, l2 = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    out_c = compiled(m1, l1)
    out_e = loss(m2, l2)
    out_c.backward()
    out_e.backward()
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(m1.grad, m2.grad)
    torch.testing.assert_close(l1.grad, l2.grad)


def test_module_matches_functional():
    mu, logvar = make_inputs((10, 4), torch.float32, "cpu")
    module = KLDivergence(reduction="batchmean")
    torch.testing.assert_close(module(mu, logvar), kl_normal(mu, logvar, "batchmean"))
    assert "batchmean" in repr(module)
    with pytest.raises(ValueError, match="reduction"):
        KLDivergence(reduction="avg")


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_bad_input(backend):
    skip_unless_runs(backend, "cpu")
    mu = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        kl_normal(mu, torch.randn(4, 2), backend=backend)
    with pytest.raises(TypeError, match="float32"):
        kl_normal(mu.long(), mu.long(), backend=backend)
    with pytest.raises(TypeError, match="same dtype"):
        kl_normal(mu, mu.double(), backend=backend)
    with pytest.raises(ValueError, match="reduction"):
        kl_normal(mu, mu, "avg", backend=backend)
    with pytest.raises(ValueError, match="batchmean"):
        kl_normal(torch.tensor(1.0), torch.tensor(0.0), "batchmean", backend=backend)
    with pytest.raises(TypeError, match="torch.Tensor"):
        kl_normal([1.0], mu, backend=backend)
    with pytest.raises(RuntimeError, match="same device"):
        kl_normal(mu, mu.to("meta"), backend=backend)


def test_native_op_checks_its_arguments():
    """torch.ops.gencore.* called directly (bypassing the Python checks) still errors clearly."""
    skip_unless_runs("cpu", "cpu")
    mu = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        torch.ops.gencore.kl_normal(mu, torch.randn(3, 4), "sum")
    with pytest.raises(ValueError, match="reduction"):
        torch.ops.gencore.kl_normal(mu, mu, "avg")
    with pytest.raises(TypeError, match="float32"):
        torch.ops.gencore.kl_normal(mu.int(), mu.int(), "sum")
