"""Trainer checks on a synthetic binary source whose entropy is known in closed form.

Rows are one of two random 64-bit prototypes (probability 1/2 each) with every bit flipped
independently with probability FLIP. The entropy H of that source is a finite sum over the
binomial numbers of flips, so a model's ELBO can be placed between two known numbers: the
uniform code, -D log 2, and the best possible, -H (by Gibbs' inequality, E[ELBO] <= E[log p] <= -H).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import binom

from generative.registry import load_model, save_model
from generative.training import (
    Callback,
    Checkpoint,
    EarlyStopping,
    ProgressBar,
    Trainer,
    TrainerConfig,
)
from generative.vae import VAE, VAEConfig

D, FLIP = 64, 0.1
PROTOTYPES = (torch.rand(2, D, generator=torch.Generator().manual_seed(0)) < 0.5).float()
UNIFORM_CODE = D * math.log(2.0)


def sample(n: int, seed: int, flip: float = FLIP) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    which = torch.randint(0, len(PROTOTYPES), (n,), generator=generator)
    flips = (torch.rand(n, D, generator=generator) < flip).float()
    return (PROTOTYPES[which] - flips).abs()


def source_entropy() -> float:
    """H = -E log p(x), summing over a flips among the bits the prototypes share and b among the
    bits where they differ (x drawn from prototype 0; prototype 1 is symmetric)."""
    same = int((PROTOTYPES[0] == PROTOTYPES[1]).sum())
    diff = D - same
    log_flip, log_keep = math.log(FLIP), math.log(1.0 - FLIP)
    entropy = 0.0
    for a in range(same + 1):
        for b in range(diff + 1):
            distances = (a + b, a + diff - b)  # Hamming distances to the two prototypes
            log_p = logsumexp([d * log_flip + (D - d) * log_keep for d in distances]) - math.log(2)
            entropy -= binom.pmf(a, same, FLIP) * binom.pmf(b, diff, FLIP) * log_p
    return entropy


def new_model(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig((D,), latent_dim=2, hidden_dims=(32,), likelihood="bernoulli"))


def trainer_config(**overrides) -> TrainerConfig:
    options = {"epochs": 15, "batch_size": 100, "learning_rate": 1e-2, "device": "cpu"}
    return TrainerConfig(**{"autocast": "off", **options, **overrides})


def mean_and_standard_error(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


class Recorder(Callback):
    """Keeps a copy of the weights after every epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, trainer, epoch, logs) -> None:
        self.states.append(copy.deepcopy(trainer.model.state_dict()))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


TRAIN, VAL = sample(2000, seed=1), sample(500, seed=2)


def test_source_entropy_is_right():
    # far-apart prototypes: nearly log 2 for the component plus D binary entropies of the flips
    h_flip = -(FLIP * math.log(FLIP) + (1 - FLIP) * math.log(1 - FLIP))
    entropy = source_entropy()
    assert D * h_flip < entropy <= D * h_flip + math.log(2) + 1e-12
    assert entropy > D * h_flip + math.log(2) - 1e-3


def test_training_moves_the_elbo_most_of_the_way_to_the_entropy():
    entropy = source_entropy()
    model = new_model()
    untrained, _ = mean_and_standard_error(model.elbo(VAL, n_samples=10, seed=0))
    # small initial logits l cost log 2 + O(l) nats per bit: the untrained model is the uniform code
    assert abs(untrained + UNIFORM_CODE) < 0.05 * (UNIFORM_CODE - entropy)
    bar = ProgressBar()
    history = Trainer(model, trainer_config(), [bar]).fit(TRAIN, VAL)
    assert len(history) == bar.bar.n == 15
    trained, error = mean_and_standard_error(model.elbo(VAL, n_samples=10, seed=0))
    # Gibbs: no model can beat the source's entropy on average
    assert trained < -entropy + 4 * error
    # measured ~95% of the way from the uniform code to the entropy in 15 epochs
    fraction = (trained + UNIFORM_CODE) / (UNIFORM_CODE - entropy)
    assert fraction - 4 * error / (UNIFORM_CODE - entropy) > 0.8, fraction
    assert history[-1]["val_score"] > history[0]["val_score"] + 4 * error


def test_same_seed_same_run_and_other_seed_differs():
    runs = []
    for seed in (3, 3, 4):
        model = new_model()
        history = Trainer(model, trainer_config(epochs=3, seed=seed)).fit(TRAIN, VAL)
        runs.append((history, model.state_dict()))
    assert runs[0][0] == runs[1][0] and same_weights(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0] and not same_weights(runs[0][1], runs[2][1])


def test_early_stopping_restores_the_best_weights_and_checkpoint_saves_them(tmp_path):
    # validation rows flip 25% of the bits: learning the prototypes helps them at first, then the
    # decoder grows confident in 10% flips and they score worse (measured: best at epoch 1 of 5)
    shifted = sample(500, seed=5, flip=0.25)
    model, recorder, patience = new_model(), Recorder(), 3
    stopper = EarlyStopping(patience=patience)
    checkpoint = Checkpoint(tmp_path / "best", save_fn=save_model)
    callbacks = [recorder, stopper, checkpoint]
    history = Trainer(model, trainer_config(epochs=30), callbacks).fit(TRAIN, shifted)
    scores = [logs["val_score"] for logs in history]
    best = max(range(len(scores)), key=scores.__getitem__)
    assert len(history) < 30
    assert len(history) == best + patience + 1  # stops exactly `patience` epochs after the best
    assert stopper.best_epoch == best and stopper.best_score == scores[best]
    assert same_weights(model.state_dict(), recorder.states[best])
    assert not same_weights(model.state_dict(), recorder.states[-1])  # weights really went back
    saved = load_model(tmp_path / "best")
    assert checkpoint.best_score == scores[best]
    assert same_weights(saved.state_dict(), recorder.states[best])
    # the restored model scores the shifted data like the best epoch did, up to MC noise
    with torch.no_grad():
        again, error = mean_and_standard_error(model.validation_score(shifted))
    assert abs(again - scores[best]) < 4 * error * math.sqrt(2)


def test_checkpoint_without_validation_saves_every_epoch(tmp_path):
    model, recorder = new_model(), Recorder()
    saves = []

    def save_fn(module, path):
        saves.append(path)
        return save_model(module, path)

    callbacks = [recorder, Checkpoint(tmp_path / "last", save_fn=save_fn)]
    Trainer(model, trainer_config(epochs=3), callbacks).fit(TRAIN)
    assert saves == [tmp_path / "last"] * 3
    assert same_weights(load_model(tmp_path / "last").state_dict(), recorder.states[-1])
    assert same_weights(model.state_dict(), recorder.states[-1])


def test_bf16_autocast_on_cpu_trains():
    entropy = source_entropy()
    model = new_model()
    history = Trainer(model, trainer_config(autocast="bf16", epochs=8)).fit(TRAIN, VAL)
    assert all(math.isfinite(logs["loss"]) and math.isfinite(logs["val_score"]) for logs in history)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    trained, error = mean_and_standard_error(model.elbo(VAL, n_samples=10, seed=0))
    assert (trained + UNIFORM_CODE) / (UNIFORM_CODE - entropy) > 0.6
    reference = Trainer(new_model(), trainer_config(epochs=8)).fit(TRAIN, VAL)
    assert [h["loss"] for h in history] != [h["loss"] for h in reference]  # bf16 was really on


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"autocast": "fp8"}, "autocast"),
    ],
)
def test_trainer_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig(**overrides)


def test_early_stopping_needs_validation_data():
    with pytest.raises(ValueError, match="validation"):
        Trainer(new_model(), trainer_config(epochs=2), [EarlyStopping()]).fit(TRAIN)


def test_callbacks_start_fresh_on_every_fit():
    """A reused EarlyStopping must not carry the first run's best weights into the second."""
    x = (torch.rand(200, 16, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    config = TrainerConfig(epochs=3, device="cpu", autocast="off")
    stopper = EarlyStopping(patience=1)

    def make() -> VAE:
        return VAE(VAEConfig((16,), latent_dim=2, hidden_dims=(8,), likelihood="bernoulli"))

    Trainer(make(), config, [stopper]).fit(x, x)
    second = make()
    second.decoder.net[-1].bias.data.fill_(-20.0)  # a much worse start than the first run's end
    history = Trainer(second, config, [stopper]).fit(x, x)
    assert stopper.best_epoch >= 0
    assert stopper.best_score == max(h["val_score"] for h in history)


def test_median_validation_is_not_hijacked_by_one_unseen_value():
    """One validation row with a value never seen in training (as on ADBench mnist, where a
    feature constant in training made the mean ELBO fall from epoch 0 and early stopping kept
    the untrained model) moves the mean validation score by thousands of nats; the median moves
    by at most one order statistic."""
    generator = torch.Generator().manual_seed(0)
    val = torch.randn(201, 8, generator=generator)
    odd = val.clone()
    odd[0, 0] = 5000.0
    torch.manual_seed(0)
    model = VAE(VAEConfig((8,), latent_dim=4, hidden_dims=(32,)))
    shifts = {}
    for statistic in ("mean", "median"):
        trainer = Trainer(model, TrainerConfig(validation_statistic=statistic, device="cpu"))
        scores = []
        for data in (val, odd):
            torch.manual_seed(1)  # the same reparameterisation noise for both
            scores.append(trainer.evaluate(data))
        shifts[statistic] = abs(scores[1] - scores[0])
    torch.manual_seed(1)
    rows = model.validation_score(val).detach().sort().values
    neighbour_gap = float((rows[101] - rows[99]).abs())
    assert shifts["mean"] > 1000, shifts  # 5000^2 / 2 / 201 rows, at unit std
    assert shifts["median"] <= neighbour_gap + 1e-4, (shifts, neighbour_gap)
