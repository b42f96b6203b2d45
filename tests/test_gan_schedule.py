"""Learning rates that decay over the budget (`lr_decay_start` of the GAN and progressive
trainers).

The expected rates are closed forms: with E epochs of B batches, the step after b batches runs
at progress p = b / (E B), so both rates are the base rate times min(1, (1 - p) / (1 - f)).
"""

from __future__ import annotations

import json

import pytest
import torch
from resumes import Crash, assert_same_weights

from generative.gan import GAN, GANConfig, GANTrainer, GANTrainerConfig
from generative.gan.schedule import budget_progress, decay_factor
from generative.progressive import ProGAN, ProGANConfig
from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from generative.training import Callback

DATA = torch.randn(200, 2, generator=torch.Generator().manual_seed(3))
EPOCHS, BATCH = 8, 20  # 10 batches per epoch, 80 in all


def new_gan(seed: int = 0) -> GAN:
    torch.manual_seed(seed)
    return GAN(GANConfig((2,), latent_dim=2, hidden_dims=(16,), ema_decay=0.9))


def config(**overrides) -> GANTrainerConfig:
    options = {
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "lr_generator": 1e-3,
        "lr_discriminator": 3e-3,
        "device": "cpu",
        "autocast": "off",
    }
    return GANTrainerConfig(**{**options, **overrides})


class LastRates(Callback):
    """Both optimizers' rates at the end of every epoch (those of its last step)."""

    def on_train_begin(self, trainer) -> None:
        self.rates: list[tuple[float, float]] = []

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        g, d = trainer.optimizers
        self.rates.append((g.param_groups[0]["lr"], d.param_groups[0]["lr"]))


def test_decay_factor_is_flat_then_linear_to_zero():
    assert decay_factor(0.0, 0.5) == decay_factor(0.5, 0.5) == 1.0
    assert decay_factor(0.75, 0.5) == pytest.approx(0.5)
    assert decay_factor(1.0, 0.5) == 0.0
    assert decay_factor(0.1, 0.0) == pytest.approx(0.9)


def test_budget_progress_is_the_most_used_budget():
    assert budget_progress((5, None), (0, None), (10, 100)) == 0.1
    assert budget_progress((5, 10), (1, 4), (10, 100)) == 0.5
    assert budget_progress((9, 10), (3, 4), (10, 100)) == 0.9
    assert budget_progress((30, 10), (0, None), (10, 100)) == 1.0
    assert budget_progress((30, None)) == 0.0


@pytest.mark.parametrize("start", [0.0, 0.5])
def test_rates_follow_the_schedule_over_the_epochs(start):
    rates = LastRates()
    GANTrainer(new_gan(), config(lr_decay_start=start), [rates]).fit(DATA)
    total = EPOCHS * 10
    for epoch, (g, d) in enumerate(rates.rates):
        progress = ((epoch + 1) * 10 - 1) / total  # the epoch's last step
        factor = min(1.0, (1 - progress) / (1 - start))
        assert g == pytest.approx(1e-3 * factor, rel=1e-12)
        assert d == pytest.approx(3e-3 * factor, rel=1e-12)
    assert rates.rates[-1][0] == pytest.approx(1e-3 / total / (1 - start))


def test_the_generator_step_cap_is_the_budget_when_it_comes_first():
    rates = LastRates()
    trainer = GANTrainer(new_gan(), config(lr_decay_start=0.5, max_generator_steps=25), [rates])
    trainer.fit(DATA)
    assert trainer.generator_steps == 25
    # the last G step ran after 24 of the 25 capped steps: factor (1 - 24/25) / 0.5
    assert rates.rates[-1][0] == pytest.approx(1e-3 * (1 / 25) / 0.5)


def test_without_decay_the_rates_stay_constant():
    rates = LastRates()
    GANTrainer(new_gan(), config(), [rates]).fit(DATA)
    assert set(rates.rates) == {(1e-3, 3e-3)}


@pytest.mark.parametrize("start", [1.0, -0.1, 2])
def test_bad_decay_starts_are_refused(start):
    with pytest.raises(ValueError, match="lr_decay_start must be None or a fraction in"):
        config(lr_decay_start=start)


def test_a_decaying_run_resumes_bit_for_bit(tmp_path):
    reference = new_gan()
    expected = GANTrainer(reference, config(lr_decay_start=0.25)).fit(DATA)
    with pytest.raises(KeyboardInterrupt):
        GANTrainer(new_gan(), config(lr_decay_start=0.25), [Crash(at=5)],
                   checkpoint_dir=tmp_path).fit(DATA)  # fmt: skip
    resumed = new_gan(seed=7)
    history = GANTrainer(resumed, config(lr_decay_start=0.25), checkpoint_dir=tmp_path).fit(DATA)
    assert history == expected
    assert_same_weights(resumed, reference)


def test_the_option_round_trips_through_json():
    original = config(lr_decay_start=0.4)
    assert GANTrainerConfig.from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_the_progressive_lr_follows_the_schedules_images():
    torch.manual_seed(0)
    options = {"latent_dim": 8, "channel_base": 32, "max_channels": 8, "minibatch_group": 2}
    gan = ProGAN(ProGANConfig((1, 8, 8), **options))
    settings = {"batch_size": 16, "fade_images": 48, "stable_images": 32, "device": "cpu"}
    config = ProgressiveTrainerConfig(**settings, lr=1e-3, lr_decay_start=0.5, autocast="off")
    rates = LastRates()
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ProgressiveTrainer(gan, config, [rates]).fit(images)
    phases = [32, 48, 32]  # 4x4 stable, 8x8 fade-in, 8x8 stable: 112 images
    ends = [sum(phases[: k + 1]) - 16 for k in range(3)]  # before each phase's last step
    expected = [1e-3 * min(1.0, (1 - end / 112) / 0.5) for end in ends]
    assert [g for g, _ in rates.rates] == pytest.approx(expected, rel=1e-12)
    assert [d for _, d in rates.rates] == pytest.approx(expected, rel=1e-12)


def test_the_progressive_config_refuses_a_bad_decay_start():
    with pytest.raises(ValueError, match="lr_decay_start must be None or a fraction in"):
        ProgressiveTrainerConfig(lr_decay_start=1.5)
