"""What a trained VAE does with images: reconstructions and samples from the prior, in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch

from anomaly.detector import VAEDetector


@torch.no_grad()
def reconstructions(detector: VAEDetector, X: np.ndarray) -> np.ndarray:
    """Decoder means at the posterior means of rows X (raw images), shaped like X, in [0, 1]."""
    model = detector.model_
    device = next(model.parameters()).device
    data = torch.from_numpy(np.ascontiguousarray(detector.preprocessor_.transform(X), np.float32))
    return model.reconstruct(data.to(device)).clamp(0, 1).cpu().numpy()


def prior_samples(detector: VAEDetector, n: int, *, seed: int = 0) -> np.ndarray:
    """Decoder means of n draws z ~ N(0, I), shaped (n, c, h, w), in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return detector.model_.sample(n, generator=generator).clamp(0, 1).cpu().numpy()


def to_unit_range(X: np.ndarray) -> np.ndarray:
    """Raw images (uint8 0..255 or floats in [0, 1]) as floats in [0, 1]."""
    X = np.asarray(X)
    return X.astype(np.float32) / 255.0 if X.dtype == np.uint8 else np.clip(X, 0, 1)
