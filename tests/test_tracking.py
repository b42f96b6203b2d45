"""The MLflow glue against a real sqlite store: store layout, alias records, the gate's rule."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines import servables, tracking
from pipelines.promote import decide


def test_default_store_is_sqlite_in_the_repo_mlflow_folder(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri()
    assert uri == f"sqlite:///{tracking.PROJECT_ROOT / 'mlflow' / 'mlflow.db'}"
    assert not list((tracking.PROJECT_ROOT / "mlflow").glob("*.py")), "no Python in mlflow/"
    assert "-m mlflow ui --backend-store-uri " + uri in tracking.ui_command()


def test_experiment_artifacts_live_beside_the_sqlite_database(mlflow_store):
    experiment_id = tracking.ensure_experiment("layout-check")
    location = mlflow.get_experiment(experiment_id).artifact_location
    database = tracking.sqlite_path(mlflow_store)
    assert location == (database.parent / "artifacts" / "layout-check").as_uri()
    assert tracking.ensure_experiment("layout-check") == experiment_id  # idempotent


def test_a_relative_sqlite_uri_is_taken_from_the_working_folder(tmp_path, monkeypatch):
    # MLflow's docs write the store as sqlite:///mlflow.db: relative to the working folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///relative-store/mlflow.db")
    try:
        experiment_id = tracking.ensure_experiment("relative-store")
        location = mlflow.get_experiment(experiment_id).artifact_location
    finally:  # back to the session's store for the tests after this one
        monkeypatch.undo()
        tracking.configure()
    assert (tmp_path / "relative-store" / "mlflow.db").is_file()
    assert location == (tmp_path / "relative-store" / "artifacts" / "relative-store").as_uri()


def _dummy_versions(name: str, count: int) -> list[str]:
    """Register `count` versions of a trivial logged model (registry bookkeeping only)."""
    client = MlflowClient()
    experiment_id = tracking.ensure_experiment("registry-bookkeeping")
    versions = []
    for _ in range(count):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_text("x", "placeholder.txt")
        source = f"{run.info.artifact_uri}/placeholder.txt"
        if not client.search_registered_models(f"name='{name}'"):
            client.create_registered_model(name)
        versions.append(client.create_model_version(name, source, run.info.run_id).version)
    return [str(v) for v in versions]


def test_alias_moves_are_recorded_on_both_versions(mlflow_store):
    one, two = _dummy_versions("alias-records", 2)
    tracking.move_alias("alias-records", "champion", one, reason="first", action="test")
    metric = {"metric": "auroc", "challenger_value": 0.9, "champion_value": 0.8}
    tracking.move_alias(
        "alias-records", "champion", two, reason="better", action="test", metric=metric
    )
    assert tracking.alias_version("alias-records", "champion") == two
    new = tracking.alias_history("alias-records", two)
    old = tracking.alias_history("alias-records", one)
    assert [e["event"] for e in new] == ["set"]
    assert new[0]["previous_version"] == one and new[0]["why"] == "better"
    assert new[0]["metric"] == metric and "@" in new[0]["by"] and new[0]["what"] == "test"
    assert [e["event"] for e in old] == ["set", "removed"]
    assert old[1]["replaced_by"] == two
    tags = MlflowClient().get_model_version("alias-records", two).tags
    assert all(json.loads(v) for k, v in tags.items() if k.startswith("genad.alias."))


def test_no_deprecated_stages_are_used(mlflow_store):
    (one,) = _dummy_versions("no-stages", 1)
    tracking.move_alias("no-stages", "challenger", one, reason="r", action="test")
    assert MlflowClient().get_model_version("no-stages", one).current_stage == "None"


def test_unknown_model_or_alias_names_what_exists(mlflow_store):
    (one,) = _dummy_versions("known-model", 1)
    tracking.move_alias("known-model", "challenger", one, reason="r", action="test")
    with pytest.raises(tracking.ModelNotFoundError, match="known-model"):
        tracking.resolve_model("models:/no-such-model@champion")
    with pytest.raises(tracking.ModelNotFoundError, match="challenger"):
        tracking.resolve_model("models:/known-model@champion")
    with pytest.raises(ValueError, match="models:/<name>@<alias>"):
        tracking.resolve_model("runs:/abc/model")


def test_models_list_shows_versions_and_aliases(mlflow_store):
    _dummy_versions("listed-model", 2)
    tracking.move_alias("listed-model", "challenger", "2", reason="r", action="test")
    rows = {row["name"]: row for row in tracking.list_models()}
    assert rows["listed-model"]["versions"] == 2
    assert rows["listed-model"]["latest"] == 2
    assert rows["listed-model"]["aliases"] == {"challenger": "2"}


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "promoted"),
    [
        (("2", 0.80), None, 0.0, True),  # first model
        (("2", 0.80), ("1", 0.79), 0.0, True),
        (("2", 0.80), ("1", 0.80), 0.0, False),  # a tie does not move the champion
        (("2", 0.80), ("1", 0.79), 0.02, False),  # better, but not by the margin
        (("2", 0.85), ("1", 0.79), 0.02, True),
        (("1", 0.85), ("1", 0.85), 0.0, False),  # already champion
    ],
)
def test_gate_rule(challenger, champion, margin, promoted):
    decision = decide("auroc", challenger, champion, margin)
    assert decision.promoted is promoted
    assert decision.reason


def test_mlflow_folder_holds_no_python_package():
    folder = Path(tracking.PROJECT_ROOT / "mlflow")
    assert not (folder / "__init__.py").exists()
    assert mlflow.__file__.endswith("site-packages/mlflow/__init__.py")


@pytest.mark.parametrize("kind", sorted(servables.SERVABLES))
def test_each_servable_kind_has_an_entry_file_that_leaves_mlflow_to_the_base(kind):
    servable = servables.SERVABLES[kind]
    entry = servable.entry_path
    imported = {
        node.module
        for node in ast.walk(ast.parse(entry.read_text()))
        if isinstance(node, ast.ImportFrom)
    }
    assert "anomaly.packaged.pyfunc_base" in imported and not any("mlflow" in m for m in imported)
    assert not any(isinstance(n, ast.Import) for n in ast.walk(ast.parse(entry.read_text())))
    assert servables.model_requirements(servable.requirements)  # a key of MODEL_PACKAGES
