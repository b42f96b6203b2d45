"""Generative adversarial networks: configs, nets, losses, Algorithm 1's trainer, latent tools."""

from generative.gan.config import GANConfig
from generative.gan.losses import GAN_LOSSES, GANLoss, clip_weights, gradient_penalty
from generative.gan.model import GAN
from generative.gan.trainer import GANTrainer, GANTrainerConfig, TrainingDivergedError

__all__ = [
    "GAN",
    "GAN_LOSSES",
    "GANConfig",
    "GANLoss",
    "GANTrainer",
    "GANTrainerConfig",
    "TrainingDivergedError",
    "clip_weights",
    "gradient_penalty",
]
