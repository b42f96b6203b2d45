"""Differentiable augmentation and ADA in the progressive trainer (Progressive GAN, StyleGAN):
strength 0 trains exactly as no augmentation, ADA raises the strength while D overfits a fixed
small real set and the adapted strength survives a resume, bad settings are refused by name,
and the CLI flags reach the trainer's config."""

from __future__ import annotations

import pytest
import torch

from generative.progressive import ProGAN, ProGANConfig
from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from pipelines import cli
from pipelines.cli_parser import build_parser

TINY = dict(latent_dim=8, channel_base=32, max_channels=8, minibatch_group=2)


def tiny_progan(**overrides) -> ProGAN:
    torch.manual_seed(0)
    return ProGAN(ProGANConfig((1, 8, 8), **{**TINY, **overrides}))


def fixed_images(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def trained(folder=None, model=None, **overrides) -> ProgressiveTrainer:
    settings = dict(batch_size=8, fade_images=16, stable_images=16, device="cpu", seed=3)
    config = ProgressiveTrainerConfig(**{**settings, **overrides})
    trainer = ProgressiveTrainer(model or tiny_progan(), config, checkpoint_dir=folder)
    trainer.fit(fixed_images())
    return trainer


def test_strength_zero_trains_exactly_as_no_augmentation():
    """At strength 0 the augmentation returns its input and draws nothing: the same weights."""
    plain = trained().model.state_dict()
    off = trained(augment="color,translation,cutout", augment_strength=0.0)
    assert all(torch.equal(value, off.model.state_dict()[key]) for key, value in plain.items())
    assert all(phase["augment_strength"] == 0.0 for phase in off.history)
    on = trained(augment="translation,cutout").model.state_dict()
    assert any(not torch.equal(value, on[key]) for key, value in plain.items())


def test_ada_raises_the_strength_while_d_overfits_and_a_resume_keeps_it(tmp_path):
    """Eight fixed real images, no R1 and a last stage of 200 D steps: D learns them (E sign
    D(real) ~0.7 after ~100 steps), so the strength grows by 32 / 20,000 per update of 4 D
    steps (at most 0.08 in all); the stage checkpoint carries ADA's state into a resumed run,
    which ends with the uninterrupted run's weights."""
    settings = dict(augment="translation,cutout", ada_target=0.6, final_images=1600)
    whole = trained(tmp_path / "whole", tiny_progan(r1_gamma=0.0), **settings)
    strengths = [phase["augment_strength"] for phase in whole.history]
    assert 0.01 <= strengths[-1] <= 0.08 and strengths[-1] > strengths[0]
    first = trained(tmp_path / "parts", tiny_progan(r1_gamma=0.0), stop_after_stage=0, **settings)
    config = ProgressiveTrainerConfig(**{**first.config.to_dict(), "stop_after_stage": None})
    resumed = ProgressiveTrainer(
        tiny_progan(r1_gamma=0.0), config, checkpoint_dir=tmp_path / "parts"
    )
    resumed.fit(fixed_images(), resume_from=tmp_path / "parts" / "stage_0_4x4")
    assert resumed.history[0]["augment_strength"] == pytest.approx(strengths[0])
    assert resumed.history[-1]["augment_strength"] == pytest.approx(strengths[-1])
    for key, value in whole.model.state_dict().items():  # the draws resume where they were
        assert torch.equal(value, resumed.model.state_dict()[key]), key


@pytest.mark.parametrize(
    "values,message",
    [
        ({"augment": "blur"}, "unknown augmentation"),
        ({"augment": "color", "augment_strength": -0.1}, "augment_strength must be in"),
        ({"ada_target": 0.6}, "needs an augment policy"),
    ],
)
def test_bad_augmentation_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        ProgressiveTrainerConfig(**values)


def test_the_augmentation_flags_reach_the_progressive_trainer_config():
    from pipelines.cli_train import SCHEDULE_FLAGS, flag_settings

    for family in ("progan", "stylegan"):
        args = build_parser(cli).parse_args(
            ["train", family, "--dataset", "fashion-mnist", "--augment", "translation,cutout",
             "--ada-target", "0.6", "--lr-decay-start", "0.5"]
        )  # fmt: skip
        settings = flag_settings(args, "trainer_config", SCHEDULE_FLAGS)
        assert settings == {
            "augment": "translation,cutout", "ada_target": 0.6, "lr_decay_start": 0.5,
        }  # fmt: skip
        ProgressiveTrainerConfig(**settings)  # a valid config
