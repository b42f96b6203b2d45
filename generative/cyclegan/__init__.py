"""CycleGAN (Zhu et al. 2017): unpaired image-to-image translation with two generators, two
PatchGAN discriminators, cycle-consistency and identity losses, and image history buffers."""

from generative.cyclegan.config import CycleGANConfig
from generative.cyclegan.history import ImageHistory
from generative.cyclegan.losses import ADVERSARIAL_LOSSES, cycle_loss, identity_loss
from generative.cyclegan.model import DIRECTIONS, CycleGAN
from generative.cyclegan.trainer import CycleGANTrainer, CycleGANTrainerConfig
from generative.cyclegan.transforms import TRANSFORMS, InvertibleTransform, get_transform

__all__ = [
    "ADVERSARIAL_LOSSES",
    "DIRECTIONS",
    "TRANSFORMS",
    "CycleGAN",
    "CycleGANConfig",
    "CycleGANTrainer",
    "CycleGANTrainerConfig",
    "ImageHistory",
    "InvertibleTransform",
    "cycle_loss",
    "get_transform",
    "identity_loss",
]
