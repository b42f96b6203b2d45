"""The registered models' environment: what their requirements.txt pins, and that it suffices.

Default suite: each kind of model (detector, generator, translator) logs a requirements.txt
with exactly the third-party packages that genad's shipped code (the model's code/anomaly and
code/generative) imports while the model loads and predicts, each `==` the version installed
here (torch without its "+cpu" label), plus mlflow, pinned by MLflow. A fresh interpreter that
loads each model (genad not importable) shows that list is what the shipped code imports.

Slow (`make test-all`, about 2-3 minutes on 2 busy cores): a fresh venv (no system site
packages) gets the generator's requirements.txt (the translator's is the same) and the torch pin
of constraints.txt, nothing else. There, with `python -I` from another folder, the generator and
translator load from the registry and predict exactly what they predict in process. Then the
detector's requirements.txt (theirs plus pillow) is installed into the same venv, and the
detector scores the same loaded with `python -I` and served by the venv's `mlflow models serve`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from servers import child_env, free_port, running
from test_serving import post, split_payload

from anomaly import VAEDetector
from anomaly.packaged.generation import save_generator
from anomaly.packaged.scoring import save_bundle
from anomaly.packaged.translation import save_translator
from anomaly.preprocessing import Standardizer
from generative.registry import build_model
from pipelines import servables, tracking

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("detector", "generator", "translator")
# What the shipped code imports on the load and predict path: torch, numpy and pandas for the
# nets and frames, scikit-learn (VAEDetector is an estimator; every kind imports anomaly, whose
# __init__ imports it), scipy (anomaly.validation's sparse check). pillow: the detector's
# complexity correction codes images as PNGs.
SCORING = ["numpy", "pandas", "scikit-learn", "scipy", "torch"]
EXPECTED = {"detector": [*SCORING, "pillow"], "generator": SCORING, "translator": SCORING}
FEATURES = ["f0", "f1", "f2", "f3"]


def public_version(name: str) -> str:
    """The installed version of distribution `name`, without a local label such as "+cpu"."""
    return importlib.metadata.version(name).split("+", 1)[0]


def register(kind: str, folder: Path, name: str) -> str:
    """Log `folder` as a servable `kind` in a run, register it; its URI."""
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("model-env")) as run:
        info = servables.log_model(kind, folder, name)
    tracking.register(info.model_uri, name, run_id=run.info.run_id, reason="test_model_env")
    return f"models:/{name}@challenger"


@pytest.fixture(scope="module")
def models(champion, mlflow_store, tmp_path_factory) -> dict[str, str]:
    """The URI of each kind: the session's champion detector (trained by the flow), and a tiny
    conditional table GAN and a tiny 8 x 8 CycleGAN, untrained (the logged environment does not
    depend on the weights), logged and registered as the training flows do. Also
    "complexity": a tiny image detector with the complexity correction (it encodes PNGs)."""
    folder = tmp_path_factory.mktemp("model-env-models")
    table = pd.read_csv(champion["csv"])
    gan = build_model(
        "gan", {"data_shape": [4], "hidden_dims": [16], "latent_dim": 4, "num_classes": 2}
    )
    generator = save_generator(
        gan, folder / "generator", feature_names=FEATURES, classes=[0, 1],
        scaler=Standardizer().fit(table[FEATURES].to_numpy()),
    )  # fmt: skip
    cyclegan = build_model(
        "cyclegan",
        {"image_shape": [1, 8, 8], "base_channels": 2, "residual_blocks": 1,
         "discriminator_layers": 1},
    )  # fmt: skip
    translator = save_translator(cyclegan, folder / "translator")
    rng = np.random.default_rng(3)
    stripes = rng.integers(0, 40, size=(120, 1, 8, 8)).astype(np.uint8)
    stripes[np.arange(120), 0, rng.integers(0, 8, 120), :] = 230
    detector = VAEDetector(correction="complexity", epochs=1, n_samples=2, patience=0)
    complexity = save_bundle(detector.fit(stripes), folder / "complexity")
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("model-env")) as run:
        info = servables.log_model(
            "detector", complexity, "env-complexity", example_rows=stripes[:3]
        )
    tracking.register(info.model_uri, "env-complexity", run_id=run.info.run_id, reason="test")
    return {
        "detector": champion["uri"],
        "generator": register("generator", generator, "env-generator"),
        "translator": register("translator", translator, "env-translator"),
        "complexity": "models:/env-complexity@challenger",
    }


def requirements_file(uri: str) -> Path:
    """The model's requirements.txt (downloaded when the store is remote)."""
    return Path(mlflow.pyfunc.get_model_dependencies(uri))


def requirement_lines(uri: str) -> list[str]:
    return requirements_file(uri).read_text().split()


@pytest.mark.parametrize("kind", KINDS)
def test_requirements_pin_exactly_what_scoring_imports(models, kind):
    lines = requirement_lines(models[kind])
    pinned = sorted(f"{name}=={public_version(name)}" for name in EXPECTED[kind])
    assert lines == [f"mlflow=={public_version('mlflow')}", *pinned]
    assert not [line for line in lines if "+" in line]  # no local label (torch's "+cpu")
    conda = yaml.safe_load((requirements_file(models[kind]).parent / "conda.yaml").read_text())
    assert conda["dependencies"][-1] == {"pip": lines}  # the conda env pins the same


# Loads each model in turn and records, per model, the third-party distributions that modules of
# anomaly/ and generative/ import (statements run while the model loads and predicts its input
# example). The shipped code is dropped from sys.modules before each model, so that its imports
# run again; genad itself is not importable (as in test_pyfunc_consumer.py).
IMPORTS_PROBE = r"""
import builtins, importlib.metadata, importlib.util, json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
SHIPPED = ("anomaly", "generative")
for package in (*SHIPPED, "pipelines"):
    assert importlib.util.find_spec(package) is None, f"{package} must not be importable here"
imported = set()
real_import = builtins.__import__
def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and str((globals or {}).get("__name__", "")).split(".")[0] in SHIPPED:
        imported.add(name.split(".")[0])
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = recording_import
import mlflow
names = importlib.metadata.packages_distributions()
result = {}
for uri in sys.argv[1:]:
    for module in [m for m in sys.modules if m.split(".")[0] in SHIPPED]:
        del sys.modules[module]
    imported.clear()
    model = mlflow.pyfunc.load_model(uri)
    model.predict(model.input_example)
    assert "/code/anomaly/" in sys.modules["anomaly"].__file__
    modules = imported - set(sys.stdlib_module_names) - {*SHIPPED, "mlflow"}
    result[uri] = sorted({d.lower() for m in modules for d in names.get(m, [m])})
print("RESULT" + json.dumps(result))
"""


def run_child(python: str | Path, script: str, *args: str, cwd: Path, timeout: float = 300):
    """`python -I -c script args` from `cwd`, one torch thread (as this process: conftest), the
    test store; the parsed JSON after its RESULT marker."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [str(python), "-I", "-c", script, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.slow  # ~15 s: in CI's `make test-model-env` with the other environment checks
def test_shipped_code_imports_only_the_pinned_packages(models, tmp_path):
    uris = [models[kind] for kind in (*KINDS, "complexity")]
    imported = run_child(sys.executable, IMPORTS_PROBE, *uris, cwd=tmp_path)
    for kind in KINDS:
        assert set(imported[models[kind]]) <= set(EXPECTED[kind]), kind
    # All of a kind's list is used: the champion detector (no correction) never codes a PNG,
    # the complexity detector does.
    assert imported[models["detector"]] == sorted(set(EXPECTED["detector"]) - {"pillow"})
    assert imported[models["complexity"]] == sorted(EXPECTED["detector"])
    assert imported[models["generator"]] == imported[models["translator"]] == sorted(SCORING)


# --- a fresh venv with nothing but the models' requirements ------------------------------------
class FreshVenv:
    """A venv without system site packages; `install` pip-installs a requirements file into it
    with the torch pin of the repo's constraints.txt."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.bin = folder / "bin"
        self.python = self.bin / "python"
        self.seconds: dict[str, float] = {}
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
        self.seconds["venv"] = time.monotonic() - start
        torch_pin = [
            line.split("#")[0].strip()
            for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
            if line.startswith("torch==")
        ]
        assert len(torch_pin) == 1, "constraints.txt pins torch"
        self.constraints = folder / "torch-pin.txt"
        self.constraints.write_text(torch_pin[0] + "\n")

    def install(self, requirements: Path, label: str) -> None:
        """`pip install -r requirements -c torch-pin.txt` (no bytecode compiling: it halves
        the install; the modules used compile on first import)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        args = [self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-compile", "-r", requirements, "-c", self.constraints]  # fmt: skip
        start = time.monotonic()
        completed = subprocess.run(
            [str(a) for a in args], env=env, capture_output=True, text=True, timeout=1200
        )
        self.seconds[label] = time.monotonic() - start
        assert completed.returncode == 0, completed.stderr[-3000:]

    def versions(self) -> dict[str, str]:
        """name -> version of every distribution installed in the venv."""
        out = subprocess.run(
            [str(self.python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
        return {p["name"].lower(): p["version"] for p in json.loads(out)}


@pytest.fixture(scope="module")
def fresh_venv(models, tmp_path_factory):
    """A fresh venv holding the generator's requirements.txt, which is the translator's; removed
    afterwards (it is about 1.7 GB)."""
    generator, translator = (requirements_file(models[k]) for k in ("generator", "translator"))
    assert generator.read_text() == translator.read_text()
    folder = tmp_path_factory.mktemp("fresh-venv")
    try:
        venv = FreshVenv(folder / "venv")
        venv.install(generator, "pip install generator requirements")
        yield venv
        print(f"\nfresh venv seconds: {json.dumps(venv.seconds)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def assert_pins_installed(venv: FreshVenv, uri: str) -> None:
    """Every pin of the model's requirements.txt is what the venv holds (torch may carry its
    local label: the CPU build), and the same version as this test process runs."""
    installed = venv.versions()
    for line in requirement_lines(uri):
        name, version = line.split("==")
        assert installed[name].split("+", 1)[0] == version, (name, installed[name])
        assert installed[name] == importlib.metadata.version(name), name
    assert "genad" not in installed


CONSUMER = r"""
import importlib.util, json, sys
for package in ("anomaly", "generative", "pipelines"):
    assert importlib.util.find_spec(package) is None, f"{package} must not be importable here"
import mlflow, pandas as pd
uri, frame, params = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
frame = pd.read_csv(frame) if isinstance(frame, str) else pd.DataFrame(frame)
output = mlflow.pyfunc.load_model(uri).predict(frame, params=params)
import anomaly
print("RESULT" + json.dumps({"anomaly_file": anomaly.__file__, "output": output.to_dict("list")}))
"""


def predict_in_venv(venv: FreshVenv, uri: str, frame, cwd: Path, params=None) -> pd.DataFrame:
    """Load `uri` and predict `frame` (a dict of columns, or a CSV path) in the venv."""
    result = run_child(venv.python, CONSUMER, uri, json.dumps(frame), json.dumps(params), cwd=cwd)
    assert "/code/anomaly/" in result["anomaly_file"], result["anomaly_file"]
    assert str(REPO_ROOT) not in result["anomaly_file"]
    return pd.DataFrame(result["output"])


@pytest.mark.slow
def test_fresh_venv_generator_samples_like_in_process(models, fresh_venv, tmp_path):
    assert_pins_installed(fresh_venv, models["generator"])
    requests = {"n": [5, 3], "seed": [11, 12], "class": [0, 1], "truncation": [None, 1.5]}
    start = time.monotonic()
    samples = predict_in_venv(fresh_venv, models["generator"], requests, tmp_path)
    print(f"\ngenerator load+predict in the venv: {time.monotonic() - start:.1f} s")
    expected = mlflow.pyfunc.load_model(models["generator"]).predict(pd.DataFrame(requests))
    assert list(samples.columns) == list(expected.columns) and len(samples) == 8
    assert samples["class"].tolist() == [0] * 5 + [1] * 3
    np.testing.assert_array_equal(samples[FEATURES].to_numpy(), expected[FEATURES].to_numpy())


@pytest.mark.slow
def test_fresh_venv_translator_translates_like_in_process(models, fresh_venv, tmp_path):
    assert_pins_installed(fresh_venv, models["translator"])
    pixels = [f"pixel{i}" for i in range(64)]
    images = np.random.default_rng(0).integers(0, 256, size=(4, 64)) / 255.0
    frame = {name: images[:, i].tolist() for i, name in enumerate(pixels)}
    for direction in ("a_to_b", "b_to_a"):
        params = {"direction": direction}
        output = predict_in_venv(fresh_venv, models["translator"], frame, tmp_path, params)
        model = mlflow.pyfunc.load_model(models["translator"])
        expected = model.predict(pd.DataFrame(frame), params=params)
        assert list(output.columns) == pixels
        np.testing.assert_array_equal(output.to_numpy(), expected[pixels].to_numpy())


@pytest.fixture(scope="module")
def detector_venv(models, fresh_venv):
    """The fresh venv after the detector's requirements.txt (the generator's plus pillow,
    which mlflow's matplotlib had installed already) was installed into it."""
    detector = requirement_lines(models["detector"])
    assert sorted(set(detector) - set(requirement_lines(models["generator"]))) == [
        f"pillow=={public_version('pillow')}"
    ]
    fresh_venv.install(requirements_file(models["detector"]), "pip install detector requirements")
    return fresh_venv


@pytest.mark.slow
def test_fresh_venv_detector_scores_and_serves_like_in_process(
    models, champion, detector_venv, mlflow_store, tmp_path
):
    venv, uri = detector_venv, models["detector"]
    assert uri.endswith("@champion")
    assert_pins_installed(venv, uri)
    table = pd.read_csv(champion["csv"])
    expected = mlflow.pyfunc.load_model(uri).predict(table)
    start = time.monotonic()
    scored = predict_in_venv(venv, uri, str(champion["csv"]), tmp_path)
    print(f"\ndetector load+predict in the venv: {time.monotonic() - start:.1f} s")
    assert list(scored.columns) == list(expected.columns) and len(scored) == len(table)
    pd.testing.assert_frame_equal(scored, expected, check_exact=True, check_dtype=False)

    rows = pd.concat([table.head(25), table.tail(25)])[FEATURES].reset_index(drop=True)
    port = free_port()
    args = [venv.bin / "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", port]  # fmt: skip
    path = os.pathsep.join([str(venv.bin), os.environ.get("PATH", "")])
    env = child_env(
        {"MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store,
         "PATH": path, "OMP_NUM_THREADS": "1"},
        remove=("PYTHONPATH", "VIRTUAL_ENV"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with running(args, env=env, log=tmp_path / "serve.log", cwd=tmp_path,
                 health_url=f"{base}/ping", health_timeout=120):  # fmt: skip
        print(f"served from the venv after {time.monotonic() - start:.1f} s")
        status, text = post(base + "/invocations", split_payload(rows))
    assert status == 200, text
    served = pd.DataFrame(json.loads(text)["predictions"])
    expected = mlflow.pyfunc.load_model(uri).predict(rows)
    served["model_version"] = served["model_version"].astype(str)
    pd.testing.assert_frame_equal(served, expected, check_exact=True, check_dtype=False)
