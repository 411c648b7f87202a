"""Loads the native extension `gencore._C` once. Never raises: a missing or broken build leaves
`loaded == False` and `error` saying why, and the dispatcher falls back to the `torch` backend."""
from __future__ import annotations

import os
import warnings

import torch  # noqa: F401  (libtorch must be loaded before the extension)

module = None
error: str | None = None

if os.environ.get("GENCORE_NO_NATIVE", "").strip().lower() in ("1", "true", "yes", "on"):
    error = "disabled by GENCORE_NO_NATIVE=1"
else:
    try:
        from gencore import _C as module  # registers torch.ops.gencore.* as a side effect
    except ImportError as exc:  # not built (pure-Python install) or built against another torch
        msg = str(exc)
        if "No module named" in msg or "cannot import name '_C'" in msg:
            error = "not built (installed without a compiler/PyTorch at build time, or GENCORE_NO_NATIVE=1 at build)"
        else:
            error = f"failed to load: {msg}"

loaded = module is not None
build_info: dict = dict(module.build_info()) if loaded else {}
cuda_compiled = bool(build_info.get("cuda", False))

_warned = False


def warn_fallback_once() -> None:
    """One warning per process when a native kernel was wanted but the extension is missing."""
    global _warned
    if _warned or loaded or error == "disabled by GENCORE_NO_NATIVE=1":
        return
    _warned = True
    warnings.warn(
        f"gencore: native extension {error}; using the pure-PyTorch backend. "
        "Run `gencore info` for details.",
        RuntimeWarning,
        stacklevel=3,
    )
