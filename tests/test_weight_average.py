"""Polyak averaging of the VAE's weights (`weight_average`, issue 17): the final weights are the
ramped moving average of every step's weights, computed here by hand; resume is exact; bad
settings and the clash with early stopping are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from resumes import Crash, assert_same_weights

from anomaly.detector import VAEDetector
from generative.loop import ema_decay
from generative.training import Callback, EarlyStopping, Trainer, TrainerConfig
from generative.vae import VAE, VAEConfig

D = 4
DATA = torch.randn(100, D, generator=torch.Generator().manual_seed(7))


def new_model() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig((D,), latent_dim=2, hidden_dims=(8,)))


def config(**overrides) -> TrainerConfig:
    options = {"epochs": 6, "batch_size": 100, "learning_rate": 1e-2, "device": "cpu"}
    return TrainerConfig(**{"autocast": "off", **options, **overrides})


class WeightsPerEpoch(Callback):
    """Records the model's weights at the start and after every epoch."""

    def __init__(self) -> None:
        self.weights: list[list[torch.Tensor]] = []

    def _record(self, trainer) -> None:
        self.weights.append([p.detach().clone() for p in trainer.model.parameters()])

    def on_train_begin(self, trainer) -> None:
        self._record(trainer)

    def on_epoch_end(self, trainer, epoch, logs) -> None:
        self._record(trainer)


def test_the_final_weights_are_the_ramped_moving_average_of_the_steps() -> None:
    decay = 0.9
    plain = WeightsPerEpoch()  # batch 100 of 100 rows: one step per epoch
    Trainer(new_model(), config(), [plain]).fit(DATA)
    averaged = new_model()
    Trainer(averaged, config(weight_average=decay)).fit(DATA)
    expected = plain.weights[0]
    for step, weights in enumerate(plain.weights[1:]):
        d = ema_decay(decay, step)  # 0.1, 0.18, 0.25, ...: the ramp, below 0.9 for 6 steps
        expected = [d * mean + (1 - d) * w for mean, w in zip(expected, weights, strict=True)]
    last = plain.weights[-1]
    for mean, got, final in zip(expected, averaged.parameters(), last, strict=True):
        torch.testing.assert_close(got.detach(), mean)
        assert not torch.allclose(got, final)  # the average is not the last step's weights


def test_the_ramp_starts_low_and_reaches_the_decay() -> None:
    assert ema_decay(0.99, 0) == pytest.approx(0.1)
    assert ema_decay(0.99, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.99, 10_000) == 0.99


def test_a_run_with_a_weight_average_resumes_bitwise(tmp_path) -> None:
    options = {"epochs": 4, "batch_size": 10, "weight_average": 0.95}
    reference = new_model()
    expected = Trainer(reference, config(**options)).fit(DATA)
    with pytest.raises(KeyboardInterrupt):
        Trainer(new_model(), config(**options), [Crash(at=1)], checkpoint_dir=tmp_path).fit(DATA)
    resumed = new_model()
    assert Trainer(resumed, config(**options), checkpoint_dir=tmp_path).fit(DATA) == expected
    assert_same_weights(resumed, reference)


def test_early_stopping_and_a_weight_average_are_refused_together() -> None:
    trainer = Trainer(new_model(), config(weight_average=0.9), [EarlyStopping(patience=2)])
    with pytest.raises(ValueError, match="weight_average.*early stopping"):
        trainer.fit(DATA, DATA[:20])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"weight_average": 1.0}, "weight_average must be a number in"),
        ({"weight_average": -0.5}, "weight_average must be a number in"),
        ({"weight_average": "yes"}, "weight_average must be a number in"),
        ({"weight_average": 0.9, "patience": 3}, "set one of them to 0"),
    ],
)
def test_bad_weight_averages_are_refused_by_name(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        VAEDetector(**params).fit(np.random.default_rng(0).normal(size=(50, 2)))


def test_a_detector_with_a_weight_average_is_repeatable_and_differs_from_the_last_step() -> None:
    X = np.random.default_rng(0).normal(size=(300, 3))
    params = {"epochs": 4, "n_samples": 8, "min_steps": 0}
    first = VAEDetector(weight_average=0.9, **params).fit(X).score_samples(X[:20])
    second = VAEDetector(weight_average=0.9, **params).fit(X).score_samples(X[:20])
    last_step = VAEDetector(**params).fit(X).score_samples(X[:20])
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, last_step)
