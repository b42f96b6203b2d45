"""The growth schedule: which stage trains, in which phase, on how many images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generative.progressive.config import START_RESOLUTION


@dataclass(frozen=True)
class Phase:
    """One phase: a fade-in (alpha from 0 to 1 over `images`) or a stable phase (alpha 1)."""

    stage: int
    kind: str  # "fade" or "stable"
    images: int
    last_of_stage: bool

    @property
    def resolution(self) -> int:
        """The side of the images this phase trains on."""
        return START_RESOLUTION * 2**self.stage

    @property
    def checkpoint(self) -> str:
        """The folder name of the checkpoint written after this stage."""
        return f"stage_{self.stage}_{self.resolution}x{self.resolution}"

    def alpha(self, shown: int) -> float:
        """The fade-in weight after `shown` images of this phase."""
        return min(1.0, shown / self.images) if self.kind == "fade" else 1.0


def build_schedule(stages: int, config: Any, progressive: bool) -> list[Phase]:
    """Stage 0 stable; then per stage a fade-in and a stable phase (the last stage's stable
    phase is `final_images` long). Not progressive: the last stage alone, as many images."""
    final = config.final_images or config.stable_images
    phases = [Phase(0, "stable", config.stable_images if stages > 1 else final, True)]
    for stage in range(1, stages):
        stable = final if stage == stages - 1 else config.stable_images
        phases.append(Phase(stage, "fade", config.fade_images, False))
        phases.append(Phase(stage, "stable", stable, True))
    if progressive:
        return phases
    return [Phase(stages - 1, "stable", sum(p.images for p in phases), True)]
