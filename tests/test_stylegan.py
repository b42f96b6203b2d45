"""StyleGAN: AdaIN, per-pixel noise, style mixing and the truncation trick, each checked for
what it is meant to do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from generative.registry import load_model, save_model
from generative.stylegan import StyleGAN, StyleGANConfig, adain

TINY = dict(latent_dim=16, w_dim=16, channel_base=128, max_channels=16, ema_decay=0.0)


def tiny_stylegan(side: int = 16, **overrides) -> StyleGAN:
    torch.manual_seed(0)
    return StyleGAN(StyleGANConfig((1, side, side), **{**TINY, **overrides}))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def lowpass(x: torch.Tensor) -> torch.Tensor:
    """4 x 4 box average: keeps the layout of a 16 x 16 image, drops pixel-level detail."""
    return F.avg_pool2d(x, 4)


@pytest.fixture(scope="module")
def trained(shared_data_dir) -> StyleGAN:
    """A small StyleGAN grown to 16 x 16 on 3000 MNIST digits (about 10 s on one thread)."""
    import os

    from anomaly.data import load_dataset

    os.environ.setdefault("GENAD_DATA_DIR", str(shared_data_dir))
    torch.set_num_threads(1)
    digits = torch.from_numpy(load_dataset("mnist", split="train").X[:3000]).float() / 255
    digits = F.interpolate(F.pad(digits, (2, 2, 2, 2)), size=16, mode="area")
    model = tiny_stylegan(latent_dim=32, w_dim=32, max_channels=32, channel_base=256)
    config = ProgressiveTrainerConfig(
        batch_size=32, fade_images=1500, stable_images=1500, device="cpu", seed=0
    )
    ProgressiveTrainer(model, config).fit(digits)
    return model


# --- AdaIN ----------------------------------------------------------------------------------
def test_adain_equals_its_formula_with_per_channel_statistics() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5) * 4 + 7
    scale, bias = torch.randn(2, 3), torch.randn(2, 3)
    out = adain(x, scale, bias)
    for n in range(2):
        for c in range(3):
            pixels = x[n, c]
            expected = scale[n, c] * (pixels - pixels.mean()) / pixels.std(unbiased=False)
            torch.testing.assert_close(out[n, c], expected + bias[n, c], rtol=1e-4, atol=1e-4)
    # so every output channel has mean y_b and standard deviation |y_s|
    torch.testing.assert_close(out.mean(dim=(2, 3)), bias, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        out.std(dim=(2, 3), unbiased=False), scale.abs(), rtol=1e-3, atol=1e-3
    )


def test_each_layer_is_styled_by_its_own_affine_map_of_w() -> None:
    """The statistics of every layer's output are exactly (A(w)_b, |A(w)_s|): w reaches the
    picture only through these styles."""
    model = tiny_stylegan()
    synthesis = model.generator.synthesis
    ws = model.generator.styles(torch.randn(3, 16))
    outputs = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: outputs.append(o)) for layer in synthesis.layers
    ]
    synthesis(ws, noise_mode="none")
    for hook in hooks:
        hook.remove()
    assert len(outputs) == model.config.num_layers == 6
    for index, (layer, out) in enumerate(zip(synthesis.layers, outputs, strict=True)):
        scale, bias = layer.styles(ws[:, index])
        torch.testing.assert_close(out.mean(dim=(2, 3)), bias, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            out.std(dim=(2, 3), unbiased=False), scale.abs(), rtol=1e-2, atol=1e-3
        )


def test_mapping_network_is_a_slow_mlp_of_the_configured_depth() -> None:
    model = StyleGAN(StyleGANConfig((1, 8, 8), mapping_layers=8))  # the paper's depth
    assert len(model.generator.mapping.layers) == 8
    assert all(layer.lr_multiplier == 0.01 for layer in model.generator.mapping.layers)
    assert model.generator.synthesis.const.shape == (1, model.config.channels(4), 4, 4)


# --- noise ----------------------------------------------------------------------------------
def test_noise_is_per_pixel_with_learned_per_channel_strength() -> None:
    model = tiny_stylegan()
    layer = model.generator.synthesis.layers[3]
    x, w = torch.randn(2, 16, 8, 8), torch.randn(2, 16)
    generator = torch.Generator().manual_seed(5)
    quiet = layer(x, w, "none", None)
    assert torch.equal(layer(x, w, "random", generator), quiet)  # strengths start at 0
    with torch.no_grad():
        layer.noise_strength.copy_(torch.linspace(0.1, 1.6, 16))
    noise = layer.noise(x, "random", torch.Generator().manual_seed(5))
    assert noise.shape == (2, 1, 8, 8)  # one value per pixel, shared by the channels
    assert abs(float(noise.mean())) < 4 / 128**0.5 and abs(float(noise.std()) - 1) < 0.25
    before_adain = layer.conv(F.interpolate(x, scale_factor=2.0) if layer.up else x)
    expected = before_adain + layer.noise_strength[:, None, None] * noise
    from generative.progressive.layers import leaky

    styled = adain(leaky(expected), *layer.styles(w))
    torch.testing.assert_close(layer(x, w, "random", torch.Generator().manual_seed(5)), styled)


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite (its 8-minute bar)
def test_noise_changes_fine_detail_but_not_the_global_structure(trained: StyleGAN) -> None:
    """Same w, other noise: the images differ, but their 4 x 4 low-pass versions stay close;
    another w changes the low-pass image an order of magnitude more."""
    g = trained.generator.eval()
    z, other = torch.randn(64, 32, generator=torch.Generator().manual_seed(1)).split(32)
    with torch.no_grad():
        ws = g.styles(z)
        first = g.synthesis(ws, rng=torch.Generator().manual_seed(2))
        renoised = g.synthesis(ws, rng=torch.Generator().manual_seed(3))
        restyled = g.synthesis(g.styles(other), rng=torch.Generator().manual_seed(2))
    noise_raw, noise_low = relative(renoised, first), relative(lowpass(renoised), lowpass(first))
    style_raw, style_low = relative(restyled, first), relative(lowpass(restyled), lowpass(first))
    assert noise_raw > 0.01  # the noise does change the picture
    assert noise_low < 0.3 * style_low  # measured about 0.03-0.13
    # and what it changes is detail: a smaller share of its change survives the low-pass
    assert noise_low / noise_raw < style_low / style_raw


# --- style mixing ---------------------------------------------------------------------------
def test_style_mixing_takes_coarse_layers_from_one_w_and_fine_from_another() -> None:
    model = tiny_stylegan()
    g = model.generator
    z1, z2 = torch.randn(2, 16), torch.randn(2, 16)
    w1, w2 = g.mapping(z1), g.mapping(z2)
    used = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, args: used.append(args[1]))
        for layer in g.synthesis.layers
    ]
    with torch.no_grad():
        mixed = g(z1, mix_z=z2, mix_layer=2, noise_mode="const")
    for hook in hooks:
        hook.remove()
    for index, w in enumerate(used):
        torch.testing.assert_close(w, w1 if index < 2 else w2)
    explicit = torch.stack([w1, w1, w2, w2, w2, w2], dim=1)
    torch.testing.assert_close(mixed, g.synthesis(explicit, noise_mode="const"))
    with pytest.raises(ValueError, match="mix_layer"):
        g(z1, mix_z=z2, mix_layer=9)


def test_mixing_regularisation_mixes_the_configured_share_of_batches() -> None:
    """Over 400 training batches the share that use two ws is p = 0.5 within 4 standard
    errors, and the crossover is never layer 0 and always inside the active layers."""
    model = tiny_stylegan(8, style_mixing_prob=0.5)
    seen = []
    model.generator.synthesis.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(400):
            model.fake(torch.randn(2, 16, generator=rng), 1, 1.0, rng)
    mixed = 0
    for ws in seen:
        changes = [k for k in range(1, 4) if not torch.equal(ws[:, k], ws[:, k - 1])]
        assert len(changes) <= 1 and torch.equal(ws[:, 0], ws[:, 0])
        mixed += bool(changes)
    share, se = mixed / 400, (0.25 / 400) ** 0.5
    assert abs(share - 0.5) < 4 * se


# --- truncation -----------------------------------------------------------------------------
def test_psi_zero_gives_the_mean_w_image_for_every_z() -> None:
    model = tiny_stylegan()
    g = model.generator
    with torch.no_grad():
        g.w_avg.copy_(torch.randn(16))
        images = model.generate(torch.randn(5, 16), psi=0.0, noise_mode="const")
        mean_w = g.w_avg.expand(1, model.config.num_layers, -1)
        expected = model.to_data_scale(g.synthesis(mean_w, noise_mode="const"))
    torch.testing.assert_close(images, expected.expand(5, -1, -1, -1), rtol=0, atol=1e-5)
    z = torch.randn(3, 16)
    ws, half = g.styles(z), g.styles(z, psi=0.5)
    torch.testing.assert_close(half, (g.w_avg + ws) / 2)
    torch.testing.assert_close(g.styles(z, psi=1.0), ws)


def test_w_avg_is_the_running_mean_of_w_during_training() -> None:
    model = tiny_stylegan(8, style_mixing_prob=0.0)
    z = torch.randn(8, 16)
    model.fake(z, 0, 1.0, None)
    w = model.generator.mapping(z).mean(dim=0)
    torch.testing.assert_close(model.generator.w_avg, (1 - 0.995) * w.detach())


def test_seeded_samples_repeat_and_survive_save_and_load(tmp_path) -> None:
    model = tiny_stylegan(8)
    first = model.sample(4, seed=7, truncation=0.7)
    torch.testing.assert_close(model.sample(4, seed=7, truncation=0.7), first)
    assert not torch.equal(model.sample(4, seed=8, truncation=0.7), first)
    loaded = load_model(save_model(model, tmp_path / "style"))
    assert isinstance(loaded, StyleGAN)
    torch.testing.assert_close(loaded.sample(4, seed=7, truncation=0.7), first)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])  # fmt: skip
def test_bf16_growth_runs_and_samples_on_the_device(device: str, tmp_path) -> None:
    """Under bf16 autocast every phase's losses stay finite and the model samples in fp32."""
    model = tiny_stylegan(8)
    config = ProgressiveTrainerConfig(
        batch_size=8, fade_images=16, stable_images=16, device=device, autocast="bf16"
    )
    trainer = ProgressiveTrainer(model, config, checkpoint_dir=tmp_path)
    history = trainer.fit(torch.rand(32, 1, 8, 8))
    assert len(history) == 3
    assert all(torch.isfinite(torch.tensor([h["d_loss"], h["g_loss"]])).all() for h in history)
    images = model.sample(2, seed=0)
    assert images.dtype == torch.float32 and images.device.type == device


def test_default_mapping_keeps_fresh_ws_apart() -> None:
    """The default mapping depth (2) leaves the ws of a fresh network spread out: their mean
    pairwise cosine stayed in 0.26-0.37 over 5 initial seeds, against 0.66-0.76 for the paper's 8
    layers, which squeeze every z toward one direction while the 0.01 lr multiplier keeps the
    mapping from learning its way out."""

    def mean_cosine(mapping_layers: int) -> float:
        torch.manual_seed(0)
        config = StyleGANConfig((1, 32, 32), w_dim=128, mapping_layers=mapping_layers)
        mapping = StyleGAN(config).generator.mapping
        z = torch.randn(256, 128, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            unit = torch.nn.functional.normalize(mapping(z), dim=1)
        n = len(unit)
        return float(((unit @ unit.T).sum() - n) / (n * n - n))

    assert StyleGANConfig((1, 32, 32)).mapping_layers == 2
    assert mean_cosine(2) < 0.45 < 0.6 < mean_cosine(8)
