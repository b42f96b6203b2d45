"""Quality metrics for generative models: closed forms, brute force and sampling-error bounds.

Tolerances are derived in the comments: exact identities get float64 rounding tolerances,
sample statistics get a few standard errors of the estimator.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from scipy import stats
from scipy.spatial.distance import cdist

from generative.metrics import (
    FEATURE_METRICS,
    FeatureNet,
    FeatureNetConfig,
    QualityOptions,
    accuracy,
    c2st_auc,
    classification_accuracy_score,
    feature_distances,
    feature_quality,
    fid,
    frechet_distance,
    image_quality,
    kid,
    precision_recall,
    register_metric,
    train_feature_net,
)
from generative.metrics.fid import mmd2_unbiased
from generative.metrics.precision_recall import knn_radii


def random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    """A random covariance; singular when `rank` < d."""
    factor = rng.normal(size=(d, rank or d))
    ridge = 0.0 if rank else 0.1
    return factor @ factor.T / d + ridge * np.eye(d)


# --- Fréchet distance --------------------------------------------------------------------------
def test_frechet_distance_matches_the_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    s1, s2 = random_spd(rng, 20), random_spd(rng, 20)
    cross = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real  # an independent route
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("rank", [None, 3])
def test_frechet_distance_of_scaled_covariances_is_exact_even_when_singular(rank):
    # sigma2 = c^2 sigma1 commutes with sigma1: tr((s1 s2)^(1/2)) = c tr(s1), so
    # d = ||mu1 - mu2||^2 + (1 - c)^2 tr(s1); rank 3 of 10 mimics dead ReLU features.
    rng = np.random.default_rng(2)
    sigma, c = random_spd(rng, 10, rank), 1.7
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    expected = np.sum((mu1 - mu2) ** 2) + (1.0 - c) ** 2 * np.trace(sigma)
    got = frechet_distance(mu1, sigma, mu2, c**2 * sigma)
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_fid_is_symmetric_and_zero_for_identical_sets():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(500, 8)), rng.normal(size=(400, 8)) @ random_spd(rng, 8)
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-10)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_fid_of_shifted_gaussian_samples_is_the_squared_shift():
    # N(0, I) vs N(m, I), n rows each in D dims. E[FID] = ||m||^2 + bias, where the bias is
    # 2D/n from the two sample means and D(D+1)/(2n) from the covariances (to second order,
    # Bures distance ~ ||S1 - S2||_F^2 / 4 with entry variances (1 + delta_ij)/n). The sampling
    # std is dominated by 2 m.(xbar1 - xbar2): sqrt(8 ||m||^2 / n).
    rng = np.random.default_rng(4)
    n, d = 20_000, 4
    m = np.full(d, 0.5)
    value = fid(rng.normal(size=(n, d)), rng.normal(size=(n, d)) + m)
    bias = 2 * d / n + d * (d + 1) / (2 * n)
    std = math.sqrt(8 * m @ m / n)
    assert abs(value - (m @ m + bias)) < 4 * std


# --- KID ----------------------------------------------------------------------------------------
def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def test_kid_matches_the_brute_force_unbiased_estimate():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    expected = brute_force_mmd2(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)
    # one subset of all rows is a permutation of each set: MMD^2 does not depend on order
    mean, std = kid(x, y, n_subsets=1, subset_size=7)
    assert mean == pytest.approx(expected, rel=1e-12) and std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    # The subset estimates are unbiased with spread `std`; their mean varies no more than one
    # of them does, so |mean| < 3 std holds for equal distributions (normal approximation).
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    mean, std = kid(a, b, n_subsets=30, subset_size=400, seed=0)
    assert abs(mean) < 3 * std
    shifted_mean, shifted_std = kid(a, b + 0.5, n_subsets=30, subset_size=400, seed=0)
    assert shifted_mean > 3 * shifted_std > 0
    assert kid(a, b, n_subsets=5, subset_size=100, seed=1) == kid(
        a, b, n_subsets=5, subset_size=100, seed=1
    )


# --- precision and recall -----------------------------------------------------------------------
def test_knn_radii_match_a_brute_force_sort():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(60, 4))
    expected = np.sort(cdist(points, points, "sqeuclidean"), axis=1)[:, 3]  # column 0 is self
    np.testing.assert_allclose(knn_radii(points, 3), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(knn_radii(points, 3, block_elements=7), expected, rtol=1e-10)


def test_precision_recall_when_fake_covers_half_the_real_support():
    # real ~ U([0,1]^2), fake ~ U([0,.5] x [0,1]). Precision: every fake point lies in the
    # real support, so only holes in the real k-NN balls miss it (a few %). Recall: the real
    # share in x < .5 is Binomial(n, .5)/n (std .011 at n = 2000), plus real points just past
    # x = .5 reached by fake balls: a band about one fake 3-NN radius wide,
    # r ~ sqrt(3 / (pi * 4000)) = .016 (density 2000 / .5).
    rng = np.random.default_rng(8)
    n = 2000
    real, fake = rng.uniform(size=(n, 2)), rng.uniform(size=(n, 2)) * [0.5, 1.0]
    precision, recall = precision_recall(real, fake, k=3)
    radius = math.sqrt(3 / (math.pi * n / 0.5))
    assert precision > 0.95
    assert 0.5 - 4 * 0.011 < recall < 0.5 + 2 * radius + 4 * 0.011
    assert precision_recall(real, fake, k=3, block_elements=100) == (precision, recall)


def test_precision_recall_extremes():
    rng = np.random.default_rng(9)
    real = rng.uniform(size=(1000, 2))
    assert precision_recall(real, real + 3.0) == (0.0, 0.0)  # disjoint: 3-NN radii ~ .03
    assert precision_recall(real, real.copy()) == (1.0, 1.0)  # every point covers itself
    precision, recall = precision_recall(real, rng.uniform(size=(1000, 2)))
    assert precision > 0.9 and recall > 0.9  # same distribution: only ball holes are missed


# --- tabular ------------------------------------------------------------------------------------
def ks_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def w1_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))


def test_feature_distances_match_scipy_and_the_definitions():
    rng = np.random.default_rng(10)
    real = pd.DataFrame({"age": rng.normal(40, 10, 300), "income": rng.lognormal(size=300)})
    synthetic = np.column_stack([rng.normal(45, 12, 250), rng.lognormal(0.2, size=250)])
    table = feature_distances(real, synthetic)
    assert list(table.index) == ["age", "income"]
    for j, name in enumerate(table.index):
        a, b = real.to_numpy()[:, j], synthetic[:, j]
        scipy_ks = stats.ks_2samp(a, b)
        assert table.loc[name, "ks"] == pytest.approx(scipy_ks.statistic, abs=1e-12)
        assert table.loc[name, "ks_pvalue"] == pytest.approx(scipy_ks.pvalue, rel=1e-12)
        assert table.loc[name, "ks"] == pytest.approx(ks_by_hand(a, b), abs=1e-12)
        w1 = stats.wasserstein_distance(a, b)
        assert table.loc[name, "wasserstein_1"] == pytest.approx(w1, rel=1e-10)
        assert table.loc[name, "wasserstein_1"] == pytest.approx(w1_by_hand(a, b), rel=1e-10)
    assert list(feature_distances(real.to_numpy(), synthetic).index) == ["f0", "f1"]
    with pytest.raises(ValueError, match="columns"):
        feature_distances(real, synthetic[:, :1])


def test_c2st_auc_is_chance_for_one_distribution_and_high_for_different_ones():
    # Null: AUC of n1 = n2 = n rows has standard error sqrt((n1 + n2 + 1) / (12 n1 n2))
    # (Mann-Whitney under H0), .0129 at n = 1000; allow 4 of them.
    rng = np.random.default_rng(11)
    n = 1000
    same = c2st_auc(rng.normal(size=(n, 3)), rng.normal(size=(1500, 3)), seed=0)
    assert abs(same - 0.5) < 4 * math.sqrt((2 * n + 1) / (12 * n * n))
    # a shift of 2 per axis: Bayes AUC = Phi(||delta|| / sqrt 2) = Phi(2.45) = .993
    shifted = c2st_auc(rng.normal(size=(n, 3)), rng.normal(size=(n, 3)) + 2.0, seed=0)
    assert shifted > 0.95
    # equal N(0, 1) marginals, correlation .99 vs 0: the marginals cannot tell, the C2ST can
    # (Bayes AUC via |x1 - x2|, variance ratio 100: (2 / pi) atan(10) = .94)
    x = rng.normal(size=(n, 1))
    correlated = np.hstack([x, 0.99 * x + math.sqrt(1 - 0.99**2) * rng.normal(size=(n, 1))])
    independent = rng.normal(size=(n, 2))
    assert feature_distances(correlated, independent)["ks"].max() < 0.1
    assert c2st_auc(correlated, independent, seed=0) > 0.85


# --- the feature network --------------------------------------------------------------------
TINY = FeatureNetConfig((1, 8, 8), num_classes=3, channels=(4,), feature_dim=6)


def tiny_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(64, 1, 8, 8, generator=generator), torch.randint(
        3, (64,), generator=generator
    )


def test_feature_net_config_round_trips_and_rejects_bad_values():
    config = FeatureNetConfig([1, 28, 28], channels=[16, 32], feature_dim=64)
    assert config.input_shape == (1, 28, 28) and config.channels == (16, 32)
    document = json.loads(json.dumps(config.to_dict()))
    assert FeatureNetConfig.from_dict(document) == config
    with pytest.raises(ValueError, match="unknown FeatureNetConfig fields"):
        FeatureNetConfig.from_dict({**document, "depth": 3})
    bad = [
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"input_shape": (1, 28, 28), "num_classes": 1}, "num_classes"),
        ({"input_shape": (1, 28, 28), "channels": ()}, "channels"),
        ({"input_shape": (1, 28, 28), "feature_dim": 0}, "feature_dim"),
        ({"input_shape": (1, 4, 4), "channels": (8, 8, 8)}, "shrink"),
    ]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            FeatureNetConfig(**values)


def test_features_shape_mode_and_input_types():
    net = FeatureNet(TINY).train()
    X = torch.randint(256, (10, 1, 8, 8), dtype=torch.uint8)
    features = net.features(X, batch_size=3)
    assert features.shape == (10, 6) and not features.requires_grad and not net.training
    assert torch.allclose(features, net.features(X.numpy().astype(np.float32) / 255.0))
    assert (features >= 0).all()  # post-ReLU activations
    assert net(X.float() / 255).shape == (10, 3)
    assert net.features(X[:0]).shape == (0, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_features_on_a_gpu_match_the_cpu():
    net = FeatureNet(TINY).eval()
    X = torch.rand(20, 1, 8, 8)
    on_cpu = net.features(X)
    on_gpu = net.to("cuda").features(X)
    assert on_gpu.device.type == "cpu"
    assert torch.allclose(on_cpu, on_gpu, atol=1e-4)


def test_training_is_deterministic_given_the_seed_and_leaves_the_global_rng_alone():
    X, y = tiny_data()
    state = torch.get_rng_state()
    one = train_feature_net(X, y, TINY, epochs=2, batch_size=16, seed=3, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    two = train_feature_net(X, y, TINY, epochs=2, batch_size=16, seed=3, device="cpu")
    other = train_feature_net(X, y, TINY, epochs=2, batch_size=16, seed=4, device="cpu")
    for name, tensor in one.state_dict().items():
        assert torch.equal(tensor, two.state_dict()[name]), name
    assert not torch.equal(one.head.weight, other.head.weight)
    with pytest.raises(ValueError, match="labels"):
        train_feature_net(X, y + 3, TINY, epochs=1)


def test_metric_registry():
    assert set(FEATURE_METRICS) == {"fid", "kid", "precision_recall"}
    with pytest.raises(ValueError, match="already registered"):
        register_metric("fid")(lambda real, fake, options: {})
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="unknown feature metrics"):
        feature_quality(rng.normal(size=(20, 2)), rng.normal(size=(20, 2)), metrics=["is"])


# --- on real Fashion-MNIST ------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(shared_data_dir) -> dict[str, np.ndarray]:
    """3000 Fashion-MNIST train images (for training), 1000 other train images, and 1000
    test images of Fashion-MNIST and of MNIST, with labels; uint8."""
    from anomaly.data.catalog import load_dataset

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENAD_DATA_DIR", str(shared_data_dir))
        patch.setenv("GENAD_DATA_MIRROR", "http://127.0.0.1:9/")
        train = load_dataset("fashion-mnist", split="train")
        test = load_dataset("fashion-mnist", split="test")
        mnist = load_dataset("mnist", split="test")
    rng = np.random.default_rng(0)
    order, pick = rng.permutation(len(train.X)), rng.permutation(len(test.X))[:1000]
    fit, other = order[:3000], order[3000:4000]
    return {
        "fit_X": train.X[fit],
        "fit_y": train.y[fit],
        "train_X": train.X[other],
        "test_X": test.X[pick],
        "test_y": test.y[pick],
        "mnist_X": mnist.X[pick],
    }


@pytest.fixture(scope="module")
def fashion_net(images) -> FeatureNet:
    torch.set_num_threads(1)
    config = FeatureNetConfig((1, 28, 28))
    return train_feature_net(images["fit_X"], images["fit_y"], config, epochs=2, seed=0)


def test_feature_net_learns_fashion_mnist(images, fashion_net):
    # 3000 images, 2 epochs reach ~.81 (the full 60k split reaches ~.90); the binomial std
    # on 1000 test images is ~.012.
    assert accuracy(fashion_net, images["test_X"], images["test_y"]) > 0.75


def test_fid_floor_is_far_below_fashion_vs_mnist(images, fashion_net):
    test = fashion_net.features(images["test_X"])
    floor = feature_quality(test, fashion_net.features(images["train_X"]), metrics=["fid"])
    options = QualityOptions(kid_subsets=10, kid_subset_size=500)
    other = feature_quality(test, fashion_net.features(images["mnist_X"]), options=options)
    assert floor["fid"] < 0.05 * other["fid"]
    assert other["kid"] > 3 * other["kid_std"] and other["recall"] < 0.1
    direct = image_quality(
        images["test_X"][:300], images["mnist_X"][:300], fashion_net, kid_subsets=5
    )
    assert set(direct) == {"fid", "kid", "kid_std", "precision", "recall"}
    expected = fid(
        fashion_net.features(images["test_X"][:300]), fashion_net.features(images["mnist_X"][:300])
    )
    assert direct["fid"] == pytest.approx(expected, rel=1e-12)


def test_real_vs_real_precision_and_recall_are_high(images, fashion_net):
    real = fashion_net.features(images["test_X"])
    precision, recall = precision_recall(real, fashion_net.features(images["train_X"]))
    assert precision > 0.8 and recall > 0.8


def test_classification_accuracy_score_separates_right_from_swapped_labels(images):
    # A class-inconsistent generator: every image labelled as the next class. The classifier
    # learns that renamed task as well as the right one (accuracy ~ `right` on it), so its
    # predictions hit the true class only through its errors, at most 1 - right; spread over
    # 9 wrong labels that is ~ (1 - right) / 9 ~ .03, allowing a few times that for errors
    # concentrated on similar classes.
    X, y = images["fit_X"], images["fit_y"]  # one epoch: right ~ .78
    real_X, real_y = images["test_X"], images["test_y"]
    right = classification_accuracy_score(X, y, real_X, real_y, epochs=1, seed=0)
    swapped = classification_accuracy_score(X, (y + 1) % 10, real_X, real_y, epochs=1, seed=0)
    assert right > 0.6
    assert swapped < min(0.1, 1.0 - right)
