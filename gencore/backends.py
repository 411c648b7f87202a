"""Backend selection: the one place that decides which implementation runs an op.

Backends (DESIGN §2):
  torch   pure PyTorch reference; runs on any device
  cpu     C++ extension (OpenMP + SIMD); CPU tensors
  cuda    C++/CUDA extension; CUDA tensors
  triton  Triton kernels; CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 (slow; for tests)

`auto` (default) picks: CUDA tensor -> triton, else cuda, else torch; CPU tensor -> cpu, else torch.
Precedence: `backend=` argument > `set_backend()` > env GENCORE_BACKEND (read at import) > auto.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from gencore import _native

BACKENDS = ("torch", "cpu", "cuda", "triton")
_CHOICES = BACKENDS + ("auto",)


def _validate_name(name: str, where: str) -> str:
    if not isinstance(name, str) or name.lower() not in _CHOICES:
        raise ValueError(f"gencore: unknown backend {name!r} ({where}); choose one of {', '.join(_CHOICES)}")
    return name.lower()


_env_backend = os.environ.get("GENCORE_BACKEND", "").strip()
_process_backend = _validate_name(_env_backend, "env GENCORE_BACKEND") if _env_backend else "auto"

_triton_spec = importlib.util.find_spec("triton") is not None


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def set_backend(name: str | None) -> None:
    """Set the process-wide backend ('auto', 'torch', 'cpu', 'cuda', 'triton'); None restores 'auto'."""
    global _process_backend
    _process_backend = "auto" if name is None else _validate_name(name, "set_backend")


def get_backend() -> str:
    """The process-wide backend choice ('auto' unless set by set_backend() or GENCORE_BACKEND)."""
    return _process_backend


_status_cache: dict[bool, dict[str, str | None]] = {}


def backend_status() -> dict[str, str | None]:
    """For each backend: None when it can run somewhere in this process, else why not."""
    interpret = _triton_interpret()  # the only input that may change while the process runs
    if interpret not in _status_cache:
        _status_cache[interpret] = _compute_status(interpret)
    return dict(_status_cache[interpret])


def _compute_status(interpret: bool) -> dict[str, str | None]:
    cuda_gpu = torch.cuda.is_available()
    status: dict[str, str | None] = {"torch": None}
    status["cpu"] = None if _native.loaded else f"C++ extension {_native.error}"
    if not _native.loaded:
        status["cuda"] = f"C++ extension {_native.error}"
    elif not _native.cuda_compiled:
        status["cuda"] = "extension built without CUDA kernels"
    elif not cuda_gpu:
        status["cuda"] = "no CUDA GPU visible"
    else:
        status["cuda"] = None
    if not _triton_spec:
        status["triton"] = "triton is not installed"
    elif not cuda_gpu and not interpret:
        status["triton"] = "no CUDA GPU (set TRITON_INTERPRET=1 to run Triton kernels on CPU tensors)"
    else:
        status["triton"] = None
    return status


def _why_not(name: str, device_type: str) -> str | None:
    """Why `name` cannot run on a tensor of `device_type` (None: it can)."""
    if name == "torch":
        return None
    reason = backend_status().get(name)
    if reason is not None:
        return reason
    if name == "cpu" and device_type != "cpu":
        return f"it runs on CPU tensors only, got a {device_type} tensor"
    if name == "cuda" and device_type != "cuda":
        return f"it runs on CUDA tensors only, got a {device_type} tensor"
    if name == "triton" and device_type not in ("cuda", "cpu"):
        return f"it runs on CUDA tensors, got a {device_type} tensor"
    if name == "triton" and device_type == "cpu" and not _triton_interpret():
        return "CPU tensors need TRITON_INTERPRET=1"
    return None


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """Backends that can run in this process; with `device`, those that can run on tensors there."""
    if device is None:
        return [b for b, why in backend_status().items() if why is None]
    device_type = torch.device(device).type
    return [b for b in BACKENDS if _why_not(b, device_type) is None]


def _auto(device_type: str, supported: tuple[str, ...]) -> str:
    order = {"cuda": ("triton", "cuda"), "cpu": ("cpu",)}.get(device_type, ())
    for name in order:
        if name in supported and _why_not(name, device_type) is None:
            return name
    if device_type == "cpu" and "cpu" in supported:
        _native.warn_fallback_once()
    return "torch"


def select(op: str, tensor: torch.Tensor, backend: str | None = None,
           supported: tuple[str, ...] = BACKENDS) -> str:
    """The backend that runs `op` on `tensor`: explicit `backend`, else the process choice, else auto."""
    name = _process_backend if backend is None else _validate_name(backend, f"{op}(backend=...)")
    device_type = tensor.device.type
    # The answer is a function of these alone (backend_status is fixed per TRITON_INTERPRET value, which
    # only an explicit 'triton' choice can depend on: auto never picks Triton for CPU tensors); caching
    # it saves ~5 us per op call (os.environ.get alone is ~2 us), a few % of a VAE-sized
    # reparameterize_kl step.
    key = (name, device_type, supported, _triton_interpret() if name == "triton" else None)
    hit = _select_cache.get(key)
    if hit is not None:
        return hit
    _select_cache[key] = chosen = _select(op, name, device_type, supported)
    return chosen


_select_cache: dict[tuple, str] = {}


def _select(op: str, name: str, device_type: str, supported: tuple[str, ...]) -> str:
    if name == "auto":
        return _auto(device_type, supported)
    if name not in supported:
        raise RuntimeError(f"gencore.{op}: backend {name!r} does not implement this op; "
                           f"it has {', '.join(supported)}")
    why = _why_not(name, device_type)
    if why is not None:
        usable = [b for b in supported if _why_not(b, device_type) is None]
        raise RuntimeError(f"gencore.{op}: backend {name!r} cannot run here: {why}. "
                           f"Available for {device_type} tensors: {', '.join(usable)}")
    return name
