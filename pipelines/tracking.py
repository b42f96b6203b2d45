"""All of genad's MLflow glue: where the store is, logging models, the registry and its aliases.

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
import importlib.metadata
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from anomaly.generation import SAMPLE_COLUMNS, GeneratorBundle, load_generator
from anomaly.generator_pyfunc import GENERATOR_ARTIFACT
from anomaly.pyfunc import DETECTOR_ARTIFACT
from anomaly.scoring import ScoringModel, load_bundle
from anomaly.translation import (
    DEFAULT_DIRECTION,
    DIRECTION_COLUMN,
    TranslatorBundle,
    load_translator,
)
from anomaly.translator_pyfunc import TRANSLATOR_ARTIFACT

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = PROJECT_ROOT / "mlflow"
CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
CODE_PACKAGES = ("anomaly", "generative")
# What genad's code shipped inside a model (CODE_PACKAGES) imports while the model loads and
# predicts, per kind of model: its requirements.txt pins these (`model_requirements`), and MLflow
# adds mlflow itself, pinned. Their own dependencies (scikit-learn's joblib and threadpoolctl,
# torch's) follow from these pins. pillow: a detector with the complexity correction and the png
# compressor encodes PNGs while scoring. tests/test_model_env.py checks the lists against what a
# fresh interpreter really imports, and installs them into a fresh venv.
SCORING_PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "torch")
MODEL_PACKAGES = {
    "detector": (*SCORING_PACKAGES, "pillow"),
    "generator": SCORING_PACKAGES,
    "translator": SCORING_PACKAGES,
}


class ModelNotFoundError(LookupError):
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
    """The database file of a sqlite:/// URI, else None."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


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


# --- logging models ---------------------------------------------------------------------------
def model_requirements(kind: str) -> list[str]:
    """The pip requirements logged with a model of `kind` (a key of MODEL_PACKAGES):
    `name==<installed version>`, the versions that trained and logged it, as MLflow's own
    requirement inference writes them. A local version label (torch's "+cpu") is dropped, as
    MLflow does, so that PyPI can resolve the pin (docs/platform.md: getting the CPU build)."""
    return sorted(
        f"{name}=={importlib.metadata.version(name).split('+', 1)[0]}"
        for name in MODEL_PACKAGES[kind]
    )


def log_pyfunc_model(
    bundle_dir: Path, model_name: str, example_rows: np.ndarray, *, name: str = "model"
) -> mlflow.models.model.ModelInfo:
    """Log the bundle as a pyfunc model (models from code, genad's code shipped inside) in the
    active run, with a signature and `example_rows` as the input example."""
    bundle = load_bundle(bundle_dir)
    example = example_frame(bundle, example_rows)
    signature = model_signature(bundle, example)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PROJECT_ROOT / "anomaly" / "pyfunc_entry.py"),
        artifacts={DETECTOR_ARTIFACT: str(bundle_dir)},
        code_paths=[str(PROJECT_ROOT / package) for package in CODE_PACKAGES],
        model_config={"model_name": model_name},
        signature=signature,
        input_example=example,
        pip_requirements=model_requirements("detector"),
    )


def model_signature(bundle: ScoringModel, example: pd.DataFrame) -> ModelSignature:
    """Input: the feature columns as doubles; output: the columns `predict` returns."""
    output = bundle.score_frame(example)
    output["model_name"] = bundle.name
    output["model_version"] = str(bundle.version)
    return infer_signature(example.astype("float64"), output)


def example_frame(bundle: ScoringModel, rows: np.ndarray) -> pd.DataFrame:
    """A small input example: `rows` flattened into the model's feature columns."""
    flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    return pd.DataFrame(flat, columns=bundle.feature_names)


def log_generator_model(
    generator_dir: Path, model_name: str, *, name: str = "model"
) -> mlflow.models.model.ModelInfo:
    """Log a generator folder (`anomaly.generation.save_generator`) as a pyfunc model (models
    from code, genad's code shipped inside) in the active run, with a signature and a small
    request frame as the input example."""
    bundle = load_generator(generator_dir)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PROJECT_ROOT / "anomaly" / "generator_pyfunc_entry.py"),
        artifacts={GENERATOR_ARTIFACT: str(generator_dir)},
        code_paths=[str(PROJECT_ROOT / package) for package in CODE_PACKAGES],
        model_config={"model_name": model_name},
        signature=generator_signature(bundle),
        input_example=generator_example(bundle),
        pip_requirements=model_requirements("generator"),
    )


def generator_signature(bundle: GeneratorBundle) -> ModelSignature:
    """Requests (n, seed, class, truncation; mix_seed, mix_layer for a StyleGAN) in; samples
    (request, class, seed, sample_index, the feature columns) out. `class` is required exactly
    when the model is conditional."""
    columns = [
        ColSpec("long", "n"),
        ColSpec("long", "seed"),
        ColSpec("long", "class", required=bundle.conditional),
        ColSpec("double", "truncation", required=False),
    ]
    if bundle.styled:  # StyleGAN: truncation is psi, and styles can be mixed. MLflow refuses
        # NaN in a long column (and ints in a double one), so a frame mixes every row or none:
        # mix_layer = num_layers leaves a row unmixed
        columns += [ColSpec("long", c, required=False) for c in ("mix_seed", "mix_layer")]
    inputs = Schema(columns)
    meta = [ColSpec("long", c, required=c != "class") for c in SAMPLE_COLUMNS]
    features = [ColSpec("double", c) for c in bundle.feature_names]
    return ModelSignature(inputs=inputs, outputs=Schema(meta + features))


def generator_example(bundle: GeneratorBundle) -> pd.DataFrame:
    """Two requests of two samples (the first and last class when conditional)."""
    example = pd.DataFrame({"n": [2, 2], "seed": [0, 1]})
    if bundle.conditional:
        example["class"] = [bundle.classes[0], bundle.classes[-1]]
    return example


def log_translator_model(
    translator_dir: Path, model_name: str, *, name: str = "model"
) -> mlflow.models.model.ModelInfo:
    """Log a translator folder (`anomaly.translation.save_translator`) as a pyfunc model
    (models from code, genad's code shipped inside) in the active run, with a signature (the
    pixel columns and an optional `direction` column in, the pixel columns out, a `direction`
    param) and two blank images as the input example."""
    bundle = load_translator(translator_dir)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PROJECT_ROOT / "anomaly" / "translator_pyfunc_entry.py"),
        artifacts={TRANSLATOR_ARTIFACT: str(translator_dir)},
        code_paths=[str(PROJECT_ROOT / package) for package in CODE_PACKAGES],
        model_config={"model_name": model_name},
        signature=translator_signature(bundle),
        input_example=pd.DataFrame(np.zeros((2, len(bundle.feature_names))),
                                   columns=bundle.feature_names),
        pip_requirements=model_requirements("translator"),
    )  # fmt: skip


def translator_signature(bundle: TranslatorBundle) -> ModelSignature:
    """Images (pixel columns as doubles, optional `direction` string) in; translated pixel
    columns out; the param `direction` ("a_to_b" or "b_to_a") for frames without the column."""
    pixels = [ColSpec("double", c) for c in bundle.feature_names]
    inputs = Schema([*pixels, ColSpec("string", DIRECTION_COLUMN, required=False)])
    params = ParamSchema([ParamSpec("direction", "string", DEFAULT_DIRECTION)])
    return ModelSignature(inputs=inputs, outputs=Schema(list(pixels)), params=params)


# --- the registry ------------------------------------------------------------------------------
def register(model_uri: str, model_name: str, *, run_id: str, reason: str) -> ModelVersion:
    """Register a new version of `model_name` and point `challenger` at it."""
    configure()
    version = mlflow.register_model(model_uri, model_name, tags={"genad.run_id": run_id})
    move_alias(model_name, CHALLENGER, version.version, reason=reason, action="register")
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
        raise ValueError(
            f"model URI {model_uri!r} is not of the form models:/<name>@<alias> or "
            "models:/<name>/<version>"
        )
    name = match["name"]
    version = _lookup_version(name, match["alias"], match["version"])
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


def _lookup_version(name: str, alias: str | None, number: str | None) -> ModelVersion:
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
