"""benchmarks/ema_shadows.py: extra EMA copies of G follow the closed form of their updates."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from generative.gan.model import AdversarialModel

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


class TinyGAN(AdversarialModel):
    """The library's EMA update on a one-layer generator; counts the updates of its own EMA."""

    def __init__(self) -> None:
        config = SimpleNamespace(ema_decay=0.5)
        super().__init__(config, nn.Linear(3, 2), nn.Linear(2, 1))
        self.own = self.generator_ema
        self.own_updates = 0

    def update_ema(self, decay: float | None = None) -> None:
        self.own_updates += self.generator_ema is self.own
        super().update_ema(decay)


@pytest.fixture
def shadows_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("ema_shadows")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_each_copy_is_the_ramped_ema_of_a_constant_generator(shadows_module) -> None:
    torch.manual_seed(0)
    model = TinyGAN()
    start = model.generator.weight.detach().clone()
    shadows = shadows_module.EMAShadows(model, [0.9, 0.99])
    with torch.no_grad():
        model.generator.weight.fill_(1.0)
    steps = 40
    for _ in range(steps):
        model.update_ema()
    assert model.own_updates == steps  # the model's own EMA still runs
    for target, shadow in shadows.copies.items():
        kept = math.prod(min(target, (1 + t) / (10 + t)) for t in range(1, steps + 1))
        expected = 1.0 + (start - 1.0) * kept
        torch.testing.assert_close(shadow.weight, expected, rtol=1e-5, atol=1e-6)


def test_swapped_in_swaps_the_copy_in_and_back(shadows_module) -> None:
    model = TinyGAN()
    shadows = shadows_module.EMAShadows(model, [0.95])
    with shadows.swapped_in(0.95):
        assert model.generator_ema is shadows.copies[0.95]
    assert model.generator_ema is model.own


def test_a_decay_outside_the_unit_interval_is_refused(shadows_module) -> None:
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        shadows_module.EMAShadows(TinyGAN(), [1.0])
