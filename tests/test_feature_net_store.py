"""The feature net in a real (temporary) sqlite MLflow store: trained once, registered with the
alias `current`, reused without retraining, stored as state_dict + JSON (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.models import Model

from generative.metrics import FeatureNet
from pipelines import feature_net, servables, tracking

TINY = {"channels": [8], "feature_dim": 16}


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_data_dir):
    """MLFLOW_TRACKING_URI on a fresh sqlite store and the shared datasets (no downloads),
    for this module only; the previous mlflow URIs are restored afterwards."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('features') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("GENAD_DATA_DIR", str(shared_data_dir))
        patch.setenv("GENAD_DATA_MIRROR", "http://127.0.0.1:9/")
        tracking.configure()
        yield uri
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


@pytest.fixture(scope="module")
def registered(store) -> tuple[FeatureNet, feature_net.FeatureNetIdentity]:
    """The first ensure_feature_net call: trains on 300 train rows for one epoch."""
    torch.set_num_threads(1)
    return feature_net.ensure_feature_net(
        "fashion-mnist", epochs=1, train_rows=300, eval_rows=200, net_config=TINY
    )


def test_names_and_identity():
    assert feature_net.feature_net_name("fashion-mnist") == "genad-features-fashion-mnist"
    identity = feature_net.FeatureNetIdentity("genad-features-mnist", "4", "abc")
    assert identity.uri == "models:/genad-features-mnist/4"
    assert identity.as_params() == {
        "feature_net.name": "genad-features-mnist",
        "feature_net.version": "4",
    }


def test_first_call_trains_logs_and_registers_the_current_version(registered):
    net, identity = registered
    assert identity.name == "genad-features-fashion-mnist" and identity.version == "1"
    assert tracking.alias_version(identity.name, feature_net.CURRENT) == "1"
    assert tracking.alias_history(identity.name, "1")[-1]["what"] == "register"
    run = MlflowClient().get_run(identity.run_id)
    assert run.data.params["train_rows"] == "300" and run.data.params["epochs"] == "1"
    assert run.data.params["net.feature_dim"] == "16"
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert run.data.metrics["fid_floor"] >= 0.0
    version = MlflowClient().get_model_version(identity.name, identity.version)
    assert version.tags["genad.run_id"] == identity.run_id
    assert net.config.feature_dim == 16 and not net.training


def test_stored_model_is_a_state_dict_and_json_under_its_own_flavor(registered, tmp_path):
    _, identity = registered
    local = Path(mlflow.artifacts.download_artifacts(identity.uri, dst_path=str(tmp_path)))
    flavor = Model.load(str(local / "MLmodel")).flavors[servables.FEATURE_NET_FLAVOR]
    assert flavor["family"] == "feature_net"
    files = {p.name for p in local.iterdir()} - {"registered_model_meta"}  # written on download
    assert files == {"MLmodel", "checksums.json", "config.json", "model.pt"}  # nothing pickled
    document = json.loads((local / flavor["config"]).read_text())
    assert document["family"] == "feature_net" and document["config"]["channels"] == [8]
    state = torch.load(local / flavor["weights"], weights_only=True)
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    (local / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(ValueError, match="not a genad_feature_net model"):
        servables.read_feature_net_folder(local)


def test_an_existing_version_is_reused_without_training(registered, monkeypatch):
    net, identity = registered

    def no_training(*args, **kwargs):
        raise AssertionError("ensure_feature_net retrained although a version exists")

    monkeypatch.setattr(feature_net, "train_feature_net", no_training)
    again, same = feature_net.ensure_feature_net("fashion-mnist", epochs=5, seed=9)
    assert same == identity
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name(feature_net.FEATURE_EXPERIMENT).experiment_id]
    )
    assert len(runs) == 1
    images = torch.rand(5, 1, 28, 28)
    assert torch.equal(net.features(images), again.features(images))


def test_load_by_version_or_alias_and_clear_errors(registered):
    _, identity = registered
    by_alias, alias_identity = feature_net.load_feature_net("fashion-mnist", "current")
    by_number, number_identity = feature_net.load_feature_net("fashion-mnist", 1)
    assert alias_identity == number_identity == identity
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(by_alias.features(images), by_number.features(images))
    with pytest.raises(tracking.ModelNotFoundError, match="ensure_feature_net"):
        feature_net.load_feature_net("fashion-mnist", "champion")
    with pytest.raises(tracking.ModelNotFoundError, match="genad-features-mnist"):
        feature_net.load_feature_net("mnist")
    assert feature_net.current_version("genad-features-mnist") is None


def test_a_deliberate_new_version_moves_current(registered):
    _, first = registered
    _, second = feature_net.train_and_register_feature_net(
        "fashion-mnist", epochs=1, seed=1, train_rows=200, eval_rows=100, net_config=TINY
    )
    assert int(second.version) == int(first.version) + 1
    _, current = feature_net.ensure_feature_net("fashion-mnist")
    assert current == second
    old, old_identity = feature_net.load_feature_net("fashion-mnist", first.version)
    assert old_identity == first  # earlier versions stay loadable for old comparisons
    history = tracking.alias_history(first.name, first.version)
    assert [event["event"] for event in history] == ["set", "removed"]
