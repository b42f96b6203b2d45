"""Progressive GAN: the fade-in identities, equalised learning rate, pixel norm, minibatch
stddev, and checkpoint / resume of the growth schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from generative.gan import TrainingDivergedError
from generative.progressive import ProGAN, ProGANConfig
from generative.progressive.layers import (
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    downsample,
    upsample,
)
from generative.progressive.schedule import build_schedule
from generative.progressive.trainer import (
    TRAINER_STATE_FILE,
    ProgressiveTrainer,
    ProgressiveTrainerConfig,
)
from generative.registry import load_model

TINY = dict(latent_dim=16, channel_base=64, max_channels=16, minibatch_group=2)


def tiny_progan(side: int = 32, **overrides) -> ProGAN:
    torch.manual_seed(0)
    return ProGAN(ProGANConfig((1, side, side), **{**TINY, **overrides}))


def blobs(n: int = 96, side: int = 16, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1]: one bright Gaussian blob at a random place per image."""
    rng = np.random.default_rng(seed)
    grid = np.arange(side)[None, :]
    cy, cx = rng.uniform(3, side - 3, (2, n, 1))
    image = np.exp(-((grid - cy) ** 2)[:, :, None] / 8 - ((grid - cx) ** 2)[:, None, :] / 8)
    return torch.from_numpy(image[:, None].astype(np.float32))


# --- the defining idea: growing by fading in -------------------------------------------------
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_alpha_zero_generator_is_the_upsampled_previous_stage(stage: int) -> None:
    gan = tiny_progan()
    z = torch.randn(5, 16)
    with torch.no_grad():
        grown = gan.generator(z, stage, 0.0)
        previous = gan.generator(z, stage - 1, 1.0)
    assert grown.shape[-1] == 2 * previous.shape[-1]
    torch.testing.assert_close(grown, upsample(previous), rtol=0, atol=1e-6)
    # and the new block is not a no-op: at alpha = 1 the image differs
    assert (gan.generator(z, stage, 1.0) - grown).abs().max() > 1e-3


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_alpha_zero_discriminator_sees_the_downsampled_image(stage: int) -> None:
    gan = tiny_progan()
    side = 4 * 2**stage
    x = torch.randn(4, 1, side, side)
    with torch.no_grad():
        grown = gan.discriminator(x, stage, 0.0)
        previous = gan.discriminator(downsample(x), stage - 1, 1.0)
    torch.testing.assert_close(grown, previous, rtol=0, atol=1e-5)


def test_fade_in_is_continuous_in_alpha() -> None:
    """G's image is exactly affine in alpha; D's value changes by at most a Lipschitz
    constant times the step (no jump anywhere on a fine grid of alphas)."""
    gan = tiny_progan()
    z, x = torch.randn(4, 16), torch.randn(4, 1, 32, 32)
    alphas = torch.linspace(0, 1, 201).tolist()
    with torch.no_grad():
        ends = gan.generator(z, 3, 0.0), gan.generator(z, 3, 1.0)
        for alpha in alphas[::20]:
            expected = torch.lerp(ends[0], ends[1], alpha)
            torch.testing.assert_close(gan.generator(z, 3, alpha), expected, rtol=0, atol=1e-5)
        values = torch.stack([gan.discriminator(x, 3, a) for a in alphas])
    steps = (values[1:] - values[:-1]).abs().max()
    span = (values[-1] - values[0]).abs().max()
    # an affine-in-alpha input through Lipschitz layers: steps of 1/200 move D by O(span/200)
    assert steps < 5 * span / 200 + 1e-6


def test_stage_and_alpha_are_checked() -> None:
    gan = tiny_progan()
    with pytest.raises(ValueError, match="stage must be in"):
        gan.generator(torch.randn(1, 16), 4, 1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        gan.generator(torch.randn(1, 16), 0, 0.5)
    with pytest.raises(ValueError, match="power of two"):
        ProGANConfig((1, 28, 28))


# --- the building blocks --------------------------------------------------------------------
def test_equalized_learning_rate_moves_every_layer_at_the_same_relative_speed() -> None:
    """Adam's first step moves each stored weight by lr (its update is lr * sign(grad)). With
    the runtime He scale, effective weights move by lr times their own scale in every layer;
    with He initialisation baked into the weights, a wide layer moves 8x faster (relative to
    its scale) than a narrow one when fan-ins differ by 64x."""
    torch.manual_seed(0)
    lr = 1e-3

    def relative_step(layer: nn.Module, effective) -> float:
        before = effective(layer).detach().clone()
        optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
        layer(torch.randn(8, before.shape[1])).square().sum().backward()
        optimizer.step()
        return float((effective(layer).detach() - before).abs().mean() / before.std())

    equalized = [EqualizedLinear(f, 32) for f in (16, 1024)]
    steps = [relative_step(layer, lambda m: m.weight * m.weight_scale) for layer in equalized]
    for step in steps:
        assert step == pytest.approx(lr, rel=0.05)  # stored weights are N(0, 1)
    plain = [nn.Linear(f, 32) for f in (16, 1024)]
    for layer in plain:
        nn.init.kaiming_normal_(layer.weight)
    ratio = relative_step(plain[1], lambda m: m.weight) / relative_step(
        plain[0], lambda m: m.weight
    )
    assert ratio == pytest.approx(math.sqrt(1024 / 16), rel=0.1)


def test_pixel_norm_gives_unit_mean_square_per_pixel() -> None:
    x = torch.randn(3, 7, 5, 5) * torch.rand(3, 1, 5, 5) * 10
    out = PixelNorm()(x)
    torch.testing.assert_close(out.pow(2).mean(dim=1), torch.ones(3, 5, 5), rtol=1e-5, atol=1e-5)


def test_minibatch_stddev_appends_the_group_standard_deviation() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    out = MinibatchStdDev(group_size=3, eps=0.0)(x)
    assert out.shape == (6, 4, 4, 4)
    torch.testing.assert_close(out[:, :3], x)
    values = x.numpy()
    for member in range(2):  # groups are rows {m, m + 2, m + 4}
        group = values[member::2]
        expected = group.std(axis=0).mean()
        for row in range(member, 6, 2):
            np.testing.assert_allclose(out[row, 3].numpy(), expected, rtol=1e-5)
    same = MinibatchStdDev(group_size=4)(x[:1].repeat(4, 1, 1, 1))[:, -1]
    assert float(same.max()) < 1e-3  # a collapsed batch shows (almost) zero spread


# --- the growth schedule, checkpoints and resume --------------------------------------------
def test_schedule_fades_in_every_stage_after_the_first() -> None:
    config = ProgressiveTrainerConfig(fade_images=100, stable_images=50, final_images=70)
    phases = build_schedule(3, config, progressive=True)
    assert [(p.stage, p.kind, p.images) for p in phases] == [
        (0, "stable", 50), (1, "fade", 100), (1, "stable", 50), (2, "fade", 100),
        (2, "stable", 70),
    ]  # fmt: skip
    assert [phases[1].alpha(k) for k in (0, 25, 100, 150)] == [0.0, 0.25, 1.0, 1.0]
    flat = build_schedule(3, config, progressive=False)
    assert [(p.stage, p.images) for p in flat] == [(2, 370)]


def train(gan: ProGAN, folder, **overrides):
    settings = dict(batch_size=16, fade_images=48, stable_images=32, device="cpu", seed=3)
    trainer = ProgressiveTrainer(
        gan, ProgressiveTrainerConfig(**{**settings, **overrides}), checkpoint_dir=folder
    )
    return trainer


def test_checkpoints_per_resolution_and_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    data = blobs()
    whole = train(tiny_progan(16), tmp_path / "whole")
    whole.fit(data)
    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert names == ["stage_0_4x4", "stage_1_8x8", "stage_2_16x16"]
    saved = load_model(tmp_path / "whole" / "stage_1_8x8")
    assert saved.progress.tolist() == [1.0, 1.0]

    first = train(tiny_progan(16), tmp_path / "parts", stop_after_stage=1)
    first.fit(data)
    assert [h["stage"] for h in first.history] == [0, 1, 1]
    fresh = tiny_progan(16, ema_decay=0.999)  # other initial weights: all come from the file
    torch.nn.init.zeros_(fresh.generator.to_rgb[0].weight)
    resumed = train(fresh, tmp_path / "parts")
    resumed.fit(data, resume_from=tmp_path / "parts" / "stage_1_8x8")
    assert [h["stage"] for h in resumed.history] == [0, 1, 1, 2, 2]
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.generator_steps == whole.generator_steps


def test_resume_refuses_a_foreign_or_incomplete_checkpoint(tmp_path) -> None:
    data = blobs(32, side=8)
    train(tiny_progan(8), tmp_path, stop_after_stage=0).fit(data)
    other = train(tiny_progan(8, latent_dim=8), tmp_path / "other")
    with pytest.raises(ValueError, match="another model configuration"):
        other.fit(data, resume_from=tmp_path / "stage_0_4x4")
    (tmp_path / "stage_0_4x4" / TRAINER_STATE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="not a progressive checkpoint"):
        train(tiny_progan(8), None).fit(data, resume_from=tmp_path / "stage_0_4x4")


def test_fading_real_images_start_at_the_upsampled_half_resolution() -> None:
    trainer = train(tiny_progan(16), None)
    data = blobs(32)
    trainer.fit(data)  # builds the pyramid and batch order
    trainer.order.position = 0
    batch = trainer._real_batch(2, 0.0)
    trainer.order.position = 0
    sharp = trainer._real_batch(2, 1.0)
    torch.testing.assert_close(batch, upsample(downsample(sharp)))


def test_time_budget_and_divergence(tmp_path) -> None:
    trainer = train(tiny_progan(8), None, max_seconds=1e-9, stable_images=2000)
    trainer.fit(blobs(64, side=8))
    assert len(trainer.history) == 1 and trainer.history[0]["stopped_early"]
    assert trainer.history[0]["images"] == 16  # the budget is checked after every D step
    gan = tiny_progan(8)
    before = {k: v.clone() for k, v in gan.state_dict().items()}
    bad = blobs(64, side=8)
    bad[5, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="NaN or infinite"):
        train(gan, None, stable_images=2000).fit(bad)
    for key, value in gan.state_dict().items():
        assert torch.equal(value, before[key]), key  # restored to the last finite phase


def test_a_stopped_model_samples_at_its_stage_upsampled_to_full_size() -> None:
    gan = tiny_progan(16)
    gan.set_progress(1, 1.0)
    z = torch.randn(3, 16)
    images = gan.generate(z)
    assert images.shape == (3, 1, 16, 16)
    eight = gan.to_data_scale(gan.sampling_generator().eval()(z, 1, 1.0))
    torch.testing.assert_close(images, eight.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_ema_ramps_up_to_its_configured_decay() -> None:
    from generative.progressive.trainer import ema_decay

    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999
    gan = tiny_progan(8)
    trainer = train(gan, None, stable_images=16, fade_images=16)
    trainer.fit(blobs(32, side=8))
    steps = trainer.generator_steps
    assert steps == 3  # 3 phases (4x4, 8x8 fade, 8x8) of one batch, n_critic 1
    # after 3 steps the EMA holds < 2% of the initial weights (with 0.999 it would hold 99.7%)
    initial = tiny_progan(8).generator.state_dict()
    ema, live = gan.generator_ema.state_dict(), gan.generator.state_dict()
    key = "to_rgb.1.weight"
    moved = (ema[key] - initial[key]).norm() / (live[key] - initial[key]).norm()
    assert moved > 0.2


# --- the small-compute recipe: non-saturating loss with lazy R1 -------------------------------
def test_the_default_recipe_is_non_saturating_with_r1() -> None:
    config = tiny_progan().config
    assert (config.loss, config.r1_gamma, config.r1_interval) == ("non_saturating", 1.0, 16)


def test_lazy_r1_adds_gamma_over_two_times_the_interval_on_every_interval_th_d_step() -> None:
    gamma, interval = 0.5, 3
    gan = tiny_progan(side=8, r1_gamma=gamma, r1_interval=interval)
    trainer = ProgressiveTrainer(gan, ProgressiveTrainerConfig(batch_size=4, device="cpu"))
    trainer.discriminator_steps = 0
    real = blobs(4, side=8)
    fake = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    inputs = real.clone().requires_grad_(True)
    (grads,) = torch.autograd.grad(gan.critic(inputs, 1, 1.0).sum(), inputs)
    r1 = grads.flatten(1).pow(2).sum(1).mean().item()  # E ||grad D(x)||^2, by hand
    added = []
    for _ in range(2 * interval):
        value, penalty = trainer._penalised(torch.zeros(()), real, fake, 1, 1.0)
        added.append((value.item(), penalty.item()))
    expected = [(0.5 * gamma * interval * r1, r1)] + [(0.0, 0.0)] * (interval - 1)
    for (got_value, got_penalty), (want_value, want_penalty) in zip(
        added, expected * 2, strict=True
    ):
        assert got_value == pytest.approx(want_value, rel=1e-5, abs=1e-12)
        assert got_penalty == pytest.approx(want_penalty, rel=1e-5, abs=1e-12)
    assert trainer.discriminator_steps == 2 * interval


def test_bad_r1_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="r1_gamma"):
        tiny_progan(r1_gamma=-1.0)
    with pytest.raises(ValueError, match="r1_interval"):
        tiny_progan(r1_interval=0)


def test_r1_defaults_on_for_the_non_saturating_loss_and_off_for_wgan_gp() -> None:
    assert tiny_progan(loss="wgan_gp").config.r1_gamma == 0.0
    assert tiny_progan(loss="wgan").config.r1_gamma == 0.0
    assert tiny_progan(loss="lsgan").config.r1_gamma == 1.0
    assert tiny_progan(loss="wgan_gp", r1_gamma=0.5).config.r1_gamma == 0.5  # as asked
    saved = tiny_progan(loss="wgan_gp").config.to_dict()
    del saved["r1_gamma"], saved["r1_interval"]  # a config saved before R1 existed
    assert ProGANConfig.from_dict(saved).r1_gamma == 0.0
