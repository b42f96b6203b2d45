"""The served champion under concurrent load: a few hundred requests from 4 client threads, all
answered with the scores in-process `pyfunc.predict` gives; malformed payloads answered 4xx with a
message naming the problem. Timing is measured by benchmarks/serving_latency.py, not here.

(Missing columns, a non-JSON body and a string in a numeric column are covered in test_serving.)
"""

from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from test_serving import FEATURES, serving, split_payload

from anomaly.packaged.detector_pyfunc import MAX_ROWS_ENV, served_row_limit

ROW_LIMIT = 300  # the served row limit of this module's server (GENAD_SERVING_MAX_ROWS)
THREADS, REQUESTS_PER_THREAD = 4, 60
SIZES = (1, 2, 7, 16, 32, 50)  # rows per request, in turn
JSON = "application/json"
SCORES = ["log_px", "normality", "score", "p_value"]


@pytest.fixture(scope="module")
def served_limited(champion, mlflow_store: str, tmp_path_factory: pytest.TempPathFactory):
    """The champion served with a row limit of ROW_LIMIT and one torch thread: (host, port)."""
    env = {MAX_ROWS_ENV: str(ROW_LIMIT), "OMP_NUM_THREADS": "1"}
    folder = tmp_path_factory.mktemp("serving-load")
    with serving(champion["uri"], mlflow_store, folder, env) as base:
        address = urlsplit(base)
        yield address.hostname, address.port


@pytest.fixture(scope="module")
def frames(champion) -> list[pd.DataFrame]:
    """Frames of SIZES rows drawn from the CSV's normal rows and anomalies alike."""
    source = pd.read_csv(champion["csv"])[FEATURES]
    rng = np.random.default_rng(7)
    return [source.iloc[rng.choice(len(source), size, replace=False)] for size in SIZES]


def post(
    conn: http.client.HTTPConnection, body: bytes, content_type: str | None = JSON
) -> tuple[int, str]:
    """POST `body` to /invocations on a kept-alive connection; (status, response text)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    conn.request("POST", "/invocations", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read().decode()


def client(address: tuple[str, int], bodies: list[bytes], start: int, answers: list) -> None:
    """REQUESTS_PER_THREAD requests on one connection, cycling through `bodies` from `start`;
    appends (body index, status, text) to `answers`."""
    conn = http.client.HTTPConnection(*address, timeout=60)
    try:
        for i in range(start, start + REQUESTS_PER_THREAD):
            index = i % len(bodies)
            answers.append((index, *post(conn, bodies[index])))
    finally:
        conn.close()


def test_concurrent_requests_all_score_like_in_process(served_limited, champion, frames):
    bodies = [split_payload(frame) for frame in frames]
    answers: list[tuple[int, int, str]] = []  # list.append is atomic under the GIL
    threads = [
        threading.Thread(target=client, args=(served_limited, bodies, k, answers))
        for k in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == THREADS * REQUESTS_PER_THREAD
    errors = [(status, text[:300]) for _, status, text in answers if status != 200]
    assert errors == [], errors[:3]
    model = mlflow.pyfunc.load_model(champion["uri"])
    expected = [model.predict(frame) for frame in frames]
    for index, _, text in answers:
        served = pd.DataFrame(json.loads(text)["predictions"])
        want = expected[index]
        assert len(served) == len(want)
        # Same weights, code and single-threaded float32 kernels on both sides, and JSON
        # round-trips float64 exactly: equal up to a few float32 ulps at most.
        np.testing.assert_allclose(
            served[SCORES].to_numpy(float), want[SCORES].to_numpy(float), rtol=1e-6, atol=1e-9
        )
        assert served["is_anomaly"].tolist() == want["is_anomaly"].tolist()
        assert (served["model_version"].astype(str) == str(champion["version"])).all()


def raw_split(rows_json: str, columns: list[str] = FEATURES) -> bytes:
    """A `dataframe_split` body whose data is the literal JSON `rows_json` (NaN, Infinity...)."""
    return (
        json.dumps({"dataframe_split": {"columns": columns, "data": "@"}})
        .encode()
        .replace(b'"@"', rows_json.encode())
    )


# (case, body, content type, expected status or None for any 4xx, fragments of the message)
MALFORMED = [
    ("nan", raw_split("[[0.1, 0.2, NaN, 0.4]]"), JSON, 400, ["NaN", "'f2'", "row 0"]),
    ("infinity", raw_split("[[0.1, 0.2, 0.3, -Infinity]]"), JSON, 400, ["-inf", "'f3'"]),
    ("null", raw_split("[[0.1, 0.2, 0.3, 0.4], [null, 0.2, 0.3, 0.4]]"), JSON, 400,
     ["null", "'f0'", "row 1"]),
    ("list in a cell", raw_split("[[[1, 2], 0.2, 0.3, 0.4]]"), JSON, 400,
     ["column f0", "float64"]),
    ("short row", raw_split("[[0.1, 0.2]]"), JSON, 400, ["4 columns passed", "2 columns"]),
    ("not utf-8", b"\xff\xfe\x00", JSON, 400, ["valid JSON", "UnicodeDecodeError"]),
    ("text/plain", raw_split("[[0.1, 0.2, 0.3, 0.4]]"), "text/plain", 415,
     ["content types", "text/plain"]),
    ("latin-1", raw_split("[[0.1, 0.2, 0.3, 0.4]]"), JSON + "; charset=latin-1", 415,
     ["only supports UTF-8"]),
    ("empty data", raw_split("[]"), JSON, 400, ["no rows"]),
    ("empty records", b'{"dataframe_records": []}', JSON, 400, ["missing inputs"]),
    ("empty object", b"{}", JSON, 400, ["exactly one of the input fields"]),
    ("wrong key", b'{"data": [[0.1, 0.2, 0.3, 0.4]]}', JSON, 400,
     ["exactly one of the input fields"]),
    ("two keys", b'{"inputs": [], "dataframe_records": []}', JSON, 400,
     ["exactly one of the input fields", "'inputs'", "'dataframe_records'"]),
    ("top-level list", b"[[0.1, 0.2, 0.3, 0.4]]", JSON, 400, ["Received a list"]),
    ("split not an object", b'{"dataframe_split": [1, 2]}', JSON, 400, ["must be a dictionary"]),
    ("too many rows", raw_split(json.dumps([[0.1, 0.2, 0.3, 0.4]] * (ROW_LIMIT + 1))), JSON, 400,
     [f"{ROW_LIMIT + 1:,} rows", f"at most {ROW_LIMIT:,}", MAX_ROWS_ENV]),
]  # fmt: skip


def message_of(text: str) -> str:
    """MLflow's JSON error `message`, or the plain-text body (the 415 answers)."""
    try:
        return json.loads(text)["message"]
    except (ValueError, KeyError, TypeError):
        return text


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragments"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_payload_is_a_4xx_naming_the_problem(
    served_limited, body, content_type, status, fragments
):
    conn = http.client.HTTPConnection(*served_limited, timeout=60)
    try:
        got, text = post(conn, body, content_type)
    finally:
        conn.close()
    assert got == status, (got, text[:500])
    message = message_of(text)
    for fragment in fragments:
        assert fragment in message, (fragment, message[-500:])


@pytest.mark.xfail(
    strict=True,
    reason="MLflow 3.17's scoring server calls content_type.split() on a missing header before "
    "the model is reached: 500. Not fixable in the pyfunc; passes once MLflow fixes it.",
)
def test_missing_content_type_header_is_a_4xx(served_limited):
    conn = http.client.HTTPConnection(*served_limited, timeout=60)
    try:
        got, text = post(conn, raw_split("[[0.1, 0.2, 0.3, 0.4]]"), None)
    finally:
        conn.close()
    assert 400 <= got < 500, (got, text[:300])


def test_in_process_predict_names_bad_values_and_scores_empty_frames(champion, monkeypatch):
    """Out of the server the same checks raise (an MlflowException that is a ValueError); the
    served-only rules (at least one row, at most the limit) do not apply."""
    monkeypatch.setenv(MAX_ROWS_ENV, str(ROW_LIMIT))
    model = mlflow.pyfunc.load_model(champion["uri"])
    frame = pd.read_csv(champion["csv"])[FEATURES].head(5).copy()
    frame.loc[frame.index[3], "f1"] = np.inf
    with pytest.raises(MlflowException, match=r"inf in column 'f1' of row 3") as caught:
        model.predict(frame)
    assert isinstance(caught.value, ValueError)
    assert len(model.predict(frame.iloc[:0])) == 0
    assert len(model.predict(pd.concat([frame.iloc[:3]] * 200))) == 600  # > ROW_LIMIT


@pytest.mark.parametrize(
    ("value", "n_features", "limit"),
    [(None, 10, 100_000), (None, 784, 1275), (None, 3_000_000, 1), ("25", 784, 25)],
)
def test_served_row_limit_is_a_million_values_unless_set(monkeypatch, value, n_features, limit):
    if value is None:
        monkeypatch.delenv(MAX_ROWS_ENV, raising=False)
    else:
        monkeypatch.setenv(MAX_ROWS_ENV, value)
    assert served_row_limit(n_features) == limit


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
def test_served_row_limit_refuses_a_bad_setting(monkeypatch, value):
    monkeypatch.setenv(MAX_ROWS_ENV, value)
    with pytest.raises(ValueError, match=f"{MAX_ROWS_ENV} must be a positive whole number"):
        served_row_limit(4)
