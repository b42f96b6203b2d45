"""The registered champion scores a Spark DataFrame through `mlflow.pyfunc.spark_udf` as
`mlflow.pyfunc.load_model(...).predict` scores the same rows in one pandas frame.

Spark (`local[2]`, the machine's Java) slices the rows into PARTITIONS partitions of consecutive
rows and each partition into Arrow batches of at most ARROW_BATCH_ROWS, so the model sees
batches of 256 and 88 rows where pandas scoring sees all 3000 at once. Doubles cross Arrow
unchanged, a row's Monte Carlo noise is keyed by the row's bits (`generative.noise`) and every
block the networks see is padded to one row count (`generative.batching`), so the scores are the
same function of the row on both paths, bit for bit.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from conftest import make_tabular

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("pyspark") is None,
        reason="needs the spark extra: pip install -e '.[dev,spark]' -c constraints.txt",
    ),
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

ROWS = 3000
ANOMALIES = 300
PARTITIONS = 5
ARROW_BATCH_ROWS = 256
RESULT_TYPE = (
    "log_px double, normality double, score double, p_value double, is_anomaly boolean, "
    "model_name string, model_version string"
)
FLOAT_COLUMNS = ["log_px", "normality", "score"]


@dataclass
class Scored:
    """The input frame, its scoring by pandas (one call) and by Spark (row_id and the scores)."""

    frame: pd.DataFrame
    expected: pd.DataFrame
    spark_rows: pd.DataFrame


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """A quiet `local[2]` SparkSession bound to 127.0.0.1, its Python workers on this venv
    with one torch thread each, PARTITIONS slices per DataFrame made from pandas."""
    from pyspark.sql import SparkSession

    scratch = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        patch.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("genad-spark-udf-test")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.memory", "1g")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.local.dir", str(scratch))
            .config("spark.default.parallelism", str(PARTITIONS))
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
            .config("spark.executorEnv.OMP_NUM_THREADS", "1")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


def feature_frame(feature_names: list[str]) -> pd.DataFrame:
    """A row id and ROWS rows of the champion's features, the last ANOMALIES shifted by +3."""
    frame = make_tabular(n=ROWS, d=len(feature_names), anomalies=ANOMALIES, seed=11)
    frame = frame.drop(columns="label").set_axis(feature_names, axis=1)
    frame.insert(0, "row_id", np.arange(ROWS, dtype=np.int64))
    return frame


@pytest.fixture(scope="module")
def scored(spark, champion) -> Scored:
    """The same rows scored by pandas (one call) and by Spark through `spark_udf`."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    model = mlflow.pyfunc.load_model(champion["uri"])
    feature_names = model.metadata.get_input_schema().input_names()
    frame = feature_frame(feature_names)
    expected = model.predict(frame[feature_names])

    started = time.perf_counter()
    score = mlflow.pyfunc.spark_udf(
        spark, champion["uri"], result_type=RESULT_TYPE, env_manager="local"
    )
    table = spark.createDataFrame(frame)
    assert table.rdd.getNumPartitions() == PARTITIONS
    output = table.select("row_id", score(F.struct(*feature_names)).alias("scores"))
    spark_rows = output.select("row_id", "scores.*").toPandas()
    seconds = time.perf_counter() - started
    inferred = mlflow.pyfunc.spark_udf(spark, champion["uri"], env_manager="local")
    columns = table.select(inferred(F.struct(*feature_names)).alias("scores")).schema
    assert columns["scores"].dataType == output.schema["scores"].dataType  # from the signature
    print(f"spark_udf: {ROWS} rows in {seconds:.1f} s (UDF built, workers started, scored)")
    return Scored(frame, expected, spark_rows)


def test_spark_udf_scores_match_pandas_scoring(scored: Scored):
    rows, expected = scored.spark_rows, scored.expected
    assert len(rows) == ROWS
    np.testing.assert_array_equal(rows["row_id"].to_numpy(), scored.frame["row_id"].to_numpy())
    for column in [*FLOAT_COLUMNS, "p_value"]:  # batches of 256 and 88 rows vs one of 3000
        np.testing.assert_array_equal(rows[column].to_numpy(), expected[column].to_numpy())
    np.testing.assert_array_equal(rows["is_anomaly"].to_numpy(), expected["is_anomaly"].to_numpy())
    assert set(rows["model_name"]) == set(expected["model_name"]) == {"tabular-test"}
    versions = set(rows["model_version"])  # the registered version the alias pointed at
    assert versions == set(expected["model_version"]) and versions.pop().isdigit()
    flagged = rows["is_anomaly"].to_numpy()
    assert flagged[-ANOMALIES:].mean() > 0.9  # rows shifted by 3 sd in every feature
    assert flagged[:-ANOMALIES].mean() < 0.2  # calibrated to flag 10% of normal rows
