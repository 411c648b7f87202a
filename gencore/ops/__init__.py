"""Functional fused ops (mirroring torch.nn.functional naming), each with a `backend=` argument."""
from gencore.ops.kl_normal import kl_normal, kl_normal_reference
from gencore.ops.batch_norm_leaky_relu import batch_norm_leaky_relu, batch_norm_leaky_relu_reference
from gencore.ops.reparameterize import (
    philox_normal_reference,
    reparameterize,
    reparameterize_kl,
    reparameterize_kl_reference,
    reparameterize_kl_with_seed,
    reparameterize_reference,
    reparameterize_with_seed,
)

__all__ = ["kl_normal", "kl_normal_reference", "batch_norm_leaky_relu", "batch_norm_leaky_relu_reference",
           "reparameterize", "reparameterize_kl", "reparameterize_with_seed", "reparameterize_kl_with_seed",
           "reparameterize_reference", "reparameterize_kl_reference", "philox_normal_reference"]
