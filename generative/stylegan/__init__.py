"""StyleGAN (Karras et al. 2019): mapping network, AdaIN, per-pixel noise, mixing, truncation."""

from generative.stylegan.config import StyleGANConfig
from generative.stylegan.model import StyleGAN, StyleGenerator
from generative.stylegan.networks import adain

__all__ = ["StyleGAN", "StyleGANConfig", "StyleGenerator", "adain"]
