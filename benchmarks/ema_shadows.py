"""Extra EMA copies of a GAN's generator, kept beside its own EMA during one training run.

Several EMA decays can then be compared on the same run of G (the same weights at every step),
instead of one training run per decay. After each update of the model's own EMA, every copy
gets the same update (the model's `update_ema`, with the copy swapped in) at decay
min(target, (1 + t) / (10 + t)) after t updates (the progressive trainer's `ema_decay`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from generative.progressive.trainer import ema_decay


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
        """The model's own EMA update, then the same update on every copy."""
        self._own_update(decay)
        self.updates += 1
        for target in self.copies:
            with self.swapped_in(target):
                self._own_update(ema_decay(target, self.updates))

    @contextmanager
    def swapped_in(self, decay: float) -> Iterator[None]:
        """Inside the block the model's EMA generator is the copy of `decay`: the model samples
        from it, and its `update_ema` moves it."""
        own = self.model.generator_ema
        self.model.generator_ema = self.copies[decay]
        try:
            yield
        finally:
            self.model.generator_ema = own
