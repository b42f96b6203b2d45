"""The CycleGAN family (`generative.cyclegan`): losses against hand-computed values, the cycle
and identity terms on generators whose answers are known, the image history buffer's
semantics, where gradients flow, saving and loading, the trainer's guards, and a short real
learning run on MNIST digits against colour inversion."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from generative.cyclegan import (
    ADVERSARIAL_LOSSES,
    TRANSFORMS,
    CycleGAN,
    CycleGANConfig,
    CycleGANTrainer,
    CycleGANTrainerConfig,
    ImageHistory,
    cycle_loss,
    get_transform,
    identity_loss,
)
from generative.cyclegan.trainer import linear_decay
from generative.gan import TrainingDivergedError
from generative.registry import load_model, save_model

TINY = CycleGANConfig(
    image_shape=(1, 8, 8), base_channels=4, residual_blocks=1, discriminator_layers=1
)


def images(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 8, 8)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


class Lambda(nn.Module):
    """A fixed generator: x -> fn(x), no parameters."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def with_generators(g_ab, g_ba, config: CycleGANConfig = TINY) -> CycleGAN:
    torch.manual_seed(0)
    model = CycleGAN(config)
    model.g_ab, model.g_ba = Lambda(g_ab), Lambda(g_ba)
    return model


# --- losses ----------------------------------------------------------------------------------
def test_lsgan_losses_match_hand_computed_values():
    real, fake = torch.tensor([[1.5, 0.5]]), torch.tensor([[0.2, -0.4]])
    lsgan = ADVERSARIAL_LOSSES["lsgan"]
    # D: 1/2 [mean((1.5-1)^2, (0.5-1)^2) + mean(0.2^2, 0.4^2)] = 1/2 (0.25 + 0.10)
    assert lsgan.discriminator(real, fake).item() == pytest.approx(0.175, abs=1e-7)
    # G: mean((0.2-1)^2, (-0.4-1)^2) = (0.64 + 1.96) / 2 (the paper's MSE, no factor 1/2)
    assert lsgan.generator(fake).item() == pytest.approx(1.3, abs=1e-6)
    ns = ADVERSARIAL_LOSSES["non_saturating"]
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    expected_d = (softplus(-1.5) + softplus(-0.5)) / 2 + (softplus(0.2) + softplus(-0.4)) / 2
    assert ns.discriminator(real, fake).item() == pytest.approx(expected_d, abs=1e-6)
    assert ns.generator(fake).item() == pytest.approx((softplus(-0.2) + softplus(0.4)) / 2, 1e-6)


def test_cycle_and_identity_losses_are_mean_absolute_errors():
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    rec_a = torch.full_like(a, 0.25)
    rec_b = b.clone()
    rec_b[0, 0, 0, 0] = 0.0  # one of 8 values off by 1
    assert [v.item() for v in cycle_loss(a, rec_a, b, rec_b)] == pytest.approx([0.25, 1 / 8])
    same_a, same_b = a - 0.5, b + 2.0
    assert [v.item() for v in identity_loss(a, same_a, b, same_b)] == pytest.approx([0.5, 2.0])


def test_cycle_loss_is_zero_for_exact_inverse_generators():
    a, b = images(6, 1) * 2 - 1, images(6, 2) * 2 - 1  # model scale
    turn, unturn = get_transform("rot90").forward, get_transform("rot90").inverse
    _, terms, _, _ = with_generators(turn, unturn).generator_loss(a, b)
    assert terms["cycle_a"].item() == 0.0 and terms["cycle_b"].item() == 0.0
    # Colour inversion is negation at model scale, its own inverse:
    _, terms, _, _ = with_generators(torch.neg, torch.neg).generator_loss(a, b)
    assert terms["cycle_a"].item() == 0.0 and terms["cycle_b"].item() == 0.0
    # ...and identity asks G(x) = x of images of the target domain: |-x - x| = 2|x|.
    assert terms["identity_a"].item() == pytest.approx(2 * a.abs().mean().item(), rel=1e-6)
    # Two quarter turns are not an inverse pair: the cycle is a half turn.
    _, terms, _, _ = with_generators(turn, turn).generator_loss(a, b)
    half = torch.rot90(a, 2, dims=(2, 3))
    assert terms["cycle_a"].item() == pytest.approx((half - a).abs().mean().item(), rel=1e-6)
    assert terms["cycle_a"].item() > 0.1


def test_generator_objective_weights_the_terms_as_configured():
    config = CycleGANConfig(
        image_shape=(1, 8, 8), base_channels=4, residual_blocks=1, discriminator_layers=1,
        lambda_cycle=3.0,
        lambda_identity=0.25,
    )  # fmt: skip
    a, b = images(4, 1) * 2 - 1, images(4, 2) * 2 - 1
    total, terms, _, _ = with_generators(torch.tanh, torch.sin, config).generator_loss(a, b)
    expected = terms["g_adv_ab"] + terms["g_adv_ba"] + 3.0 * (terms["cycle_a"] + terms["cycle_b"])
    expected = expected + 0.75 * (terms["identity_a"] + terms["identity_b"])  # 0.25 x 3
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    no_identity = CycleGANConfig(**{**TINY.to_dict(), "lambda_identity": 0.0})
    _, terms, _, _ = with_generators(torch.tanh, torch.sin, no_identity).generator_loss(a, b)
    assert "identity_a" not in terms


def test_transforms_are_exact_inverses_and_move_pixels_as_named():
    x = images(3, 4, (1, 6, 6))
    for transform in TRANSFORMS.values():
        assert torch.equal(transform.apply(transform(x), inverse=True), x), transform.name
    y = get_transform("invert_rot90")(x)
    # anticlockwise quarter turn: out[i, j] = in[j, W - 1 - i]
    assert y[0, 0, 1, 4].item() == pytest.approx(1 - x[0, 0, 4, 6 - 1 - 1].item())
    with pytest.raises(ValueError, match="unknown transform 'spin'"):
        get_transform("spin")
    with pytest.raises(ValueError, match="needs square images"):
        get_transform("rot90")(images(1, 0, (1, 4, 8)))


# --- the history buffer ------------------------------------------------------------------------
def constant_images(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def test_history_fills_to_capacity_and_returns_the_inputs_while_filling():
    history = ImageHistory(5, generator=torch.Generator().manual_seed(0))
    first, second = constant_images([0, 1, 2]), constant_images([3, 4])
    assert torch.equal(history.query(first), first) and len(history) == 3
    assert torch.equal(history.query(second), second) and len(history) == 5
    assert torch.equal(history.images[:, 0, 0, 0], torch.arange(5.0))
    history.query(constant_images(range(100, 140)))
    assert len(history) == 5 and history.images.shape[0] == 5


def test_history_swaps_half_the_time_and_returns_stored_images_unchanged():
    """Once full, each image is swapped with probability 1/2: over n = 4000 draws the swapped
    share has sd sqrt(0.25 / n) = 0.0079; allow 4 sd (a false failure once in ~16 000 runs)."""
    history = ImageHistory(10, generator=torch.Generator().manual_seed(1))
    history.query(constant_images(range(10)))
    new = constant_images(range(1000, 5000))
    out = history.query(new)
    values, inputs = out[:, 0, 0, 0], new[:, 0, 0, 0]
    swapped = values != inputs
    assert abs(swapped.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 4000)
    # Every returned image is unchanged (its four pixels equal), and is either the input or a
    # stored one: an original (0..9) or an earlier input (1000 <= value < this input).
    assert torch.equal(out, values.view(-1, 1, 1, 1).expand(-1, 1, 2, 2))
    earlier = (values >= 1000) & (values < inputs)
    assert bool(((values == inputs) | (values < 10) | earlier).all())
    assert set(values[values < 10].tolist()) == set(range(10))  # each original came back
    # The buffer still holds 10 distinct images, the last swapped-in input among them.
    stored = history.images[:, 0, 0, 0]
    assert len(set(stored.tolist())) == 10
    assert inputs[swapped][-1].item() in stored.tolist()


def test_history_of_zero_capacity_passes_images_through_detached():
    fake = images(3).requires_grad_(True)
    out = ImageHistory(0).query(fake)
    assert torch.equal(out, fake.detach()) and not out.requires_grad
    assert not ImageHistory(2).query(fake * 2).requires_grad


# --- gradient flow ---------------------------------------------------------------------------
def grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_identity_loss_reaches_only_the_generators():
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    a, b = images(4, 1) * 2 - 1, images(4, 2) * 2 - 1
    _, terms, _, _ = model.generator_loss(a, b)
    terms["identity_a"].backward()  # |G_BA(a) - a|: G_BA alone
    assert all(g is None for net in (model.d_a, model.d_b, model.g_ab) for g in grads(net))
    assert all(g is not None and g.abs().sum() > 0 for g in grads(model.g_ba)[:1])


def test_discriminator_loss_on_history_images_never_reaches_a_generator():
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    a, b = images(4, 1) * 2 - 1, images(4, 2) * 2 - 1
    fake_b = model.g_ab(a)
    assert fake_b.requires_grad
    loss = model.discriminator_loss(model.d_b, b, ImageHistory(3).query(fake_b))
    loss.backward()
    assert all(g is None for net in (model.g_ab, model.g_ba, model.d_a) for g in grads(net))
    assert all(g is not None for g in grads(model.d_b))


def assert_float32_close(mine: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding on the scale of the tensor's largest entry."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(mine, expected, rtol=1e-4, atol=1e-5 * scale)


def test_a_training_step_gives_each_player_exactly_its_own_gradient():
    """After one step, D's gradients equal those of the D loss alone on the step's fakes (the
    G loss left nothing in them) and G's those of the G objective on the pre-step model.
    The trainer's graph sums in another order, so the match is to float32 rounding: atol is
    1e-5 of the tensor's largest entry (at least 1e-5: a conv bias right before instance norm has
    a true gradient of 0, which float32 leaves at ~1e-6; weight gradients reach ~100)."""
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    before = copy.deepcopy(model)
    a, b = images(4, 1), images(4, 2)
    config = CycleGANTrainerConfig(epochs=1, batch_size=4, device="cpu")
    CycleGANTrainer(model, config).fit(a, b)  # one epoch = one step (4 images, batch 4)
    real_a, real_b = before.to_model_scale(a), before.to_model_scale(b)
    g_total, _, fake_a, fake_b = before.generator_loss(real_a, real_b)
    g_total.backward()
    for net in ("g_ab", "g_ba"):  # the last step's gradients stay on the parameters
        for mine, expected in zip(
            grads(getattr(model, net)), grads(getattr(before, net)), strict=True
        ):
            assert_float32_close(mine, expected)
    before.zero_grad(set_to_none=True)
    d_loss = before.discriminator_loss(before.d_a, real_a, fake_a)  # the buffer is filling:
    d_loss = d_loss + before.discriminator_loss(before.d_b, real_b, fake_b)  # it returns them
    d_loss.backward()
    for net in ("d_a", "d_b"):
        for mine, expected in zip(
            grads(getattr(model, net)), grads(getattr(before, net)), strict=True
        ):
            assert_float32_close(mine, expected)


# --- the model on disk, the trainer's guards ----------------------------------------------------
def test_save_and_load_round_trip_through_the_registry(tmp_path):
    torch.manual_seed(3)
    model = CycleGAN(TINY)
    folder = save_model(model, tmp_path / "cyclegan")
    loaded = load_model(folder)
    assert isinstance(loaded, CycleGAN) and loaded.config == TINY
    x = images(5)
    for direction in ("a_to_b", "b_to_a"):
        assert torch.equal(loaded.translate(x, direction), model.translate(x, direction))
    assert CycleGANConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown CycleGANConfig fields"):
        CycleGANConfig.from_dict({**TINY.to_dict(), "lambda_cycel": 1.0})


def test_translation_is_per_image_and_checks_its_input():
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    x = images(6)
    out = model.translate(x)
    assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0
    torch.testing.assert_close(model.translate(x[2:4]), out[2:4], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 8, 8\)"):
        model.translate(images(2, 0, (1, 8, 12)))
    with pytest.raises(ValueError, match="direction must be one of"):
        model.translate(x, "sideways")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image_shape": (1, 30, 30)}, "multiples of 4"),
        ({"image_shape": (28, 28)}, r"must be \(C, H, W\)"),
        ({"loss": "wgan"}, "loss must be one of"),
        ({"lambda_identity": -1.0}, "must be >= 0"),
        ({"discriminator_layers": 3, "image_shape": (1, 16, 16)}, "leave less than 3 x 3"),
    ],
)
def test_config_refuses_bad_values_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        CycleGANConfig(**fields)


def test_linear_decay_follows_the_paper_schedule():
    # 10 steps, the last half decaying: 1 for steps 0-4, then 1 - k/6 for k = 1..5.
    factors = [linear_decay(step, 10, 0.5) for step in range(10)]
    assert factors == pytest.approx([1.0] * 5 + [1 - k / 6 for k in range(1, 6)])
    assert linear_decay(7, 10, 0.0) == 1.0


def test_divergence_restores_the_initial_weights_and_says_so():
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    initial = copy.deepcopy(model.state_dict())
    a = images(8)
    a[3] = float("nan")
    trainer = CycleGANTrainer(model, CycleGANTrainerConfig(batch_size=8, device="cpu"))
    with pytest.raises(TrainingDivergedError, match="NaN or infinite in epoch 1"):
        trainer.fit(a, images(8, 1))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, initial[name]), name


def test_training_is_seeded_and_logs_every_loss():
    def run() -> tuple[CycleGAN, list[dict[str, float]]]:
        torch.manual_seed(5)
        model = CycleGAN(TINY)
        config = CycleGANTrainerConfig(epochs=2, batch_size=4, seed=2, device="cpu")
        return model, CycleGANTrainer(model, config).fit(images(8), images(12, 1))

    (first, history), (second, _) = run(), run()
    assert len(history) == 2
    assert set(history[0]) == {"d_a", "d_b", "g_adv", "cycle", "identity", "g_total"}
    assert all(math.isfinite(v) for logs in history for v in logs.values())
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_shapes_are_checked_before_training():
    trainer = CycleGANTrainer(CycleGAN(TINY), CycleGANTrainerConfig(device="cpu"))
    with pytest.raises(ValueError, match=r"domain B images must have shape \(N, 1, 8, 8\)"):
        trainer.fit(images(4), images(4, 0, (3, 8, 8)))


# --- a real learning run ------------------------------------------------------------------------
@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
def test_a_short_run_learns_colour_inversion_of_held_out_digits(data_env):
    """A = 300 MNIST training digits, B = 300 other training digits inverted (never paired);
    120 steps of 16 (about 9 s on one thread). An untrained generator outputs about grey (tanh
    near 0), so |G(x) - T(x)| is about |0.5 - T(x)| ~ 0.5 on mostly black-or-white digits.
    Measured on these 200 test digits with seeds 0-3: untrained 0.42-0.55, trained
    0.11-0.18, a ratio of 0.20-0.42 in either direction (0.20 with this seed); the bound is
    half the untrained error."""
    from anomaly.data import load_dataset

    train = torch.from_numpy(load_dataset("mnist", split="train").X[:600]).float() / 255
    test = torch.from_numpy(load_dataset("mnist", split="test").X[:200]).float() / 255
    invert = get_transform("invert")
    torch.manual_seed(0)
    config = CycleGANConfig(base_channels=8, residual_blocks=2)
    model = CycleGAN(config)

    def errors() -> tuple[float, float]:
        ab = (model.translate(test) - invert(test)).abs().mean().item()
        ba = (model.translate(invert(test), "b_to_a") - test).abs().mean().item()
        return ab, ba

    untrained = errors()
    trainer_config = CycleGANTrainerConfig(
        epochs=100, batch_size=16, max_steps=120, seed=0, device="cpu"
    )
    CycleGANTrainer(model, trainer_config).fit(train[:300], invert(train[300:]))
    trained = errors()
    assert 0.3 < untrained[0] < 0.7 and 0.3 < untrained[1] < 0.7
    assert trained[0] < 0.5 * untrained[0] and trained[1] < 0.5 * untrained[1], (trained, untrained)
