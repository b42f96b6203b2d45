"""The models genad logs to MLflow: the servable pyfunc kinds in one table, and the feature net's
own flavor.

Servable kinds (`SERVABLES`): a detector, a generator and a translator, each a folder of
state_dict + JSON logged as "models from code" (its entry file under `anomaly/packaged/`) with
genad's code shipped inside, a signature, an input example and pinned requirements. `log_model` logs
any of them into the active run; `publish` logs one into a run and registers it as
`challenger`.

The feature net (`pipelines.feature_net`) is stored as the MLflow flavor `genad_feature_net`:
an `MLmodel` file beside `config.json` and `model.pt`; `save_model` follows MLflow's
flavor-module convention (this module is the flavor module given to `Model.log`).
"""

from __future__ import annotations

import importlib.metadata
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.models.model import MLMODEL_FILE_NAME, ModelInfo
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from anomaly.packaged.detector_pyfunc import DETECTOR_ARTIFACT
from anomaly.packaged.generation import SAMPLE_COLUMNS, GeneratorBundle, load_generator
from anomaly.packaged.generator_pyfunc import GENERATOR_ARTIFACT
from anomaly.packaged.scoring import ScoringModel, load_bundle
from anomaly.packaged.translation import (
    DEFAULT_DIRECTION,
    DIRECTION_COLUMN,
    TranslatorBundle,
    load_translator,
)
from anomaly.packaged.translator_pyfunc import TRANSLATOR_ARTIFACT
from generative import registry
from generative.metrics import FeatureNet
from generative.registry import read_model_files, write_model_files
from pipelines import tracking

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
FEATURE_NET_FLAVOR = "genad_feature_net"


def model_requirements(kind: str) -> list[str]:
    """The pip requirements logged with a model of `kind` (a key of MODEL_PACKAGES):
    `name==<installed version>`, the versions that trained and logged it, as MLflow's own
    requirement inference writes them. A local version label (torch's "+cpu") is dropped, as
    MLflow does, so that PyPI can resolve the pin (docs/platform.md: getting the CPU build)."""
    return sorted(
        f"{name}=={importlib.metadata.version(name).split('+', 1)[0]}"
        for name in MODEL_PACKAGES[kind]
    )


# --- the detector -----------------------------------------------------------------------------
def detector_example(bundle: ScoringModel, rows: np.ndarray | None) -> pd.DataFrame:
    """A small input example: `rows` flattened into the model's feature columns."""
    if rows is None:
        raise ValueError("a detector is logged with example rows (example_rows)")
    flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    return pd.DataFrame(flat, columns=bundle.feature_names)


def detector_signature(bundle: ScoringModel, example: pd.DataFrame) -> ModelSignature:
    """Input: the feature columns as doubles; output: the columns `predict` returns."""
    output = bundle.score_frame(example)
    output["model_name"] = bundle.name
    output["model_version"] = str(bundle.version)
    return infer_signature(example.astype("float64"), output)


# --- the generator ----------------------------------------------------------------------------
def generator_example(bundle: GeneratorBundle, rows: np.ndarray | None) -> pd.DataFrame:
    """Two requests of two samples (the first and last class when conditional)."""
    example = pd.DataFrame({"n": [2, 2], "seed": [0, 1]})
    if bundle.conditional:
        example["class"] = [bundle.classes[0], bundle.classes[-1]]
    return example


def generator_signature(bundle: GeneratorBundle, example: pd.DataFrame) -> ModelSignature:
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
    meta = [ColSpec("long", c, required=c != "class") for c in SAMPLE_COLUMNS]
    features = [ColSpec("double", c) for c in bundle.feature_names]
    return ModelSignature(inputs=Schema(columns), outputs=Schema(meta + features))


# --- the translator ---------------------------------------------------------------------------
def translator_example(bundle: TranslatorBundle, rows: np.ndarray | None) -> pd.DataFrame:
    """Two blank images."""
    return pd.DataFrame(np.zeros((2, len(bundle.feature_names))), columns=bundle.feature_names)


def translator_signature(bundle: TranslatorBundle, example: pd.DataFrame) -> ModelSignature:
    """Images (pixel columns as doubles, optional `direction` string) in; translated pixel
    columns out; the param `direction` ("a_to_b" or "b_to_a") for frames without the column."""
    pixels = [ColSpec("double", c) for c in bundle.feature_names]
    inputs = Schema([*pixels, ColSpec("string", DIRECTION_COLUMN, required=False)])
    params = ParamSchema([ParamSpec("direction", "string", DEFAULT_DIRECTION)])
    return ModelSignature(inputs=inputs, outputs=Schema(list(pixels)), params=params)


# --- the table --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Servable:
    """How one kind of model is logged: its models-from-code entry file (in anomaly/packaged/), the
    artifact holding its folder, the folder's loader, the input example and signature builders
    (`example(bundle, example_rows)`, `signature(bundle, example)`) and its requirements (a key
    of MODEL_PACKAGES)."""

    entry: str
    artifact: str
    load: Callable[[Path], Any]
    example: Callable[[Any, np.ndarray | None], pd.DataFrame]
    signature: Callable[[Any, pd.DataFrame], ModelSignature]
    requirements: str

    @property
    def entry_path(self) -> Path:
        """The entry file's path in this checkout."""
        return tracking.PROJECT_ROOT / "anomaly" / "packaged" / self.entry


SERVABLES: dict[str, Servable] = {
    "detector": Servable("detector_pyfunc_entry.py", DETECTOR_ARTIFACT, load_bundle,
                         detector_example, detector_signature, "detector"),
    "generator": Servable("generator_pyfunc_entry.py", GENERATOR_ARTIFACT, load_generator,
                          generator_example, generator_signature, "generator"),
    "translator": Servable("translator_pyfunc_entry.py", TRANSLATOR_ARTIFACT, load_translator,
                           translator_example, translator_signature, "translator"),
}  # fmt: skip


def log_model(
    kind: str,
    folder: Path,
    model_name: str,
    *,
    example_rows: np.ndarray | None = None,
    name: str = "model",
) -> ModelInfo:
    """Log a model folder of `kind` (a key of SERVABLES) as a pyfunc model (models from code,
    genad's code shipped inside) in the active run, with its signature and input example (a
    detector's example: `example_rows`)."""
    servable = SERVABLES[kind]
    bundle = servable.load(Path(folder))
    example = servable.example(bundle, example_rows)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(servable.entry_path),
        artifacts={servable.artifact: str(folder)},
        code_paths=[str(tracking.PROJECT_ROOT / package) for package in CODE_PACKAGES],
        model_config={"model_name": model_name},
        signature=servable.signature(bundle, example),
        input_example=example,
        pip_requirements=model_requirements(servable.requirements),
    )


def publish(
    kind: str, folder: Path, model_name: str, run_id: str, *, example_rows: np.ndarray | None = None
) -> int:
    """Log a model folder of `kind` into run `run_id` (`log_model`), register it as a new
    version of `model_name` and point `challenger` at it; the version number."""
    with mlflow.start_run(run_id=run_id):
        info = log_model(kind, folder, model_name, example_rows=example_rows)
    version = tracking.register(
        info.model_uri, model_name, run_id=run_id, reason=f"trained by run {run_id}"
    )
    return int(version.version)


# --- the feature net's flavor -----------------------------------------------------------------
def save_model(path: str | Path, mlflow_model: Model | None = None, *, net: FeatureNet) -> None:
    """Write `net` as an MLflow model folder (MLmodel, config.json, model.pt) at a new `path`."""
    folder = Path(path)
    folder.mkdir(parents=True)
    write_model_files(net, folder)
    mlflow_model = mlflow_model or Model()
    mlflow_model.add_flavor(
        FEATURE_NET_FLAVOR,
        family=net.family,
        config=registry.CONFIG_FILE,
        weights=registry.WEIGHTS_FILE,
        torch=str(torch.__version__),
    )
    mlflow_model.save(str(folder / MLMODEL_FILE_NAME))


def log_feature_net(net: FeatureNet) -> ModelInfo:
    """Log `net` under the flavor `genad_feature_net` (as `feature_net`) in the active run."""
    module = sys.modules[__name__]
    return Model.log(None, module, name="feature_net", flavor_name=FEATURE_NET_FLAVOR, net=net)


def read_feature_net_folder(folder: Path) -> FeatureNet:
    """Rebuild the FeatureNet of a model folder written by `save_model`, in eval mode."""
    flavor = Model.load(str(folder / MLMODEL_FILE_NAME)).flavors.get(FEATURE_NET_FLAVOR)
    if flavor is None:
        raise ValueError(
            f"{folder} is not a {FEATURE_NET_FLAVOR} model (no such flavor in its MLmodel)"
        )
    net = read_model_files(folder)
    if not isinstance(net, FeatureNet):
        raise ValueError(f"{folder} holds family {net.family!r}, not a feature net")
    return net.eval()


def load_feature_net_model(model_uri: str) -> FeatureNet:
    """Download a logged or registered feature net (any MLflow model URI) and rebuild it."""
    tracking.configure()
    with tempfile.TemporaryDirectory(prefix="genad-features-") as scratch:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch)
        return read_feature_net_folder(Path(local))
