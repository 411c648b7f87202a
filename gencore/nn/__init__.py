"""Drop-in modules built on gencore.ops."""
from gencore.nn.losses import KLDivergence
from gencore.nn.batchnorm import (BatchNormLeakyReLU1d, BatchNormLeakyReLU2d, BatchNormLeakyReLU3d,
                                  SyncBatchNormLeakyReLU, fuse_batchnorm_activations, sync_batchnorm_activations)
from gencore.nn.reparameterize import Reparameterize, ReparameterizeKL

__all__ = ["KLDivergence", "BatchNormLeakyReLU1d", "BatchNormLeakyReLU2d", "BatchNormLeakyReLU3d",
           "fuse_batchnorm_activations", "SyncBatchNormLeakyReLU", "sync_batchnorm_activations",
           "Reparameterize", "ReparameterizeKL"]
