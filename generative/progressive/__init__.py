"""The Progressive GAN (Karras et al. 2018) and the progressive trainer StyleGAN shares."""

from generative.progressive.config import ProGANConfig
from generative.progressive.model import ProGAN, ProgressiveModel

__all__ = ["ProGAN", "ProGANConfig", "ProgressiveModel"]
