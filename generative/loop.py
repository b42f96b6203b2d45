"""The one training loop every family's trainer runs on.

`LoopTrainer` owns what all trainers share: epochs, the time budget, the non-finite guard,
the callbacks, checksummed checkpoints with a fingerprint of the configuration and data, exact
resume, and the collectives of multi-process training (`generative.distributed.World`). A
family's trainer subclasses it and supplies only its steps:

- `batches(epoch)`: one epoch's minibatches (its random draws are made as it is iterated);
- `train_step(batch)`: one update; returns this rank's share of the epoch's metric sums;
- `epoch_logs(sums, count)`: the epoch's logs from the sums over all ranks and the step count;
- `optimizers`, `counters`, `rng`: its optimizers and schedules, the names of its step
  counters and its seeded generator, whose states every checkpoint keeps;
- `family_state()` / `load_family_state(state)`: what else a checkpoint must keep;
- `budget_spent()`: a step cap or time budget is used up (the loop asks after every step);
- `loss_name`, `progress_note()`, `divergence_advice`: the TrainingDivergedError's text;
- where a family's run is shaped otherwise (progressive growth: a phase per epoch, a
  checkpoint per stage): `epoch_count`, `end_epoch`, `checkpoint_to_resume`, `ended`,
  `divergence_message`; `prepare_networks` (DDP wrapping) and `upgrade` (older checkpoints).

With a `World` of several processes a family trains on its rank's share of each global batch
(`World.shard`, `World.loss_weight`) and returns its share of the metric sums; the loop sums
them over the ranks and has all ranks agree on the finiteness checks.

Each finite epoch's logs go to `history` and the callbacks, then (with a `checkpoint_dir`) the
state is written as `epoch_<n>/trainer_state.pt` with its SHA-256, keeping the latest two
(`generative.checkpoints`; rank 0 alone writes). An epoch whose metric sums become NaN or
infinite (checked every `CHECK_EVERY` steps, and at its end) puts the model back to the end of
the last finite epoch and raises `TrainingDivergedError`. `run` resumes from `resume_from`, else
from the latest checkpoint in `checkpoint_dir`, and continues exactly as the uninterrupted run
would (bit for bit on one CPU thread); a run that had ended early stays ended.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generative.checkpoints import (
    callback_keys,
    latest_checkpoint,
    read_resumable,
    write_epoch_checkpoint,
)
from generative.distributed import World

AUTOCAST_MODES = ("auto", "bf16", "off")
# how a training budget in seconds is counted: elapsed time, or this process's CPU time (an
# equal-compute budget that other jobs on a busy machine do not eat into)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
CHECK_EVERY = 25  # steps between finiteness checks (each is a device sync)
KEEP_CHECKPOINTS = 2


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the model holds the last finite epoch's weights."""


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(mode: str, device: torch.device) -> torch.autocast:
    """The bf16 autocast context for an AUTOCAST_MODES `mode`: "auto" is on for CUDA only,
    "bf16" on any device, "off" never."""
    enabled = mode == "bf16" or (mode == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def check_runtime(autocast: str, clock: str = "wall", max_seconds: float | None = None) -> None:
    """The checks every trainer config shares: ValueError for an autocast mode not in
    AUTOCAST_MODES, a clock not in CLOCKS or a time budget that is not positive."""
    if autocast not in AUTOCAST_MODES:
        raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {autocast!r}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")


class Callback:
    """Hooks called by `LoopTrainer.run`: before the first epoch, after each epoch with its
    logs, after the last one; set `trainer.should_stop = True` to end training. The
    `state_dict` is part of every checkpoint, so a resumed run continues with it."""

    def on_train_begin(self, trainer: LoopTrainer) -> None:
        """Before the first epoch."""

    def on_epoch_end(self, trainer: LoopTrainer, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch, with the epoch's mean training metrics and `val_score` if any."""

    def on_train_end(self, trainer: LoopTrainer) -> None:
        """After the last epoch (or an early stop)."""

    def state_dict(self) -> dict[str, Any]:
        """What the callback must remember across a resume (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` (called after `on_train_begin` when resuming)."""


class LoopTrainer:
    """The loop; a family's trainer subclasses it and supplies its steps (module docstring).

    `config` needs `epochs` (unless `epoch_count` is overridden) and may have `max_seconds`
    and `clock` (a time budget). `world`: the processes training together (None: this one).
    """

    checkpoint_kind = "training"  # named when a resume_from folder is not a checkpoint
    counters: tuple[str, ...] = ()  # integer attributes a checkpoint keeps (step counters)
    loss_name = "a loss"  # for the divergence message
    divergence_advice = "Lower the learning rate."
    # Which of several trainings of one fit this is, for callbacks that log: "" for the one
    # that makes the final model, a name such as "first_pass" for a training before it.
    stage = ""

    def __init__(
        self,
        model: nn.Module,
        config: Any,
        callbacks: Sequence[Callback] = (),
        *,
        checkpoint_dir: str | Path | None = None,
        world: World | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.callbacks = list(callbacks)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.world = world
        self.device = world.device if world is not None else resolve_device(config.device)
        self.ranks = world or World(device=self.device)  # the collectives (identity alone)
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self.resumed_from: Path | None = None
        self.fingerprint: dict[str, str] = {}
        self.started = 0.0
        self.optimizers: list[Any] = []  # optimizers and schedules: their states are kept
        self.rng: torch.Generator | None = None  # the seeded generator of batches, if any
        for name in self.counters:
            setattr(self, name, 0)

    # --- what a family supplies ------------------------------------------------------------
    def batches(self, epoch: int) -> Iterable[Any]:
        """One epoch's minibatches."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> torch.Tensor:
        """One update on `batch`; returns this rank's share of the metric sums (1-D)."""
        raise NotImplementedError

    def epoch_logs(self, sums: list[float], count: int) -> dict[str, float]:
        """The epoch's logs from the metric sums over all ranks and its number of steps."""
        raise NotImplementedError

    def family_state(self) -> dict[str, Any]:
        """What else of the family a checkpoint keeps (beyond `optimizers` and `counters`)."""
        return {}

    def load_family_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's `family_state` part."""

    def generators(self) -> dict[str, torch.Generator]:
        """The seeded generators whose states a checkpoint keeps, by name."""
        return {} if self.rng is None else {"batches": self.rng}

    def progress_note(self) -> str:
        """Where training was when it diverged, for the message (e.g. "by step 12")."""
        if not self.counters:
            return "at the start"
        name = self.counters[0]  # "generator_steps" -> "by generator step 12"
        return f"by {name.removesuffix('s').replace('_', ' ')} {getattr(self, name)}"

    def divergence_message(self, epoch: int) -> str:
        """The TrainingDivergedError's text for a non-finite loss in `epoch` (0-based)."""
        restored = "its initial weights" if epoch == 0 else f"the end of epoch {epoch}"
        return (
            f"{self.loss_name} became NaN or infinite in epoch {epoch + 1} "
            f"({self.progress_note()}); training stopped and the model was restored to "
            f"{restored}, the last good checkpoint. {self.divergence_advice}"
        )

    def budget_spent(self) -> bool:
        """The time budget (`config.max_seconds`, counted by `config.clock`) is used up."""
        seconds = getattr(self.config, "max_seconds", None)
        clock = CLOCKS[getattr(self.config, "clock", "wall")]
        return seconds is not None and clock() - self.started >= seconds

    def epoch_count(self) -> int:
        """How many epochs the whole run has."""
        return int(self.config.epochs)

    def prepare_networks(self) -> None:
        """After restoring, before the first step (e.g. wrap the nets in DDP)."""

    # --- the loop --------------------------------------------------------------------------
    def run(self, resume_from: str | Path | None = None) -> list[dict[str, float]]:
        """Resume (from `resume_from`, else the latest checkpoint in `checkpoint_dir`), then
        train the remaining epochs; returns the history (one dict of logs per epoch)."""
        folder = self.checkpoint_to_resume(resume_from)
        state = None if folder is None else self._load(folder)
        for callback in self.callbacks:  # they see the restored trainer ...
            callback.on_train_begin(self)
        if state is not None:  # ... and continue from their own saved state
            for key, callback in callback_keys(self.callbacks):
                if key in state["callbacks"]:
                    callback.load_state_dict(state["callbacks"][key])
        self.prepare_networks()  # after restoring: DDP broadcasts rank 0's weights
        try:
            if not self.should_stop:  # a resumed run that had ended stays ended
                self._run_epochs(0 if state is None else int(state["epoch"]))
        finally:  # progress bars close and loggers flush on a divergence too
            for callback in self.callbacks:
                callback.on_train_end(self)
        self.model.eval()
        return self.history

    def _run_epochs(self, first_epoch: int) -> None:
        last_good = copy.deepcopy(self.model.state_dict())
        for epoch in range(first_epoch, self.epoch_count()):
            logs = self._train_epoch(epoch)
            if logs is None:
                self.model.load_state_dict(last_good)
                raise TrainingDivergedError(self.divergence_message(epoch))
            last_good = copy.deepcopy(self.model.state_dict())
            self.history.append(logs)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, logs)
            self.end_epoch(epoch, logs)
            if self.should_stop or self.budget_spent():
                return

    def _train_epoch(self, epoch: int) -> dict[str, float] | None:
        """One epoch's logs, None when a metric sum became NaN or infinite."""
        totals: torch.Tensor | None = None
        count = 0
        for batch in self.batches(epoch):
            values = self.train_step(batch)
            totals = torch.zeros_like(values) if totals is None else totals
            totals += values
            count += 1
            if count % CHECK_EVERY == 0 and not self._finite(totals):
                return None
            if self.budget_spent():  # a clock read: no device sync
                break
        if totals is None:
            raise ValueError("an epoch without a single batch")
        totals = self.ranks.all_reduce_sum(totals)
        if not torch.isfinite(totals).all():
            return None
        return self.epoch_logs(totals.tolist(), count)

    def _finite(self, totals: torch.Tensor) -> bool:
        """Whether the sums are finite on every rank (all ranks then agree to stop)."""
        return self.ranks.all_true(bool(torch.isfinite(totals).all()))

    def end_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """After the callbacks saw epoch `epoch` (0-based): its checkpoint."""
        self.save_checkpoint(epoch + 1)

    # --- checkpoints -----------------------------------------------------------------------
    def checkpoint_to_resume(self, resume_from: str | Path | None) -> Path | None:
        """The checkpoint folder to resume from: `resume_from`, else the latest one in
        `checkpoint_dir` (None: start afresh)."""
        if resume_from is not None:
            return Path(resume_from)
        return latest_checkpoint(self.checkpoint_dir)

    def ended(self) -> bool:
        """Whether the run has ended for good (a checkpoint of it is not trained further): a
        callback stopped it, or its step cap or time budget is spent."""
        return self.should_stop or self.budget_spent()

    def checkpoint_state(self, epochs_done: int) -> dict[str, Any]:
        """Everything a resume needs after `epochs_done` epochs."""
        rng = {"torch": torch.get_rng_state()}
        rng.update({name: g.get_state() for name, g in self.generators().items()})
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            **self.family_state(),
            **{name: getattr(self, name) for name in self.counters},
            "optimizers": [part.state_dict() for part in self.optimizers],
            "epoch": epochs_done,
            "stopped": self.ended(),
            "history": self.history,
            "model": {name: t.detach().cpu() for name, t in self.model.state_dict().items()},
            "rng": rng,
            "callbacks": {key: cb.state_dict() for key, cb in callback_keys(self.callbacks)},
            "fingerprint": self.fingerprint,
        }

    def save_checkpoint(self, epochs_done: int) -> None:
        """The state after `epochs_done` epochs as `checkpoint_dir/epoch_<epochs_done>`, the
        latest two kept (rank 0 alone writes; nothing without a checkpoint_dir)."""
        if self.checkpoint_dir is None or not self.ranks.is_main:
            return
        state = self.checkpoint_state(epochs_done)
        write_epoch_checkpoint(self.checkpoint_dir, epochs_done, state, keep=KEEP_CHECKPOINTS)

    def upgrade(self, state: dict[str, Any]) -> dict[str, Any]:
        """A verified checkpoint's state in the current layout (a family whose trainer wrote
        another layout before it ran on this loop translates it here)."""
        return state

    def _load(self, folder: Path) -> dict[str, Any]:
        """Restore all but the callbacks from the checkpoint in `folder` (verified first:
        nothing is loaded from a damaged or foreign one); returns its state."""
        state = self.upgrade(read_resumable(folder, self.fingerprint, self.checkpoint_kind))
        self.model.load_state_dict(state["model"])
        for part, saved in zip(self.optimizers, state["optimizers"], strict=True):
            part.load_state_dict(saved)
        for name in self.counters:
            setattr(self, name, int(state[name]))
        self.load_family_state(state)
        torch.set_rng_state(state["rng"]["torch"])
        for name, generator in self.generators().items():
            generator.set_state(state["rng"][name])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.should_stop = bool(state["stopped"])
        self.history = list(state["history"])
        self.resumed_from = folder
        return state
