"""A generic trainer with callbacks: progress bar, early stopping, checkpoints.

Any module with `training_loss(batch, step) -> (loss, metrics)` and `validation_score(batch) ->
per-row scores (higher is better)` can be trained. Data are in-memory tensors; batches are drawn
by a seeded permutation on the training device. On CUDA the forward pass runs under bf16
autocast by default.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

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


class ProgressBar(Callback):
    """A tqdm bar over epochs showing the latest metrics."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.bar: tqdm | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
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


class Trainer:
    """Adam on `model.training_loss`, evaluating `model.validation_score` each epoch."""

    def __init__(
        self, model: nn.Module, config: TrainerConfig, callbacks: Sequence[Callback] = ()
    ) -> None:
        self.model = model
        self.config = config
        self.callbacks = list(callbacks)
        self.device = resolve_device(config.device)
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self.step = 0

    def _autocast(self) -> torch.autocast:
        return autocast(self.config.autocast, self.device)

    def fit(self, train: torch.Tensor, val: torch.Tensor | None = None) -> list[dict[str, float]]:
        """Train on the rows of `train`; returns one dict of metrics per epoch."""
        torch.manual_seed(self.config.seed)
        generator = torch.Generator().manual_seed(self.config.seed)
        self.model.to(self.device)
        optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        train = train.to(self.device)
        val = None if val is None or len(val) == 0 else val.to(self.device)
        for callback in self.callbacks:
            callback.on_train_begin(self)
        for epoch in range(self.config.epochs):
            logs = self._train_epoch(train, optimizer, generator)
            if val is not None:
                logs["val_score"] = self.evaluate(val)
            self.history.append(logs)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, logs)
            if self.should_stop:
                break
        for callback in self.callbacks:
            callback.on_train_end(self)
        self.model.eval()
        return self.history

    def _train_epoch(
        self, train: torch.Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> dict[str, float]:
        self.model.train()
        order = torch.randperm(len(train), generator=generator).to(self.device)
        totals: dict[str, float] = {}
        batches = order.split(self.config.batch_size)
        for index in batches:
            with self._autocast():
                loss, metrics = self.model.training_loss(train[index], self.step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            optimizer.step()
            self.step += 1
            for name, value in {"loss": loss.item(), **metrics}.items():
                totals[name] = totals.get(name, 0.0) + value
        return {name: total / len(batches) for name, total in totals.items()}

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor) -> float:
        """`validation_score` over `data` reduced by the configured statistic, in eval mode."""
        self.model.eval()
        with self._autocast():
            scores = [self.model.validation_score(batch) for batch in data.split(1024)]
        statistic = VALIDATION_STATISTICS[self.config.validation_statistic]
        return float(statistic(torch.cat(scores).float()))
