"""An image model through the platform: trained by the flow (with the likelihood-ratio
correction), its plots logged, and scored from an image folder, an npz and the pyfunc
(flattened pixel columns) with the same numbers; the corrected score and the typicality test
come out of the registered model and the batch flow."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from anomaly.packaged.scoring import load_bundle
from anomaly.typicality import TypicalityTest
from pipelines import tracking
from pipelines.promote import evaluate_and_promote_flow
from pipelines.score import batch_score_flow
from pipelines.train import train_vae_flow

SIDE = 8


def stripes(n: int, vertical: bool, rng: np.random.Generator) -> np.ndarray:
    """(n, 8, 8) uint8 images: a bright stripe at a random position, plus noise."""
    images = rng.integers(0, 40, size=(n, SIDE, SIDE)).astype(np.uint8)
    for image, position in zip(images, rng.integers(0, SIDE, size=n), strict=True):
        if vertical:
            image[:, position] = 230
        else:
            image[position, :] = 230
    return images


@pytest.fixture(scope="module")
def image_model(prefect_harness, mlflow_store, tmp_path_factory) -> dict:
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("images")
    X = np.concatenate([stripes(360, False, rng), stripes(40, True, rng)])[:, np.newaxis]
    y = np.r_[np.zeros(360, int), np.ones(40, int)]
    np.savez(folder / "train.npz", X=X, y=y)
    config = {"epochs": 3, "backbone": "mlp", "hidden_dims": [32], "latent_dim": 2}
    config |= {"n_samples": 4, "batch_size": 64, "target_fpr": 0.1}
    config |= {"correction": "likelihood_ratio", "background_radius": 1, "background_epochs": 2}
    trained = train_vae_flow(str(folder / "train.npz"), config, model_name="image-test")
    assert evaluate_and_promote_flow("image-test", str(folder / "train.npz"))["promoted"]
    test = stripes(12, False, rng)
    test_folder = folder / "batch"
    test_folder.mkdir()
    for i, image in enumerate(test):
        Image.fromarray(image, mode="L").save(test_folder / f"img{i:02d}.png")
    np.savez(folder / "batch.npz", X=test)
    return {**trained, "uri": "models:/image-test@champion", "folder": folder, "test": test}


def test_image_run_logs_reconstructions_and_prior_samples(image_model):
    paths = {a.path for a in MlflowClient().list_artifacts(image_model["run_id"], "plots")}
    assert {"plots/reconstructions.png", "plots/prior_samples.png", "plots/roc.png"} <= paths


def test_image_folder_npz_and_pyfunc_agree(image_model, tmp_path):
    folder = image_model["folder"]
    from_folder = tmp_path / "folder.parquet"
    from_npz = tmp_path / "npz.parquet"
    batch_score_flow(image_model["uri"], str(folder / "batch"), str(from_folder))
    batch_score_flow(image_model["uri"], str(folder / "batch.npz"), str(from_npz))
    scored = pd.read_parquet(from_folder)
    assert list(scored["file"]) == [f"img{i:02d}.png" for i in range(12)]
    np.testing.assert_array_equal(scored["log_px"], pd.read_parquet(from_npz)["log_px"])
    bundle = load_bundle(tracking.resolve_model(image_model["uri"]).bundle_dir)
    pixels = pd.DataFrame(
        image_model["test"].reshape(12, -1).astype(float), columns=bundle.feature_names
    )
    assert bundle.feature_names[:2] == ["pixel0", "pixel1"] and len(bundle.feature_names) == 64
    np.testing.assert_allclose(bundle.score_frame(pixels)["log_px"], scored["log_px"], rtol=1e-6)
    # 8-bit likelihood: log p(x) <= 0 nats for every image (a probability, not a density).
    assert (scored["log_px"] <= 0).all()


def test_corrected_score_and_typicality_come_out_of_the_registry(image_model, tmp_path):
    output = tmp_path / "scores.parquet"
    summary = batch_score_flow(
        image_model["uri"], str(image_model["folder"] / "batch.npz"), str(output),
        typicality_group_size=5,
    )  # fmt: skip
    scored = pd.read_parquet(output)
    detector = load_bundle(tracking.resolve_model(image_model["uri"]).bundle_dir).detector
    terms = detector.score_terms(image_model["test"][:, np.newaxis])
    ratio = terms["log_px"] - terms["background_log_px"]
    np.testing.assert_allclose(scored["normality"], ratio, rtol=1e-6)
    np.testing.assert_allclose(scored["log_px"], terms["log_px"], rtol=1e-6)
    np.testing.assert_allclose(scored["score"], detector.offset_ - scored["normality"])
    consumer = mlflow.pyfunc.load_model(image_model["uri"])
    pixels = pd.DataFrame(
        image_model["test"].reshape(12, -1).astype(float), columns=[f"pixel{i}" for i in range(64)]
    )
    served = consumer.predict(pixels)
    np.testing.assert_allclose(served["normality"], ratio, rtol=1e-6)
    np.testing.assert_allclose(served["p_value"], scored["p_value"])
    groups = pd.read_parquet(str(output) + ".typicality.parquet")
    test = TypicalityTest(detector.calibration_scores_, seed=detector.random_state)
    expected = test.test_groups(scored["normality"].to_numpy(), 5)
    np.testing.assert_array_equal(groups["rows"], [5, 5, 2])
    np.testing.assert_allclose(groups["p_value"], expected["p_value"])
    assert summary["typicality"]["groups"] == 3
    assert summary["typicality"]["atypical_groups"] == int((expected["p_value"] <= 0.05).sum())
