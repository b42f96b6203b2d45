"""GAN family units: configs, nets, Algorithm 1's step counts, EMA, conditioning, the divergence
guard, save/load and the latent tools."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from generative.gan import GAN, GANConfig, GANTrainer, GANTrainerConfig, TrainingDivergedError
from generative.gan.latent import (
    arithmetic_grid,
    attribute_analogy_groups,
    image_grid,
    interpolate,
    interpolation_grid,
    latent_arithmetic,
)
from generative.registry import load_model, save_model
from generative.training import Callback, Checkpoint


@pytest.mark.parametrize(
    "values,message",
    [
        ({"data_shape": (1, 30, 30), "architecture": "dcgan"}, "side of 4 or 7"),
        ({"data_shape": (5,), "architecture": "dcgan"}, "square"),
        ({"data_shape": (5,), "loss": "hinge"}, "loss must be one of"),
        ({"data_shape": (5,), "architecture": "resnet"}, "architecture must be one of"),
        ({"data_shape": (5,), "ema_decay": 1.0}, "ema_decay"),
        ({"data_shape": (2, 3)}, "data_shape"),
    ],
)
def test_bad_configs_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        GANConfig(**values)


def test_config_round_trip_and_unknown_keys():
    config = GANConfig((1, 28, 28), architecture="dcgan", num_classes=10, loss="wgan_gp")
    assert GANConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown GANConfig fields"):
        GANConfig.from_dict({**config.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="optimizer"):
        GANTrainerConfig(optimizer="adagrad")


@pytest.mark.parametrize("side", [8, 28, 32])
def test_dcgan_shapes_and_no_hidden_fully_connected_layers(side):
    gan = GAN(GANConfig((3, side, side), architecture="dcgan", base_channels=8))
    images = gan.sample(5, seed=0)
    assert images.shape == (5, 3, side, side)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert gan.discriminator(gan.to_model_scale(images)).shape == (5,)
    assert not any(isinstance(m, nn.Linear) for m in gan.generator.modules())
    linears = [m for m in gan.discriminator.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].out_features == 1  # only the output read-out
    norms = any(isinstance(m, nn.BatchNorm2d) for m in gan.discriminator.modules())
    assert norms == (side > 8)  # every D conv but the first (side 8 has one) is normalised


def test_gradient_penalty_critic_has_no_batch_norm():
    gan = GAN(GANConfig((1, 8, 8), architecture="dcgan", loss="wgan_gp", base_channels=8))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gan.discriminator.modules())


def test_algorithm_one_step_counts_and_budget_cap():
    """k D steps per G step: 12 minibatches with k = 3 give 12 D and 4 G steps per epoch."""
    gan = GAN(GANConfig((2,), hidden_dims=(8,)))
    trainer = GANTrainer(gan, GANTrainerConfig(epochs=2, batch_size=10, n_critic=3))
    history = trainer.fit(torch.randn(120, 2))
    assert (trainer.discriminator_steps, trainer.generator_steps) == (24, 8)
    assert len(history) == 2 and {"d_loss", "g_loss"} <= set(history[0])
    capped = GANTrainer(gan, GANTrainerConfig(epochs=5, batch_size=10, max_generator_steps=5))
    capped.fit(torch.randn(120, 2))
    assert capped.generator_steps == 5 and len(capped.history) == 1
    wgan = GANTrainer(GAN(GANConfig((2,), loss="wgan")), GANTrainerConfig(epochs=1, batch_size=10))
    assert wgan.n_critic == 5


def test_ema_update_is_the_exponential_average():
    gan = GAN(GANConfig((2,), hidden_dims=(4,), ema_decay=0.9))
    with torch.no_grad():
        for live, ema in zip(
            gan.generator.parameters(), gan.generator_ema.parameters(), strict=True
        ):
            live.fill_(1.0)
            ema.fill_(0.0)
    gan.update_ema()
    gan.update_ema()
    for ema in gan.generator_ema.parameters():  # 0 -> 0.1 -> 0.19
        torch.testing.assert_close(ema, torch.full_like(ema, 0.19))
    assert gan.sampling_generator() is gan.generator_ema


def test_conditional_gan_learns_each_class():
    """Two classes at x = -2 and x = +2: each label's samples land on its own side."""
    torch.manual_seed(0)
    labels = torch.arange(2000) % 2
    data = torch.stack([4.0 * labels - 2.0, torch.zeros(2000)], dim=1) + 0.1 * torch.randn(2000, 2)
    gan = GAN(GANConfig((2,), latent_dim=4, hidden_dims=(32, 32), num_classes=2))
    GANTrainer(gan, GANTrainerConfig(epochs=10, batch_size=64, lr_generator=1e-3)).fit(data, labels)
    left, right = gan.sample(500, torch.tensor(0), seed=0), gan.sample(500, torch.tensor(1), seed=0)
    assert float((left[:, 0] < 0).float().mean()) > 0.9
    assert float((right[:, 0] > 0).float().mean()) > 0.9
    with pytest.raises(ValueError, match="class-conditional"):
        gan.sample(3)
    with pytest.raises(ValueError, match="labels must be"):
        gan.sample(3, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="pass labels exactly"):
        GANTrainer(gan, GANTrainerConfig(epochs=1)).fit(data)


class PoisonAfterFirstEpoch(Callback):
    """Record the weights after epoch 0, then put an inf into G so epoch 1 diverges."""

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 0:
            self.good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            with torch.no_grad():
                next(trainer.model.generator.parameters()).fill_(math.inf)


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    gan = GAN(GANConfig((2,), hidden_dims=(8,)))
    poison = PoisonAfterFirstEpoch()
    checkpoint = Checkpoint(tmp_path / "ckpt", save_model)
    trainer = GANTrainer(gan, GANTrainerConfig(epochs=5, batch_size=16), [checkpoint, poison])
    with pytest.raises(TrainingDivergedError, match="NaN or infinite in epoch 2.*end of epoch 1"):
        trainer.fit(torch.randn(64, 2))
    for name, value in gan.state_dict().items():
        torch.testing.assert_close(value, poison.good[name])
    saved = load_model(tmp_path / "ckpt")
    torch.testing.assert_close(saved.sample(4, seed=0), gan.sample(4, seed=0))


def test_nan_data_diverges_in_the_first_epoch():
    gan = GAN(GANConfig((2,), hidden_dims=(8,)))
    initial = {k: v.clone() for k, v in gan.state_dict().items()}
    data = torch.randn(64, 2)
    data[5, 0] = math.nan
    with pytest.raises(TrainingDivergedError, match="initial weights"):
        GANTrainer(gan, GANTrainerConfig(epochs=2, batch_size=16)).fit(data)
    for name, value in gan.state_dict().items():
        torch.testing.assert_close(value, initial[name])


def test_save_load_round_trip_with_ema_and_classes(tmp_path):
    config = GANConfig(
        (1, 8, 8), architecture="dcgan", base_channels=4, num_classes=3, ema_decay=0.5
    )
    gan = GAN(config)
    GANTrainer(gan, GANTrainerConfig(epochs=1, batch_size=8)).fit(
        torch.rand(32, 1, 8, 8), torch.arange(32) % 3
    )
    loaded = load_model(save_model(gan, tmp_path / "gan"))
    assert loaded.config == config
    labels = torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(loaded.sample(4, labels, seed=3), gan.sample(4, labels, seed=3))
    assert not torch.equal(gan.sample(4, labels, seed=3), gan.sample(4, labels, seed=4))


def test_bf16_autocast_trains_on_cpu():
    gan = GAN(GANConfig((1, 8, 8), architecture="dcgan", base_channels=4))
    history = GANTrainer(gan, GANTrainerConfig(epochs=1, batch_size=8, autocast="bf16")).fit(
        torch.rand(32, 1, 8, 8)
    )
    assert all(math.isfinite(v) for v in history[0].values())


def test_truncated_latents_stay_within_bounds():
    gan = GAN(GANConfig((2,), latent_dim=64))
    z = gan.sample_latent(2000, generator=torch.Generator().manual_seed(0), truncation=0.5)
    assert float(z.abs().max()) <= 0.5
    assert float(z.std()) < 0.35  # N(0,1) truncated to [-0.5, 0.5] has sd 0.28
    with pytest.raises(ValueError, match="truncation"):
        gan.sample_latent(3, truncation=0.0)


def test_interpolations_hit_endpoints_and_spherical_keeps_the_radius():
    z0, z1 = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    for method in ("linear", "spherical"):
        path = interpolate(z0, z1, 5, method)
        torch.testing.assert_close(path[0], z0)
        torch.testing.assert_close(path[-1], z1)
    torch.testing.assert_close(interpolate(z0, z1, 3, "linear")[1], torch.tensor([1.5, 1.5]))
    spherical = interpolate(z0, z1, 7, "spherical")
    torch.testing.assert_close(spherical.norm(dim=1), torch.full((7,), 3.0))
    torch.testing.assert_close(spherical[3], torch.tensor([3.0, 3.0]) / math.sqrt(2))
    with pytest.raises(ValueError, match="method"):
        interpolate(z0, z1, 3, "cubic")


def test_latent_arithmetic_and_grids():
    base, subtract, add = torch.ones(4, 3), torch.zeros(2, 3), torch.full((3, 3), 2.0)
    torch.testing.assert_close(latent_arithmetic(base, subtract, add), torch.full((3,), 3.0))
    grid = image_grid(torch.zeros(5, 1, 4, 4), nrow=3, padding=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 1) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 255 and grid[1, 1, 0] == 0
    gan = GAN(GANConfig((1, 8, 8), architecture="dcgan", base_channels=4, latent_dim=6))
    assert interpolation_grid(gan, rows=2, steps=4).shape == (2 * 10 + 2, 4 * 10 + 2, 1)
    z = torch.randn(9, 6)
    assert arithmetic_grid(gan, z[:3], z[3:6], z[6:], variations=2).shape == (12, 6 * 10 + 2, 1)
    with pytest.raises(ValueError, match="image GAN"):
        interpolation_grid(GAN(GANConfig((2,))))


def test_attribute_analogy_groups_select_the_top_share_of_class_a():
    z = torch.arange(12, dtype=torch.float32)[:, None].repeat(1, 2)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    attribute = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8, 0, 0, 9, 9])
    base, subtract, add = attribute_analogy_groups(z, labels, attribute, 0, 1, top_share=0.25)
    torch.testing.assert_close(base[:, 0], torch.tensor([6.0, 7.0]))  # the brightest quarter
    assert len(subtract) == 8 and add[:, 0].tolist() == [8.0, 9.0]
    with pytest.raises(ValueError, match="need >= 4 latents"):
        attribute_analogy_groups(z, labels, attribute, 1, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trains_under_bf16_with_channels_last():
    gan = GAN(GANConfig((1, 28, 28), architecture="dcgan", base_channels=8, num_classes=2))
    trainer = GANTrainer(gan, GANTrainerConfig(epochs=1, batch_size=16, device="cuda"))
    history = trainer.fit(torch.rand(64, 1, 28, 28), torch.arange(64) % 2)
    assert all(math.isfinite(v) for v in history[0].values())
    conv = next(m for m in gan.discriminator.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert gan.sample(3, torch.tensor(1), seed=0).device.type == "cuda"


def test_time_budget_stops_training_after_the_first_generator_step():
    gan = GAN(GANConfig((2,), hidden_dims=(8,)))
    config = GANTrainerConfig(epochs=50, batch_size=10, max_seconds=1e-9, clock="process")
    trainer = GANTrainer(gan, config)
    history = trainer.fit(torch.randn(200, 2))
    assert trainer.generator_steps == 1 and len(history) == 1
    with pytest.raises(ValueError, match="clock must be one of"):
        GANTrainerConfig(clock="sundial")
