"""CycleGAN's training steps (Zhu et al. 2017, section 4 and the paper's code).

Each step takes a minibatch of A and an independent minibatch of B (the domains are unpaired)
and makes one update of both generators (one Adam over G_AB and G_BA, the discriminators
frozen) followed by one update of both discriminators (one Adam over D_A and D_B) on real
images and on fakes drawn from the two image history buffers. An epoch is one pass over the
larger domain: each domain is walked through its own seeded permutations. The learning rates
may decay linearly to zero over the last `decay_fraction` of the planned steps (the paper:
100 constant epochs, then 100 decaying: 0.5).

`CycleGANTrainer` supplies these steps to the one training loop (`generative.loop`): a NaN or
infinite loss stops training with `TrainingDivergedError`, the model put back to the end of the
last finite epoch; with a `checkpoint_dir` every epoch is checkpointed (both optimizers and
schedules, the image histories, the step counter, the RNG, a fingerprint of the configuration
and both domains' data) and `fit` resumes from the latest checkpoint exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generative.checkpoints import run_fingerprint
from generative.configs import JsonConfig
from generative.cyclegan.history import ImageHistory
from generative.cyclegan.model import CycleGAN
from generative.gan.trainer import check_two_player
from generative.loop import LoopTrainer, autocast, check_runtime

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
        check_two_player(self)
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        check_runtime(self.autocast)


def linear_decay(step: int, total: int, fraction: float) -> float:
    """The learning-rate factor at `step` of `total`: 1 until the last `fraction` of the steps,
    then falling linearly, reaching 1/(decay steps + 1) at the last step (never 0)."""
    decay_steps = int(round(fraction * total))
    if decay_steps == 0:
        return 1.0
    start = total - decay_steps
    return 1.0 - max(0, step - start + 1) / (decay_steps + 1)


class CycleGANTrainer(LoopTrainer):
    """Trains a `CycleGAN` on two in-memory sets of [0, 1] images (N, C, H, W), unpaired:
    `CycleGANTrainer(model, config, callbacks=(), *, checkpoint_dir=None, world=None)`.

    `checkpoint_dir`: write a checkpoint after every epoch and resume from the latest one there.
    `world`: train data-parallel across torchrun's processes (`generative.distributed`): each
    rank trains on its share of every global batch, the gradients are averaged over the ranks
    and the image histories see the whole global batch of fakes (the same draws everywhere),
    so the run follows the single-process one up to float summation order.
    """

    model: CycleGAN
    config: CycleGANTrainerConfig
    steps: int
    counters = ("steps",)
    loss_name = "a CycleGAN loss"
    divergence_advice = "Lower the learning rates."

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

    def fit(
        self,
        domain_a: torch.Tensor,
        domain_b: torch.Tensor,
        *,
        resume_from: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Train; returns one dict of mean losses per epoch (`LOG_KEYS`). Resumes from the
        checkpoint folder `resume_from`, else from the latest one in `checkpoint_dir`."""
        torch.manual_seed(self.config.seed)
        self.rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        if resume_from is not None or self.checkpoint_dir is not None:
            self.fingerprint = run_fingerprint(self.model, self.config, domain_a, domain_b)
        self.a, self.b = self._prepare(domain_a, "A"), self._prepare(domain_b, "B")
        self.ranks.check_batches(max(len(self.a), len(self.b)), self.config.batch_size)
        self.model.to(self.device)
        self.histories = [
            ImageHistory(self.model.config.history_size, generator=self.rng) for _ in "ab"
        ]
        self.optimizers = self._optimizers(self.planned_steps(len(self.a), len(self.b)))
        return self.run(resume_from)

    def _optimizers(self, total: int) -> list:
        model, config = self.model, self.config
        g_params = [p for net in model.generators() for p in net.parameters()]
        d_params = [p for net in model.discriminators() for p in net.parameters()]
        opt_g = torch.optim.Adam(g_params, lr=config.lr_generator, betas=config.betas)
        opt_d = torch.optim.Adam(d_params, lr=config.lr_discriminator, betas=config.betas)
        factor = lambda step: linear_decay(step, total, config.decay_fraction)  # noqa: E731
        schedules = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
        return [opt_g, opt_d, *schedules]

    # --- the loop's hooks ------------------------------------------------------------------
    def family_state(self) -> dict[str, Any]:
        """The image histories' stored fakes."""
        histories = [
            {"images": None if h.images is None else h.images.cpu(), "size": h.size}
            for h in self.histories
        ]
        return {"histories": histories}

    def load_family_state(self, state: dict[str, Any]) -> None:
        """Continue from `family_state`."""
        for history, saved in zip(self.histories, state["histories"], strict=True):
            images = saved["images"]
            history.images = None if images is None else images.to(self.device)
            history.size = int(saved["size"])

    def budget_spent(self) -> bool:
        """The step cap is reached."""
        return self.config.max_steps is not None and self.steps >= self.config.max_steps

    def _walk(self, n: int, length: int) -> torch.Tensor:
        """`length` indices into n rows: seeded permutations of range(n), one after another."""
        rounds = math.ceil(length / n)
        orders = [torch.randperm(n, generator=self.rng, device=self.device) for _ in range(rounds)]
        return torch.cat(orders)[:length]

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Pairs of A and B minibatches: one pass over the larger domain."""
        self.model.train()
        length = max(len(self.a), len(self.b))
        yield from zip(
            self._walk(len(self.a), length).split(self.config.batch_size),
            self._walk(len(self.b), length).split(self.config.batch_size),
            strict=True,
        )

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One generator update then one discriminator update on this rank's share of the
        global batch; returns its share of the `LOG_KEYS` values (detached, on the device)."""
        index_a, index_b = batch
        if self.world is None:
            return self.update(self.a[index_a], self.b[index_b])
        rows = len(index_a)
        index_a, index_b = self.world.shard(index_a), self.world.shard(index_b)
        values = self.update(self.a[index_a], self.b[index_b], rows)
        return values * (len(index_a) / rows)

    def _backward(self, loss: torch.Tensor, nets: list, rows: int, global_rows: int | None) -> None:
        """Gradients of `loss` on `rows` rows; with a World, those of the mean loss over the
        global batch of `global_rows` (weighted here, averaged over the ranks)."""
        if self.world is None or global_rows is None:
            loss.backward()
            return
        (loss * self.world.loss_weight(rows, global_rows)).backward()
        self.world.average_gradients(p for net in nets for p in net.parameters())

    def _query(self, history: ImageHistory, fake: torch.Tensor, global_rows: int | None):
        """The history's answer for this rank's fakes, drawn for the whole global batch."""
        if self.world is None or global_rows is None:
            return history.query(fake)
        everyone = self.world.gather_rows(fake.detach(), global_rows)
        return self.world.shard(history.query(everyone))

    def epoch_logs(self, sums: list[float], count: int) -> dict[str, float]:
        """The mean of every `LOG_KEYS` loss over the epoch's steps."""
        return {key: value / count for key, value in zip(LOG_KEYS, sums, strict=True)}

    def update(
        self, real_a: torch.Tensor, real_b: torch.Tensor, global_rows: int | None = None
    ) -> torch.Tensor:
        """One generator update then one discriminator update on these images (with a World:
        this rank's share of a global batch of `global_rows`); returns the `LOG_KEYS` values
        (detached, on the device)."""
        model, (opt_g, opt_d, *schedules) = self.model, self.optimizers
        for net in model.discriminators():
            net.requires_grad_(False)
        with autocast(self.config.autocast, self.device):
            g_total, terms, fake_a, fake_b = model.generator_loss(real_a, real_b)
        opt_g.zero_grad(set_to_none=True)
        self._backward(g_total, model.generators(), len(real_a), global_rows)
        opt_g.step()
        for net in model.discriminators():
            net.requires_grad_(True)
        history_a, history_b = self.histories
        with autocast(self.config.autocast, self.device):
            fake_a = self._query(history_a, fake_a, global_rows)
            fake_b = self._query(history_b, fake_b, global_rows)
            d_a = model.discriminator_loss(model.d_a, real_a, fake_a)
            d_b = model.discriminator_loss(model.d_b, real_b, fake_b)
        opt_d.zero_grad(set_to_none=True)
        self._backward(d_a + d_b, model.discriminators(), len(real_a), global_rows)
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
