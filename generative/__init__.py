"""Generative networks, losses, trainers and samplers.

Torch only: no MLflow, no Prefect, no dataset IO.
"""

from generative.registry import MODEL_FAMILIES, build_model, load_model, save_model
from generative.training import Trainer, TrainerConfig
from generative.vae import VAE, VAEConfig

__all__ = [
    "MODEL_FAMILIES",
    "VAE",
    "Trainer",
    "TrainerConfig",
    "VAEConfig",
    "build_model",
    "load_model",
    "save_model",
]
