"""The real images a progressive run draws: the image pyramid (every stage's resolution) and
the seeded order of its minibatches."""

from __future__ import annotations

import torch

from generative.progressive.layers import downsample


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
