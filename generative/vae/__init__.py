"""The variational autoencoder family."""

from generative.vae.config import VAEConfig
from generative.vae.estimators import METHODS, estimate_log_px
from generative.vae.likelihoods import LIKELIHOODS
from generative.vae.model import VAE

__all__ = ["LIKELIHOODS", "METHODS", "VAE", "VAEConfig", "estimate_log_px"]
