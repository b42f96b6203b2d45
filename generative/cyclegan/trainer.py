"""CycleGAN's training loop (Zhu et al. 2017, section 4 and the paper's code).

Each step takes a minibatch of A and an independent minibatch of B (the domains are unpaired)
and makes one update of both generators (one Adam over G_AB and G_BA, the discriminators
frozen) followed by one update of both discriminators (one Adam over D_A and D_B) on real
images and on fakes drawn from the two image history buffers. An epoch is one pass over the
larger domain: each domain is walked through its own seeded permutations. The learning rates
may decay linearly to zero over the last `decay_fraction` of the planned steps (the paper:
100 constant epochs, then 100 decaying: 0.5). A NaN or infinite loss stops training with
`generative.gan.TrainingDivergedError`, the model put back to the end of the last finite epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from generative.configs import JsonConfig
from generative.cyclegan.history import ImageHistory
from generative.cyclegan.model import CycleGAN
from generative.gan.trainer import run_guarded_epochs
from generative.training import AUTOCAST_MODES, Callback, autocast, resolve_device

CHECK_EVERY = 25  # steps between finiteness checks (each is a device sync)
LOG_KEYS = ("d_a", "d_b", "g_adv", "cycle", "identity", "g_total")


@dataclass(frozen=True)
class CycleGANTrainerConfig(JsonConfig):
    """Optimisation settings for `CycleGANTrainer` (the paper's Adam, lr 2e-4, betas (0.5,
    0.999); its batch size is 1 at 256 px, small images take larger batches).

    decay_fraction: the learning rates fall linearly to 0 over this last fraction of the
        planned steps (epochs x steps per epoch, capped by max_steps); 0 keeps them constant.
    max_steps: stop after this many steps (an equal-budget cap), None = no cap.
    device/autocast: as for `generative.training.TrainerConfig`.
    """

    epochs: int = 10
    batch_size: int = 16
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_fraction: float = 0.0
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"
    autocast: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.lr_generator <= 0 or self.lr_discriminator <= 0:
            raise ValueError("learning rates must be > 0")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.autocast not in AUTOCAST_MODES:
            raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {self.autocast!r}")


def linear_decay(step: int, total: int, fraction: float) -> float:
    """The learning-rate factor at `step` of `total`: 1 until the last `fraction` of the steps,
    then falling linearly, reaching 1/(decay steps + 1) at the last step (never 0)."""
    decay_steps = int(round(fraction * total))
    if decay_steps == 0:
        return 1.0
    start = total - decay_steps
    return 1.0 - max(0, step - start + 1) / (decay_steps + 1)


class CycleGANTrainer:
    """Trains a `CycleGAN` on two in-memory sets of [0, 1] images (N, C, H, W), unpaired."""

    def __init__(
        self, model: CycleGAN, config: CycleGANTrainerConfig, callbacks: Sequence[Callback] = ()
    ) -> None:
        self.model = model
        self.config = config
        self.callbacks = list(callbacks)
        self.device = resolve_device(config.device)
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self.steps = 0

    def _prepare(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        expected = self.model.config.image_shape
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"domain {domain} images must have shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        if len(images) == 0:
            raise ValueError(f"domain {domain} has no images")
        return self.model.to_model_scale(images.float()).to(self.device)

    def steps_per_epoch(self, n_a: int, n_b: int) -> int:
        """Minibatches in one pass over the larger domain."""
        return math.ceil(max(n_a, n_b) / self.config.batch_size)

    def planned_steps(self, n_a: int, n_b: int) -> int:
        """epochs x steps per epoch, capped by max_steps."""
        planned = self.config.epochs * self.steps_per_epoch(n_a, n_b)
        return min(planned, self.config.max_steps or planned)

    def fit(self, domain_a: torch.Tensor, domain_b: torch.Tensor) -> list[dict[str, float]]:
        """Train; returns one dict of mean losses per epoch (`LOG_KEYS`)."""
        torch.manual_seed(self.config.seed)
        self.rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        a, b = self._prepare(domain_a, "A"), self._prepare(domain_b, "B")
        self.model.to(self.device)
        self.histories = [
            ImageHistory(self.model.config.history_size, generator=self.rng) for _ in "ab"
        ]
        optimizers = self._optimizers(self.planned_steps(len(a), len(b)))
        for callback in self.callbacks:
            callback.on_train_begin(self)
        try:
            self._run_epochs(a, b, optimizers)
        finally:  # progress bars close and loggers flush on a divergence too
            for callback in self.callbacks:
                callback.on_train_end(self)
        self.model.eval()
        return self.history

    def _optimizers(self, total: int) -> list:
        model, config = self.model, self.config
        g_params = [p for net in model.generators() for p in net.parameters()]
        d_params = [p for net in model.discriminators() for p in net.parameters()]
        opt_g = torch.optim.Adam(g_params, lr=config.lr_generator, betas=config.betas)
        opt_d = torch.optim.Adam(d_params, lr=config.lr_discriminator, betas=config.betas)
        factor = lambda step: linear_decay(step, total, config.decay_fraction)  # noqa: E731
        schedules = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
        return [opt_g, opt_d, *schedules]

    def _run_epochs(self, a: torch.Tensor, b: torch.Tensor, optimizers: list) -> None:
        run_guarded_epochs(
            self,
            lambda: self._train_epoch(a, b, optimizers),
            self._divergence_message,
            self._budget_spent,
        )

    def _divergence_message(self, epoch: int) -> str:
        restored = "its initial weights" if epoch == 0 else f"the end of epoch {epoch}"
        return (
            f"a CycleGAN loss became NaN or infinite in epoch {epoch + 1} (by step "
            f"{self.steps}); training stopped and the model was restored to {restored}, the "
            "last good checkpoint. Lower the learning rates."
        )

    def _budget_spent(self) -> bool:
        return self.config.max_steps is not None and self.steps >= self.config.max_steps

    def _walk(self, n: int, length: int) -> torch.Tensor:
        """`length` indices into n rows: seeded permutations of range(n), one after another."""
        rounds = math.ceil(length / n)
        orders = [torch.randperm(n, generator=self.rng, device=self.device) for _ in range(rounds)]
        return torch.cat(orders)[:length]

    def _train_epoch(self, a: torch.Tensor, b: torch.Tensor, optimizers: list):
        self.model.train()
        length = max(len(a), len(b))
        batches = zip(
            self._walk(len(a), length).split(self.config.batch_size),
            self._walk(len(b), length).split(self.config.batch_size),
            strict=True,
        )
        totals = torch.zeros(len(LOG_KEYS), device=self.device)
        count = 0
        for index_a, index_b in batches:
            totals += self.train_step(a[index_a], b[index_b], optimizers)
            count += 1
            if count % CHECK_EVERY == 0 and not torch.isfinite(totals).all():
                return None
            if self._budget_spent():
                break
        if not torch.isfinite(totals).all():
            return None
        return {key: value / count for key, value in zip(LOG_KEYS, totals.tolist(), strict=True)}

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, optimizers: list):
        """One generator update then one discriminator update; returns the `LOG_KEYS` values
        (detached, on the device)."""
        model, (opt_g, opt_d, *schedules) = self.model, optimizers
        for net in model.discriminators():
            net.requires_grad_(False)
        with autocast(self.config.autocast, self.device):
            g_total, terms, fake_a, fake_b = model.generator_loss(real_a, real_b)
        opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        opt_g.step()
        for net in model.discriminators():
            net.requires_grad_(True)
        history_a, history_b = self.histories
        with autocast(self.config.autocast, self.device):
            d_a = model.discriminator_loss(model.d_a, real_a, history_a.query(fake_a))
            d_b = model.discriminator_loss(model.d_b, real_b, history_b.query(fake_b))
        opt_d.zero_grad(set_to_none=True)
        (d_a + d_b).backward()
        opt_d.step()
        for schedule in schedules:
            schedule.step()
        self.steps += 1
        zero = torch.zeros((), device=self.device)
        identity = terms.get("identity_a", zero) + terms.get("identity_b", zero)
        values = (
            d_a, d_b, terms["g_adv_ab"] + terms["g_adv_ba"],
            terms["cycle_a"] + terms["cycle_b"], identity, g_total,
        )  # fmt: skip
        return torch.stack([v.detach().float() for v in values])
