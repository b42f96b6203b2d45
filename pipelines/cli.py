"""The `genad` command line: demo, train vae/gan/progan/stylegan/cyclegan (`pipelines.cli_train`),
promote, score, synth, translate, models list; schedule score, backfill score and runs list
(`pipelines.cli_schedule`).

Every command runs the same Prefect flows and MLflow store as the Python API. Bad input
(a missing file, wrong columns, an unknown model or alias: a `UserInputError`) and a tracking
store that refuses a request print one clear line on stderr and exit with status 2; a failed run
prints one line and exits 1; any other error is an internal one (a bug): one line saying so and
where its traceback was written, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from anomaly.atomic import check_output_folder
from anomaly.data.download import ChecksumError, DownloadError
from anomaly.errors import InputNotFoundError, UserInputError, user_settings
from generative.checksums import CorruptFileError
from generative.gan import TrainingDivergedError
from pipelines import tracking
from pipelines.cli_train import detector_config, printed
from pipelines.preflight import EnvironmentNotReadyError, StepFailedError, ensure_prefect_home

# Exit 2: bad input, or a tracking store that refuses a request (e.g. an unreachable server).
USER_ERRORS = (UserInputError, *tracking.STORE_ERRORS)
# Not bad input, but a run (or the machine, a download, a stored file) that failed.
RUN_FAILURES = (
    TrainingDivergedError,
    EnvironmentNotReadyError,
    StepFailedError,
    ChecksumError,
    DownloadError,
    CorruptFileError,
)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train on one class of Fashion-MNIST, register, promote, batch-score the test set."""
    from pipelines.demo import demo_config, print_report, run_demo

    result = run_demo(
        dataset=args.dataset,
        normal_class=args.normal_class,
        config=detector_config(args, demo_config(args.dataset)),
        workdir=Path(args.workdir),
        model_name=args.model_name,
        seed=args.seed,
    )
    print_report(result, args.dataset, args.normal_class)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate images (npz or a PNG folder) with a registered CycleGAN."""
    from pipelines.translate import translate_flow

    if not Path(args.input).expanduser().exists():
        raise InputNotFoundError(f"input not found: {args.input}")
    refuse_missing_output_folder(args)
    result = translate_flow(
        args.model,
        args.input,
        args.output,
        direction=args.direction,
        fmt=args.format,
        progress=sys.stderr.isatty(),
        create_dirs=args.create_dirs,
    )
    print(
        f"translated {result['images']} images ({result['direction']}) with "
        f"{result['model_name']} v{result['model_version']} to {result['output']}; provenance "
        f"{result['output']}.provenance.json"
    )
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Draw samples from a registered generator into npz, a PNG folder or Parquet."""
    from pipelines.synth import synthesize_flow

    refuse_missing_output_folder(args)
    result = synthesize_flow(
        args.model,
        args.n,
        args.classes,
        args.output,
        seed=args.seed,
        truncation=args.truncation,
        fmt=args.format,
        progress=sys.stderr.isatty(),
        mix_seed=args.mix_seed,
        mix_layer=args.mix_layer,
        create_dirs=args.create_dirs,
    )
    counts = ", ".join(f"{label}: {count}" for label, count in result["counts"].items())
    print(
        f"wrote {result['samples']} samples ({counts}) of {result['model_name']} "
        f"v{result['model_version']} to {result['output']}; provenance "
        f"{result['output']}.provenance.json"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Compare challenger and champion on labelled data; move champion if the gate passes."""
    from pipelines.promote import evaluate_and_promote_flow

    result = evaluate_and_promote_flow(
        args.model_name,
        args.validation,
        split=args.split,
        label_column=args.label_column,
        novelty_classes=args.novelty_class,
        holdout_fraction=None if args.all_rows else args.holdout_fraction,
        seed=args.seed,
        metric=args.metric,
        margin=args.margin,
    )
    return printed(result)


def score_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The batch_score_flow parameters shared by `score` and `schedule score`, checked before
    any flow starts (a bad one is the user's)."""
    from anomaly.base import check_flag_level
    from pipelines.score import check_typicality_options

    with user_settings():
        check_typicality_options(args.typicality_group_size, args.typicality_level)
        if args.flag_level is not None:
            check_flag_level(args.flag_level)
    return {
        "model_uri": args.model_uri,
        "input": str(Path(args.input).expanduser().resolve()),
        "output": str(Path(args.output).expanduser().resolve()),
        "rows_per_partition": args.rows_per_partition,
        "chunk_rows": args.chunk_rows,
        "flag_rule": args.flag_rule,
        "flag_level": args.flag_level,
        "typicality_group_size": args.typicality_group_size,
        "typicality_level": args.typicality_level,
        "bad_rows": args.bad_rows,
        "create_dirs": args.create_dirs,
    }


def refuse_missing_output_folder(args: argparse.Namespace) -> None:
    """A missing --output folder (a typo, say) is refused here, before any flow starts, unless
    --create-dirs asks the flow to create it."""
    if not args.create_dirs:
        check_output_folder(args.output)


def cmd_score(args: argparse.Namespace) -> int:
    """Batch-score a file with a registered model (optionally on Dask workers)."""
    from pipelines.score import batch_score_flow, dask_batch_score

    if not Path(args.input).expanduser().exists():
        raise InputNotFoundError(f"input not found: {args.input}")
    refuse_missing_output_folder(args)
    parameters = score_parameters(args)
    if args.workers or args.dask_address:
        workers = args.workers or 2
        summary = dask_batch_score(address=args.dask_address, n_workers=workers, **parameters)
    else:
        summary = batch_score_flow(**parameters)
    print(
        f"scored {summary['rows']} rows with {summary['model_name']} "
        f"v{summary['model_version']}: {summary['anomalies']} flagged "
        f"({summary['anomaly_rate']:.2%}); output {summary['output']}"
    )
    if summary.get("reused_partitions"):
        print(f"resumed: {summary['reused_partitions']} partitions scored by an earlier run")
    if summary.get("rejected"):
        print(f"skipped {summary['rejected']} bad cells or lines: {summary['rejected_report']}")
    typicality = summary.get("typicality")
    if typicality and typicality.get("groups"):
        print(
            f"typicality: {typicality['atypical_groups']} of {typicality['groups']} groups of "
            f"{typicality['group_size']} rows atypical at level {typicality['level']} "
            f"(whole input p = {typicality['whole_input_p_value']:.4g}); "
            f"groups {typicality['groups_file']}"
        )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    """Registered models: versions, aliases and the champion's validation metrics."""
    rows = tracking.list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no registered models in {tracking.tracking_uri()}")
    for row in rows:
        aliases = ", ".join(f"{a}=v{v}" for a, v in row["aliases"].items()) or "no aliases"
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.get("champion_metrics", {}).items())
        print(f"{row['name']}: {row['versions']} versions (latest v{row['latest']}); {aliases}")
        if metrics:
            print(f"    champion: {metrics}")
    return 0


def local_run_settings() -> contextlib.AbstractContextManager:
    """Without a Prefect server (PREFECT_API_URL unset) flows run on a temporary one that no
    automation watches, so flow-run heartbeats are turned off: Prefect 3.8.8 joins its heartbeat
    thread at the next 1-s tick when a flow ends, adding up to 1 s to every run. Runs on a real
    server (schedules, deployments) keep their heartbeats."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        return contextlib.nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `genad` console script."""
    from pipelines.cli_parser import build_parser

    words = sys.argv[1:] if argv is None else argv
    command = words[0] if words else ""
    try:
        ensure_prefect_home()  # first: the parser imports the flows' registries (and so Prefect)
        args = build_parser(sys.modules[__name__]).parse_args(argv)
        with local_run_settings():
            return args.handler(args)
    except USER_ERRORS as error:
        print(f"genad {command}: error: {error}", file=sys.stderr)
        return 2
    except RUN_FAILURES as error:
        print(f"genad {command}: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: not the user's to fix, so not reported as bad input
        if is_prefect_startup_timeout(error):
            print(f"genad {command}: error: {PREFECT_STARTUP_ADVICE}", file=sys.stderr)
            return 1
        return report_internal_error(command, error)


PREFECT_STARTUP_ADVICE = (
    "Prefect's temporary API server did not answer within "
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (default 20 s); a busy machine starts it "
    "slowly: run the command again, raise that setting, or start `prefect server start` and "
    "set PREFECT_API_URL to it"
)


def is_prefect_startup_timeout(error: Exception) -> bool:
    """Whether `error` is Prefect's failure to reach the temporary server it started for a flow
    run (a RuntimeError from its SubprocessASGIServer): the environment's, not a bug."""
    message = str(error)
    return isinstance(error, RuntimeError) and message.startswith(
        "Timed out while attempting to connect to ephemeral Prefect API server"
    )


def report_internal_error(command: str, error: Exception) -> int:
    """Write the traceback to a file; one line on stderr naming the error and the file; 1."""
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"genad-{command}-", suffix=".traceback.txt", delete=False
    ) as handle:
        traceback.print_exception(error, file=handle)
    summary = (str(error).splitlines() or [""])[0]
    print(
        f"genad {command}: internal error (a bug in genad, not bad input): "
        f"{type(error).__name__}: {summary}; traceback in {handle.name}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
