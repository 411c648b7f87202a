"""Functional fused ops (mirroring torch.nn.functional naming), each with a `backend=` argument."""
from gencore.ops.kl_normal import kl_normal, kl_normal_reference
from gencore.ops.batch_norm_leaky_relu import batch_norm_leaky_relu, batch_norm_leaky_relu_reference

__all__ = ["kl_normal", "kl_normal_reference", "batch_norm_leaky_relu", "batch_norm_leaky_relu_reference"]
