"""Contamination-robust training: the trimmed ELBO, the refit, robust scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anomaly.detector import VAEDetector
from anomaly.preprocessing import QuantileScaler, RobustScaler, preprocessor_from_dict
from generative.vae import VAE, VAEConfig


def trimmed_vae(trim_fraction: float, warmup: int = 0) -> VAE:
    torch.manual_seed(0)
    config = VAEConfig(
        input_shape=(3,),
        latent_dim=2,
        hidden_dims=(8,),
        trim_fraction=trim_fraction,
        trim_warmup_steps=warmup,
    )
    return VAE(config)


def row_losses(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The per-row negative ELBO (one sample, noise `eps`), computed independently."""
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * eps
    return model.kl_divergence(mu, logvar) - model.log_likelihood(model.decode(z), x)


@pytest.mark.parametrize(("n_rows", "fraction"), [(8, 0.25), (7, 0.25), (40, 0.1), (9, 0.0)])
def test_trimmed_elbo_drops_the_highest_loss_rows_with_exactly_zero_gradient(
    n_rows: int, fraction: float
) -> None:
    model = trimmed_vae(fraction)
    x = torch.randn(n_rows, 3, generator=torch.Generator().manual_seed(n_rows))
    x[0] += 6.0  # one far row: it must be among the dropped
    eps = torch.randn(n_rows, 2, generator=torch.Generator().manual_seed(1))
    model.noise = lambda like: eps  # the same noise for the loss and the check
    x.requires_grad_(True)
    loss, metrics = model.training_loss(x, step=0)
    loss.backward()
    n_drop = math.floor(fraction * n_rows)
    expected_dropped = set(torch.topk(row_losses(model, x, eps).detach(), n_drop).indices.tolist())
    zero_rows = {i for i in range(n_rows) if torch.all(x.grad[i] == 0)}
    assert zero_rows == expected_dropped
    assert metrics["kept"] == (n_rows - n_drop) / n_rows
    if n_drop:
        assert 0 in zero_rows


def test_trimming_waits_for_its_warmup_steps() -> None:
    model = trimmed_vae(0.25, warmup=5)
    x = torch.randn(8, 3)
    assert model.training_loss(x, step=4)[1]["kept"] == 1.0
    assert model.training_loss(x, step=5)[1]["kept"] == 0.75


def test_trimmed_loss_is_the_mean_over_the_kept_rows() -> None:
    model = trimmed_vae(0.25)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(8, 2, generator=torch.Generator().manual_seed(4))
    model.noise = lambda like: eps
    loss, _ = model.training_loss(x, step=0)
    kept = torch.sort(row_losses(model, x, eps)).values[:6]
    assert loss.item() == pytest.approx(kept.mean().item(), rel=1e-5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"trim_fraction": 0.5}, "trim_fraction"),
        ({"trim_fraction": -0.1}, "trim_fraction"),
        ({"trim_fraction": "half"}, "trim_fraction"),
        ({"trim_warmup_epochs": -1}, "trim_warmup_epochs"),
        ({"scaling": "minmax"}, "scaling"),
        ({"refit": "yes"}, "refit"),
        ({"refit_folds": 0}, "refit_folds"),
        ({"refit_folds": 2.5}, "refit_folds"),
    ],
)
def test_bad_robust_parameters_are_refused_by_name(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VAEDetector(**params).fit(np.random.default_rng(0).normal(size=(50, 2)))


def test_robust_scaler_ignores_a_tenth_of_huge_values() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10_000, 3)) * [1.0, 2.0, 0.5] + [0.0, 5.0, -1.0]
    X[:1000, 0] = 1e6  # 10 % of the first feature is enormous
    binary = (rng.random(10_000) < 0.05).astype(float)  # IQR 0: scaled by its std instead
    scaler = RobustScaler().fit(np.column_stack([X, binary]))
    # the median of the first feature moves to the 0.5/0.9 quantile of N(0,1): 0.14
    assert scaler.mean_[1:3] == pytest.approx([5.0, -1.0], abs=0.05)
    assert scaler.scale_[1:3] == pytest.approx([2.0, 0.5], rel=0.05)
    assert scaler.mean_[0] == pytest.approx(0.14, abs=0.05)
    assert scaler.scale_[3] == pytest.approx(binary.std())
    again = preprocessor_from_dict(scaler.to_dict())
    assert isinstance(again, RobustScaler)
    assert np.array_equal(
        again.transform(np.column_stack([X, binary])[:5]),
        scaler.transform(np.column_stack([X, binary])[:5]),
    )


def gaussian_with_far_outliers(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1,800 rows of N(0, I_4), the same with 200 planted outliers N(6, 0.25 I) (10 %), and
    the planted outliers alone."""
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(1800, 4))
    outliers = rng.normal(size=(200, 4)) * 0.5 + 6.0
    return clean, np.vstack([clean, outliers])[rng.permutation(2000)], outliers


def data_log_density(detector: VAEDetector, X: np.ndarray) -> np.ndarray:
    """log p(x) in the data's units: the model's log-density of the scaled rows plus the
    scaling's log-Jacobian (the fits scale by different statistics)."""
    return detector.score_samples(X) - np.log(detector.preprocessor_.scale_).sum()


def test_robust_fit_keeps_the_clean_density_that_an_untrimmed_fit_gives_away() -> None:
    """Gibbs' inequality: a density that puts the planted 10 % of mass near the outliers has at
    most 0.9 left for the clean region, so its mean log-density on clean rows is at least
    log(1/0.9) = 0.105 nats below the true one. A fit that ignores the outliers need not lose
    it: the robust fit must stay within that margin of the clean fit, the untrimmed one not."""
    clean, mixed, outliers = gaussian_with_far_outliers()
    test = np.random.default_rng(1).normal(size=(4000, 4))
    plain = {"random_state": 0, "epochs": 100, "trim_fraction": 0.0, "refit": False}
    fits = {
        "clean": VAEDetector(**plain).fit(clean),
        "untrimmed": VAEDetector(**plain).fit(mixed),
        "robust": VAEDetector(**{**plain, "trim_fraction": "contamination", "refit": True}).fit(
            mixed
        ),
    }
    mean_log_p = {name: data_log_density(fit, test).mean() for name, fit in fits.items()}
    margin = math.log(1 / 0.9)
    assert mean_log_p["clean"] - mean_log_p["untrimmed"] > margin
    assert abs(mean_log_p["clean"] - mean_log_p["robust"]) < margin / 2
    clean_median = np.median(fits["robust"].score_samples(clean))
    assert fits["robust"].score_samples(outliers).max() < clean_median


def test_a_trimmed_fit_refuses_to_train_data_parallel() -> None:
    from generative.distributed import World

    X = np.random.default_rng(0).normal(size=(60, 2))
    with pytest.raises(ValueError, match="trim_fraction=0"):
        VAEDetector(epochs=1).fit(X, world=World(rank=0, size=2))


def test_unsupervised_split_trains_on_the_contaminated_part_and_tests_like_novelty() -> None:
    from anomaly.evaluation import novelty_split, unsupervised_split

    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.2).astype(int)
    X = np.column_stack([np.arange(1000.0), y])
    clean, dirty = novelty_split(X, y, seed=3), unsupervised_split(X, y, seed=3)
    assert np.array_equal(clean.test_index, dirty.test_index)
    assert np.array_equal(clean.X_test, dirty.X_test)
    # every row is in exactly one part; the training part keeps the anomalies, labelled
    rows = np.concatenate([dirty.X_train[:, 0], dirty.X_test[:, 0]])
    assert np.array_equal(np.sort(rows), np.arange(1000.0))
    assert np.array_equal(dirty.y_train, dirty.X_train[:, 1])
    assert abs(dirty.y_train.mean() - y.mean()) < 0.01  # stratified: the same anomaly rate
    assert set(clean.X_train[:, 0]) == set(dirty.X_train[dirty.y_train == 0, 0])


def fence_share_tolerance(share: float, n: int) -> float:
    """Four binomial standard deviations of a share estimated from n rows."""
    return 4.0 * math.sqrt(share * (1.0 - share) / n)


def test_estimated_outlier_share_matches_tukeys_fence_on_known_distributions() -> None:
    """For N(0, 1) the upper fence Q3 + 1.5 IQR is 0.6745 + 1.5 * 1.349 = 2.698 and
    P(Z > 2.698) = 0.00349. With 10 % of rows far away the quartiles are the 0.25/0.9 and
    0.75/0.9 quantiles of the normal part (-0.589, 0.967), the fence 3.301, and the share
    0.1 + 0.9 * P(Z > 3.301) = 0.10043."""
    from anomaly.detector_params import estimated_outlier_share

    rng = np.random.default_rng(0)
    n = 200_000
    normal = rng.normal(size=n)
    assert abs(estimated_outlier_share(normal) - 0.00349) < fence_share_tolerance(0.00349, n)
    planted = np.concatenate([rng.normal(size=int(0.9 * n)), np.full(n // 10, 20.0)])
    assert abs(estimated_outlier_share(planted) - 0.10043) < fence_share_tolerance(0.1, n)
    assert estimated_outlier_share(planted, cap=0.05) == 0.05


def test_estimate_trims_the_planted_share_and_little_of_clean_rows() -> None:
    """A well-fitted 4-d Gaussian's loss is a constant plus chi2_4 / 2; chi2_4's fence
    (5.385 + 1.5 * 3.462 = 10.58) leaves e^-5.29 (1 + 5.29) = 3.2 % beyond it, so clean rows
    get a trim near 3 %; with 10 % far outliers the estimate is near 10 %. (Slack: the ELBO is a
    noisy bound, and the fit is not the true density.)"""
    clean, mixed, outliers = gaussian_with_far_outliers()
    params = {"random_state": 0, "epochs": 30, "trim_fraction": "estimate"}
    on_clean = VAEDetector(**params).fit(clean)
    on_mixed = VAEDetector(**params).fit(mixed)
    assert 0.0 <= on_clean.trim_fraction_ < 0.07
    assert 0.09 <= on_mixed.trim_fraction_ < 0.16
    assert on_mixed.score_samples(outliers).max() < np.median(on_mixed.score_samples(clean))


def test_quantile_scaling_fits_saves_and_loads(tmp_path) -> None:
    """`scaling="quantile"`: the planted outliers (beyond every clean row in all four features)
    score below every clean row's median, and a saved detector scores the same after loading."""
    clean, mixed, outliers = gaussian_with_far_outliers()
    detector = VAEDetector(scaling="quantile", epochs=30, random_state=0).fit(mixed)
    assert isinstance(detector.preprocessor_, QuantileScaler)
    clean_scores = detector.score_samples(clean[:500])
    assert np.all(detector.score_samples(outliers) < np.median(clean_scores))
    loaded = VAEDetector.load(detector.save(tmp_path / "quantile"))
    np.testing.assert_allclose(loaded.score_samples(clean[:500]), clean_scores, rtol=1e-6)


@pytest.mark.parametrize("folds", [3])
def test_refit_folds_score_each_row_by_a_model_that_never_trained_on_it(
    monkeypatch: pytest.MonkeyPatch, folds: int
) -> None:
    """`refit_folds=k`: k first-pass models whose training rows partition the training part
    into their complements; each row's first-pass ELBO comes from the one model that left it
    out, and the refit keeps all but floor(trim * n) rows, the planted outliers not among them."""
    clean, mixed, outliers = gaussian_with_far_outliers()
    trained: list[np.ndarray] = []
    scored: list[np.ndarray] = []
    original_train, original_elbo = VAEDetector._train_vae, VAEDetector._elbo

    def record_train(self, data, train_idx, val_idx, **options):
        trained.append(np.asarray(train_idx))
        return original_train(self, data, train_idx, val_idx, **options)

    def record_elbo(self, rows, device):
        scored.append(rows.numpy())
        return original_elbo(self, rows, device)

    monkeypatch.setattr(VAEDetector, "_train_vae", record_train)
    monkeypatch.setattr(VAEDetector, "_elbo", record_elbo)
    detector = VAEDetector(refit_folds=folds, epochs=30, random_state=0).fit(mixed)
    first_pass, refit_rows = trained[:folds], trained[folds]
    assert len(trained) == folds + 1 and len(scored) == folds
    train_part = np.unique(np.concatenate(first_pass))
    held_out = [np.setdiff1d(train_part, rows) for rows in first_pass]
    assert sum(map(len, held_out)) == len(train_part)  # the left-out folds are disjoint
    assert max(map(len, held_out)) - min(map(len, held_out)) <= 1
    for rows, left_out, scored_rows in zip(first_pass, held_out, scored, strict=True):
        assert len(rows) + len(left_out) == len(train_part)
        expected = detector.preprocessor_.transform(mixed[left_out])  # as sets of rows
        assert scored_rows.shape == expected.shape
        np.testing.assert_allclose(scored_rows.sum(axis=0), expected.sum(axis=0), rtol=1e-4)
    n = len(train_part)
    assert len(refit_rows) == n - math.floor(0.1 * n)
    planted = np.flatnonzero(mixed.mean(axis=1) > 3.0)  # the outliers' rows of `mixed`
    kept_planted = np.intersect1d(planted, refit_rows).size
    assert kept_planted <= 0.1 * np.intersect1d(planted, train_part).size
    assert detector.score_samples(outliers).max() < np.median(detector.score_samples(clean))
