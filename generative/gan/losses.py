"""GAN losses, each selectable by name, plus the critic constraints (gradient penalty, R1,
clipping).

D's raw output is a logit for the probability losses (minimax, non-saturating, LSGAN's target
regression uses the raw value) and an unbounded critic value for the Wasserstein losses.
Written with softplus so no loss takes log(sigmoid) of a saturated logit:
log D(x) = -softplus(-l) and log(1 - D(x)) = -softplus(l).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generative.distributed import draw_rows


@dataclass(frozen=True)
class GANLoss:
    """One adversarial objective.

    discriminator: (D(x) on real, D(G(z)) on fake) -> the loss D minimises.
    generator: D(G(z)) -> the loss G minimises.
    n_critic: D steps per G step by default (the seed's k in Algorithm 1).
    clip_value: critic weights are clamped to [-c, c] after every D step (None = no clipping).
    penalty_weight: weight of the gradient penalty added to D's loss (0 = none); D then has
        no batch norm, since the penalty is a per-sample quantity.
    """

    name: str
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    n_critic: int = 1
    clip_value: float | None = None
    penalty_weight: float = 0.0


def _logistic_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-E log D(x) - E log(1 - D(G(z)))."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _minimax_generator(fake: torch.Tensor) -> torch.Tensor:
    """E log(1 - D(G(z))), minimised: the original objective, which saturates when D wins."""
    return -F.softplus(fake).mean()


def _non_saturating_generator(fake: torch.Tensor) -> torch.Tensor:
    """-E log D(G(z)): same fixed point, strong gradients when D rejects the fakes."""
    return F.softplus(-fake).mean()


def _least_squares_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN with targets a=0 (fake), b=1 (real): 1/2 E(D(x)-1)^2 + 1/2 E D(G(z))^2."""
    return 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean())


def _least_squares_generator(fake: torch.Tensor) -> torch.Tensor:
    """LSGAN's generator target c=1: 1/2 E (D(G(z)) - 1)^2."""
    return 0.5 * (fake - 1.0).pow(2).mean()


def _wasserstein_critic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic maximises E f(x) - E f(G(z)), so it minimises the negation."""
    return fake.mean() - real.mean()


def _wasserstein_generator(fake: torch.Tensor) -> torch.Tensor:
    """G minimises -E f(G(z))."""
    return -fake.mean()


GAN_LOSSES: dict[str, GANLoss] = {
    "minimax": GANLoss("minimax", _logistic_discriminator, _minimax_generator),
    "non_saturating": GANLoss("non_saturating", _logistic_discriminator, _non_saturating_generator),
    "lsgan": GANLoss("lsgan", _least_squares_discriminator, _least_squares_generator),
    "wgan": GANLoss(
        "wgan", _wasserstein_critic, _wasserstein_generator, n_critic=5, clip_value=0.01
    ),
    "wgan_gp": GANLoss(
        "wgan_gp", _wasserstein_critic, _wasserstein_generator, n_critic=5, penalty_weight=10.0
    ),
}


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """E (||grad critic(x_hat)||_2 - 1)^2 at x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per sample
    (Gulrajani et al. 2017). The graph is kept so the penalty trains the critic. Inside a
    `generative.distributed.global_batch` block e is drawn for the whole global batch and this
    rank takes its rows (`draw_rows`), so a row's e does not depend on the split."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    mix = draw_rows(
        lambda size: torch.rand(size, generator=generator, device=real.device, dtype=real.dtype),
        shape,
    )
    interpolates = (mix * real.detach() + (1.0 - mix) * fake.detach()).requires_grad_(True)
    values = critic(interpolates)
    (grads,) = torch.autograd.grad(values.sum(), interpolates, create_graph=True)
    norms = grads.flatten(1).float().norm(dim=1)
    return (norms - 1.0).pow(2).mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x critic(x)||^2 over the real x: the zero-centred R1 penalty (Mescheder et al.
    2018), which keeps D flat on the data so the non-saturating game converges; StyleGAN2
    adds (gamma / 2) times it to D's loss. The graph is kept so the penalty trains D."""
    inputs = real.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(inputs).sum(), inputs, create_graph=True)
    return grads.flatten(1).float().pow(2).sum(dim=1).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, clip_value: float) -> None:
    """Clamp every parameter of `module` to [-clip_value, clip_value] (WGAN's Lipschitz bound)."""
    for parameter in module.parameters():
        parameter.clamp_(-clip_value, clip_value)
