"""A consumer with mlflow, torch and pandas but not genad loads the champion and scores.

The child process runs with `python -I` (no PYTHONPATH, no script folder on sys.path) from a
folder outside the repo, and drops the editable-install finder that would make genad
importable, so `anomaly` and `generative` can only come from the code shipped in the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from servers import run_consumer_script

from anomaly.packaged.scoring import load_bundle
from pipelines import tracking

CONSUMER = """
import importlib.util, json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
assert importlib.util.find_spec("anomaly") is None, "genad must not be importable here"
assert importlib.util.find_spec("pipelines") is None
import mlflow, pandas as pd
uri, csv = sys.argv[1], sys.argv[2]
output = mlflow.pyfunc.load_model(uri).predict(pd.read_csv(csv))
import anomaly
print("RESULT" + json.dumps({"anomaly_file": anomaly.__file__, "output": output.to_dict("list")}))
"""


def test_consumer_without_genad_scores_through_the_registry(champion, tmp_path):
    result = run_consumer_script(
        CONSUMER, [champion["uri"], str(champion["csv"])], tmp_path,
        MLFLOW_TRACKING_URI=tracking.tracking_uri(),
    )  # fmt: skip
    assert str(tracking.PROJECT_ROOT) not in result["anomaly_file"]  # shipped code, not the repo
    assert "/code/anomaly/" in result["anomaly_file"]
    output = pd.DataFrame(result["output"])
    frame = pd.read_csv(champion["csv"])
    expected = load_bundle(tracking.resolve_model(champion["uri"]).bundle_dir).score_frame(frame)
    assert len(output) == len(frame)
    np.testing.assert_allclose(output["log_px"], expected["log_px"], rtol=1e-6)
    np.testing.assert_allclose(output["score"], expected["score"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(output["is_anomaly"], expected["is_anomaly"])
    assert set(output["model_name"]) == {"tabular-test"}
    assert set(output["model_version"]) == {str(champion["version"])}
