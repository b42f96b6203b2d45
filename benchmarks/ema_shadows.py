"""Extra EMA copies of a GAN's generator, kept beside its own EMA during one training run.

Several EMA decays can then be compared on the same run of G (the same weights at every step),
instead of one training run per decay. Every copy follows G after each update of the model's
own EMA, with the progressive trainer's ramp-up: decay min(target, (1 + t) / (10 + t)) after t
updates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


class EMAShadows:
    """EMA copies of `model.generator` for each decay in `decays`, updated whenever the
    model's `update_ema` runs (the trainers call it once per G step)."""

    def __init__(self, model: torch.nn.Module, decays: list[float]) -> None:
        if any(not 0.0 < decay < 1.0 for decay in decays):
            raise ValueError(f"every extra EMA decay must be in (0, 1), got {decays}")
        self.model = model
        self.updates = 0
        self.copies = {
            decay: copy.deepcopy(model.generator).requires_grad_(False) for decay in decays
        }
        self._own_update: Callable = model.update_ema
        model.update_ema = self.update  # the trainers call model.update_ema(...)

    @torch.no_grad()
    def update(self, decay: float | None = None) -> None:
        """The model's own EMA update, then every copy's."""
        self._own_update(decay)
        self.updates += 1
        ramp = (1.0 + self.updates) / (10.0 + self.updates)
        for target, shadow in self.copies.items():
            weight = 1.0 - min(target, ramp)
            for mine, live in zip(
                shadow.parameters(), self.model.generator.parameters(), strict=True
            ):
                mine.lerp_(live.detach(), weight)
            for mine, live in zip(shadow.buffers(), self.model.generator.buffers(), strict=True):
                mine.copy_(live)

    @contextmanager
    def sampling_with(self, decay: float) -> Iterator[None]:
        """The model samples from the copy of `decay` inside the block."""
        own = self.model.generator_ema
        self.model.generator_ema = self.copies[decay]
        try:
            yield
        finally:
            self.model.generator_ema = own
