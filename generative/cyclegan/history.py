"""The image history buffer (Shrivastava et al. 2017; Zhu et al. 2017, section 4): the
discriminators see a mix of the newest and of earlier generated images, which damps the
oscillation of adversarial training.
"""

from __future__ import annotations

import torch


class ImageHistory:
    """Up to `capacity` stored generated images.

    `query(images)` returns one image per input, in order. While the buffer is not full each
    input is stored and returned itself. Once it is full, each input is, with probability
    1/2, swapped for a uniformly chosen stored image (which is returned unchanged, and the
    input takes its place), else returned itself and not stored. Images are detached: the
    discriminator's loss on them never reaches a generator. capacity 0 returns the inputs.
    Draws come from `generator` (a seeded torch.Generator on the images' device), so a run is
    reproducible.
    """

    def __init__(self, capacity: int, *, generator: torch.Generator | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.generator = generator
        self.images: torch.Tensor | None = None  # (capacity, C, H, W) once the first query came
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """The images D should see for this batch of new fakes (see the class docstring)."""
        images = images.detach()
        if self.capacity == 0:
            return images
        if self.images is None:
            self.images = images.new_empty((self.capacity, *images.shape[1:]))
        out = images.clone()
        full_from = min(max(self.capacity - self.size, 0), len(images))
        for index in range(full_from):  # still filling: store and return the input
            self.images[self.size] = images[index]
            self.size += 1
        if full_from == len(images):
            return out
        device = images.device
        count = len(images) - full_from
        swap = torch.rand(count, generator=self.generator, device=device) < 0.5
        slots = torch.randint(self.capacity, (count,), generator=self.generator, device=device)
        chosen = slots.tolist()
        for offset in torch.nonzero(swap).flatten().tolist():  # in order: repeated slots chain
            index, slot = full_from + offset, chosen[offset]
            out[index] = self.images[slot]
            self.images[slot] = images[index]
        return out
