"""GAN and VAE models built on gencore's fused layers (fused=True, the default) or on plain torch.nn
layers (fused=False); both variants have the same state dict."""
from gencore.models.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init
from gencore.models.layers import fused_layers_available
from gencore.models.mlp import Maxout, MLPDiscriminator, MLPGenerator, pacgan_init
from gencore.models.vae import ConvVAE, MLPVAE, VAEOutput

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan_init", "ConvVAE", "MLPVAE", "VAEOutput",
           "MLPGenerator", "MLPDiscriminator", "Maxout", "pacgan_init", "fused_layers_available"]
