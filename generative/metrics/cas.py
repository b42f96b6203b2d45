"""Classification Accuracy Score (Ravuri & Vinyals 2019): train a classifier on labelled
synthetic images only, report its accuracy on real labelled images.

A conditional generator whose samples carry the right class information scores close to a
classifier trained on real data; mode dropping or class-inconsistent samples lower it. The
classifier has the FeatureNet architecture and is trained from scratch for each call.
"""

from __future__ import annotations

import numpy as np
import torch

from generative.metrics.features import (
    FeatureNetConfig,
    ImageArray,
    accuracy,
    train_feature_net,
)


def classification_accuracy_score(
    synthetic_X: ImageArray,
    synthetic_y: np.ndarray | torch.Tensor,
    real_X: ImageArray,
    real_y: np.ndarray | torch.Tensor,
    *,
    config: FeatureNetConfig | None = None,
    epochs: int = 2,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
) -> float:
    """Accuracy on (real_X, real_y) of a fresh classifier trained on (synthetic_X, synthetic_y).

    Without `config`, a default FeatureNetConfig is used with the images' shape and as many
    classes as the largest label in either set implies.
    """
    if tuple(synthetic_X.shape[1:]) != tuple(real_X.shape[1:]):
        raise ValueError(
            f"synthetic images {tuple(synthetic_X.shape[1:])} and real images "
            f"{tuple(real_X.shape[1:])} differ in shape"
        )
    if config is None:
        largest = max(int(np.asarray(synthetic_y).max()), int(np.asarray(real_y).max()))
        config = FeatureNetConfig(tuple(real_X.shape[1:]), num_classes=max(largest + 1, 2))
    net = train_feature_net(
        synthetic_X,
        synthetic_y,
        config,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        device=device,
    )
    return accuracy(net, real_X, real_y)
