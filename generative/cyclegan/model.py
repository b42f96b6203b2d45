"""The CycleGAN model: two generators (G_AB: A -> B, G_BA: B -> A), two PatchGAN
discriminators (D_A judges domain A, D_B domain B) and the objective that ties them together.

Images are given and returned in [0, 1]; inside the nets they live in [-1, 1] (G ends in tanh).
"""

from __future__ import annotations

import torch
from torch import nn

from generative.cyclegan.config import CycleGANConfig
from generative.cyclegan.losses import ADVERSARIAL_LOSSES, AdversarialLoss, cycle_loss, l1
from generative.cyclegan.networks import PatchDiscriminator, ResnetGenerator

# direction -> the generator that translates that way
DIRECTIONS: dict[str, str] = {"a_to_b": "g_ab", "b_to_a": "g_ba"}
TRANSLATE_CHUNK = 256  # images per forward pass in `translate`


def check_direction(direction: str) -> str:
    """`direction` itself when it is a key of DIRECTIONS, else a ValueError naming them."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    return direction


class CycleGAN(nn.Module):
    """G_AB, G_BA, D_A, D_B for one `CycleGANConfig`; `translate` maps images across."""

    family = "cyclegan"

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__()
        self.config = config
        self.g_ab, self.g_ba = ResnetGenerator(config), ResnetGenerator(config)
        self.d_a, self.d_b = PatchDiscriminator(config), PatchDiscriminator(config)

    @property
    def adversarial(self) -> AdversarialLoss:
        """The configured adversarial loss."""
        return ADVERSARIAL_LOSSES[self.config.loss]

    def generators(self) -> list[nn.Module]:
        """[G_AB, G_BA]."""
        return [self.g_ab, self.g_ba]

    def discriminators(self) -> list[nn.Module]:
        """[D_A, D_B]."""
        return [self.d_a, self.d_b]

    @staticmethod
    def to_model_scale(x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> [-1, 1]."""
        return x * 2.0 - 1.0

    @staticmethod
    def to_data_scale(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1], clamped."""
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    def generator_loss(
        self, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The generators' objective on a batch of A and a batch of B (model scale):
        adv(G_AB) + adv(G_BA) + lambda_cycle (cycle_a + cycle_b) + lambda_identity *
        lambda_cycle (identity_a + identity_b). Returns (total, the unweighted terms, fake_a,
        fake_b); the fakes keep their graph (detach them for the discriminators)."""
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        cycle_a, cycle_b = cycle_loss(real_a, self.g_ba(fake_b), real_b, self.g_ab(fake_a))
        terms = {
            "g_adv_ab": self.adversarial.generator(self.d_b(fake_b).float()),
            "g_adv_ba": self.adversarial.generator(self.d_a(fake_a).float()),
            "cycle_a": cycle_a,
            "cycle_b": cycle_b,
        }
        weight = self.config.identity_weight
        if weight > 0:  # G_BA should leave an A image alone, G_AB a B image
            terms["identity_a"] = l1(self.g_ba(real_a), real_a)
            terms["identity_b"] = l1(self.g_ab(real_b), real_b)
        total = terms["g_adv_ab"] + terms["g_adv_ba"]
        total = total + self.config.lambda_cycle * (cycle_a + cycle_b)
        if weight > 0:
            total = total + weight * (terms["identity_a"] + terms["identity_b"])
        return total, terms, fake_a, fake_b

    def discriminator_loss(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        """One discriminator's loss on real images and (detached) fakes of its domain."""
        return self.adversarial.discriminator(
            discriminator(real).float(), discriminator(fake.detach()).float()
        )

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "a_to_b") -> torch.Tensor:
        """Translate [0, 1] images (N, C, H, W) with G_AB ("a_to_b") or G_BA ("b_to_a"), in
        eval mode, `TRANSLATE_CHUNK` at a time on the model's device; [0, 1] float32 out on
        x's device. Instance norm works per image, so an image's translation does not depend
        on the rest of the batch."""
        shape = tuple(x.shape[1:])
        if x.dim() != 4 or shape != self.config.image_shape:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.config.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        net: nn.Module = getattr(self, DIRECTIONS[check_direction(direction)])
        device = next(self.parameters()).device
        was_training = net.training
        net.eval()
        try:
            parts = [
                self.to_data_scale(net(self.to_model_scale(chunk.float().to(device))).float())
                for chunk in x.split(TRANSLATE_CHUNK)
            ]
        finally:
            net.train(was_training)
        return torch.cat(parts).to(x.device) if parts else x.float().clone()
