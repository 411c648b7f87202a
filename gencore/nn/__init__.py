"""Drop-in modules built on gencore.ops."""
from gencore.nn.losses import KLDivergence
from gencore.nn.reparameterize import Reparameterize, ReparameterizeKL

__all__ = ["KLDivergence", "Reparameterize", "ReparameterizeKL"]
