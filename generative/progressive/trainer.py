"""Progressive growing (Karras et al. 2018) for the Progressive GAN and StyleGAN.

Training runs stage by stage, 4x4 first. Every stage after the first starts with a fade-in
phase (alpha rises linearly from 0 to 1 over `fade_images` real images, and the real images
are blended the same way between their upsampled half-resolution version and themselves),
then a stable phase of `stable_images` at alpha = 1 (`final_images` at the last stage).
G's EMA ramps up: its decay is min(ema_decay, (1 + t) / (10 + t)) after t G steps.
A non-progressive StyleGAN trains only the last stage, for as many images as the whole
schedule. Each D step takes a fresh real minibatch (successive seeded permutations) and fresh
z; every `n_critic`-th D step is followed by one G step; D's loss adds the configured GAN loss,
its gradient penalty and the drift term eps * E D(x)^2.

After each stage the trainer writes a checkpoint (`<checkpoint_dir>/stage_<k>_<r>x<r>`: the
model's files plus `trainer_state.pt` with both optimizers, the RNG, the batch order and the
history); `fit(..., resume_from=...)` continues with the next stage exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from generative.checksums import record_checksums, verify_checksums
from generative.configs import JsonConfig
from generative.gan.losses import clip_weights, gradient_penalty
from generative.gan.trainer import TrainingDivergedError
from generative.progressive.layers import downsample, upsample
from generative.progressive.model import ProgressiveModel
from generative.progressive.schedule import Phase, build_schedule
from generative.registry import atomic_directory, write_model_files
from generative.training import AUTOCAST_MODES, CLOCKS, Callback, autocast, resolve_device

TRAINER_STATE_FILE = "trainer_state.pt"
CHECK_EVERY = 25  # steps between finiteness checks (each is a device sync)


@dataclass(frozen=True)
class ProgressiveTrainerConfig(JsonConfig):
    """Optimisation and growth schedule (the paper: Adam lr 1e-3, betas (0, 0.99)).

    fade_images / stable_images: real images shown per fade-in / stable phase of a stage;
    final_images: the last stage's stable phase (None = stable_images).
    max_seconds: stop training after this many seconds (an equal wall-clock budget), counted
    by `clock`: "wall" (elapsed) or "process" (this process's CPU time).
    stop_after_stage: end after this stage's checkpoint (resume later with `resume_from`).
    """

    batch_size: int = 64
    lr: float = 1e-3
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.batch_size < 1 or self.n_critic < 1 or self.lr <= 0:
            raise ValueError("batch_size and n_critic must be >= 1 and lr > 0")
        if self.fade_images < 1 or self.stable_images < 1:
            raise ValueError("fade_images and stable_images must be >= 1")
        if self.final_images is not None and self.final_images < 1:
            raise ValueError(f"final_images must be >= 1, got {self.final_images}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.autocast not in AUTOCAST_MODES:
            raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {self.autocast!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {self.clock!r}")


class ProgressiveTrainer:
    """Trains a `ProgressiveModel` (ProGAN or StyleGAN) on images in [0, 1]."""

    def __init__(
        self,
        model: ProgressiveModel,
        config: ProgressiveTrainerConfig,
        callbacks: Sequence[Callback] = (),
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.callbacks = list(callbacks)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.device = resolve_device(config.device)
        progressive = getattr(model.config, "progressive", True)
        self.schedule: list[Phase] = build_schedule(model.stages, config, progressive)
        self.history: list[dict[str, float]] = []
        self.phase_index = 0
        self.generator_steps = 0
        self.should_stop = False
        self.checkpoints: list[Path] = []

    def fit(self, images: torch.Tensor, *, resume_from: str | Path | None = None) -> list[dict]:
        """Train through the schedule (from a checkpoint's next phase when resuming); returns
        one dict of mean losses per phase."""
        expected = tuple(self.model.config.data_shape)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape {expected}, got {tuple(images.shape[1:])}")
        self.model.to(self.device)
        self.pyramid = image_pyramid(self.model.to_model_scale(images.float()), self.model.stages)
        self.pyramid = [level.to(self.device) for level in self.pyramid]
        self.opt_g, self.opt_d = self._optimizers()
        self.rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.order = BatchOrder(len(images), self.config.batch_size, self.rng)
        if resume_from is not None:
            self._restore(Path(resume_from))
        for callback in self.callbacks:
            callback.on_train_begin(self)
        try:
            self._run_phases()
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self)
        self.model.eval()
        return self.history

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        lr, betas = self.config.lr, self.config.betas
        g = torch.optim.Adam(self.model.generator.parameters(), lr=lr, betas=betas)
        d = torch.optim.Adam(self.model.discriminator.parameters(), lr=lr, betas=betas)
        return g, d

    def _run_phases(self) -> None:
        start = CLOCKS[self.config.clock]()
        last_good = copy.deepcopy(self.model.state_dict())
        while self.phase_index < len(self.schedule) and not self.should_stop:
            phase = self.schedule[self.phase_index]
            logs = self._train_phase(phase, start)
            if logs is None:
                self.model.load_state_dict(last_good)
                raise TrainingDivergedError(
                    f"a loss became NaN or infinite at {phase.resolution}x{phase.resolution} "
                    f"({phase.kind} phase, generator step {self.generator_steps}); the model "
                    "was restored to the end of the previous phase. Lower the learning rate."
                )
            last_good = copy.deepcopy(self.model.state_dict())
            self.history.append(logs)
            self.phase_index += 1
            for callback in self.callbacks:
                callback.on_epoch_end(self, len(self.history) - 1, logs)
            if phase.last_of_stage and not logs["stopped_early"]:
                self._end_stage(phase)
            if self._out_of_time(start):
                return

    def _end_stage(self, phase: Phase) -> None:
        if self.checkpoint_dir is not None:
            self.checkpoints.append(self.save_checkpoint(self.checkpoint_dir / phase.checkpoint))
        for callback in self.callbacks:
            hook = getattr(callback, "on_stage_end", None)
            if hook is not None:
                hook(self, phase.stage)
        if self.config.stop_after_stage == phase.stage:
            self.should_stop = True

    def _out_of_time(self, start: float) -> bool:
        budget = self.config.max_seconds
        return budget is not None and CLOCKS[self.config.clock]() - start >= budget

    def _train_phase(self, phase: Phase, start: float) -> dict[str, float] | None:
        self.model.train()
        totals = torch.zeros(3, device=self.device)  # d_loss, g_loss, gradient penalty
        counts, shown = [0, 0], 0
        stopped = False
        while shown < phase.images:
            alpha = phase.alpha(shown)
            real = self._real_batch(phase.stage, alpha)
            d_loss, penalty = self.discriminator_step(real, phase.stage, alpha)
            totals[0] += d_loss
            totals[2] += penalty
            counts[0] += 1
            shown += len(real)
            if counts[0] % self.config.n_critic == 0:
                totals[1] += self.generator_step(len(real), phase.stage, alpha)
                counts[1] += 1
            if counts[0] % CHECK_EVERY == 0 and not torch.isfinite(totals).all():
                return None
            if self._out_of_time(start):  # a clock read: no device sync
                stopped = shown < phase.images
                break
        if not torch.isfinite(totals).all():
            return None
        self.model.set_progress(phase.stage, phase.alpha(shown))
        d, g, gp = totals.tolist()
        return {
            "stage": phase.stage, "resolution": phase.resolution, "alpha": phase.alpha(shown),
            "images": shown, "d_loss": d / counts[0], "g_loss": g / max(counts[1], 1),
            "gradient_penalty": gp / counts[0], "stopped_early": stopped,
        }  # fmt: skip

    def _real_batch(self, stage: int, alpha: float) -> torch.Tensor:
        real = self.pyramid[stage][self.order.next()]
        if alpha < 1.0:  # the real images fade like G's: from the half-resolution version
            real = torch.lerp(upsample(downsample(real)), real, alpha)
        return real

    def discriminator_step(
        self, real: torch.Tensor, stage: int, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update; returns (its loss, the gradient penalty)."""
        model, loss = self.model, self.model.loss
        z = model.sample_latent(len(real), generator=self.rng)
        with autocast(self.config.autocast, self.device):
            with torch.no_grad():
                fake = model.fake(z, stage, alpha, self.rng)
            real_values = model.critic(real, stage, alpha).float()
            value = loss.discriminator(real_values, model.critic(fake, stage, alpha).float())
            value = value + model.config.drift * real_values.pow(2).mean()
            penalty = torch.zeros((), device=self.device)
            if loss.penalty_weight > 0:
                critic = lambda x: model.critic(x, stage, alpha).float()  # noqa: E731
                penalty = gradient_penalty(critic, real, fake, generator=self.rng)
                value = value + loss.penalty_weight * penalty
        self.opt_d.zero_grad(set_to_none=True)
        value.backward()
        self.opt_d.step()
        if loss.clip_value is not None:
            clip_weights(model.discriminator, loss.clip_value)
        return value.detach(), penalty.detach()

    def generator_step(self, n: int, stage: int, alpha: float) -> torch.Tensor:
        """One G update on n fresh latents; then the EMA of G."""
        model = self.model
        z = model.sample_latent(n, generator=self.rng)
        model.discriminator.requires_grad_(False)
        with autocast(self.config.autocast, self.device):
            value = model.loss.generator(
                model.critic(model.fake(z, stage, alpha, self.rng), stage, alpha).float()
            )
        self.opt_g.zero_grad(set_to_none=True)
        value.backward()
        self.opt_g.step()
        model.discriminator.requires_grad_(True)
        self.generator_steps += 1
        model.update_ema(ema_decay(model.config.ema_decay, self.generator_steps))
        return value.detach()

    def save_checkpoint(self, folder: Path) -> Path:
        """The model's files and `trainer_state.pt`, written atomically into `folder`."""
        state = {
            "phase_index": self.phase_index,
            "generator_steps": self.generator_steps,
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
            "order": self.order.state(),
            "history": self.history,
            "trainer_config": self.config.to_dict(),
        }
        with atomic_directory(folder) as staging:
            write_model_files(self.model, staging)
            torch.save(state, staging / TRAINER_STATE_FILE)
            record_checksums(staging, [TRAINER_STATE_FILE])
        return folder

    def _restore(self, folder: Path) -> None:
        from generative.registry import read_model_files

        path = folder / TRAINER_STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a progressive checkpoint: no {path.name}")
        verify_checksums(folder)  # model files and trainer state, before loading any
        saved = read_model_files(folder, map_location=self.device)
        if saved.family != self.model.family or saved.config != self.model.config:
            raise ValueError(f"the checkpoint in {folder} is for another model configuration")
        self.model.load_state_dict(saved.state_dict())
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.rng.set_state(state["rng"])
        self.order.load_state(state["order"])
        self.phase_index = int(state["phase_index"])
        self.generator_steps = int(state["generator_steps"])
        self.history = list(state["history"])


def ema_decay(target: float, steps: int) -> float:
    """The EMA decay after `steps` G steps: min(target, (1 + steps) / (10 + steps)), a ramp-up
    so that a short run's EMA is not mostly its initial weights (0.999 would keep 60% of them
    after 500 steps)."""
    return min(target, (1.0 + steps) / (10.0 + steps))


def image_pyramid(images: torch.Tensor, stages: int) -> list[torch.Tensor]:
    """The images at every stage's resolution (2x2 average pooling), 4x4 first."""
    levels = [images]
    for _ in range(stages - 1):
        levels.append(downsample(levels[-1]))
    return levels[::-1]


class BatchOrder:
    """Minibatch indices from successive seeded permutations of the rows; its state (the
    current permutation and position) is part of a checkpoint."""

    def __init__(self, rows: int, batch_size: int, rng: torch.Generator) -> None:
        self.rows, self.batch_size, self.rng = rows, min(batch_size, rows), rng
        self.permutation = torch.randperm(rows, generator=rng, device=rng.device)
        self.position = 0

    def next(self) -> torch.Tensor:
        """The next batch_size row indices (a new permutation when the current one ends)."""
        if self.position + self.batch_size > self.rows:
            self.permutation = torch.randperm(self.rows, generator=self.rng, device=self.rng.device)
            self.position = 0
        batch = self.permutation[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state(self) -> dict:
        """The permutation (on the CPU) and the position in it."""
        return {"permutation": self.permutation.cpu(), "position": self.position}

    def load_state(self, state: dict) -> None:
        """Continue from a saved `state`."""
        self.permutation = state["permutation"].to(self.permutation.device)
        self.position = int(state["position"])
