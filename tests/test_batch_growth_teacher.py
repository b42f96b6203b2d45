"""ALTBI's batch increment and EMA-teacher filtering, the two training options for history that
holds unlabelled anomalies (issue 17): step counts from the closed form, the teacher's weights
as the exact moving average, the teacher choosing the trimmed rows, and exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from resumes import Crash, assert_same_weights

from anomaly.detector import VAEDetector
from anomaly.detector_params import teacher_decay, training_epochs
from generative.training import Trainer, TrainerConfig
from generative.vae import VAE, VAEConfig

D = 4
DATA = torch.randn(100, D, generator=torch.Generator().manual_seed(7))


def new_model(trim_fraction: float = 0.0) -> VAE:
    torch.manual_seed(0)
    config = VAEConfig((D,), latent_dim=2, hidden_dims=(8,), trim_fraction=trim_fraction)
    return VAE(config)


def config(**overrides) -> TrainerConfig:
    options = {"epochs": 4, "batch_size": 10, "learning_rate": 1e-2, "device": "cpu"}
    return TrainerConfig(**{"autocast": "off", **options, **overrides})


class BatchSizes:
    """Wraps a model's training_loss to record the size of every batch it is given."""

    def __init__(self, model: VAE) -> None:
        self.sizes: list[int] = []
        self.inner = model.training_loss
        model.training_loss = self

    def __call__(self, x, step, **options):
        self.sizes.append(len(x))
        return self.inner(x, step, **options)


@pytest.mark.parametrize(("growth", "sizes"), [(1.0, [10] * 4), (2.0, [10, 20, 40, 80])])
def test_epoch_e_trains_in_batches_of_batch_size_times_growth_to_the_e(growth, sizes) -> None:
    model = new_model()
    recorder = BatchSizes(model)
    trainer = Trainer(model, config(batch_growth=growth))
    trainer.fit(DATA)
    expected_steps = [math.ceil(100 / size) for size in sizes]  # 10, 5, 3, 2 with growth 2
    assert trainer.step == sum(expected_steps)
    per_epoch, start = [], 0
    for steps in expected_steps:
        per_epoch.append(recorder.sizes[start : start + steps])
        start += steps
    for size, batches in zip(sizes, per_epoch, strict=True):
        assert batches == [size] * (100 // size) + ([100 % size] if 100 % size else [])


def test_the_batch_never_exceeds_the_rows() -> None:
    assert config(batch_growth=3.0).batch_size_at(10, rows=100) == 100
    assert config(batch_growth=1.5).batch_size_at(2, rows=100) == round(10 * 2.25)


def test_the_teacher_is_the_exact_moving_average_of_the_weights() -> None:
    decay = 0.75
    model = new_model()
    trainer = Trainer(model, config(epochs=1, batch_size=100, teacher_decay=decay))
    start = [p.detach().clone() for p in model.parameters()]
    trainer.fit(DATA)  # one step: teacher = d * w0 + (1 - d) * w1
    for before, after, mean in zip(
        start, model.parameters(), trainer.teacher.parameters(), strict=True
    ):
        assert not torch.equal(before, after)
        torch.testing.assert_close(mean, decay * before + (1 - decay) * after.detach())


def test_a_teacher_chooses_the_rows_the_trimmed_loss_leaves_out() -> None:
    student, teacher = new_model(trim_fraction=0.25), new_model()
    with torch.no_grad():  # a teacher that disagrees with the student
        for p in teacher.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = DATA[:8].clone().requires_grad_(True)
    eps = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    student.noise = teacher.noise = lambda like: eps
    loss, metrics = student.training_loss(x, step=0, teacher=teacher)
    loss.backward()
    teacher_losses = -teacher.validation_score(x).detach()
    dropped = set(torch.topk(teacher_losses, 2).indices.tolist())
    assert {i for i in range(8) if torch.all(x.grad[i] == 0)} == dropped
    own = set(torch.topk(-student.validation_score(x).detach(), 2).indices.tolist())
    assert own != dropped  # the case distinguishes the teacher's ranking from the student's
    assert metrics["kept"] == 0.75


def test_a_run_with_a_teacher_resumes_bitwise(tmp_path) -> None:
    options = {"epochs": 4, "teacher_decay": 0.9, "batch_growth": 1.5}
    reference = new_model(trim_fraction=0.2)
    expected = Trainer(reference, config(**options)).fit(DATA)
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            new_model(trim_fraction=0.2), config(**options), [Crash(at=1)], checkpoint_dir=tmp_path
        ).fit(DATA)
    resumed = new_model(trim_fraction=0.2)
    trainer = Trainer(resumed, config(**options), checkpoint_dir=tmp_path)
    assert trainer.fit(DATA) == expected
    assert_same_weights(resumed, reference)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"batch_growth": 0.5}, "batch_growth"),
        ({"batch_growth": "fast"}, "batch_growth"),
        ({"teacher_decay": 1.0}, "teacher_decay"),
        ({"teacher_decay": -0.1}, "teacher_decay"),
        ({"teacher_decay": True}, "teacher_decay must be None or a number"),
        ({"min_steps": -1}, "min_steps"),
    ],
)
def test_bad_growth_and_teacher_settings_are_refused_by_name(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        VAEDetector(**params).fit(np.random.default_rng(0).normal(size=(50, 2)))


def test_a_detector_with_both_options_is_repeatable() -> None:
    X = np.random.default_rng(0).normal(size=(300, 3))
    params = {"batch_growth": 1.3, "teacher_decay": 0.99, "epochs": 4, "n_samples": 8}
    first = VAEDetector(**params).fit(X).score_samples(X[:20])
    second = VAEDetector(**params).fit(X).score_samples(X[:20])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("n_train", "min_steps", "epochs"),
    [(63, 500, 500), (1000, 500, 63), (7000, 500, 30), (63, 0, 30), (63, None, 300),
     (1000, None, 38), (7000, None, 30)],
)  # fmt: skip
def test_min_steps_raises_the_epochs_of_small_sets_only(n_train, min_steps, epochs) -> None:
    # batches of 128: 63 rows make 1 step per epoch, 1000 rows 8, 7000 rows 55 (1650 in 30);
    # None is a floor of 300 steps for tables: ceil(300 / 8) = 38 epochs for 1000 rows
    detector = VAEDetector(min_steps=min_steps)
    assert training_epochs(detector, n_train) == epochs


@pytest.mark.parametrize(("min_steps", "epochs"), [(None, 30), (500, 500)])
def test_the_default_step_floor_is_for_tables_only(min_steps, epochs) -> None:
    # 63 images: one step per epoch; None leaves images at `epochs`, an explicit floor applies
    detector = VAEDetector(min_steps=min_steps)
    assert training_epochs(detector, 63, images=True) == epochs


def test_a_small_set_trains_for_min_steps() -> None:
    X = np.random.default_rng(0).normal(size=(100, 3))
    detector = VAEDetector(min_steps=60, epochs=2, patience=0, refit=False, n_samples=4).fit(X)
    assert len(detector.history_) == 60  # 70 training rows: one batch, one step per epoch


def test_a_small_table_trains_for_300_steps_by_default() -> None:
    X = np.random.default_rng(0).normal(size=(100, 3))
    detector = VAEDetector(refit=False, n_samples=4).fit(X)
    assert len(detector.history_) == 300  # 70 training rows: one step per epoch, no early stop


@pytest.mark.parametrize(
    ("params", "images", "trim", "expected"),
    [
        ({}, False, 0.1, 0.99),  # a table whose fit trims: the teacher ranks the rows
        ({}, False, 0.0, 0.0),  # nothing to rank without trimming
        ({}, True, 0.1, 0.0),  # images: the VAE ranks its own rows
        ({"latent_layers": 2}, False, 0.1, 0.0),  # the hierarchical VAE has no teacher
        ({"teacher_decay": 0.5}, True, 0.0, 0.5),  # a given decay is kept as it is
        ({"teacher_decay": 0.0}, False, 0.1, 0.0),
    ],
)
def test_teacher_decay_none_resolves_by_data_and_trimming(params, images, trim, expected) -> None:
    assert teacher_decay(VAEDetector(**params), images, trim) == expected


def test_a_default_table_fit_trains_with_the_teacher_and_an_explicit_zero_without() -> None:
    X = np.random.default_rng(0).normal(size=(300, 3))
    params = {"epochs": 3, "n_samples": 8, "min_steps": 0, "refit": False}
    default = VAEDetector(**params).fit(X).score_samples(X[:20])
    explicit = VAEDetector(teacher_decay=0.99, **params).fit(X).score_samples(X[:20])
    without = VAEDetector(teacher_decay=0.0, **params).fit(X).score_samples(X[:20])
    np.testing.assert_array_equal(default, explicit)
    assert not np.allclose(default, without)
