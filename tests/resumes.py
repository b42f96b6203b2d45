"""Shared pieces of the training-resume tests (every trainer on `generative.loop`): a simulated
crash, weight equality, damaged checkpoints, and a training run killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from servers import REPO_ROOT, VENV_BIN, Server, child_env

from generative.checkpoints import TRAINER_STATE_FILE, checkpoint_folders
from generative.checksums import CHECKSUM_FILE
from generative.training import Callback


class Crash(Callback):
    """Raises after epoch `at` (0-based), like a process dying between epochs."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, trainer, epoch, logs) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt("simulated crash")


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), f"{name} differs by {(x - y).abs().max():.3g}"


def damage(folder: Path, how: str) -> None:
    """Damage the checkpoint `folder`: "truncated", "flipped_byte", "other_epoch" (a valid
    torch file of epoch 1, not the one recorded) or "no_checksums"."""
    state = folder / TRAINER_STATE_FILE
    if how == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif how == "flipped_byte":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
    elif how == "other_epoch":
        state.write_bytes((folder.parent / "epoch_0001" / TRAINER_STATE_FILE).read_bytes())
    elif how == "no_checksums":
        (folder / CHECKSUM_FILE).unlink()


def kill_after_checkpoint(
    cli_args: Sequence[object], folder: Path, env: dict, log: Path, epochs_done: int
) -> int:
    """Start `python -m pipelines.cli *cli_args` (a training run checkpointing into
    `folder/trainer`), SIGKILL it as soon as `epochs_done` epochs are checkpointed; return the
    number of the latest epoch checkpointed at the kill."""
    args = [VENV_BIN / "python", "-m", "pipelines.cli", *cli_args]
    return kill_after_epochs(args, folder / "trainer", env, log, epochs_done)


def killed_cli_run(
    cli_args: Sequence[object], folder: Path, stores: tuple[str, str], log: Path, epochs: int
) -> str:
    """Run `genad *cli_args` (a training of `epochs` epochs checkpointing into `folder`) on one
    thread against `stores` (the MLflow store and the Prefect API URL), SIGKILL it once two
    epochs are checkpointed, check it was killed mid-run; the MLflow run id it recorded."""
    mlflow_store, prefect_api_url = stores
    env = child_env({"MLFLOW_TRACKING_URI": mlflow_store, "PREFECT_API_URL": prefect_api_url,
                     "OMP_NUM_THREADS": "1"})  # fmt: skip
    at_kill = kill_after_checkpoint(cli_args, folder, env, log, epochs_done=2)
    assert at_kill < epochs, "the child finished training before it was killed"
    return json.loads((folder / "run.json").read_text())["run_id"]


def kill_after_epochs(
    args: Sequence[object], checkpoint_dir: Path, env: dict, log: Path, epochs_done: int
) -> int:
    """Start the command `args` (a training run checkpointing every epoch into
    `checkpoint_dir`), SIGKILL it as soon as `epochs_done` epochs are checkpointed; return the
    number of the latest epoch checkpointed at the kill."""
    kill_when_written(args, checkpoint_dir / f"epoch_{epochs_done:04d}", env, log)
    return int(checkpoint_folders(checkpoint_dir)[-1].name.split("_")[1])


def kill_when_written(args: Sequence[object], target: Path, env: dict, log: Path) -> None:
    """Start the command `args` and SIGKILL it (its whole process group) as soon as the folder
    `target` exists (checkpoints are renamed into place complete)."""
    child = Server(args, env, log, REPO_ROOT)
    try:
        deadline = time.monotonic() + 240
        while not target.is_dir():
            assert child.process.poll() is None, f"the run ended early:\n{child.log_tail()}"
            assert time.monotonic() < deadline, f"no checkpoint after 240 s:\n{child.log_tail()}"
            time.sleep(0.02)
        os.killpg(child.pgid, signal.SIGKILL)
        assert child.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.stop()


def epoch_metrics(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of an MLflow metric's history, by step."""
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)
