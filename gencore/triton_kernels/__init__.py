"""Triton kernels. Imported lazily (only when the `triton` backend runs), so gencore imports without Triton."""
