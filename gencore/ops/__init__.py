"""Functional fused ops (mirroring torch.nn.functional naming), each with a `backend=` argument."""
from gencore.ops.kl_normal import kl_normal, kl_normal_reference

__all__ = ["kl_normal", "kl_normal_reference"]
