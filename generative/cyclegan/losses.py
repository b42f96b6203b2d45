"""CycleGAN's losses: an adversarial loss per direction, L1 cycle consistency both ways and the
L1 identity loss (Zhu et al. 2017, eqs. 1-3 and section 5.2).

The adversarial losses act on the discriminator's map of per-patch values (every patch is a
sample: the means run over patches and images). "lsgan" is the paper's least-squares loss:
D minimises 1/2 [E (D(y) - 1)^2 + E D(G(x))^2] (the GAN family's LSGAN discriminator loss,
reused) and G minimises E (D(G(x)) - 1)^2, the paper code's MSE to the real label without the
GAN family's factor 1/2, so the paper's lambda = 10 keeps its meaning. "non_saturating" reuses
the GAN family's logistic losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from generative.gan.losses import GAN_LOSSES


@dataclass(frozen=True)
class AdversarialLoss:
    """discriminator: (D on real, D on fake) -> D's loss; generator: D on fake -> G's loss."""

    name: str
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]


def _least_squares_generator(fake: torch.Tensor) -> torch.Tensor:
    """E (D(G(x)) - 1)^2: the paper code's MSE of the fakes' patch values to the real label."""
    return (fake - 1.0).pow(2).mean()


ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {
    "lsgan": AdversarialLoss("lsgan", GAN_LOSSES["lsgan"].discriminator, _least_squares_generator),
    "non_saturating": AdversarialLoss(
        "non_saturating",
        GAN_LOSSES["non_saturating"].discriminator,
        GAN_LOSSES["non_saturating"].generator,
    ),
}


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over every value (the paper's ||.||_1 divided by the size)."""
    return (x.float() - y.float()).abs().mean()


def cycle_loss(
    real_a: torch.Tensor, reconstructed_a: torch.Tensor,
    real_b: torch.Tensor, reconstructed_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(|G_BA(G_AB(a)) - a|_1, |G_AB(G_BA(b)) - b|_1): forward and backward cycle consistency,
    unweighted (the model multiplies by lambda_cycle)."""
    return l1(reconstructed_a, real_a), l1(reconstructed_b, real_b)


def identity_loss(
    real_a: torch.Tensor, same_a: torch.Tensor, real_b: torch.Tensor, same_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(|G_BA(a) - a|_1, |G_AB(b) - b|_1): each generator should leave images of its target
    domain unchanged; unweighted."""
    return l1(same_a, real_a), l1(same_b, real_b)
