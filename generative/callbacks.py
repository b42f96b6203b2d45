"""Callbacks of the training loop (`generative.loop.Callback`): a progress bar, early stopping,
best-model saving."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from generative.loop import Callback, LoopTrainer

if TYPE_CHECKING:
    from tqdm.auto import tqdm


class ProgressBar(Callback):
    """A tqdm bar over epochs showing the latest metrics."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.bar: tqdm | None = None

    def on_train_begin(self, trainer: LoopTrainer) -> None:
        from tqdm.auto import tqdm  # here: loading a registered model need not import it

        self.bar = tqdm(total=trainer.epoch_count(), desc=self.description, leave=False)

    def on_epoch_end(self, trainer: LoopTrainer, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
            self.bar.update(1)

    def on_train_end(self, trainer: LoopTrainer) -> None:
        if self.bar is not None:
            self.bar.close()


class EarlyStopping(Callback):
    """Stop when `val_score` has not improved by `min_delta` for `patience` epochs, then restore
    the best weights."""

    def __init__(self, patience: int = 10, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.on_train_begin(None)

    def on_train_begin(self, trainer: LoopTrainer | None) -> None:
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: LoopTrainer, epoch: int, logs: dict[str, float]) -> None:
        score = logs.get("val_score")
        if score is None:
            raise ValueError("EarlyStopping needs validation data")
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(trainer.model.state_dict())
        elif epoch - self.best_epoch >= self.patience:
            trainer.should_stop = True

    def on_train_end(self, trainer: LoopTrainer) -> None:
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

    def on_train_begin(self, trainer: LoopTrainer) -> None:
        self.best_score = -math.inf

    def on_epoch_end(self, trainer: LoopTrainer, epoch: int, logs: dict[str, float]) -> None:
        score = logs.get("val_score", float(epoch))
        if score > self.best_score:
            self.best_score = score
            self.save_fn(trainer.model, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = float(state["best_score"])
