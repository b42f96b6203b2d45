"""Known invertible image transforms T, for measuring translation on a task whose answer is
known: domain A = images x, domain B = T(x') for other images x'. A perfect G_AB is T and a
perfect G_BA is T^-1. Every transform maps [0, 1] images (N, C, H, W) to [0, 1] images of the
same shape; the rotations and the transpose need square images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ImageMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InvertibleTransform:
    """A named map with its inverse: inverse(forward(x)) == x exactly."""

    name: str
    forward: ImageMap
    inverse: ImageMap
    needs_square: bool = False
    description: str = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)

    def apply(self, x: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
        """T(x) (or T^-1(x)) of (N, C, H, W) images in [0, 1]."""
        if x.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
        if self.needs_square and x.shape[2] != x.shape[3]:
            raise ValueError(f"transform {self.name!r} needs square images, got {tuple(x.shape)}")
        return (self.inverse if inverse else self.forward)(x)


def _invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def _rot90(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, 1, dims=(2, 3))


def _rot270(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, -1, dims=(2, 3))


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=(3,))


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=(2,))


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(2, 3)


TRANSFORMS: dict[str, InvertibleTransform] = {
    "invert": InvertibleTransform("invert", _invert, _invert, description="1 - x"),
    "rot90": InvertibleTransform(
        "rot90", _rot90, _rot270, needs_square=True, description="a quarter turn anticlockwise"
    ),
    "invert_rot90": InvertibleTransform(
        "invert_rot90",
        lambda x: _rot90(_invert(x)),
        lambda y: _invert(_rot270(y)),
        needs_square=True,
        description="colour inversion, then a quarter turn anticlockwise",
    ),
    "hflip": InvertibleTransform("hflip", _hflip, _hflip, description="mirror left-right"),
    "vflip": InvertibleTransform("vflip", _vflip, _vflip, description="mirror top-bottom"),
    "transpose": InvertibleTransform(
        "transpose", _transpose, _transpose, needs_square=True, description="swap rows, columns"
    ),
}


def get_transform(name: str) -> InvertibleTransform:
    """The transform registered as `name`; a ValueError lists the known ones."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[name]
