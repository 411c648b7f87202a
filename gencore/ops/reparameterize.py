"""Reparameterization sampling z = mu + exp(0.5 * logvar) * eps and its fusion with the KL term
(DESIGN §3.2-3.4).

eps is Triton's Philox4x32-10 normal (triton/language/random.py), generated inside the kernels and
never stored. gencore's element mapping (docs/reparameterize.md): element i (row-major index) of a
call with (seed, offset) takes normal number (offset + i) % 4 of randn4x(seed, (offset + i) // 4).
It depends on (seed, offset, i) only, so every backend, block size and thread count gives the same eps.

Backends: the reference below (`torch`, which builds eps with its own Philox in int64 tensor ops: an
exact oracle for the integers), the C++ kernels for CPU and CUDA (torch.ops.gencore.reparameterize*)
and Triton (torch.ops.gencore_triton.reparameterize*). The seed is a one-element int64 tensor on the
data's device, drawn with torch.randint from PyTorch's generator: torch.manual_seed repeats runs, every
call draws a fresh 63-bit Philox key (two calls never share a stream), and nothing is copied to the
host, so the GPU path never synchronizes and torch.compile(fullgraph=True) traces the draw as an
ordinary random op.
"""
from __future__ import annotations

import torch

from gencore import _native, backends
from gencore.ops._checks import REDUCTIONS, check_pair, check_reduction, compute_dtype, refuse_double_backward
from gencore.ops.kl_normal import kl_normal_reference

OP = "reparameterize"
OP_KL = "reparameterize_kl"

# ---- reference Philox4x32-10 in int64 tensor ops (exact; the oracle for every backend) ---------------
_MASK32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_SEED_HIGH = 2**63 - 1  # seeds are drawn from [0, 2**63 - 1)


def _mulhilo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of a * b for a in [0, 2^32) (int64 tensor) and a 32-bit constant b, without
    int64 overflow: b is split into 16-bit halves, so every partial product stays below 2^49."""
    lo = a * (b & 0xFFFF)
    t = a * (b >> 16) + (lo >> 16)
    return t >> 16, ((t & 0xFFFF) << 16) | (lo & 0xFFFF)


def philox_randint4x_reference(seed, counters: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """triton.language.random.randint4x(seed, counters): four int64 tensors holding uint32 values.
    seed: int or int64 tensor (its 64 bits are the key); counters: non-negative int64 tensor."""
    c0 = counters & _MASK32
    c1 = (counters >> 32) & _MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0 = seed & _MASK32
    k1 = (seed >> 32) & _MASK32
    for _ in range(10):
        hi_b, lo_b = _mulhilo(c2, _ROUND_B)
        hi_a, lo_a = _mulhilo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def _uint_to_uniform_float(x: torch.Tensor) -> torch.Tensor:
    """triton.language.random.uint_to_uniform_float for uint32 values held in int64."""
    signed = torch.where(x >= 2**31, x - 2**32, x)
    signed = torch.where(signed < 0, ~signed, signed)
    return signed.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32, device=x.device)


def _pair_uniform_to_normal(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-Muller as Triton's pair_uniform_to_normal: the clamp and the angle in float32 exactly, the
    transcendentals in float64, rounded once to float32 (kernels agree to a few float32 ulp)."""
    u1 = torch.clamp_min(u1, torch.tensor(1.0e-7, dtype=torch.float32, device=u1.device))
    th = torch.tensor(6.283185307179586, dtype=torch.float32, device=u2.device) * u2
    r = torch.sqrt(-2.0 * torch.log(u1.double()))
    th = th.double()
    return (r * torch.cos(th)).float(), (r * torch.sin(th)).float()


def philox_normal_reference(n: int, seed, offset: int = 0, device=None) -> torch.Tensor:
    """The n float32 normals of elements [0, n) of the stream (seed, offset), in gencore's mapping."""
    device = seed.device if isinstance(seed, torch.Tensor) and device is None else device
    if n == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    first, last = offset >> 2, (offset + n - 1) >> 2
    counters = torch.arange(first, last + 1, dtype=torch.int64, device=device)
    if isinstance(seed, torch.Tensor):
        seed = seed.reshape(())
    r0, r1, r2, r3 = philox_randint4x_reference(seed, counters)
    n0, n1 = _pair_uniform_to_normal(_uint_to_uniform_float(r0), _uint_to_uniform_float(r1))
    n2, n3 = _pair_uniform_to_normal(_uint_to_uniform_float(r2), _uint_to_uniform_float(r3))
    lead = offset - 4 * first
    return torch.stack((n0, n1, n2, n3), dim=1).reshape(-1)[lead:lead + n]


def reparameterize_reference(mu: torch.Tensor, logvar: torch.Tensor, seed, offset: int = 0) -> torch.Tensor:
    """Pure-PyTorch z = mu + exp(0.5 * logvar) * eps with gencore's Philox eps (the `torch` backend).
    Differentiable through ordinary autograd (eps is a constant)."""
    ct = compute_dtype(mu.dtype)
    eps = philox_normal_reference(mu.numel(), seed, offset, mu.device).reshape(mu.shape)
    return (mu.to(ct) + torch.exp(0.5 * logvar.to(ct)) * eps.to(ct)).to(mu.dtype)


def reparameterize_kl_reference(mu, logvar, seed, offset: int = 0, reduction: str = "sum"):
    """(reparameterize_reference(...), kl_normal_reference(mu, logvar, reduction)), both from one upcast
    of mu and logvar, so autograd adds the two gradient contributions in float32, not in mu's dtype."""
    ct = compute_dtype(mu.dtype)
    m, lv = mu.to(ct), logvar.to(ct)
    return reparameterize_reference(m, lv, seed, offset).to(mu.dtype), kl_normal_reference(m, lv, reduction).to(mu.dtype)


# ---- torch.library registration ---------------------------------------------------------------------
def _triton(name):
    def call(*args):
        from gencore.triton_kernels import reparameterize as kernels
        return getattr(kernels, name)(*args)
    return call


_SCHEMAS = {
    "reparameterize": "(Tensor mu, Tensor logvar, Tensor seed, int offset) -> Tensor",
    "reparameterize_backward": "(Tensor grad, Tensor logvar, Tensor seed, int offset) -> Tensor",
    "reparameterize_kl": "(Tensor mu, Tensor logvar, Tensor seed, int offset, str reduction) -> (Tensor, Tensor)",
    "reparameterize_kl_backward": "(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, Tensor seed, "
                                  "int offset, str reduction) -> (Tensor, Tensor)",
}
for _name, _schema in _SCHEMAS.items():
    torch.library.define(f"gencore_triton::{_name}", _schema)
    torch.library.impl(f"gencore_triton::{_name}", ("CPU", "CUDA"))(_triton(_name))


def _register_meta_and_autograd(ns: str, autograd: bool = True) -> None:
    """Fake kernels, and the autograd formulas unless the namespace registers them in C++ (`gencore`:
    csrc/bindings/autograd.cpp, the same formulas without the Python wrapper's per-call cost)."""
    lib = getattr(torch.ops, ns)

    @torch.library.register_fake(f"{ns}::reparameterize")
    def _(mu, logvar, seed, offset):
        return mu.new_empty(mu.shape)

    @torch.library.register_fake(f"{ns}::reparameterize_backward")
    def _(grad, logvar, seed, offset):
        return logvar.new_empty(logvar.shape)

    @torch.library.register_fake(f"{ns}::reparameterize_kl")
    def _(mu, logvar, seed, offset, reduction):
        return mu.new_empty(mu.shape), mu.new_empty(mu.shape if reduction == "none" else ())

    @torch.library.register_fake(f"{ns}::reparameterize_kl_backward")
    def _(grad_z, grad_kl, mu, logvar, seed, offset, reduction):
        return mu.new_empty(mu.shape), mu.new_empty(mu.shape)

    if not autograd:
        return

    # Only logvar (and mu for the KL part) and the one-element seed are saved: the backward kernels
    # regenerate eps (why, measured: csrc/cpu/reparameterize.cpp and docs/reparameterize.md).
    def setup(ctx, inputs, output):
        mu, logvar, seed, offset = inputs
        ctx.save_for_backward(logvar, seed)
        ctx.offset = offset

    def backward(ctx, grad):
        logvar, seed = ctx.saved_tensors
        return grad, lib.reparameterize_backward(grad, logvar, seed, ctx.offset), None, None

    torch.library.register_autograd(f"{ns}::reparameterize", backward, setup_context=setup)

    def setup_kl(ctx, inputs, output):
        mu, logvar, seed, offset, reduction = inputs
        ctx.save_for_backward(mu, logvar, seed)
        ctx.offset, ctx.reduction = offset, reduction

    def backward_kl(ctx, grad_z, grad_kl):
        mu, logvar, seed = ctx.saved_tensors
        dmu, dlogvar = lib.reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, seed, ctx.offset, ctx.reduction)
        return dmu, dlogvar, None, None, None

    torch.library.register_autograd(f"{ns}::reparameterize_kl", backward_kl, setup_context=setup_kl)
    refuse_double_backward(f"{ns}::reparameterize_backward")
    refuse_double_backward(f"{ns}::reparameterize_kl_backward")


_register_meta_and_autograd("gencore_triton")
if _native.loaded:
    _register_meta_and_autograd("gencore", autograd=False)


# ---- seeds ----------------------------------------------------------------------------------------------
def draw_seed(device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Philox key from PyTorch's generator (the default one of `device`, or `generator`) as a
    0-d int64 tensor on `device`: a device-side random op, no host synchronization."""
    device = torch.device(device)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"gencore.{OP}: generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(f"gencore.{OP}: generator is on {generator.device.type} but the tensors are on "
                             f"{device.type}; pass a generator of the tensors' device")
    return torch.randint(0, _SEED_HIGH, (), dtype=torch.int64, device=device, generator=generator)


def _seed_tensor(seed, device: torch.device, op: str) -> torch.Tensor:
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1:
            raise TypeError(f"gencore.{op}: seed must be an int or a one-element int64 tensor, "
                            f"got {seed.dtype} of shape {tuple(seed.shape)}")
        return seed.reshape(()).to(device)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"gencore.{op}: seed must be an int or a one-element int64 tensor, got {type(seed).__name__}")
    if not -2**63 <= seed < 2**64:
        raise ValueError(f"gencore.{op}: seed must fit in 64 bits, got {seed}")
    if seed >= 2**63:
        seed -= 2**64  # the same 64 key bits as a signed int64
    return torch.full((), seed, dtype=torch.int64, device=device)  # a fill kernel: no host-device copy


def _check_offset(offset, op: str) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"gencore.{op}: offset must be an int, got {type(offset).__name__}")
    if offset < 0:
        raise ValueError(f"gencore.{op}: offset must be >= 0, got {offset}")


# ---- public ops -------------------------------------------------------------------------------------------
def _run(mu, logvar, seed, offset, backend):
    name = backends.select(OP, mu, backend)
    if name == "torch":
        return reparameterize_reference(mu, logvar, seed, offset)
    ns = torch.ops.gencore_triton if name == "triton" else torch.ops.gencore
    return ns.reparameterize(mu, logvar, seed, offset)


def _run_kl(mu, logvar, seed, offset, reduction, backend):
    name = backends.select(OP_KL, mu, backend)
    if name == "torch":
        return reparameterize_kl_reference(mu, logvar, seed, offset, reduction)
    ns = torch.ops.gencore_triton if name == "triton" else torch.ops.gencore
    return ns.reparameterize_kl(mu, logvar, seed, offset, reduction)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, generator: torch.Generator | None = None,
                   backend: str | None = None) -> torch.Tensor:
    """z = mu + exp(0.5 * logvar) * eps, eps ~ N(0, 1) generated in the kernel (never stored).

    The noise stream is drawn from PyTorch's generator (`generator`, else the default generator of
    mu's device), so torch.manual_seed repeats a run and two calls never share a stream.
    Backward: dmu = dz, dlogvar = 0.5 * dz * eps * exp(0.5 * logvar), with eps regenerated.
    """
    check_pair(mu, logvar, OP, "mu", "logvar")
    return _run(mu, logvar, draw_seed(mu.device, generator), 0, backend)


def reparameterize_kl(mu: torch.Tensor, logvar: torch.Tensor, *, reduction: str = "sum",
                      generator: torch.Generator | None = None, backend: str | None = None):
    """(z, kl) = (reparameterize(mu, logvar), kl_normal(mu, logvar, reduction)) reading mu and logvar once.

    reduction: 'none' | 'sum' (default) | 'mean' | 'batchmean', as in gencore.ops.kl_normal.
    """
    check_pair(mu, logvar, OP_KL, "mu", "logvar")
    check_reduction(reduction, OP_KL, mu)
    return _run_kl(mu, logvar, draw_seed(mu.device, generator), 0, reduction, backend)


def reparameterize_with_seed(mu: torch.Tensor, logvar: torch.Tensor, seed, offset: int = 0, *,
                             backend: str | None = None) -> torch.Tensor:
    """reparameterize with an explicit Philox stream: `seed` (int, or one-element int64 tensor; 64 key
    bits) and `offset` in elements. Element i takes the stream's normal number offset + i, so calls on
    consecutive slices with offsets 0, n1, n1 + n2, ... reproduce one call on the whole tensor."""
    check_pair(mu, logvar, OP, "mu", "logvar")
    _check_offset(offset, OP)
    return _run(mu, logvar, _seed_tensor(seed, mu.device, OP), offset, backend)


def reparameterize_kl_with_seed(mu: torch.Tensor, logvar: torch.Tensor, seed, offset: int = 0, *,
                                reduction: str = "sum", backend: str | None = None):
    """reparameterize_kl with an explicit Philox stream (see reparameterize_with_seed)."""
    check_pair(mu, logvar, OP_KL, "mu", "logvar")
    check_reduction(reduction, OP_KL, mu)
    _check_offset(offset, OP_KL)
    return _run_kl(mu, logvar, _seed_tensor(seed, mu.device, OP_KL), offset, reduction, backend)


__all__ = ["reparameterize", "reparameterize_kl", "reparameterize_with_seed", "reparameterize_kl_with_seed",
           "reparameterize_reference", "reparameterize_kl_reference", "philox_normal_reference",
           "philox_randint4x_reference", "draw_seed", "REDUCTIONS"]
