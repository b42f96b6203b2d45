"""The small-data GAN recipe's parts (`generative.gan.augment`, `r1_penalty`) and their wiring
into `GANTrainer`: R1 against hand-computed gradients, differentiable augmentation that is the
identity at strength 0 and lets gradients reach G, ADA's strength rising while D overfits and
falling otherwise, and a resumed run keeping the adapted strength."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from generative.gan import GAN, GANConfig, GANTrainer, GANTrainerConfig
from generative.gan.augment import AdaptiveStrength, augment, parse_policy
from generative.gan.losses import r1_penalty

ALL = parse_policy("color,translation,cutout")


def test_r1_is_the_squared_gradient_norm_computed_by_hand():
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    # D(x) = sum x_i^2: grad = 2x, ||grad||^2 = 4 ||x||^2 = 4 * 6 and 4 * 9.25
    assert r1_penalty(lambda v: v.pow(2).sum(dim=1), x).item() == pytest.approx((24.0 + 37.0) / 2)
    weight = torch.tensor([0.5, -2.0, 1.0], requires_grad=True)
    penalty = r1_penalty(lambda v: v @ weight, x)  # grad = w for every row: ||w||^2 = 5.25
    assert penalty.item() == pytest.approx(5.25)
    penalty.backward()  # the graph is kept: d||w||^2 / dw = 2w trains D
    torch.testing.assert_close(weight.grad, 2 * weight.detach())


def test_augmentation_is_the_identity_at_strength_zero_and_passes_gradients():
    images = torch.rand(6, 1, 16, 16)
    assert augment(images, ALL, 0.0) is images
    assert augment(images, (), 1.0) is images
    latent = torch.randn(6, 8, requires_grad=True)
    generator = torch.nn.Linear(8, 256)
    fake = torch.sigmoid(generator(latent)).view(6, 1, 16, 16)
    seeded = torch.Generator().manual_seed(0)
    augment(fake, ALL, 1.0, seeded).sum().backward()
    assert generator.weight.grad is not None and generator.weight.grad.abs().sum() > 0
    assert torch.isfinite(latent.grad).all() and latent.grad.abs().sum() > 0


def test_translation_moves_content_and_cutout_removes_a_quarter_at_most():
    images = torch.zeros(50, 1, 16, 16)
    images[:, :, 8, 8] = 1.0  # one bright pixel: a shift of at most 2 keeps it inside
    moved = augment(images, ("translation",), 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(moved.flatten(1).sum(1), torch.ones(50))
    assert (moved[:, 0, 8, 8] == 0).any()  # some images did move
    ones = torch.ones(50, 1, 16, 16)
    holes = 1 - augment(ones, ("cutout",), 1.0, torch.Generator().manual_seed(2))
    assert (holes.flatten(1).mean(1) <= 0.25).all() and holes.sum() > 0
    half = augment(ones, ("cutout",), 0.5, torch.Generator().manual_seed(3))
    untouched = (half.flatten(1).min(1).values == 1).float().mean()
    assert 0.3 < untouched < 0.7  # each image is cut with probability 0.5


def test_ada_strength_rises_while_d_overfits_and_falls_otherwise():
    ada = AdaptiveStrength(target=0.6, interval=4, images_to_one=1000)
    sure = torch.full((64,), 3.0)  # D calls every real image real: E sign = 1 > 0.6
    strengths = [ada.observe(sure) for _ in range(10)]  # updates after calls 4 and 8
    assert strengths[-1] == pytest.approx(2 * 4 * 64 / 1000)
    assert [ada.observe(sure) for _ in range(40)][-1] == 1.0  # clamped at max_strength
    ada.strength = strengths[-1]
    assert all(b >= a for a, b in zip(strengths, strengths[1:], strict=False))
    unsure = torch.tensor([1.0, -1.0] * 32)  # E sign = 0 < 0.6
    falling = [ada.observe(unsure) for _ in range(80)]
    assert falling[-1] == 0.0 and falling[3] < strengths[-1]
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("color,rotate")


def test_ada_raises_the_strength_when_d_overfits_a_fixed_small_real_set(tmp_path):
    """Eight real images and many epochs: D learns them, E sign D(real) passes 0.6 and the
    trainer's strength grows; the adapted strength survives a resume."""
    torch.manual_seed(0)
    real = torch.rand(8, 1, 8, 8)
    gan = GAN(GANConfig((1, 8, 8), architecture="dcgan", base_channels=8, latent_dim=8))
    config = GANTrainerConfig(
        epochs=60, batch_size=8, augment="translation,cutout", ada_target=0.6, r1_gamma=1.0,
        r1_interval=4, lr_discriminator=2e-3,
    )  # fmt: skip
    trainer = GANTrainer(gan, config, checkpoint_dir=tmp_path / "ckpt")
    history = trainer.fit(real)
    strengths = [epoch["augment_strength"] for epoch in history]
    # 60 D steps of 8 images, an update every 4: at most 15 x 32 / 20,000 = 0.024 in all
    assert strengths[-1] >= 0.01 and strengths[-1] > strengths[0]
    assert all(epoch["r1_penalty"] >= 0 for epoch in history)
    longer = GANTrainerConfig(**{**config.to_dict(), "epochs": 61})
    resumed = GANTrainer(gan, longer, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.ada is not None and resumed.ada.strength == 0.0
    resumed.fit(real)
    assert resumed.history[60 - 1]["augment_strength"] == pytest.approx(strengths[-1])


@pytest.mark.parametrize(
    "values,message",
    [
        ({"augment": "blur"}, "unknown augmentation"),
        ({"augment_strength": 1.5}, "augment_strength must be in"),
        ({"ada_target": 0.6}, "needs an augment policy"),
        ({"r1_gamma": -1.0}, "r1_gamma must be >= 0"),
    ],
)
def test_bad_recipe_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        GANTrainerConfig(**values)
    with pytest.raises(ValueError, match="images only"):
        GANTrainer(GAN(GANConfig((4,))), GANTrainerConfig(augment="color"))


def test_spectral_norm_makes_every_d_layer_1_lipschitz():
    """After the power iteration has run (one step per training forward), each D weight as used
    has largest singular value 1: torch's reparametrisation divides by the estimate of sigma."""
    torch.manual_seed(0)
    gan = GAN(GANConfig((1, 28, 28), architecture="dcgan", spectral_norm=True))
    x = torch.rand(8, 1, 28, 28)
    gan.discriminator.train()
    for _ in range(200):
        gan.discriminator(x)
    layers = [m for m in gan.discriminator.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert layers
    for layer in layers:
        weight = layer.weight.detach().flatten(1)  # the normalised weight the layer uses
        assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=1e-3)
    plain = GAN(GANConfig((1, 28, 28), architecture="dcgan"))
    first = next(m for m in plain.discriminator.modules() if isinstance(m, nn.Conv2d))
    assert torch.linalg.matrix_norm(first.weight.detach().flatten(1), ord=2).item() < 0.9
