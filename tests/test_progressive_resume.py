"""Crash-safe progressive growing (ProGAN and StyleGAN): per-stage checkpoints in the loop's
checksummed, fingerprinted format, exact resume also after SIGKILL, foreign checkpoints refused.

The tolerance is zero for the reason given in tests/test_gan_resume.py: on one torch thread a
stage checkpoint restores everything that feeds the next step (G, D, the EMA generator, both
optimizers, the batch order, the RNG that draws batches, latents and StyleGAN's noise, the G
step counter that ramps the EMA), so the resumed growth is bit for bit the uninterrupted one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from resumes import Crash, assert_same_weights, kill_when_written
from servers import child_env

from generative.checkpoints import read_checkpoint
from generative.progressive import ProGAN, ProGANConfig
from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from generative.registry import load_model
from generative.stylegan import StyleGAN, StyleGANConfig

FAMILIES = {
    "progan": (ProGAN, ProGANConfig, {"latent_dim": 8, "channel_base": 64, "max_channels": 8,
                                      "minibatch_group": 2, "ema_decay": 0.9}),
    "stylegan": (StyleGAN, StyleGANConfig, {"latent_dim": 8, "w_dim": 8, "channel_base": 64,
                                            "max_channels": 8, "ema_decay": 0.9}),
}  # fmt: skip
SETTINGS = {"batch_size": 8, "fade_images": 16, "stable_images": 16, "seed": 2, "device": "cpu",
            "autocast": "off"}  # fmt: skip
STAGES = ["stage_0_4x4", "stage_1_8x8", "stage_2_16x16"]


def images(rows: int = 24) -> torch.Tensor:
    return torch.rand(rows, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def new_model(family: str, seed: int = 0):
    model_class, config_class, options = FAMILIES[family]
    torch.manual_seed(seed)
    return model_class(config_class((1, 16, 16), **options))


def trainer(model, folder: Path | None = None, callbacks=(), **overrides) -> ProgressiveTrainer:
    config = ProgressiveTrainerConfig(**{**SETTINGS, **overrides})
    return ProgressiveTrainer(model, config, callbacks, checkpoint_dir=folder)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resume_after_a_crash_is_bitwise_the_uninterrupted_run(tmp_path, family):
    reference = new_model(family)
    whole = trainer(reference)
    expected = whole.fit(images())
    with pytest.raises(KeyboardInterrupt):  # in stage 2's fade-in: stage 1 is checkpointed
        trainer(new_model(family), tmp_path, [Crash(at=3)]).fit(images())
    assert sorted(p.name for p in tmp_path.iterdir()) == STAGES[:2]
    state = read_checkpoint(tmp_path / STAGES[1])  # the loop's format, checksummed
    assert state["epoch"] == 3 and set(state["fingerprint"]) == {
        "trainer",
        "model",
        "data",
        "defaults",
    }
    assert load_model(tmp_path / STAGES[1]).progress.tolist() == [1.0, 1.0]  # also a model
    resumed = new_model(family, seed=7)  # other initial weights: all must come from disk
    again = trainer(resumed)
    assert again.fit(images(), resume_from=tmp_path / STAGES[1]) == expected
    assert again.resumed_from == tmp_path / STAGES[1]
    assert again.generator_steps == whole.generator_steps
    assert_same_weights(resumed, reference)


def test_a_checkpoint_of_other_settings_or_images_is_refused(tmp_path):
    trainer(new_model("progan"), tmp_path, stop_after_stage=0).fit(images())
    with pytest.raises(ValueError, match="another data"):
        trainer(new_model("progan")).fit(images(23), resume_from=tmp_path / STAGES[0])
    with pytest.raises(ValueError, match="another trainer configuration.*lr"):
        trainer(new_model("progan"), lr=1e-4).fit(images(), resume_from=tmp_path / STAGES[0])
    longer = trainer(new_model("progan"), max_seconds=1e6)  # a budget may change on resume
    assert len(longer.fit(images(), resume_from=tmp_path / STAGES[0])) == 5


# --- a growth killed with SIGKILL, then resumed here ------------------------------------------
CHILD = f"""
import sys, time
import torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_progressive_resume import new_model, images, trainer
from generative.training import Callback


class Slow(Callback):  # each stage ends late: the kill lands mid-run
    def on_stage_end(self, trainer, stage):
        time.sleep(1.0)


torch.set_num_threads(1)
trainer(new_model(sys.argv[2]), sys.argv[1], [Slow()]).fit(images())
"""


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_growth_killed_mid_run_resumes_bitwise(tmp_path, family):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    folder = tmp_path / "checkpoints"
    env = child_env({"OMP_NUM_THREADS": "1"})
    args = [sys.executable, script, folder, family]
    kill_when_written(args, folder / STAGES[1], env, tmp_path / "child.log")
    assert not (folder / STAGES[2]).exists(), "the child finished training before it was killed"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = new_model(family, seed=9)
        history = trainer(resumed, folder).fit(images(), resume_from=folder / STAGES[1])
        reference = new_model(family)
        expected = trainer(reference).fit(images())
    finally:
        torch.set_num_threads(threads)
    assert history == expected
    assert_same_weights(resumed, reference)
