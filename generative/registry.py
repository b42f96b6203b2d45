"""Model families by name, and their on-disk form: a state_dict plus a JSON config.

A saved model is a folder with `config.json` ({"family": ..., "config": {...}}) and `model.pt`
(the state_dict, loaded with `torch.load(weights_only=True)`); nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generative.checksums import record_checksums, verify_checksums
from generative.cyclegan import CycleGAN, CycleGANConfig
from generative.gan import GAN, GANConfig
from generative.hvae import HVAE, HVAEConfig
from generative.localar import LocalAR, LocalARConfig
from generative.metrics.features import FeatureNet, FeatureNetConfig
from generative.progressive import ProGAN, ProGANConfig
from generative.stylegan import StyleGAN, StyleGANConfig
from generative.vae import VAE, VAEConfig

# family name -> (config class, model class)
MODEL_FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {
    "vae": (VAEConfig, VAE),
    "hvae": (HVAEConfig, HVAE),
    "local_ar": (LocalARConfig, LocalAR),
    "gan": (GANConfig, GAN),
    "cyclegan": (CycleGANConfig, CycleGAN),
    "progan": (ProGANConfig, ProGAN),
    "stylegan": (StyleGANConfig, StyleGAN),
    "feature_net": (FeatureNetConfig, FeatureNet),
}

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


def build_model(family: str, config: Any) -> nn.Module:
    """Instantiate a registered family from its config object or dict."""
    if family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {sorted(MODEL_FAMILIES)}")
    config_cls, model_cls = MODEL_FAMILIES[family]
    if isinstance(config, dict):
        config = config_cls.from_dict(config)
    return model_cls(config)


def write_model_files(model: nn.Module, folder: Path) -> None:
    """Write config.json and model.pt for `model` into an existing folder, with their SHA-256
    in checksums.json."""
    document = {"family": model.family, "config": model.config.to_dict()}
    (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2))
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    record_checksums(folder, [CONFIG_FILE, WEIGHTS_FILE])


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `path` in one rename,
    on failure it is deleted and `path` is left as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save atomically: files go to a temporary sibling folder that is renamed into place."""
    with atomic_directory(path) as staging:
        write_model_files(model, staging)
    return Path(path)


def read_model_files(folder: Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from config.json and model.pt in `folder`. Both are checked against
    checksums.json first (when the folder has one): a corrupt or truncated file raises
    `generative.checksums.CorruptFileError` and nothing is loaded."""
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise FileNotFoundError(f"saved model is missing {needed}")
    verify_checksums(folder, [CONFIG_FILE, WEIGHTS_FILE])
    document = json.loads(config_path.read_text())
    model = build_model(document["family"], document["config"])
    state = torch.load(weights_path, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by `save_model`."""
    return read_model_files(Path(path), map_location)
