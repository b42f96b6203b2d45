"""`batch_score_flow`: score a file with a registered model, partition by partition.

Outputs: a Parquet file (row_id, [file,] log_px, normality, score, p_value, is_anomaly,
model_name, model_version), optionally a typicality table of row groups, and a summary JSON
(default `<output>.summary.json`), all written to temp paths renamed into place (a failure
leaves any previous output untouched; the same input gives the same output); an MLflow scoring
run; a Prefect markdown artifact with the top anomalies. Partitions can run on Dask workers
(`dask_batch_score`): every row's score is independent of its batch, so the output is the same.
Partitions are scored into part files in a work folder beside the output (`anomaly.manifest`),
each recorded with its checksum once complete: a killed run, re-run with the same model version,
input and partitioning, scores only the partitions not yet recorded. The folder is removed when
the outputs are in place, or at once when the input turns out to be bad. The flow's options:

- `flag_rule` ("threshold", "alpha" or "fdr") and `flag_level` override the model's own; "fdr"
  applies Benjamini-Hochberg over the whole input (a second pass over the scores).
- `typicality_group_size` = M also tests consecutive groups of M rows, and the whole input, for
  typicality (`anomaly.typicality`): a group whose mean score is far from the normal mean in
  either direction (too likely counts too) gets p <= `typicality_level`. The group table is
  written to `<output>.typicality.parquet` and summarised under "typicality".
- `bad_rows="fail"` (default) stops at the first bad row (a non-numeric, missing, infinite or
  too large value, a ragged CSV line, an unreadable image), naming the file, row and column;
  "skip" scores the other rows (keeping their row ids) and lists each bad one in
  `<output>.rejected.csv` (row_id, column, reason). Problems of the whole file fail either way.
- The folders of `output` and `summary` must exist: a missing one (a mistyped path) is refused
  with an `OutputFolderError` naming it before any work, and nothing is written, unless
  `create_dirs`, which creates them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from tqdm.auto import tqdm

from anomaly.atomic import check_output_folder, write_json_atomic
from anomaly.base import check_flag_level, check_flag_rule
from anomaly.batch import (
    BatchPlan,
    apply_batch_fdr,
    apply_typicality,
    cached_bundle,
    merge_parts,
    merge_rejected,
    output_schema,
    plan_batch,
    score_partition,
)
from anomaly.batchio import Partition, check_policy, input_format
from anomaly.data.readers import DatasetFormatError
from anomaly.errors import ConfigError
from anomaly.manifest import PartManifest, input_identity, work_folder
from anomaly.packaged.scoring import ScoringModel
from pipelines import reports, tracking
from pipelines.retries import io_task_options

SCORE_EXPERIMENT = "genad-scoring"
# errors that mean the input is bad: the job's work folder is removed rather than kept to resume
INPUT_ERRORS = (DatasetFormatError, ValueError, TypeError, UnicodeDecodeError)


@task(**io_task_options(2, 2), cache_policy=NONE)
def resolve(model_uri: str, scratch: str) -> tracking.ResolvedModel:
    """Download the model version the URI names (retried: the tracking server may blink)."""
    return tracking.resolve_model(model_uri, dst=scratch)


@task(**io_task_options(2, 1), cache_policy=NONE)
def plan(
    model: tracking.ResolvedModel, input: str, rows_per_partition: int, bad_rows: str = "fail"
) -> BatchPlan:
    """Open the input without reading it; check its columns or shape; partition it."""
    bundle = cached_bundle(str(model.bundle_dir))
    return plan_batch(input, bundle, rows_per_partition=rows_per_partition, bad_rows=bad_rows)


def prepared_bundle(model: tracking.ResolvedModel) -> ScoringModel:
    """This run's view of the cached bundle: its identity and flag rule, the cached bundle
    (shared by every run in this process) unchanged. Rows are flagged per row here; the "fdr"
    rule needs every p-value of the batch, so its rows get the "alpha" rule at the same level
    now and Benjamini-Hochberg afterwards (`apply_batch_fdr`)."""
    bundle = cached_bundle(str(model.bundle_dir)).with_identity(model.name, model.version)
    if model.flag_rule is None:  # the detector's own rule, as saved
        return bundle
    rule = "alpha" if model.flag_rule == "fdr" else model.flag_rule
    return bundle.with_flag_rule(rule, model.flag_level)


def with_flag_rule(
    model: tracking.ResolvedModel, rule: str | None, level: float | None
) -> tracking.ResolvedModel:
    """Fix the run's rule and level: the overrides given, else the detector's own."""
    detector = cached_bundle(str(model.bundle_dir)).detector
    rule = rule or detector.flag_rule
    check_flag_rule(rule)
    level = detector.flag_level if level is None else level
    check_flag_level(level)
    return dataclasses.replace(model, flag_rule=rule, flag_level=level)


@task(**io_task_options(1, 1), cache_policy=NONE)
def score_part(
    model: tracking.ResolvedModel,
    batch: BatchPlan,
    partition: Partition,
    manifest: PartManifest,
    chunk_rows: int,
    torch_threads: int | None,
) -> dict[str, Any]:
    """Score one partition into its part file and record it done (on whichever worker runs
    the task); returns the done record."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    start = time.perf_counter()
    bundle = prepared_bundle(model)
    part, rejected = manifest.part_path(partition), manifest.rejected_path(partition)
    counts = score_partition(
        bundle, batch, partition, part, chunk_rows=chunk_rows, rejected_path=rejected
    )
    return manifest.record(partition, {**counts, "seconds": time.perf_counter() - start})


@task(cache_policy=NONE)
def score_in_order(
    model: tracking.ResolvedModel,
    batch: BatchPlan,
    pending: list[Partition],
    manifest: PartManifest,
    chunk_rows: int,
    torch_threads: int | None,
) -> list[dict[str, Any]]:
    """The sequential path: the pending partitions in order, in this process, with a bar
    (closed on failure too, so a failed run leaves no stale bar behind)."""
    with tqdm(pending, desc="scoring", unit="partition") as bar:
        return [
            score_part.fn(model, batch, partition, manifest, chunk_rows, torch_threads)
            for partition in bar
        ]


def score_pending(
    model: tracking.ResolvedModel,
    batch: BatchPlan,
    manifest: PartManifest,
    options: tuple[int, int | None],
    parallel: bool,
) -> dict[str, Any]:
    """Score the partitions that have no intact part yet: one task each on the flow's task
    runner (e.g. Dask workers) when `parallel`, else in order here. `options` = (chunk_rows,
    torch_threads). Returns how many finished partitions were reused, and how many partitions
    each process ("host:pid") scored."""
    finished = {p.index: manifest.finished(p) for p in batch.partitions}
    pending = [p for p in batch.partitions if finished[p.index] is None]
    reused = [record for record in finished.values() if record is not None]
    if reused:
        get_run_logger().info(
            "resuming: %d of %d partitions already scored", len(reused), len(batch.partitions)
        )
    if parallel:
        futures = [score_part.submit(model, batch, p, manifest, *options) for p in pending]
        scored = [future.result() for future in futures]
    else:
        scored = score_in_order(model, batch, pending, manifest, *options) if pending else []
    workers = Counter(f"{r['host']}:{r['pid']}" for r in scored)
    return {
        "reused_partitions": len(reused),
        "partitions_by_process": dict(workers),
        "partition_seconds": sum(r["seconds"] for r in scored),
    }


@task(cache_policy=NONE)
def merge(parts: list[str], output: str, with_files: bool, top_k: int) -> dict[str, Any]:
    """Concatenate the parts in row order into the output file; summarise."""
    return merge_parts(parts, output, output_schema(with_files), top_k=top_k)


@task(**io_task_options(2, 2), cache_policy=NONE)
def log_scoring_run(summary: dict[str, Any], summary_path: str) -> str:
    """An MLflow run with the rows, anomaly rate, score quantiles and the model version used."""
    tags = {"genad.flow": "batch-score", "genad.model_uri": summary["model_uri"]}
    with tracking.new_run(SCORE_EXPERIMENT, "batch-score", tags) as run:
        keys = ("model_name", "model_version", "input", "output", "rule", "level")
        run.log_params({k: summary[k] for k in keys})
        run.log_metrics({"rows": summary["rows"], "anomaly_rate": summary["anomaly_rate"]})
        run.log_metrics({f"score_{k}": v for k, v in summary["score_quantiles"].items()})
        typicality = summary.get("typicality") or {}
        if typicality.get("groups"):
            run.log_metrics(
                {
                    "typicality_atypical_groups": typicality["atypical_groups"],
                    "typicality_whole_input_p_value": typicality["whole_input_p_value"],
                }
            )
        run.log_artifact(summary_path)
    return run.run_id


def check_typicality_options(group_size: int | None, level: float) -> None:
    """Fail before scoring on a bad group size or level."""
    if group_size is not None and group_size < 1:
        raise ConfigError(f"typicality_group_size must be >= 1, got {group_size}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"typicality_level must be in (0, 1), got {level}")


def run_typicality(
    model: tracking.ResolvedModel, output: Path, group_size: int, level: float
) -> dict[str, Any]:
    """The typicality test of the scored output's row groups, against the model's
    calibration scores; the group table goes to `<output>.typicality.parquet`."""
    test = cached_bundle(str(model.bundle_dir)).typicality_test()
    groups_path = output.with_name(output.name + ".typicality.parquet")
    return apply_typicality(output, groups_path, test, group_size, level)


def job_fingerprint(
    model: tracking.ResolvedModel, batch: BatchPlan, rows_per_partition: int
) -> dict[str, Any]:
    """What the part files depend on: a re-run resumes only when all of it is unchanged."""
    return {
        "model": {"name": model.name, "version": str(model.version), "run_id": model.run_id},
        "input": input_identity(Path(batch.source.path)),
        "format": batch.source.format,
        "rows": batch.source.n_rows,
        "rows_per_partition": rows_per_partition,
        "rule": model.flag_rule,
        "level": model.flag_level,
        "bad_rows": batch.bad_rows,
    }


def score_and_flag(
    model: tracking.ResolvedModel,
    batch: BatchPlan,
    manifest: PartManifest,
    target: Path,
    options: tuple[int, int | None, int],
    parallel: bool,
) -> dict[str, Any]:
    """Score the partitions not yet recorded in `manifest` (sequentially or one task each),
    merge all parts into `target`; for the "fdr" rule, merge into the work folder first and
    flag by Benjamini-Hochberg over all rows. `options` = (chunk_rows, torch_threads, top_k)."""
    chunk_rows, torch_threads, top_k = options
    progress = score_pending(model, batch, manifest, (chunk_rows, torch_threads), parallel)
    fdr = model.flag_rule == "fdr"
    scored = manifest.folder / "scored.parquet" if fdr else target
    parts = [str(manifest.part_path(p)) for p in batch.partitions]
    result = merge(parts, str(scored), input_format(batch.source).per_row_files, top_k)
    if fdr:
        result = apply_batch_fdr(scored, target, model.flag_level, result)
    return {**result, **progress, **report_rejected(batch, manifest, target)}


def report_rejected(batch: BatchPlan, manifest: PartManifest, target: Path) -> dict[str, Any]:
    """Under the "skip" policy, the rows left out, merged into `<output>.rejected.csv`; under
    "fail" a report left by an earlier run is removed (it would not describe this output)."""
    report = target.with_name(target.name + ".rejected.csv")
    if batch.bad_rows != "skip":
        report.unlink(missing_ok=True)
        return {}
    listed = merge_rejected([manifest.rejected_path(p) for p in batch.partitions], report)
    if listed:
        get_run_logger().warning("%d bad cells or lines skipped: see %s", listed, report)
    return {"rejected": listed, "rejected_report": str(report)}


@flow(name="batch-score", log_prints=True)
def batch_score_flow(
    model_uri: str,
    input: str,
    output: str,
    *,
    summary: str | None = None,
    rows_per_partition: int = 100_000,
    chunk_rows: int = 8192,
    parallel: bool = False,
    torch_threads: int | None = None,
    top_k: int = 20,
    flag_rule: str | None = None,
    flag_level: float | None = None,
    typicality_group_size: int | None = None,
    typicality_level: float = 0.05,
    bad_rows: str = "fail",
    create_dirs: bool = False,
    track: bool = True,
) -> dict[str, Any]:
    """Score `input` (CSV, Parquet, npz or an image folder) with `model_uri` (e.g.
    models:/genad-fashion-mnist@champion) into Parquet at `output`; the summary. Reads chunks of
    `chunk_rows`, scores partitions of `rows_per_partition` rows (concurrently when `parallel`,
    e.g. on Dask); `track=False`: no MLflow run or Prefect artifact (for callers that log their
    own); the other options: see the module docstring."""
    check_typicality_options(typicality_group_size, typicality_level)
    check_policy(bad_rows)
    target = Path(output).expanduser().resolve()
    check_output_folder(target, create=create_dirs)
    if summary:
        check_output_folder(summary, create=create_dirs)
    source = resolved_input(input)
    job = dict(
        rows_per_partition=rows_per_partition, chunk_rows=chunk_rows, parallel=parallel,
        torch_threads=torch_threads, top_k=top_k, flag_rule=flag_rule, flag_level=flag_level,
        typicality_group_size=typicality_group_size, typicality_level=typicality_level,
        bad_rows=bad_rows,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as scratch:
        model, batch, manifest, result, threshold = run_job(
            model_uri, source, target, scratch, **job
        )
    result.update(
        model_uri=model_uri, model_name=model.name, model_version=model.version,
        input=str(source), output=str(target), rule=model.flag_rule, level=model.flag_level,
        threshold=threshold, partitions=len(batch.partitions),
    )  # fmt: skip
    result = publish(result, Path(summary) if summary else summary_path(target), track=track)
    manifest.discard()  # last: a crash before here re-runs on the finished parts
    return result


def run_job(
    model_uri: str, source: Path, target: Path, scratch: str, **job: Any
) -> tuple[tracking.ResolvedModel, BatchPlan, PartManifest, dict[str, Any], float]:
    """Resolve the model into `scratch`, plan, score and flag (resuming finished parts), and
    run the typicality test; the model, plan, manifest, result and threshold."""
    logger = get_run_logger()
    model = resolve(model_uri, os.path.join(scratch, "model"))
    batch = plan(model, str(source), job["rows_per_partition"], job["bad_rows"])
    model = with_flag_rule(model, job["flag_rule"], job["flag_level"])
    threshold = cached_bundle(str(model.bundle_dir)).detector.offset_
    logger.info(
        "scoring %d rows of %s in %d partitions with %s version %s",
        batch.source.n_rows, source, len(batch.partitions), model.name, model.version,
    )  # fmt: skip
    manifest, _ = PartManifest.open(
        work_folder(target), job_fingerprint(model, batch, job["rows_per_partition"])
    )
    options = (job["chunk_rows"], job["torch_threads"], job["top_k"])
    try:
        result = score_and_flag(model, batch, manifest, target, options, job["parallel"])
    except INPUT_ERRORS:
        manifest.discard()  # bad input: re-running would fail again; leave nothing
        raise
    logger.info("scored %d rows, %d flagged", result["rows"], result["anomalies"])
    if job["typicality_group_size"]:  # here: the model files live in `scratch`
        result["typicality"] = run_typicality(
            model, target, job["typicality_group_size"], job["typicality_level"]
        )
    return model, batch, manifest, result, threshold


def summary_path(output: Path) -> Path:
    """Where a scored output's summary JSON goes by default: beside it."""
    return output.with_name(output.name + ".summary.json")


def resolved_input(path: str) -> Path:
    """The absolute input path; a symbolic-link loop is bad input, named as such."""
    try:
        return Path(path).expanduser().resolve()
    except RuntimeError as error:  # pathlib's "Symlink loop from ..."
        raise DatasetFormatError(f"{path}: {error}") from error


def publish(result: dict[str, Any], summary_path: Path, *, track: bool = True) -> dict[str, Any]:
    """Write the summary JSON (atomically); with `track`, log the MLflow scoring run and post
    the Prefect markdown artifact; return the summary (with the MLflow run id when tracked)."""
    write_json_atomic(result, summary_path)
    if not track:
        return result
    result["mlflow_run_id"] = log_scoring_run(result, str(summary_path))
    create_markdown_artifact(
        markdown=reports.scoring_markdown(result),
        key="top-anomalies",
        description=f"most anomalous rows scored by {result['model_name']} "
        f"v{result['model_version']}",
    )
    return result


def dask_batch_score(
    *, address: str | None = None, n_workers: int = 2, **parameters: Any
) -> dict[str, Any]:
    """Run `batch_score_flow` with partitions on Dask: an existing scheduler at `address`, or
    a local cluster of `n_workers` single-threaded worker processes."""
    import dask
    from prefect_dask import DaskTaskRunner

    if address:
        runner = DaskTaskRunner(address=address)
    else:
        cluster = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True}
        runner = DaskTaskRunner(cluster_kwargs={**cluster, "dashboard_address": None})
    parameters.setdefault("torch_threads", 1)
    # The nanny's MALLOC_TRIM_THRESHOLD_=65536 halves torch's speed in the workers it starts
    # (docs/scaling.md): glibc's defaults for the local cluster's workers.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return batch_score_flow.with_options(task_runner=runner)(parallel=True, **parameters)
