"""The VAE family's trainer (any model with a training loss and a validation score).

Any module with `training_loss(batch, step) -> (loss, metrics)` and `validation_score(batch) ->
per-row scores (higher is better)` can be trained: `Trainer` supplies Adam steps to the one
training loop (`generative.loop`), which owns the epochs, the callbacks, the non-finite guard,
the checkpoints and resume. Data are in-memory tensors; batches are drawn by a seeded
permutation. On CUDA the forward pass runs under bf16 autocast by default.

With a `checkpoint_dir` the loop writes `epoch_<n>/trainer_state.pt` after every epoch n
(model, optimizer, RNG states, step, history, callbacks' state, and a fingerprint of the
configuration and data) and `fit` resumes from the latest one there (or from `resume_from`),
continuing exactly as the uninterrupted run would.

With a `generative.distributed.World` of several processes the model trains data-parallel (see
that module); rank 0 alone writes. A model that draws per-row noise (as `generative.vae.VAE`
does) draws it through a `noise(like)` hook: for each batch the trainer points that hook at a
draw for the whole global batch, of which each rank takes its rows.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generative.callbacks import Checkpoint, EarlyStopping, ProgressBar
from generative.checkpoints import run_fingerprint
from generative.distributed import GlobalBatchNoise, TrainingLoss, World
from generative.loop import (
    AUTOCAST_MODES,
    CLOCKS,
    Callback,
    LoopTrainer,
    TrainingDivergedError,
    autocast,
    check_runtime,
    resolve_device,
)

__all__ = [
    "AUTOCAST_MODES",
    "CLOCKS",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "ProgressBar",
    "Trainer",
    "TrainerConfig",
    "TrainingDivergedError",
    "autocast",
    "resolve_device",
]

VALIDATION_STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "median": torch.median,
    "mean": torch.mean,
}


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation settings. `device="auto"` picks CUDA when present; `autocast` is "auto"
    (bf16 on CUDA only), "bf16" (any device) or "off". `batch_growth` g > 1 grows the batch
    each epoch: epoch e trains in batches of min(n, round(batch_size * g^e)) rows (the batch
    increment of ALTBI, Cho et al. 2024: later epochs take fewer, larger steps, so a trimmed
    loss ranks more rows at once and rare rows are fitted less). `validation_statistic`
    reduces the per-row validation scores: the median (default) is not dominated by a few
    validation rows with values never seen in training, which can make a mean ELBO fall from
    the first epoch on and stop training before it starts (seen on ADBench mnist).
    `teacher_decay` d > 0 keeps an exponential moving average of the model's weights (decay d
    per step, the "teacher") and passes it to `model.training_loss(x, step, teacher=...)`,
    which ranks the rows a trimmed loss keeps by the teacher's loss (EMA-teacher filtering)."""

    epochs: int = 50
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 100.0
    seed: int = 0
    device: str = "auto"
    autocast: str = "auto"
    validation_statistic: str = "median"
    batch_growth: float = 1.0
    teacher_decay: float = 0.0

    def batch_size_at(self, epoch: int, rows: int) -> int:
        """The batch size of epoch `epoch` (from 0) over `rows` training rows."""
        return max(1, min(rows, round(self.batch_size * self.batch_growth**epoch)))

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
        if not self.batch_growth >= 1.0:
            raise ValueError(f"batch_growth must be >= 1, got {self.batch_growth!r}")
        if not 0.0 <= self.teacher_decay < 1.0:
            raise ValueError(f"teacher_decay must be in [0, 1), got {self.teacher_decay!r}")
        check_runtime(self.autocast)
        if self.validation_statistic not in VALIDATION_STATISTICS:
            raise ValueError(
                f"validation_statistic must be one of {sorted(VALIDATION_STATISTICS)}, "
                f"got {self.validation_statistic!r}"
            )


class Trainer(LoopTrainer):
    """Adam on `model.training_loss`, evaluating `model.validation_score` each epoch.

    `checkpoint_dir`: write a checkpoint after every epoch and resume from the latest one there.
    `world`: train data-parallel across torchrun's processes (`generative.distributed`); the
    same World with size 1 draws exactly as the distributed run does (for comparisons).
    `stage`: which training of a fit this is, for the callbacks (`LoopTrainer.stage`).
    """

    step: int
    counters = ("step",)

    def __init__(
        self,
        model: nn.Module,
        config: TrainerConfig,
        callbacks: Sequence[Callback] = (),
        *,
        checkpoint_dir: str | Path | None = None,
        world: World | None = None,
        stage: str = "",
    ) -> None:
        super().__init__(model, config, callbacks, checkpoint_dir=checkpoint_dir, world=world)
        self.stage = stage
        self.batch_noise: GlobalBatchNoise | None = None

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
        self.rng = torch.Generator().manual_seed(self.config.seed)
        if self.world is not None:
            for epoch in range(self.config.epochs):
                self.world.check_batches(len(train), self.config.batch_size_at(epoch, len(train)))
            self.batch_noise = GlobalBatchNoise(
                torch.Generator().manual_seed(self.config.seed + 1), self.world
            )
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        self.optimizers = [self.optimizer]
        val = None if val is None or len(val) == 0 else val
        self.fingerprint = run_fingerprint(self.model, self.config, train, val)
        self.train_rows = train.to(self.device)
        self.val_rows = None if val is None else val.to(self.device)
        self.loss_fn = self.model.training_loss
        self.teacher = self._make_teacher()
        return self.run(resume_from)

    def _make_teacher(self) -> nn.Module | None:
        """The EMA teacher (a frozen copy of the model), or None without `teacher_decay`."""
        if self.config.teacher_decay == 0:
            return None
        if self.world is not None and self.world.size > 1:
            raise ValueError("teacher_decay is not supported with data-parallel training")
        teacher = copy.deepcopy(self.model).eval()
        teacher.requires_grad_(False)
        return teacher

    @torch.no_grad()
    def _update_teacher(self) -> None:
        """teacher <- d * teacher + (1 - d) * model for the weights; buffers are copied."""
        decay = self.config.teacher_decay
        for mean, live in zip(self.teacher.parameters(), self.model.parameters(), strict=True):
            mean.lerp_(live.detach(), 1.0 - decay)
        for mean, live in zip(self.teacher.buffers(), self.model.buffers(), strict=True):
            mean.copy_(live)

    def family_state(self) -> dict[str, Any]:
        """The teacher's weights, when there is one."""
        if self.teacher is None:
            return {}
        return {"teacher": {k: t.detach().cpu() for k, t in self.teacher.state_dict().items()}}

    def load_family_state(self, state: dict[str, Any]) -> None:
        """Continue with the checkpoint's teacher."""
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])

    def prepare_networks(self) -> None:
        """Wrap the loss in DDP when distributed (after restoring: rank 0's weights spread)."""
        if self.world is not None:
            self.loss_fn = self.world.wrap(TrainingLoss(self.model))

    def batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """The global batches' row indices of a seeded permutation."""
        self.model.train()
        order = torch.randperm(len(self.train_rows), generator=self.rng).to(self.device)
        yield from order.split(self.config.batch_size_at(epoch, len(order)))

    def train_step(self, index: torch.Tensor) -> torch.Tensor:
        """One Adam step on this rank's rows of the global batch `index`; returns the loss
        and the model's metrics weighted by this rank's share of the batch (float64)."""
        rows = index if self.world is None else self.world.shard(index)
        weight = 1.0 if self.world is None else self.world.loss_weight(len(rows), len(index))
        teacher = {} if self.teacher is None else {"teacher": self.teacher}
        with self._autocast(), self._noise(len(index)):
            loss, metrics = self.loss_fn(self.train_rows[rows], self.step, **teacher)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.teacher is not None:
            self._update_teacher()
        self.step += 1
        share = len(rows) / len(index)  # this rank's part of the global batch mean
        self.metric_names = ["loss", *metrics]
        values = [share * value for value in (loss.item(), *metrics.values())]
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def epoch_logs(self, sums: list[float], count: int) -> dict[str, float]:
        """The mean metrics per batch, and `val_score` with validation data."""
        logs = {name: total / count for name, total in zip(self.metric_names, sums, strict=True)}
        if self.val_rows is not None:
            logs["val_score"] = self.evaluate(self.val_rows)
        return logs

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor) -> float:
        """`validation_score` over `data` reduced by the configured statistic, in eval mode."""
        self.model.eval()
        with self._autocast(), self._noise(None):
            scores = [self.model.validation_score(batch) for batch in data.split(1024)]
        statistic = VALIDATION_STATISTICS[self.config.validation_statistic]
        return float(statistic(torch.cat(scores).float()))

    def upgrade(self, state: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint written before the trainer ran on `generative.loop` (its keys
        `should_stop`, `optimizer` and `rng.generator`) in the loop's layout."""
        if "should_stop" not in state:
            return state
        rng = {"batches" if k == "generator" else k: v for k, v in state["rng"].items()}
        stopped, optimizer = state.pop("should_stop"), state.pop("optimizer")
        return {**state, "stopped": stopped, "optimizers": [optimizer], "rng": rng}

    def generators(self) -> dict[str, torch.Generator]:
        """The batch order's generator and, with a World, the per-row noise's."""
        found = super().generators()
        if self.batch_noise is not None:
            found["noise"] = self.batch_noise.generator
        return found
