"""The seed's Algorithm 1: k discriminator steps per generator step, each net with its own
optimizer, minibatches drawn by a seeded permutation of the real data on the training device.

Each D step takes a fresh real minibatch and fresh z; after every k-th D step G takes one step
on fresh z. One epoch is one pass of D over the real rows. On CUDA the forward passes run under
bf16 autocast and DCGAN nets use channels_last. A NaN or infinite loss stops training with
`TrainingDivergedError`: the model is put back to the end of the last finite epoch (which is
also the last checkpoint a `Checkpoint` callback wrote).

With a `generative.distributed.World` of several processes (torchrun) G and D are each wrapped
in DistributedDataParallel: every rank draws the global batch's rows and latents from the same
seeded generator and trains on its share, so the run follows the single-process one with the
same global batch (see `generative.distributed`; batch norm is synchronised on CUDA only, and
gradient-penalty losses and time budgets are single-process only).

With a `checkpoint_dir` the trainer writes `epoch_<n>/trainer_state.pt` after every epoch n (G,
D and the EMA generator, both optimizers, the RNG states that draw batches and latents, the step
counters, the history, the callbacks' state and a fingerprint of the configuration and data),
atomically and checksummed, keeping the latest two (`generative.checkpoints`; rank 0 alone
writes). `fit` resumes from the latest one there, or from `resume_from`, and continues as the
uninterrupted run would (bit for bit on one CPU thread). A run that had ended early (a
callback's stop, its step cap or time budget spent) stays ended; `max_seconds` counts from
the resume.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generative.checkpoints import (
    callback_keys,
    latest_checkpoint,
    read_resumable,
    run_fingerprint,
    write_epoch_checkpoint,
)
from generative.configs import JsonConfig
from generative.distributed import World
from generative.gan.losses import clip_weights, gradient_penalty
from generative.gan.model import GAN
from generative.training import AUTOCAST_MODES, CLOCKS, Callback, autocast, resolve_device

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, betas: torch.optim.Adam(params, lr=lr, betas=betas),
    "rmsprop": lambda params, lr, betas: torch.optim.RMSprop(params, lr=lr),
    "sgd": lambda params, lr, betas: torch.optim.SGD(params, lr=lr, momentum=betas[0]),
}
CHECK_EVERY = 25  # steps between finiteness checks (each is a device sync)


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the model holds the last finite epoch's weights."""


def run_guarded_epochs(
    trainer: Any,
    train_epoch: Callable[[], dict[str, float] | None],
    divergence_message: Callable[[int], str],
    budget_spent: Callable[[], bool],
    *,
    first_epoch: int = 0,
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """Run epochs `first_epoch` .. `trainer.config.epochs - 1` of `train_epoch` (None means a
    loss became NaN or infinite). Each finite epoch's logs go to `trainer.history` and the
    callbacks, then `after_epoch(epoch)` runs (a checkpoint); a diverged epoch puts
    `trainer.model` back to the end of the last finite one and raises TrainingDivergedError
    with `divergence_message(epoch)`. Ends early on `trainer.should_stop` or `budget_spent()`."""
    last_good = copy.deepcopy(trainer.model.state_dict())
    for epoch in range(first_epoch, trainer.config.epochs):
        logs = train_epoch()
        if logs is None:
            trainer.model.load_state_dict(last_good)
            raise TrainingDivergedError(divergence_message(epoch))
        last_good = copy.deepcopy(trainer.model.state_dict())
        trainer.history.append(logs)
        for callback in trainer.callbacks:
            callback.on_epoch_end(trainer, epoch, logs)
        if after_epoch is not None:
            after_epoch(epoch)
        if trainer.should_stop or budget_spent():
            return


@dataclass(frozen=True)
class GANTrainerConfig(JsonConfig):
    """Optimisation settings for `GANTrainer`.

    n_critic: D steps per G step (k); None takes the loss's default (1, or 5 for WGANs).
    optimizer: "adam", "rmsprop" (the WGAN paper's) or "sgd" (momentum = betas[0]).
    max_generator_steps: stop after this many G steps (an equal-budget cap), None = no cap.
    max_seconds: stop after this many seconds of training, counted by `clock`: "wall"
        (elapsed) or "process" (this process's CPU time); None = no limit.
    device/autocast: as for `generative.training.TrainerConfig`; channels_last is used for
    DCGAN nets on CUDA.
    """

    epochs: int = 20
    batch_size: int = 64
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    optimizer: str = "adam"
    n_critic: int | None = None
    max_generator_steps: int | None = None
    max_seconds: float | None = None
    clock: str = "wall"
    seed: int = 0
    device: str = "auto"
    autocast: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.lr_generator <= 0 or self.lr_discriminator <= 0:
            raise ValueError("learning rates must be > 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.n_critic is not None and self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")
        if self.autocast not in AUTOCAST_MODES:
            raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {self.autocast!r}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {self.clock!r}")


class GANTrainer:
    """Trains a `GAN` on in-memory data (images in [0, 1] or standardised table rows).

    `checkpoint_dir`: write a checkpoint after every epoch and resume from the latest one there.
    `world`: train data-parallel across torchrun's processes (`generative.distributed`).
    """

    def __init__(
        self,
        model: GAN,
        config: GANTrainerConfig,
        callbacks: Sequence[Callback] = (),
        *,
        checkpoint_dir: str | Path | None = None,
        world: World | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.callbacks = list(callbacks)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.resumed_from: Path | None = None
        self.world = world or World(device=resolve_device(config.device))
        self.device = self.world.device
        self.generator_net: nn.Module = model.generator  # DDP-wrapped by fit when distributed
        self.discriminator_net: nn.Module = model.discriminator
        self.n_critic = config.n_critic or model.loss.n_critic
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self.generator_steps = 0
        self.discriminator_steps = 0

    def _autocast(self) -> torch.autocast:
        return autocast(self.config.autocast, self.device)

    def _prepare(self, data: torch.Tensor, labels: torch.Tensor | None) -> tuple:
        expected = self.model.config.data_shape
        if tuple(data.shape[1:]) != expected:
            raise ValueError(f"data rows must have shape {expected}, got {tuple(data.shape[1:])}")
        if (labels is None) != (self.model.config.num_classes == 0):
            raise ValueError("pass labels exactly when the GAN is class-conditional")
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"{len(labels)} labels for {len(data)} rows")
        self._check_world(len(data))
        self.model.to(self.device)
        data = self.model.to_model_scale(data.float()).to(self.device)
        if self.device.type == "cuda" and data.dim() == 4:
            self.model.to(memory_format=torch.channels_last)
            data = data.contiguous(memory_format=torch.channels_last)
        labels = None if labels is None else labels.long().to(self.device)
        return data, labels

    def _check_world(self, rows: int) -> None:
        if not self.world.distributed:
            return
        self.world.check_batches(rows, self.config.batch_size)
        if self.config.max_seconds is not None:
            raise ValueError("max_seconds differs between processes: use max_generator_steps")
        if self.model.loss.penalty_weight > 0:
            raise ValueError("gradient-penalty losses train in a single process only")

    def _wrap_networks(self) -> None:
        """G and D as the training steps call them: each in DDP when distributed."""
        if self.world.distributed and self.device.type == "cuda":
            for net in (self.model.generator, self.model.discriminator):
                nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.generator_net = self.world.wrap(self.model.generator)
        self.discriminator_net = self.world.wrap(self.model.discriminator)

    def _latents(self, global_rows: int) -> torch.Tensor:
        """This rank's share of `global_rows` latents drawn from the shared generator."""
        return self.world.shard(self.model.sample_latent(global_rows, generator=self.rng))

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        build, betas = OPTIMIZERS[self.config.optimizer], self.config.betas
        g = build(self.model.generator.parameters(), self.config.lr_generator, betas)
        d = build(self.model.discriminator.parameters(), self.config.lr_discriminator, betas)
        return g, d

    def fit(
        self,
        data: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        resume_from: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Train; returns one dict of mean losses per epoch (d_loss, g_loss, and gp). Resumes
        from the checkpoint folder `resume_from`, else from the latest one in
        `checkpoint_dir` (CorruptFileError for a damaged one, ValueError for one of another
        configuration or data: nothing of either is loaded)."""
        torch.manual_seed(self.config.seed)
        self.started = CLOCKS[self.config.clock]()
        self.rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        resuming = resume_from is not None or self.checkpoint_dir is not None
        self.fingerprint = (
            run_fingerprint(self.model, self.config, data, labels) if resuming else {}
        )
        data, labels = self._prepare(data, labels)
        self.optimizers = self._optimizers()
        for callback in self.callbacks:
            callback.on_train_begin(self)
        first_epoch = self._restore(resume_from)
        self._wrap_networks()  # after restoring: DDP broadcasts rank 0's weights
        try:
            if not self.should_stop:  # a resumed run that had ended stays ended
                self._run_epochs(data, labels, *self.optimizers, first_epoch)
        finally:  # progress bars close and loggers flush on a divergence too
            for callback in self.callbacks:
                callback.on_train_end(self)
        self.model.eval()
        return self.history

    def _run_epochs(self, data, labels, opt_g, opt_d, first_epoch: int) -> None:
        run_guarded_epochs(
            self,
            lambda: self._train_epoch(data, labels, opt_g, opt_d),
            self._divergence_message,
            self._budget_spent,
            first_epoch=first_epoch,
            after_epoch=self._save_checkpoint,
        )

    # --- checkpoints -----------------------------------------------------------------------
    def _save_checkpoint(self, epoch: int) -> None:
        """The state after `epoch` (0-based) as checkpoint `epoch_<epoch + 1>`."""
        if self.checkpoint_dir is None or not self.world.is_main:
            return
        rng = {"torch": torch.get_rng_state(), "batches": self.rng.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "epoch": epoch + 1,
            "generator_steps": self.generator_steps,
            "discriminator_steps": self.discriminator_steps,
            "stopped": self.should_stop or self._budget_spent(),
            "history": self.history,
            "model": {name: t.detach().cpu() for name, t in self.model.state_dict().items()},
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "rng": rng,
            "callbacks": {key: cb.state_dict() for key, cb in callback_keys(self.callbacks)},
            "fingerprint": self.fingerprint,
        }
        write_epoch_checkpoint(self.checkpoint_dir, epoch + 1, state)

    def _restore(self, resume_from: str | Path | None) -> int:
        """Load the checkpoint (if any); returns the number of epochs it had completed."""
        folder = Path(resume_from) if resume_from is not None else None
        folder = folder or latest_checkpoint(self.checkpoint_dir)
        if folder is None:
            return 0
        state = read_resumable(folder, self.fingerprint)
        self.model.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        torch.set_rng_state(state["rng"]["torch"])
        self.rng.set_state(state["rng"]["batches"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.generator_steps = int(state["generator_steps"])
        self.discriminator_steps = int(state["discriminator_steps"])
        self.should_stop = bool(state["stopped"])
        self.history = list(state["history"])
        for key, callback in callback_keys(self.callbacks):
            if key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][key])
        self.resumed_from = folder
        return int(state["epoch"])

    def _divergence_message(self, epoch: int) -> str:
        restored = "its initial weights" if epoch == 0 else f"the end of epoch {epoch}"
        return (
            f"a GAN loss became NaN or infinite in epoch {epoch + 1} (by generator step "
            f"{self.generator_steps}); training stopped and the model was restored to "
            f"{restored}, the last good checkpoint. Lower the learning rates or use a "
            "gradient-penalty loss."
        )

    def _budget_spent(self) -> bool:
        """The G-step cap or the time budget is used up (a clock read: no device sync)."""
        cap, seconds = self.config.max_generator_steps, self.config.max_seconds
        if cap is not None and self.generator_steps >= cap:
            return True
        return seconds is not None and CLOCKS[self.config.clock]() - self.started >= seconds

    def _train_epoch(self, data, labels, opt_g, opt_d) -> dict[str, float] | None:
        self.model.train()
        order = torch.randperm(len(data), generator=self.rng, device=self.device)
        totals = torch.zeros(3, device=self.device)  # d_loss, g_loss, gp sums
        counts = [0, 0]
        for index in order.split(self.config.batch_size):
            rows = self.world.shard(index)
            share = len(rows) / len(index)  # this rank's part of the global batch mean
            real_labels = None if labels is None else labels[rows]
            d_loss, penalty = self.discriminator_step(data[rows], real_labels, opt_d, len(index))
            totals[0] += share * d_loss
            totals[2] += share * penalty
            counts[0] += 1
            if self.discriminator_steps % self.n_critic == 0:
                totals[1] += share * self.generator_step(len(index), real_labels, opt_g)
                counts[1] += 1
                if self._budget_spent():
                    break
            if counts[0] % CHECK_EVERY == 0 and not self._finite(totals):
                return None
        totals = self.world.all_reduce_sum(totals)
        if not torch.isfinite(totals).all():
            return None
        sums = totals.tolist()
        logs = {"d_loss": sums[0] / counts[0], "g_loss": sums[1] / max(counts[1], 1)}
        if self.model.loss.penalty_weight > 0:
            logs["gradient_penalty"] = sums[2] / counts[0]
        return logs

    def _finite(self, totals: torch.Tensor) -> bool:
        """Whether the loss sums are finite on every rank (all ranks then agree to stop)."""
        return self.world.all_true(bool(torch.isfinite(totals).all()))

    def discriminator_step(
        self,
        real: torch.Tensor,
        labels: torch.Tensor | None,
        optimizer: torch.optim.Optimizer,
        global_rows: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update on a real minibatch and as many fresh fakes; returns (loss, penalty).
        Distributed, `real` is this rank's share of a global batch of `global_rows`."""
        model, loss = self.model, self.model.loss
        global_rows = global_rows or len(real)
        z = self._latents(global_rows)
        critic_net = self.discriminator_net
        with self._autocast():
            with torch.no_grad():
                fake = model.generator(z, labels)
            value = loss.discriminator(
                critic_net(real, labels).float(), critic_net(fake, labels).float()
            )
            penalty = torch.zeros((), device=self.device)
            if loss.penalty_weight > 0:
                critic = lambda x: model.discriminator(x, labels).float()  # noqa: E731
                penalty = gradient_penalty(critic, real, fake, generator=self.rng)
                value = value + loss.penalty_weight * penalty
        optimizer.zero_grad(set_to_none=True)
        (value * self.world.loss_weight(len(real), global_rows)).backward()
        optimizer.step()
        if loss.clip_value is not None:
            clip_weights(model.discriminator, loss.clip_value)
        self.discriminator_steps += 1
        return value.detach(), penalty.detach()

    def generator_step(
        self, n: int, labels: torch.Tensor | None, optimizer: torch.optim.Optimizer
    ) -> torch.Tensor:
        """One G update on n fresh latents (labelled like the last real batch); distributed, n
        is the global batch and this rank takes its share of the latents."""
        model = self.model
        z = self._latents(n)
        model.discriminator.requires_grad_(False)
        with self._autocast():
            value = model.loss.generator(
                model.discriminator(self.generator_net(z, labels), labels).float()
            )
        optimizer.zero_grad(set_to_none=True)
        (value * self.world.loss_weight(len(z), n)).backward()
        optimizer.step()
        model.discriminator.requires_grad_(True)
        model.update_ema()
        self.generator_steps += 1
        return value.detach()
