"""A generic trainer with callbacks: progress bar, early stopping, checkpoints, resume.

Any module with `training_loss(batch, step) -> (loss, metrics)` and `validation_score(batch) ->
per-row scores (higher is better)` can be trained. Data are in-memory tensors; batches are drawn
by a seeded permutation on the training device. On CUDA the forward pass runs under bf16
autocast by default.

With a `checkpoint_dir` the trainer writes `epoch_<n>/trainer_state.pt` after every epoch n
(model, optimizer, RNG states, step, history, callbacks' state, and a fingerprint of the
configuration and data), atomically and with its SHA-256 in `checksums.json`, keeping the
latest two (see `generative.checkpoints`). `fit` then resumes from the latest one found
there (or from `resume_from`) and continues exactly as the uninterrupted run would.

With a `generative.distributed.World` of several processes the model trains data-parallel (see
that module); rank 0 alone writes. A model that draws per-row noise (as `generative.vae.VAE`
does) draws it through a `noise(like)` hook: for each batch the trainer points that hook at a
draw for the whole global batch, of which each rank takes its rows.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from tqdm.auto import tqdm

from generative.checkpoints import (
    callback_keys,
    latest_checkpoint,
    read_resumable,
    run_fingerprint,
    write_epoch_checkpoint,
)
from generative.distributed import GlobalBatchNoise, TrainingLoss, World

AUTOCAST_MODES = ("auto", "bf16", "off")
# how a training budget in seconds is counted: elapsed time, or this process's CPU time (an
# equal-compute budget that other jobs on a busy machine do not eat into)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
VALIDATION_STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "median": torch.median,
    "mean": torch.mean,
}


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation settings. `device="auto"` picks CUDA when present; `autocast` is "auto"
    (bf16 on CUDA only), "bf16" (any device) or "off". `validation_statistic` reduces the per-row
    validation scores: the median (default) is not dominated by a few validation rows with values
    never seen in training, which can make a mean ELBO fall from the first epoch on and stop
    training before it starts (seen on ADBench mnist)."""

    epochs: int = 50
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 100.0
    seed: int = 0
    device: str = "auto"
    autocast: str = "auto"
    validation_statistic: str = "median"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
        if self.autocast not in AUTOCAST_MODES:
            raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {self.autocast!r}")
        if self.validation_statistic not in VALIDATION_STATISTICS:
            raise ValueError(
                f"validation_statistic must be one of {sorted(VALIDATION_STATISTICS)}, "
                f"got {self.validation_statistic!r}"
            )


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


class Callback:
    """Hooks called by `Trainer.fit`; set `trainer.should_stop = True` to end training."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first epoch."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch, with the epoch's mean training metrics and `val_score` if any."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch (or an early stop)."""

    def state_dict(self) -> dict[str, Any]:
        """What the callback must remember across a resume (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` (called after `on_train_begin` when resuming)."""


class ProgressBar(Callback):
    """A tqdm bar over epochs showing the latest metrics."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.bar: tqdm | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm  # here: loading a registered model need not import it

        self.bar = tqdm(total=trainer.config.epochs, desc=self.description, leave=False)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
            self.bar.update(1)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class EarlyStopping(Callback):
    """Stop when `val_score` has not improved by `min_delta` for `patience` epochs, then restore
    the best weights."""

    def __init__(self, patience: int = 10, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.on_train_begin(None)

    def on_train_begin(self, trainer: Trainer | None) -> None:
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        score = logs.get("val_score")
        if score is None:
            raise ValueError("EarlyStopping needs validation data")
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(trainer.model.state_dict())
        elif epoch - self.best_epoch >= self.patience:
            trainer.should_stop = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                "best_state": self.best_state}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        self.best_state = state["best_state"]


class Checkpoint(Callback):
    """Save the model with `save_fn(model, path)` whenever `val_score` (or, without validation
    data, every epoch) improves."""

    def __init__(self, path: str | Path, save_fn: Callable[[nn.Module, Path], object]) -> None:
        self.path = Path(path)
        self.save_fn = save_fn
        self.best_score = -math.inf

    def on_train_begin(self, trainer: Trainer) -> None:
        self.best_score = -math.inf

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        score = logs.get("val_score", float(epoch))
        if score > self.best_score:
            self.best_score = score
            self.save_fn(trainer.model, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = float(state["best_score"])


KEEP_CHECKPOINTS = 2


class Trainer:
    """Adam on `model.training_loss`, evaluating `model.validation_score` each epoch.

    `checkpoint_dir`: write a checkpoint after every epoch and resume from the latest one there.
    `world`: train data-parallel across torchrun's processes (`generative.distributed`); the
    same World with size 1 draws exactly as the distributed run does (for comparisons).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainerConfig,
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
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self.step = 0
        self.batch_noise: GlobalBatchNoise | None = None
        self.resumed_from: Path | None = None

    def _autocast(self) -> torch.autocast:
        return autocast(self.config.autocast, self.device)

    def _noise(self, global_rows: int | None) -> contextlib.AbstractContextManager:
        """With a World, the model's `noise` hook (if it has one) draws the global batch's
        noise for `global_rows` rows and returns this rank's share; else nothing changes."""
        if self.batch_noise is None or not hasattr(self.model, "noise"):
            return contextlib.nullcontext()
        return self.batch_noise.installed(self.model, global_rows)

    def fit(
        self,
        train: torch.Tensor,
        val: torch.Tensor | None = None,
        *,
        resume_from: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Train on the rows of `train`; returns one dict of metrics per epoch. Resumes from
        the checkpoint folder `resume_from`, else from the latest one in `checkpoint_dir`."""
        torch.manual_seed(self.config.seed)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        if self.world is not None:
            self.world.check_batches(len(train), self.config.batch_size)
            self.batch_noise = GlobalBatchNoise(
                torch.Generator().manual_seed(self.config.seed + 1), self.world
            )
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        val = None if val is None or len(val) == 0 else val
        self.fingerprint = run_fingerprint(self.model, self.config, train, val)
        train = train.to(self.device)
        val = None if val is None else val.to(self.device)
        for callback in self.callbacks:
            callback.on_train_begin(self)
        first_epoch = self._restore(resume_from)
        self.loss_fn = self.model.training_loss
        if self.world is not None:  # wrapped after restoring: DDP broadcasts rank 0's weights
            self.loss_fn = self.world.wrap(TrainingLoss(self.model))
        for epoch in range(first_epoch, self.config.epochs):
            if self.should_stop:
                break
            logs = self._train_epoch(train)
            if val is not None:
                logs["val_score"] = self.evaluate(val)
            self.history.append(logs)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, logs)
            self._save_checkpoint(epoch + 1)
        for callback in self.callbacks:
            callback.on_train_end(self)
        self.model.eval()
        return self.history

    def _train_epoch(self, train: torch.Tensor) -> dict[str, float]:
        self.model.train()
        order = torch.randperm(len(train), generator=self.generator).to(self.device)
        totals: dict[str, float] = {}
        batches = order.split(self.config.batch_size)
        for index in batches:
            rows = index if self.world is None else self.world.shard(index)
            weight = 1.0 if self.world is None else self.world.loss_weight(len(rows), len(index))
            with self._autocast(), self._noise(len(index)):
                loss, metrics = self.loss_fn(train[rows], self.step)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            if self.config.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.step += 1
            share = len(rows) / len(index)  # this rank's part of the global batch mean
            for name, value in {"loss": loss.item(), **metrics}.items():
                totals[name] = totals.get(name, 0.0) + share * value
        if self.world is not None and self.world.distributed:
            values = torch.tensor(list(totals.values()), dtype=torch.float64, device=self.device)
            totals = dict(zip(totals, self.world.all_reduce_sum(values).tolist(), strict=True))
        return {name: total / len(batches) for name, total in totals.items()}

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor) -> float:
        """`validation_score` over `data` reduced by the configured statistic, in eval mode."""
        self.model.eval()
        with self._autocast(), self._noise(None):
            scores = [self.model.validation_score(batch) for batch in data.split(1024)]
        statistic = VALIDATION_STATISTICS[self.config.validation_statistic]
        return float(statistic(torch.cat(scores).float()))

    # --- checkpoints -----------------------------------------------------------------------
    def _save_checkpoint(self, epochs_done: int) -> None:
        if self.checkpoint_dir is None or (self.world is not None and not self.world.is_main):
            return
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.batch_noise is not None:
            rng["noise"] = self.batch_noise.generator.get_state()
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "epoch": epochs_done,
            "step": self.step,
            "should_stop": self.should_stop,
            "history": self.history,
            "model": {name: t.detach().cpu() for name, t in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "callbacks": {key: cb.state_dict() for key, cb in callback_keys(self.callbacks)},
            "fingerprint": self.fingerprint,
        }
        write_epoch_checkpoint(self.checkpoint_dir, epochs_done, state, keep=KEEP_CHECKPOINTS)

    def _restore(self, resume_from: str | Path | None) -> int:
        """Load the checkpoint (if any) and return the number of epochs it had completed."""
        folder = Path(resume_from) if resume_from is not None else None
        folder = folder or latest_checkpoint(self.checkpoint_dir)
        if folder is None:
            return 0
        state = read_resumable(folder, self.fingerprint)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if self.batch_noise is not None:
            self.batch_noise.generator.set_state(state["rng"]["noise"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.step, self.should_stop = int(state["step"]), bool(state["should_stop"])
        self.history = list(state["history"])
        for key, callback in callback_keys(self.callbacks):
            if key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][key])
        self.resumed_from = folder
        return int(state["epoch"])
