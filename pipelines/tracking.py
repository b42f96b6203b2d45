"""genad's MLflow glue: where the store is, runs and what they log, the registry and its aliases.

The rest of `pipelines/` reaches MLflow through this module (and `pipelines.servables`, which
logs models): it starts and reopens runs (`new_run`, `Run`), registers, resolves and lists
models, and names the store's errors (`STORE_ERRORS`).

Default store: sqlite at `<repo>/mlflow/mlflow.db` with artifacts under `<repo>/mlflow/artifacts`.
`MLFLOW_TRACKING_URI` overrides it (e.g. a shared `mlflow server`); for any sqlite URI the
artifacts go to an `artifacts/` folder beside the database file.

Registry rules: every training run registers a version and points `challenger` at it;
`champion` moves only through the evaluation gate. Each alias move is recorded as tags on the
versions involved (who, what, why, the metric compared): see `move_alias`.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from anomaly.errors import UserInputError
from anomaly.packaged.detector_pyfunc import DETECTOR_ARTIFACT

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = PROJECT_ROOT / "mlflow"
CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


# What the tracking store raises when it refuses or fails a request (e.g. an unreachable server).
STORE_ERRORS: tuple[type[Exception], ...] = (MlflowException,)


class ModelNotFoundError(UserInputError, LookupError):
    """A registered model, version or alias does not exist."""


def tracking_uri() -> str:
    """The tracking URI in effect: MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE / 'mlflow.db'}"


def configure() -> str:
    """Point mlflow at `tracking_uri()` (creating the embedded store's folder); return it."""
    uri = tracking_uri()
    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (a relative one taken from the working folder, as
    sqlite does), else None."""
    return Path(uri[len("sqlite:///") :]).resolve() if uri.startswith("sqlite:///") else None


def ensure_experiment(name: str) -> str:
    """Create experiment `name` if needed (artifacts beside a sqlite store); return its id."""
    configure()
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    database = sqlite_path(tracking_uri())
    location = (database.parent / "artifacts" / name).as_uri() if database else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently
        return mlflow.get_experiment_by_name(name).experiment_id


def ui_command() -> str:
    """The shell command that opens the MLflow UI on the store in use."""
    uri = tracking_uri()
    if sqlite_path(uri) is None:
        return f"open {uri} in a browser"
    return f"{sys.executable} -m mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


# --- runs ----------------------------------------------------------------------------------------
class Run:
    """One MLflow run, logged to by its id: safe from any thread, whether or not it is active."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.client = MlflowClient()

    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters (values as text, as `mlflow.log_params` does)."""
        items = [Param(key, str(value)) for key, value in params.items()]
        self.client.log_batch(self.run_id, params=items)

    def log_metrics(
        self, metrics: dict[str, float], *, step: int = 0, timestamp_ms: int | None = None
    ) -> None:
        """Log metrics at `step`, stamped `timestamp_ms` (milliseconds since the epoch; now by
        default)."""
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        items = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (values as text)."""
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        self.client.log_batch(self.run_id, tags=items)

    def log_dict(self, document: dict[str, Any], artifact: str) -> None:
        """A JSON (or YAML, by suffix) artifact."""
        self.client.log_dict(self.run_id, document, artifact)

    def log_configs(self, configs: dict[str, Any], resolved: dict[str, Any] | None = None) -> None:
        """Each config's fields as `<prefix>.<field>` params (`configs`: prefix -> a config with
        `to_dict`), then `resolved` as the artifact config/resolved.json."""
        for prefix, config in configs.items():
            self.log_params({f"{prefix}.{k}": v for k, v in config.to_dict().items()})
        if resolved is not None:
            self.log_dict(resolved, "config/resolved.json")

    def log_text(self, text: str, artifact: str) -> None:
        """A text artifact."""
        self.client.log_text(self.run_id, text, artifact)

    def log_image(self, image: np.ndarray, artifact: str) -> None:
        """An image artifact (e.g. a sample grid)."""
        self.client.log_image(self.run_id, image, artifact_file=artifact)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Every file of `folder`, under `artifact_path`."""
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_artifact(self, path: str | Path) -> None:
        """One file, at the root of the run's artifacts."""
        self.client.log_artifact(self.run_id, str(path))

    def log_numpy_input(self, features: np.ndarray, *, context: str, **dataset: Any) -> None:
        """The dataset of `features` (keywords of `mlflow.data.from_numpy`: targets, source,
        name, digest) as an input of the run, which must be the active one (in `new_run`)."""
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError(f"run {self.run_id} is not the active run")
        with warnings.catch_warnings():  # mlflow registers the local source type twice
            warnings.simplefilter("ignore", UserWarning)
            logged = mlflow.data.from_numpy(features, **dataset)
        mlflow.log_input(logged, context=context)

    def logged_steps(self, prefix: str) -> set[int]:
        """The steps at which the run has metrics named `<prefix>...` (one such metric's)."""
        keys = [k for k in self.client.get_run(self.run_id).data.metrics if k.startswith(prefix)]
        history = self.client.get_metric_history(self.run_id, keys[0]) if keys else []
        return {metric.step for metric in history}

    def mark_diverged(self, message: str, metrics: dict[str, float] | None = None) -> None:
        """Log `metrics` (e.g. the epochs run) and `message` as `divergence.txt`, tag the run
        `genad.diverged` and mark it FAILED."""
        self.log_metrics(metrics or {})
        self.log_text(message, "divergence.txt")
        self.client.set_tag(self.run_id, "genad.diverged", "true")
        self.client.set_terminated(self.run_id, status="FAILED")

    def check_exists(self) -> None:
        """Raise the store's error when the store has no such run."""
        self.client.get_run(self.run_id)


@contextlib.contextmanager
def new_run(experiment: str, run_name: str, tags: dict[str, Any]) -> Iterator[Run]:
    """Start a run named `run_name` in `experiment` (created if needed) with `tags`; the run is
    the active one inside the block and ends with it (FINISHED, or FAILED on an error)."""
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(tags)
        yield Run(run.info.run_id)


def find_runs(experiment: str, filter_string: str, order_by: list[str], limit: int) -> list:
    """At most `limit` runs of `experiment` matching `filter_string` (MLflow's search syntax),
    sorted by `order_by`; [] when the experiment does not exist."""
    configure()
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return MlflowClient().search_runs(
        [found.experiment_id], filter_string, order_by=order_by, max_results=limit
    )


def finished_run(experiment: str, run_name: str, tags: dict[str, str]) -> Run:
    """A new run of `experiment`, ended at once (FINISHED), for logging to later by its id."""
    client = MlflowClient()
    created = client.create_run(ensure_experiment(experiment), run_name=run_name, tags=tags)
    client.set_terminated(created.info.run_id)
    return Run(created.info.run_id)


# --- the registry ------------------------------------------------------------------------------
def register(
    model_uri: str, model_name: str, *, run_id: str, reason: str, alias: str = CHALLENGER
) -> ModelVersion:
    """Register a new version of `model_name` (tagged with the run) and point `alias` at it."""
    configure()
    version = mlflow.register_model(model_uri, model_name, tags={"genad.run_id": run_id})
    move_alias(model_name, alias, version.version, reason=reason, action="register")
    return MlflowClient().get_model_version(model_name, version.version)


def move_alias(
    model_name: str,
    alias: str,
    version: str | int,
    *,
    reason: str,
    action: str,
    metric: dict[str, Any] | None = None,
) -> None:
    """Point `alias` at `version`, recording the move on the versions involved.

    The new holder gets a tag `genad.alias.<alias>.<time ns>` holding JSON with who made the
    move (user@host), what made it (`action`), why (`reason`), the metric compared, and the
    version that held the alias before; the old holder gets a matching "removed" record.
    Tag keys are unique per move, so concurrent moves never overwrite each other's records,
    and moves of one alias are serialised (`alias_lock`), so each record's previous version is
    the one the move really replaced.
    """
    with alias_lock(model_name, alias):
        _move_alias(model_name, alias, version, reason=reason, action=action, metric=metric)


@contextlib.contextmanager
def alias_lock(model_name: str, alias: str) -> Iterator[None]:
    """An exclusive lock on one (store, model, alias) for the processes of this machine (an
    flock on a file under the temp dir). Moves through a shared tracking server from several
    machines are not serialised by it."""
    key = hashlib.sha256(f"{tracking_uri()}|{model_name}|{alias}".encode()).hexdigest()[:20]
    path = Path(tempfile.gettempdir()) / "genad-locks" / f"alias-{key}.lock"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _move_alias(
    model_name: str,
    alias: str,
    version: str | int,
    *,
    reason: str,
    action: str,
    metric: dict[str, Any] | None,
) -> None:
    client = MlflowClient()
    previous = alias_version(model_name, alias)
    client.set_registered_model_alias(model_name, alias, str(version))
    stamp = time.time_ns()
    record = {
        "alias": alias,
        "event": "set",
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "what": action,
        "why": reason,
        "metric": metric or {},
        "previous_version": previous,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp / 1e9)),
    }
    client.set_model_version_tag(
        model_name, str(version), f"genad.alias.{alias}.{stamp}", json.dumps(record)
    )
    if previous is not None and previous != str(version):
        removed = {**record, "event": "removed", "replaced_by": str(version)}
        client.set_model_version_tag(
            model_name, previous, f"genad.alias.{alias}.{stamp}", json.dumps(removed)
        )


def alias_history(model_name: str, version: str | int) -> list[dict[str, Any]]:
    """The alias records on one version, oldest first."""
    tags = MlflowClient().get_model_version(model_name, str(version)).tags
    events = [(k, v) for k, v in tags.items() if k.startswith("genad.alias.")]
    return [json.loads(v) for _, v in sorted(events, key=lambda kv: int(kv[0].rsplit(".", 1)[1]))]


def alias_version(model_name: str, alias: str) -> str | None:
    """The version `alias` points at, or None."""
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version, downloaded and loaded."""

    name: str
    version: str
    run_id: str | None
    local_dir: Path
    bundle_dir: Path
    flag_rule: str | None = None  # overrides of the detector's own rule for one scoring run
    flag_level: float | None = None


def resolve_model(
    model_uri: str, *, dst: str | os.PathLike | None = None, artifact: str = DETECTOR_ARTIFACT
) -> ResolvedModel:
    """Download `models:/<name>@<alias>` or `models:/<name>/<version>` and locate its bundle:
    the model's `artifact` folder (the detector, or `GENERATOR_ARTIFACT` for a generator)."""
    configure()
    match = MODEL_URI.match(model_uri)
    if match is None:
        raise UserInputError(
            f"model URI {model_uri!r} is not of the form models:/<name>@<alias> or "
            "models:/<name>/<version>"
        )
    name = match["name"]
    version = find_version(name, alias=match["alias"], number=match["version"])
    target = Path(dst or tempfile.mkdtemp(prefix="genad-model-"))
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}", dst_path=str(target)
        )
    )
    bundle_dir = local / "artifacts" / artifact
    if not bundle_dir.is_dir():
        raise ModelNotFoundError(f"{model_uri} is not a genad {artifact} model (no '{artifact}')")
    return ResolvedModel(name, str(version.version), version.run_id, local, bundle_dir)


def find_version(name: str, *, alias: str | None = None, number: str | None = None) -> ModelVersion:
    """Version `number` of model `name`, or the one `alias` points at; ModelNotFoundError
    naming what exists when there is no such model, version or alias."""
    configure()
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        known = sorted(m.name for m in client.search_registered_models())
        raise ModelNotFoundError(
            f"no registered model {name!r} in {tracking_uri()}; known: {known or 'none'}"
        ) from error
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, number)
    except MlflowException as error:
        aliases = client.get_registered_model(name).aliases
        what = f"alias {alias!r}" if alias else f"version {number}"
        raise ModelNotFoundError(
            f"model {name!r} has no {what}; its aliases: {aliases or 'none'}"
        ) from error


def latest_version(name: str) -> str | None:
    """The highest version number of model `name`, or None (no versions, or no such model)."""
    configure()
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    return str(max(int(v.version) for v in versions)) if versions else None


def tag_version(model_name: str, version: str | int, key: str, value: str) -> None:
    """Set a tag on one model version."""
    MlflowClient().set_model_version_tag(model_name, str(version), key, value)


def list_models() -> list[dict[str, Any]]:
    """One row per registered model: versions, aliases and the champion's key metrics."""
    configure()
    client = MlflowClient()
    rows = []
    for model in client.search_registered_models(max_results=1000):
        versions = client.search_model_versions(f"name='{model.name}'")
        row: dict[str, Any] = {
            "name": model.name,
            "versions": len(versions),
            "latest": max((int(v.version) for v in versions), default=None),
            "aliases": {a: str(v) for a, v in sorted(model.aliases.items())},
        }
        champion = model.aliases.get(CHAMPION)
        if champion is not None:
            run_id = client.get_model_version(model.name, champion).run_id
            metrics = client.get_run(run_id).data.metrics if run_id else {}
            row["champion_metrics"] = {k: v for k, v in metrics.items() if k.startswith("val_")}
        rows.append(row)
    return rows
