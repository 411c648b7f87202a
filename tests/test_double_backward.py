"""Double backward through gencore's fused ops is refused with a clear error, never answered with
silently zero second-order gradients (PyTorch's default for ops without a derivative). A first backward
with create_graph=True still works and gives the ordinary gradients."""
import pytest
import torch

from gencore.ops import batch_norm_leaky_relu, kl_normal, reparameterize, reparameterize_kl
from helpers import backend_device_params, skip_unless_runs

FUSED = [p for p in backend_device_params() if p.values[0] != "torch"]


def _kl(mu, logvar, backend):
    return kl_normal(mu, logvar, backend=backend)


def _reparameterize(mu, logvar, backend):
    return (reparameterize(mu, logvar, backend=backend) ** 2).sum()


def _reparameterize_kl(mu, logvar, backend):
    z, kl = reparameterize_kl(mu, logvar, backend=backend)
    return (z ** 2).sum() + kl


def _batch_norm(x, weight, backend):
    y = batch_norm_leaky_relu(x, None, None, weight, None, training=True, negative_slope=0.2, backend=backend)
    return (y ** 2).sum()


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("loss", [_kl, _reparameterize, _reparameterize_kl, _batch_norm],
                         ids=["kl_normal", "reparameterize", "reparameterize_kl", "batch_norm_leaky_relu"])
def test_double_backward_raises_clear_error(backend, device, loss):
    skip_unless_runs(backend, device)
    g = torch.Generator().manual_seed(0)
    if loss is _batch_norm:
        a = torch.randn(4, 3, 5, generator=g).to(device).requires_grad_()
        b = (torch.rand(3, generator=g) + 0.5).to(device).requires_grad_()
    else:
        a = torch.randn(5, 7, generator=g).to(device).requires_grad_()
        b = torch.randn(5, 7, generator=g).to(device).requires_grad_()
    torch.manual_seed(1)
    expected = torch.autograd.grad(loss(a, b, backend), (a, b))
    torch.manual_seed(1)  # the same noise for the reparameterize ops
    first = torch.autograd.grad(loss(a, b, backend), (a, b), create_graph=True)
    for got, want in zip(first, expected):
        torch.testing.assert_close(got.detach(), want)
    with pytest.raises(RuntimeError, match="derivative for gencore.* is not implemented"):
        torch.autograd.grad(sum(t.sum() for t in first), (a, b))
