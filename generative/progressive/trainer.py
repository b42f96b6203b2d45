"""Progressive growing (Karras et al. 2018) for the Progressive GAN and StyleGAN.

Training runs stage by stage, 4x4 first. Every stage after the first starts with a fade-in
phase (alpha rises linearly from 0 to 1 over `fade_images` real images, and the real images
are blended the same way between their upsampled half-resolution version and themselves),
then a stable phase of `stable_images` at alpha = 1 (`final_images` at the last stage).
G's EMA ramps up: its decay is min(ema_decay, (1 + t) / (10 + t)) after t G steps.
A non-progressive StyleGAN trains only the last stage, for as many images as the whole
schedule. Each D step takes a fresh real minibatch (successive seeded permutations) and fresh
z; every `n_critic`-th D step is followed by one G step; D's loss adds the configured GAN loss,
its gradient penalty, the lazy R1 penalty (every `r1_interval`-th D step, scaled by it) and the
drift term eps * E D(x)^2. The logged `gradient_penalty` is their penalties' mean per D step.

`ProgressiveTrainer` supplies these steps to the one training loop (`generative.loop`), a phase
of the schedule being the loop's epoch. After each stage it writes a checkpoint
`<checkpoint_dir>/stage_<k>_<r>x<r>` in the loop's checksummed format: `trainer_state.pt`
(both optimizers, the RNG, the batch order, the step counter, the history, the callbacks' state
and a fingerprint of the configuration and the images) next to the model's files, so the folder
also loads as a model. `fit(..., resume_from=<such a folder>)` continues with the next stage
exactly where an uninterrupted run would be; the time budget and `stop_after_stage` may differ
on resume.

With a `generative.distributed.World` of several processes (torchrun) every rank draws the same
global batch of `batch_size` rows and latents and trains on its share: the forward passes run in
a `global_batch` block, so D's minibatch-stddev groups and StyleGAN's w average span the global
batch and the per-row draws (the penalty's mixing weights, StyleGAN's mixing latents and noise
maps) are made for all its rows; each rank weights its mean losses by `World.loss_weight` and
the gradients are averaged over the ranks. The run follows the single-process one with the same
global batch up to float summation order (tests/test_distributed_families.py); rank 0 alone
writes the checkpoints. A time budget (`max_seconds`) is single-process only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generative.checkpoints import TRAINER_STATE_FILE, run_fingerprint, write_checkpoint
from generative.configs import JsonConfig
from generative.distributed import World, global_batch
from generative.gan.augment import (
    AdaptiveStrength,
    augment,
    check_augment,
    parse_policy,
    saved_ada_state,
)
from generative.gan.losses import clip_weights, gradient_penalty, r1_penalty
from generative.gan.schedule import (
    budget_progress,
    check_decay_start,
    decay_factor,
    scale_learning_rates,
)
from generative.loop import CLOCKS, Callback, LoopTrainer, autocast, check_runtime
from generative.progressive.batches import BatchOrder, image_pyramid
from generative.progressive.layers import downsample, upsample
from generative.progressive.model import ProgressiveModel
from generative.progressive.schedule import Phase, build_schedule
from generative.registry import write_model_files

__all__ = [
    "TRAINER_STATE_FILE",
    "ProgressiveTrainer",
    "ProgressiveTrainerConfig",
    "ema_decay",
]
# a resumed growth may have another budget: these fields are not part of the fingerprint
RESUMABLE_CHANGES = ("device", "max_seconds", "clock", "stop_after_stage")


@dataclass(frozen=True)
class ProgressiveTrainerConfig(JsonConfig):
    """Optimisation and growth schedule: Adam with the paper's betas (0, 0.99) and lr 6e-3, 6x
    the paper's 1e-3, for budgets of a few thousand steps (docs/benchmarks.md, "The
    progressive models' learning rate": FID 204 -> 39 for ProGAN at 480 CPU s; 2.4e-2 diverged).

    fade_images / stable_images: real images shown per fade-in / stable phase of a stage;
    final_images: the last stage's stable phase (None = stable_images).
    max_seconds: stop training after this many seconds (an equal wall-clock budget), counted
    by `clock`: "wall" (elapsed) or "process" (this process's CPU time).
    stop_after_stage: end after this stage's checkpoint (resume later with `resume_from`).
    augment / augment_strength / ada_target: differentiable augmentation of every image D sees
    (real and generated, in D's and G's steps; `generative.gan.augment`), at a fixed strength
    or the one ADA adapts towards E[sign D(real)] = ada_target; single-process only.
    lr_decay_start: None = a constant lr; a fraction f in [0, 1): once f of the budget is used
    (the larger used fraction of the schedule's images and of `max_seconds`), the lr of G and
    D falls linearly to 0 at the budget's end (`generative.gan.schedule`).
    """

    batch_size: int = 64
    lr: float = 6e-3
    betas: tuple[float, float] = (0.0, 0.99)
    fade_images: int = 20_000
    stable_images: int = 20_000
    final_images: int | None = None
    n_critic: int = 1
    seed: int = 0
    device: str = "auto"
    autocast: str = "auto"
    max_seconds: float | None = None
    clock: str = "wall"
    stop_after_stage: int | None = None
    augment: str = ""
    augment_strength: float = 1.0
    ada_target: float | None = None
    lr_decay_start: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check_decay_start(self.lr_decay_start)
        if self.batch_size < 1 or self.n_critic < 1 or self.lr <= 0:
            raise ValueError("batch_size and n_critic must be >= 1 and lr > 0")
        if self.fade_images < 1 or self.stable_images < 1:
            raise ValueError("fade_images and stable_images must be >= 1")
        if self.final_images is not None and self.final_images < 1:
            raise ValueError(f"final_images must be >= 1, got {self.final_images}")
        check_runtime(self.autocast, self.clock, self.max_seconds)
        check_augment(self.augment, self.augment_strength, self.ada_target)


class ProgressiveTrainer(LoopTrainer):
    """Trains a `ProgressiveModel` (ProGAN or StyleGAN) on images in [0, 1].

    `checkpoint_dir`: write a checkpoint after every stage. `world`: train data-parallel across
    torchrun's processes (module docstring; every rank must start from the same weights).
    """

    checkpoint_kind = "progressive"
    generator_steps: int
    counters = ("generator_steps",)

    def __init__(
        self,
        model: ProgressiveModel,
        config: ProgressiveTrainerConfig,
        callbacks: Sequence[Callback] = (),
        *,
        checkpoint_dir: str | Path | None = None,
        world: World | None = None,
    ) -> None:
        super().__init__(model, config, callbacks, checkpoint_dir=checkpoint_dir, world=world)
        progressive = getattr(model.config, "progressive", True)
        self.schedule: list[Phase] = build_schedule(model.stages, config, progressive)
        self.checkpoints: list[Path] = []
        self.policy = parse_policy(config.augment)
        self.ada = None if config.ada_target is None else AdaptiveStrength(config.ada_target)

    @property
    def augment_strength(self) -> float:
        """The probability each augmentation is applied with now (ADA's, when adaptive)."""
        return self.config.augment_strength if self.ada is None else self.ada.strength

    def _augmented(self, images: torch.Tensor) -> torch.Tensor:
        return augment(images, self.policy, self.augment_strength, self.rng)

    @property
    def phase_index(self) -> int:
        """How many phases of the schedule are done."""
        return len(self.history)

    def fit(self, images: torch.Tensor, *, resume_from: str | Path | None = None) -> list[dict]:
        """Train through the schedule (from a checkpoint's next phase when resuming); returns
        one dict of mean losses per phase."""
        expected = tuple(self.model.config.data_shape)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape {expected}, got {tuple(images.shape[1:])}")
        self._check_world(len(images))
        if resume_from is not None or self.checkpoint_dir is not None:
            self.fingerprint = run_fingerprint(
                self.model, self.config, images, free=RESUMABLE_CHANGES
            )
        self.model.to(self.device)
        self.pyramid = image_pyramid(self.model.to_model_scale(images.float()), self.model.stages)
        self.pyramid = [level.to(self.device) for level in self.pyramid]
        self.opt_g, self.opt_d = self.optimizers = self._optimizers()
        self.rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.order = BatchOrder(len(images), self.config.batch_size, self.rng)
        self.discriminator_steps = 0
        self.started = CLOCKS[self.config.clock]()
        return self.run(resume_from)

    def _check_world(self, rows: int) -> None:
        """Several processes need a batch with a row for each and the same steps everywhere."""
        if not self.ranks.distributed:
            return
        if min(self.config.batch_size, rows) < self.ranks.size:
            raise ValueError(
                f"batches of {min(self.config.batch_size, rows)} rows leave a process without "
                f"rows among {self.ranks.size}: raise batch_size"
            )
        if self.config.max_seconds is not None:
            raise ValueError("max_seconds differs between processes: train a shorter schedule")
        if self.policy:
            raise ValueError("augmentation trains in a single process only: drop augment")

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        lr, betas = self.config.lr, self.config.betas
        g = torch.optim.Adam(self.model.generator.parameters(), lr=lr, betas=betas)
        d = torch.optim.Adam(self.model.discriminator.parameters(), lr=lr, betas=betas)
        return [g, d]

    # --- the loop's hooks: a phase is an epoch ---------------------------------------------
    def epoch_count(self) -> int:
        """The schedule's phases."""
        return len(self.schedule)

    def checkpoint_to_resume(self, resume_from: str | Path | None) -> Path | None:
        """Only `resume_from`: a new run into a used checkpoint_dir starts afresh."""
        return None if resume_from is None else Path(resume_from)

    def ended(self) -> bool:
        """Never: a resumed growth continues (its budget and stop_after_stage are its own)."""
        return False

    def family_state(self) -> dict[str, Any]:
        """The batch order (the permutation and the position in it), the D steps taken
        (the lazy R1's schedule) and ADA's strength."""
        state = {"order": self.order.state(), "discriminator_steps": self.discriminator_steps}
        return state if self.ada is None else {**state, "ada": self.ada.state()}

    def load_family_state(self, state: dict[str, Any]) -> None:
        """Continue from `family_state` (a checkpoint from before R1 counted D steps: G's)."""
        self.order.load_state(state["order"])
        n_critic = self.config.n_critic
        self.discriminator_steps = int(
            state.get("discriminator_steps", self.generator_steps * n_critic)
        )
        if self.ada is not None:
            self.ada.load_state(saved_ada_state(state))

    def divergence_message(self, epoch: int) -> str:
        """Names the phase and the G step."""
        phase = self.schedule[epoch]
        return (
            f"a loss became NaN or infinite at {phase.resolution}x{phase.resolution} "
            f"({phase.kind} phase, generator step {self.generator_steps}); the model "
            "was restored to the end of the previous phase. Lower the learning rate."
        )

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, float]]:
        """Real minibatches (faded like G at the phase's alpha) until the phase has shown
        its images."""
        self.model.train()
        self.phase = self.schedule[epoch]
        self.shown, self.phase_steps, self.phase_generator_steps = 0, 0, 0
        while self.shown < self.phase.images:
            alpha = self.phase.alpha(self.shown)
            yield self._real_batch(self.phase.stage, alpha), alpha

    def train_step(self, batch: tuple[torch.Tensor, float]) -> torch.Tensor:
        """One D step, then a G step after every n_critic-th, on this rank's share of the
        global batch; returns its share of the (d_loss, g_loss, penalty) sums' increments."""
        self._decay_learning_rates()
        (real, alpha), stage, rows = batch, self.phase.stage, self.order.batch_size
        d_loss, penalty = self.discriminator_step(real, stage, alpha)
        self.phase_steps += 1
        self.shown += rows
        g_loss = torch.zeros((), device=self.device)
        if self.phase_steps % self.config.n_critic == 0:
            g_loss = self.generator_step(rows, stage, alpha)
            self.phase_generator_steps += 1
        return torch.stack([d_loss, g_loss, penalty]) * (len(real) / rows)

    def _decay_learning_rates(self) -> None:
        """Scale the lr of G and D by the decay schedule at the budget used so far."""
        config = self.config
        if config.lr_decay_start is None:
            return
        images = [phase.images for phase in self.schedule]
        progress = budget_progress(
            (CLOCKS[config.clock]() - self.started, config.max_seconds),
            (sum(images[: self.phase_index]) + self.shown, sum(images)),
        )
        factor = decay_factor(progress, config.lr_decay_start)
        scale_learning_rates(self.optimizers, [config.lr, config.lr], factor)

    def epoch_logs(self, sums: list[float], count: int) -> dict[str, float]:
        """The phase's mean losses, where it ended (alpha, images) and whether early; the
        model's progress is set to that point."""
        phase, shown = self.phase, self.shown
        self.model.set_progress(phase.stage, phase.alpha(shown))
        d, g, gp = sums
        logs = {
            "stage": phase.stage, "resolution": phase.resolution, "alpha": phase.alpha(shown),
            "images": shown, "d_loss": d / count,
            "g_loss": g / max(self.phase_generator_steps, 1), "gradient_penalty": gp / count,
            "stopped_early": shown < phase.images,
        }  # fmt: skip
        if self.policy:
            logs["augment_strength"] = self.augment_strength
        return logs

    def end_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """At a completed stage's end: its checkpoint, the callbacks' `on_stage_end`, and the
        stop `stop_after_stage` asks for."""
        phase = self.schedule[epoch]
        if not phase.last_of_stage or logs["stopped_early"]:
            return
        if self.checkpoint_dir is not None and self.ranks.is_main:
            folder = self.checkpoint_dir / phase.checkpoint
            state = self.checkpoint_state(epoch + 1)
            files = lambda staging: write_model_files(self.model, staging)  # noqa: E731
            self.checkpoints.append(write_checkpoint(folder, state, files))
        for callback in self.callbacks:
            hook = getattr(callback, "on_stage_end", None)
            if hook is not None:
                hook(self, phase.stage)
        if self.config.stop_after_stage == phase.stage:
            self.should_stop = True

    def _real_batch(self, stage: int, alpha: float) -> torch.Tensor:
        """This rank's share of the next global batch of real images at `stage`."""
        real = self.pyramid[stage][self.ranks.shard(self.order.next())]
        if alpha < 1.0:  # the real images fade like G's: from the half-resolution version
            real = torch.lerp(upsample(downsample(real)), real, alpha)
        return real

    def discriminator_step(
        self, real: torch.Tensor, stage: int, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update on this rank's share `real` of a global batch; returns (its loss, the
        gradient penalty) on these rows."""
        model, loss, rows = self.model, self.model.loss, self.order.batch_size
        z = self.ranks.shard(model.sample_latent(rows, generator=self.rng))
        with global_batch(self.ranks, rows), autocast(self.config.autocast, self.device):
            with torch.no_grad():
                fake = self._augmented(model.fake(z, stage, alpha, self.rng))
            real = self._augmented(real)
            real_values = model.critic(real, stage, alpha).float()
            value = loss.discriminator(real_values, model.critic(fake, stage, alpha).float())
            value = value + model.config.drift * real_values.pow(2).mean()
            value, penalty = self._penalised(value, real, fake, stage, alpha)
        if self.ada is not None:
            self.ada.observe(real_values)
        self.opt_d.zero_grad(set_to_none=True)
        self._backward(value, len(real), rows, model.discriminator)
        self.opt_d.step()
        if loss.clip_value is not None:
            clip_weights(model.discriminator, loss.clip_value)
        return value.detach(), penalty.detach()

    def _penalised(
        self, value: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, stage: int, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's loss `value` plus the loss's gradient penalty and, on every `r1_interval`-th D
        step, the lazy R1 term; returns (the penalised loss, the penalty it added)."""
        config, loss = self.model.config, self.model.loss
        critic = lambda x: self.model.critic(x, stage, alpha).float()  # noqa: E731
        penalty = torch.zeros((), device=self.device)
        if loss.penalty_weight > 0:
            penalty = gradient_penalty(critic, real, fake, generator=self.rng)
            value = value + loss.penalty_weight * penalty
        if config.r1_gamma > 0 and self.discriminator_steps % config.r1_interval == 0:
            r1 = r1_penalty(critic, real)
            penalty = penalty + r1
            value = value + 0.5 * config.r1_gamma * config.r1_interval * r1
        self.discriminator_steps += 1
        return value, penalty

    def generator_step(self, n: int, stage: int, alpha: float) -> torch.Tensor:
        """One G update on this rank's share of n fresh latents; then the EMA of G."""
        model = self.model
        z = self.ranks.shard(model.sample_latent(n, generator=self.rng))
        model.discriminator.requires_grad_(False)
        with global_batch(self.ranks, n), autocast(self.config.autocast, self.device):
            fake = self._augmented(model.fake(z, stage, alpha, self.rng))
            value = model.loss.generator(model.critic(fake, stage, alpha).float())
        self.opt_g.zero_grad(set_to_none=True)
        self._backward(value, len(z), n, model.generator)
        self.opt_g.step()
        model.discriminator.requires_grad_(True)
        self.generator_steps += 1
        model.update_ema(ema_decay(model.config.ema_decay, self.generator_steps))
        return value.detach()

    def _backward(self, loss: torch.Tensor, rows: int, global_rows: int, net: nn.Module) -> None:
        """`net`'s gradients of the global batch's mean loss from this rank's mean `loss` on
        `rows` of its `global_rows` rows (weighted here, averaged over the ranks)."""
        (loss * self.ranks.loss_weight(rows, global_rows)).backward()
        self.ranks.average_gradients(net.parameters())


def ema_decay(target: float, steps: int) -> float:
    """The EMA decay after `steps` G steps: min(target, (1 + steps) / (10 + steps)), a ramp-up
    so that a short run's EMA is not mostly its initial weights (0.999 would keep 60% of them
    after 500 steps)."""
    return min(target, (1.0 + steps) / (10.0 + steps))
