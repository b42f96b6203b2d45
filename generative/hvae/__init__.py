"""The hierarchical VAE family: stochastic layers with top-down inference."""

from generative.hvae.config import HVAEConfig
from generative.hvae.estimators import HVAE_METHODS, estimate_hvae_log_px, hierarchical_llr
from generative.hvae.model import HVAE

__all__ = ["HVAE", "HVAEConfig", "HVAE_METHODS", "estimate_hvae_log_px", "hierarchical_llr"]
