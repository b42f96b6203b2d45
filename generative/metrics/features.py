"""The domain feature network: a small CNN classifier whose penultimate layer is the feature
space of FID, KID and precision/recall (Inception weights are not available here).

Trained on a dataset's training split and then frozen, it plays the part Inception-v3 plays
for natural images: every run compares real and generated images in the same space, so its
weights must be versioned (the pipelines keep it in the MLflow registry).
Images are float tensors in [0, 1] (uint8 arrays are divided by 255), shape (N, C, H, W).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generative.configs import JsonConfig
from generative.training import resolve_device

if TYPE_CHECKING:
    from tqdm.auto import tqdm

ImageArray = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class FeatureNetConfig(JsonConfig):
    """Everything needed to rebuild a FeatureNet; saved as JSON beside its state_dict.

    input_shape: (C, H, W).
    channels: one conv block (3x3 conv, batch norm, ReLU, 2x2 max pool) per entry.
    feature_dim: width of the penultimate (feature) layer.
    """

    input_shape: tuple[int, ...]
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"FeatureNet needs input_shape (C, H, W), got {self.input_shape}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(
                f"channels must be a non-empty tuple of ints >= 1, got {self.channels}"
            )
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if min(self.pooled_size) < 1:
            raise ValueError(
                f"{len(self.channels)} pooling blocks shrink {self.input_shape[1:]} to nothing; "
                "use fewer channels entries or larger images"
            )

    @property
    def pooled_size(self) -> tuple[int, int]:
        """(H, W) after the conv blocks (each halves it, rounding down)."""
        blocks = len(self.channels)
        return self.input_shape[1] >> blocks, self.input_shape[2] >> blocks


class FeatureNet(nn.Module):
    """A CNN classifier; `features` are its penultimate (post-ReLU) activations."""

    family = "feature_net"

    def __init__(self, config: FeatureNetConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        n_in = config.input_shape[0]
        for n_out in config.channels:
            blocks += [
                nn.Conv2d(n_in, n_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(n_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            n_in = n_out
        height, width = config.pooled_size
        self.body = nn.Sequential(*blocks, nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(n_in * height * width, config.feature_dim), nn.ReLU())
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations of a batch (with autograd, in the current mode)."""
        images = x.view(len(x), *self.config.input_shape)
        return self.embed(self.body(2.0 * images - 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.head(self.embedding(x))

    @torch.no_grad()
    def features(self, x: ImageArray, batch_size: int = 1024) -> torch.Tensor:
        """Penultimate activations (N, feature_dim) on the CPU, in eval mode, in batches on the
        network's device."""
        self.eval()
        device = next(self.parameters()).device
        parts = [self.embedding(batch.to(device)).cpu() for batch in iter_batches(x, batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.config.feature_dim)

    @torch.no_grad()
    def predict(self, x: ImageArray, batch_size: int = 1024) -> torch.Tensor:
        """Predicted class per image, on the CPU, in eval mode."""
        self.eval()
        device = next(self.parameters()).device
        parts = [self(batch.to(device)).argmax(1).cpu() for batch in iter_batches(x, batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def to_float_images(x: ImageArray) -> torch.Tensor:
    """A float32 tensor in [0, 1]: uint8 values are divided by 255, floats are kept."""
    tensor = torch.as_tensor(x)
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    return tensor.float()


def iter_batches(x: ImageArray, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive float batches of `x` (converted one batch at a time)."""
    for start in range(0, len(x), batch_size):
        yield to_float_images(x[start : start + batch_size])


def train_feature_net(
    X: ImageArray,
    y: np.ndarray | torch.Tensor,
    config: FeatureNetConfig,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> FeatureNet:
    """Train a FeatureNet classifier with Adam and cross-entropy; returned in eval mode.

    Deterministic given `seed` on a given device and thread count: the seed fixes the initial
    weights (without touching the global RNG) and the order of the minibatches.
    """
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if len(labels) != len(X):
        raise ValueError(f"{len(X)} images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise ValueError(f"labels must lie in [0, {config.num_classes}), the config's classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(config)
    net.to(resolve_device(device))
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    images = torch.as_tensor(X)
    from tqdm.auto import tqdm  # here: loading a registered model need not import it

    steps = tqdm(total=epochs * -(-len(X) // batch_size), disable=not progress, leave=False)
    for _ in range(epochs):
        _train_epoch(net, optimizer, images, labels, batch_size, generator, steps)
    steps.close()
    return net.eval()


def _train_epoch(
    net: FeatureNet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    steps: tqdm,
) -> None:
    net.train()
    device = next(net.parameters()).device
    for index in torch.randperm(len(images), generator=generator).split(batch_size):
        batch = to_float_images(images[index]).to(device)
        loss = F.cross_entropy(net(batch), labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps.update(1)
        if not steps.disable:  # .item() waits for the device: only when a bar is shown
            steps.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


def accuracy(net: FeatureNet, X: ImageArray, y: np.ndarray | torch.Tensor) -> float:
    """Fraction of images whose predicted class equals the label."""
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    return float((net.predict(X) == labels).float().mean())
