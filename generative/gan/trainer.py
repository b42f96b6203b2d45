"""The seed's Algorithm 1: k discriminator steps per generator step, each net with its own
optimizer, minibatches drawn by a seeded permutation of the real data on the training device.
`GANTrainer` supplies these steps to the one training loop (`generative.loop`), which owns the
epochs, the budget, the non-finite guard, the callbacks, the checkpoints and resume.

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

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generative.checkpoints import run_fingerprint
from generative.configs import JsonConfig
from generative.distributed import World
from generative.gan.augment import (
    AdaptiveStrength,
    augment,
    check_augment,
    parse_policy,
    saved_ada_state,
)
from generative.gan.losses import clip_weights, gradient_penalty, r1_penalty
from generative.gan.model import GAN
from generative.gan.schedule import (
    budget_progress,
    check_decay_start,
    decay_factor,
    scale_learning_rates,
)
from generative.loop import (
    CLOCKS,
    Callback,
    LoopTrainer,
    TrainingDivergedError,
    autocast,
    check_runtime,
    resolve_device,
)

__all__ = [
    "OPTIMIZERS",
    "GANTrainer",
    "GANTrainerConfig",
    "TrainingDivergedError",
    "check_two_player",
]

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, betas: torch.optim.Adam(params, lr=lr, betas=betas),
    "rmsprop": lambda params, lr, betas: torch.optim.RMSprop(params, lr=lr),
    "sgd": lambda params, lr, betas: torch.optim.SGD(params, lr=lr, momentum=betas[0]),
}


def check_two_player(config: Any) -> None:
    """The checks (and the betas' normalisation to a float tuple) of a frozen config dataclass
    with `epochs`, `batch_size`, `lr_generator`, `lr_discriminator` and `betas`."""
    object.__setattr__(config, "betas", tuple(float(b) for b in config.betas))
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if config.lr_generator <= 0 or config.lr_discriminator <= 0:
        raise ValueError("learning rates must be > 0")


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
    augment: differentiable augmentations D sees real and fake images through (a subset of
        "color,translation,cutout", `generative.gan.augment`; "" = none), each applied with
        probability `augment_strength`, or, with `ada_target`, with the strength ADA adapts
        from D's overfitting signal E[sign(D(real))] (target 0.6 in the paper).
    r1_gamma: weight gamma of the R1 penalty (gamma / 2) E||grad D(real)||^2 (0 = off),
        applied every `r1_interval` D steps and scaled by it (lazy regularisation).
    lr_decay_start: None = constant learning rates; a fraction f in [0, 1): once f of the
        budget is used (the largest used fraction of `max_seconds`, `max_generator_steps` and
        the epochs' batches), both learning rates fall linearly to 0 at the budget's end
        (`generative.gan.schedule`).
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
    augment: str = ""
    augment_strength: float = 1.0
    ada_target: float | None = None
    r1_gamma: float = 0.0
    r1_interval: int = 16
    lr_decay_start: float | None = None

    def __post_init__(self) -> None:
        check_two_player(self)
        check_decay_start(self.lr_decay_start)
        check_augment(self.augment, self.augment_strength, self.ada_target)
        if self.r1_gamma < 0 or self.r1_interval < 1:
            raise ValueError("r1_gamma must be >= 0 and r1_interval >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.n_critic is not None and self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")
        check_runtime(self.autocast, self.clock, self.max_seconds)


class GANTrainer(LoopTrainer):
    """Trains a `GAN` on in-memory data (images in [0, 1] or standardised table rows).

    `checkpoint_dir`: write a checkpoint after every epoch and resume from the latest one there.
    `world`: train data-parallel across torchrun's processes (`generative.distributed`).
    """

    generator_steps: int
    discriminator_steps: int
    counters = ("generator_steps", "discriminator_steps")
    loss_name = "a GAN loss"
    divergence_advice = "Lower the learning rates or use a gradient-penalty loss."

    def __init__(
        self,
        model: GAN,
        config: GANTrainerConfig,
        callbacks: Sequence[Callback] = (),
        *,
        checkpoint_dir: str | Path | None = None,
        world: World | None = None,
    ) -> None:
        world = world or World(device=resolve_device(config.device))
        super().__init__(model, config, callbacks, checkpoint_dir=checkpoint_dir, world=world)
        self.generator_net: nn.Module = model.generator  # DDP-wrapped by fit when distributed
        self.discriminator_net: nn.Module = model.discriminator
        self.n_critic = config.n_critic or model.loss.n_critic
        self.policy = parse_policy(config.augment)
        self.ada = None if config.ada_target is None else AdaptiveStrength(config.ada_target)
        if self.policy and not model.config.is_image:
            raise ValueError("augment applies to images only")

    @property
    def augment_strength(self) -> float:
        """The probability each augmentation is applied with now (ADA's, when adaptive)."""
        return self.config.augment_strength if self.ada is None else self.ada.strength

    def _augmented(self, images: torch.Tensor) -> torch.Tensor:
        return augment(images, self.policy, self.augment_strength, self.rng)

    def family_state(self) -> dict[str, Any]:
        """ADA's state, which a resume continues from."""
        return {} if self.ada is None else {"ada": self.ada.state()}

    def load_family_state(self, state: dict[str, Any]) -> None:
        if self.ada is not None:
            self.ada.load_state(saved_ada_state(state))

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
        if self.model.loss.penalty_weight > 0 or self.config.r1_gamma > 0 or self.policy:
            raise ValueError(
                "gradient-penalty losses, R1 and augmentation train in a single process only"
            )

    def prepare_networks(self) -> None:
        """G and D as the training steps call them: each in DDP when distributed."""
        if self.world.distributed and self.device.type == "cuda":
            for net in (self.model.generator, self.model.discriminator):
                nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.generator_net = self.world.wrap(self.model.generator)
        self.discriminator_net = self.world.wrap(self.model.discriminator)

    def _latents(self, global_rows: int) -> torch.Tensor:
        """This rank's share of `global_rows` latents drawn from the shared generator."""
        return self.world.shard(self.model.sample_latent(global_rows, generator=self.rng))

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        build, betas = OPTIMIZERS[self.config.optimizer], self.config.betas
        g = build(self.model.generator.parameters(), self.config.lr_generator, betas)
        d = build(self.model.discriminator.parameters(), self.config.lr_discriminator, betas)
        return [g, d]

    def _decay_learning_rates(self) -> None:
        """Scale both learning rates by the decay schedule at the budget used so far."""
        config = self.config
        if config.lr_decay_start is None:
            return
        batches = config.epochs * math.ceil(len(self.data) / config.batch_size)
        progress = budget_progress(
            (CLOCKS[config.clock]() - self.started, config.max_seconds),
            (self.generator_steps, config.max_generator_steps),
            (self.discriminator_steps, batches),
        )
        rates = [config.lr_generator, config.lr_discriminator]
        scale_learning_rates(self.optimizers, rates, decay_factor(progress, config.lr_decay_start))

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
        self.data, self.labels = self._prepare(data, labels)
        self.optimizers = self._optimizers()
        return self.run(resume_from)

    # --- the loop's hooks ------------------------------------------------------------------
    def budget_spent(self) -> bool:
        """The G-step cap or the time budget is used up (a clock read: no device sync)."""
        cap = self.config.max_generator_steps
        return (cap is not None and self.generator_steps >= cap) or super().budget_spent()

    def batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """The global batches' row indices of a seeded permutation."""
        self.model.train()
        self.epoch_generator_steps = 0
        order = torch.randperm(len(self.data), generator=self.rng, device=self.device)
        yield from order.split(self.config.batch_size)

    def train_step(self, index: torch.Tensor) -> torch.Tensor:
        """One D step on this rank's rows of the global batch `index`, then a G step after
        every n_critic-th; returns the (d_loss, g_loss, penalty) sums' increments."""
        self._decay_learning_rates()
        opt_g, opt_d = self.optimizers
        rows = self.world.shard(index)
        share = len(rows) / len(index)  # this rank's part of the global batch mean
        real_labels = None if self.labels is None else self.labels[rows]
        d_loss, penalty = self.discriminator_step(self.data[rows], real_labels, opt_d, len(index))
        g_loss = torch.zeros((), device=self.device)
        if self.discriminator_steps % self.n_critic == 0:
            g_loss = self.generator_step(len(index), real_labels, opt_g)
            self.epoch_generator_steps += 1
        return torch.stack([share * d_loss, share * g_loss, share * penalty])

    def epoch_logs(self, sums: list[float], count: int) -> dict[str, float]:
        """Mean D and G losses (and the gradient penalty when the loss has one)."""
        logs = {"d_loss": sums[0] / count, "g_loss": sums[1] / max(self.epoch_generator_steps, 1)}
        if self.model.loss.penalty_weight > 0:
            logs["gradient_penalty"] = sums[2] / count
        if self.config.r1_gamma > 0:  # computed on every r1_interval-th step only
            logs["r1_penalty"] = sums[2] / count * self.config.r1_interval
        if self.policy:
            logs["augment_strength"] = self.augment_strength
        return logs

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
                fake = self._augmented(model.generator(z, labels))
            real = self._augmented(real)
            real_out = critic_net(real, labels).float()
            value = loss.discriminator(real_out, critic_net(fake, labels).float())
            value, penalty = self._penalties(value, real, fake, labels)
        if self.ada is not None:
            self.ada.observe(real_out)
        optimizer.zero_grad(set_to_none=True)
        (value * self.world.loss_weight(len(real), global_rows)).backward()
        optimizer.step()
        if loss.clip_value is not None:
            clip_weights(model.discriminator, loss.clip_value)
        self.discriminator_steps += 1
        return value.detach(), penalty.detach()

    def _penalties(
        self, value: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, labels: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's loss with the loss's gradient penalty, or the lazy R1 penalty when due; the
        penalty's value (0 when none was computed)."""
        model, config = self.model, self.config
        critic = lambda x: model.discriminator(x, labels).float()  # noqa: E731
        penalty = torch.zeros((), device=self.device)
        if model.loss.penalty_weight > 0:
            penalty = gradient_penalty(critic, real, fake, generator=self.rng)
            value = value + model.loss.penalty_weight * penalty
        if config.r1_gamma > 0 and self.discriminator_steps % config.r1_interval == 0:
            penalty = r1_penalty(critic, real)
            value = value + 0.5 * config.r1_gamma * config.r1_interval * penalty
        return value, penalty

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
                model.discriminator(self._augmented(self.generator_net(z, labels)), labels).float()
            )
        optimizer.zero_grad(set_to_none=True)
        (value * self.world.loss_weight(len(z), n)).backward()
        optimizer.step()
        model.discriminator.requires_grad_(True)
        model.update_ema()
        self.generator_steps += 1
        return value.detach()
