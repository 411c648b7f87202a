"""gencore: fused Triton, CUDA and C++ kernels for training GANs and VAEs in PyTorch.

Public API: gencore.ops (functional ops), gencore.nn (modules), backend selection
(set_backend, get_backend, available_backends), info().
"""
__version__ = "0.1.0"

from gencore.backends import available_backends, backend_status, get_backend, set_backend  # noqa: E402
from gencore.info import info  # noqa: E402
from gencore import ops, nn  # noqa: E402

__all__ = ["ops", "nn", "set_backend", "get_backend", "available_backends", "backend_status", "info",
           "__version__"]
