"""Scores, thresholds and detectors built on generative models."""

from anomaly.detector import VAEDetector
from anomaly.ensemble import VAEEnsembleDetector

__all__ = ["VAEDetector", "VAEEnsembleDetector"]
