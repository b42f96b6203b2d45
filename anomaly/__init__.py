"""Scores, thresholds and detectors built on generative models."""

from anomaly.detector import VAEDetector

__all__ = ["VAEDetector"]
