"""Crash-safe CycleGAN training: per-epoch checkpoints, exact resume, foreign checkpoints refused.

As for the GAN (tests/test_gan_resume.py) the tolerance is zero: on one torch thread a
checkpoint restores everything that feeds the next step (the four nets, both optimizers and
their learning-rate schedules, the image histories' stored fakes, the step counter and the RNG
that walks the domains and draws the histories' swaps), so a resumed run is bit for bit the
uninterrupted one, also after the training process was killed with SIGKILL.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from resumes import (
    Crash,
    assert_same_weights,
    damage,
    epoch_metrics,
    kill_after_epochs,
    killed_cli_run,
)
from servers import child_env

from generative.checkpoints import TRAINER_STATE_FILE, checkpoint_folders
from generative.checksums import CorruptFileError
from generative.cyclegan import CycleGAN, CycleGANConfig, CycleGANTrainer, CycleGANTrainerConfig

TINY = {"image_shape": (1, 8, 8), "base_channels": 4, "residual_blocks": 1,
        "discriminator_layers": 1, "history_size": 6}  # fmt: skip
SETTINGS = {"epochs": 5, "batch_size": 4, "decay_fraction": 0.5, "seed": 3, "device": "cpu",
            "autocast": "off"}  # fmt: skip


def domains(rows_a: int = 10, rows_b: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(rows_a, 1, 8, 8, generator=generator), torch.rand(
        rows_b, 1, 8, 8, generator=generator
    )


def new_model(seed: int = 0) -> CycleGAN:
    torch.manual_seed(seed)
    return CycleGAN(CycleGANConfig(**TINY))


def config(**overrides) -> CycleGANTrainerConfig:
    return CycleGANTrainerConfig(**{**SETTINGS, **overrides})


def test_resume_after_a_crash_is_bitwise_the_uninterrupted_run(tmp_path):
    reference = new_model()
    reference_trainer = CycleGANTrainer(reference, config())
    expected = reference_trainer.fit(*domains())
    with pytest.raises(KeyboardInterrupt):
        CycleGANTrainer(new_model(), config(), [Crash(at=2)], checkpoint_dir=tmp_path).fit(
            *domains()
        )
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0001", "epoch_0002"]
    resumed = new_model(seed=7)  # other initial weights: all must come from disk
    trainer = CycleGANTrainer(resumed, config(), checkpoint_dir=tmp_path)
    assert trainer.fit(*domains()) == expected  # every epoch's losses, to the last bit
    assert trainer.resumed_from == tmp_path / "epoch_0002"
    assert trainer.steps == reference_trainer.steps == 5 * 4
    assert [len(h) for h in trainer.histories] == [6, 6]  # full: swaps were drawn
    assert_same_weights(resumed, reference)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0004", "epoch_0005"]


def test_a_run_that_hit_its_step_cap_stays_ended(tmp_path):
    first = CycleGANTrainer(new_model(), config(max_steps=6), checkpoint_dir=tmp_path)
    history = first.fit(*domains())
    assert len(history) == 2 and first.steps == 6
    again = CycleGANTrainer(new_model(), config(max_steps=6), checkpoint_dir=tmp_path)
    assert again.fit(*domains()) == history and again.steps == 6


@pytest.mark.parametrize("how", ["truncated", "flipped_byte", "no_checksums"])
def test_a_damaged_checkpoint_is_refused_and_never_loaded(tmp_path, how):
    CycleGANTrainer(new_model(), config(epochs=2), checkpoint_dir=tmp_path).fit(*domains())
    damage(tmp_path / "epoch_0002", how)
    model, untouched = new_model(seed=5), new_model(seed=5)
    trainer = CycleGANTrainer(model, config(epochs=4), checkpoint_dir=tmp_path)
    with pytest.raises(CorruptFileError, match="epoch_0002"):
        trainer.fit(*domains())
    assert_same_weights(model, untouched)
    assert trainer.history == [] and trainer.steps == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [({"lr_generator": 1e-3}, "another trainer.*lr_generator"), ({}, "another data")],
)
def test_a_checkpoint_of_other_settings_or_data_is_refused(tmp_path, change, message):
    CycleGANTrainer(new_model(), config(epochs=1), checkpoint_dir=tmp_path).fit(*domains())
    trainer = CycleGANTrainer(new_model(), config(epochs=2, **change), checkpoint_dir=tmp_path)
    a, b = domains(rows_b=14 if change else 15)
    with pytest.raises(ValueError, match=message):
        trainer.fit(a, b)


# --- a training process killed with SIGKILL, then resumed here -------------------------------
CHILD = f"""
import sys, time
import torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_cyclegan_resume import config, domains, new_model
from generative.cyclegan import CycleGANTrainer
from generative.training import Callback


class Slow(Callback):  # each epoch ends late: the kill lands mid-run
    def on_epoch_end(self, trainer, epoch, logs):
        time.sleep(0.5)


torch.set_num_threads(1)
CycleGANTrainer(new_model(), config(epochs=8), [Slow()], checkpoint_dir=sys.argv[1]).fit(
    *domains()
)
"""


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite (its 8-minute bar)
def test_a_run_killed_mid_training_resumes_bitwise(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    folder = tmp_path / "checkpoints"
    env = child_env({"OMP_NUM_THREADS": "1"})
    args = [sys.executable, script, folder]
    at_kill = kill_after_epochs(args, folder, env, tmp_path / "child.log", epochs_done=2)
    assert at_kill < 8, "the child finished training before it was killed"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = new_model(seed=9)
        trainer = CycleGANTrainer(resumed, config(epochs=8), checkpoint_dir=folder)
        history = trainer.fit(*domains())
        reference = new_model()
        expected = CycleGANTrainer(reference, config(epochs=8)).fit(*domains())
    finally:
        torch.set_num_threads(threads)
    assert trainer.resumed_from == folder / f"epoch_{at_kill:04d}"
    assert history == expected
    assert_same_weights(resumed, reference)


# --- the CLI, killed with SIGKILL in a child process, then the flow run again -----------------
CLI_EPOCHS = 4
CLI_MODEL = {"base_channels": 4, "residual_blocks": 1, "discriminator_layers": 1}
CLI_TRAINER = {"epochs": CLI_EPOCHS, "batch_size": 8}
CLI_OPTIONS = {"model_name": "cyclegan-resume-test", "max_rows": 300, "test_rows": 16,
               "classifier_epochs": 0}  # fmt: skip


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory) -> Path:
    """800 random 28 x 28 8-bit images: 300 per domain take about a second per epoch on one
    thread, so a kill right after the second checkpoint lands mid-run."""
    images = np.random.default_rng(0).integers(0, 256, size=(800, 1, 28, 28), dtype=np.uint8)
    path = tmp_path_factory.mktemp("cyclegan-resume") / "images.npz"
    np.savez(path, X=images)
    return path


def final_cli_state(folder: Path) -> dict:
    path = folder / "trainer" / f"epoch_{CLI_EPOCHS:04d}" / TRAINER_STATE_FILE
    return torch.load(path, weights_only=True)


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
@pytest.mark.usefixtures("no_heartbeats")
def test_cli_killed_mid_training_resumes_into_the_same_run(
    tmp_path, image_npz, mlflow_store, prefect_api_url
):
    from pipelines.train_cyclegan import train_cyclegan_flow

    folder = tmp_path / "checkpoints"
    command = [
        "train", "cyclegan", "--dataset", image_npz, "--transform", "vflip",
        "--checkpoint-dir", folder, "--model-name", CLI_OPTIONS["model_name"],
        "--max-rows", "300", "--test-rows", "16", "--classifier-epochs", "0",
        "--cyclegan-config", json.dumps(CLI_MODEL), "--trainer-config", json.dumps(CLI_TRAINER),
    ]  # fmt: skip
    stores = (mlflow_store, prefect_api_url)
    killed_run = killed_cli_run(command, folder, stores, tmp_path / "child.log", CLI_EPOCHS)

    def train(checkpoints: Path) -> dict:
        return train_cyclegan_flow(str(image_npz), "vflip", CLI_MODEL, CLI_TRAINER,
                                   checkpoint_dir=str(checkpoints), **CLI_OPTIONS)  # fmt: skip

    resumed, reference = train(folder), train(tmp_path / "uninterrupted")
    assert resumed["run_id"] == killed_run != reference["run_id"]
    assert resumed["epochs_run"] == reference["epochs_run"] == CLI_EPOCHS
    logged = epoch_metrics(resumed["run_id"], "epoch_cycle")
    assert [step for step, _ in logged] == list(range(CLI_EPOCHS))  # each epoch logged once
    assert logged == epoch_metrics(reference["run_id"], "epoch_cycle")
    resumed_state = final_cli_state(folder)
    reference_state = final_cli_state(tmp_path / "uninterrupted")
    for name, tensor in reference_state["model"].items():  # all four nets
        assert torch.equal(resumed_state["model"][name], tensor), name
