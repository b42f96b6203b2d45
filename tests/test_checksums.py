"""Saved models and training checkpoints carry SHA-256 checksums: a corrupt, truncated or
swapped file is refused with an error naming it, before anything is loaded from it."""

from __future__ import annotations

import json

import pytest
import torch

from generative.checksums import CHECKSUM_FILE, CorruptFileError, sha256
from generative.progressive import ProGAN, ProGANConfig
from generative.progressive.trainer import (
    TRAINER_STATE_FILE,
    ProgressiveTrainer,
    ProgressiveTrainerConfig,
)
from generative.registry import load_model, save_model
from generative.vae import VAE, VAEConfig


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = VAE(VAEConfig((6,), hidden_dims=(8,), latent_dim=2))
    return model, save_model(model, tmp_path / "vae")


def test_a_saved_model_records_the_checksums_of_its_files(saved) -> None:
    model, folder = saved
    recorded = json.loads((folder / CHECKSUM_FILE).read_text())
    assert recorded == {name: sha256(folder / name) for name in ("config.json", "model.pt")}
    loaded = load_model(folder)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_a_damaged_weights_file_is_refused_by_name(saved, damage: str, tmp_path) -> None:
    _, folder = saved
    weights = folder / "model.pt"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:  # another model's (valid) weights put in its place
        torch.manual_seed(1)
        other = save_model(VAE(VAEConfig((6,), hidden_dims=(8,), latent_dim=2)), tmp_path / "b")
        data = bytearray((other / "model.pt").read_bytes())
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="model.pt is corrupt or truncated"):
        load_model(folder)


def test_an_edited_config_is_refused_and_old_folders_still_load(saved) -> None:
    _, folder = saved
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"latent_dim": 2', '"latent_dim": 3'))
    with pytest.raises(CorruptFileError, match="config.json is corrupt"):
        load_model(folder)
    (folder / CHECKSUM_FILE).unlink()  # a folder saved before checksums existed
    with pytest.raises(RuntimeError):  # unchecked: the edited config no longer fits the weights
        load_model(folder)


def test_a_damaged_checkpoint_is_refused_before_resuming(tmp_path) -> None:
    torch.manual_seed(0)
    config = ProGANConfig((1, 8, 8), latent_dim=8, channel_base=32, max_channels=8)
    settings = ProgressiveTrainerConfig(batch_size=8, fade_images=8, stable_images=8, device="cpu")
    ProgressiveTrainer(ProGAN(config), settings, checkpoint_dir=tmp_path).fit(
        torch.rand(16, 1, 8, 8)
    )
    checkpoint = tmp_path / "stage_0_4x4"
    state = checkpoint / TRAINER_STATE_FILE
    state.write_bytes(state.read_bytes()[:-10])
    resumed = ProgressiveTrainer(ProGAN(config), settings)
    with pytest.raises(CorruptFileError, match="trainer_state.pt is corrupt or truncated"):
        resumed.fit(torch.rand(16, 1, 8, 8), resume_from=checkpoint)
