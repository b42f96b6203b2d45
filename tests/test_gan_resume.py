"""Crash-safe GAN training: per-epoch checkpoints, exact resume, damaged checkpoints refused.

Why the tolerance is zero: on one torch thread the same operations run in the same order on the
same values. A checkpoint restores everything that feeds them exactly (G, D and the EMA
generator, both optimizers' moments and step counts, the global and the batch/latent RNG
states, the G and D step counters that decide when G steps under n_critic), so the resumed run
computes bit for bit what the uninterrupted run computes: equal, not merely close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from resumes import Crash, assert_same_weights, damage, epoch_metrics, killed_cli_run

from generative.checkpoints import TRAINER_STATE_FILE, checkpoint_folders
from generative.checksums import CorruptFileError
from generative.gan import GAN, GANConfig, GANTrainer, GANTrainerConfig

D = 4
DATA = torch.randn(300, D, generator=torch.Generator().manual_seed(1))
LABELS = torch.arange(300) % 2


def new_gan(seed: int = 0, **overrides) -> GAN:
    torch.manual_seed(seed)
    options = {"latent_dim": 2, "hidden_dims": (16,), "ema_decay": 0.9, **overrides}
    return GAN(GANConfig((D,), **options))


def config(**overrides) -> GANTrainerConfig:
    options = {"epochs": 5, "batch_size": 32, "n_critic": 2, "device": "cpu", "autocast": "off"}
    return GANTrainerConfig(**{**options, **overrides})


# the WGAN-GP case draws the penalty's interpolation weights from the batch generator too
@pytest.mark.parametrize("gan_options", [{}, {"loss": "wgan_gp", "num_classes": 2}])
def test_resume_after_a_crash_is_bitwise_the_uninterrupted_run(tmp_path, gan_options):
    labels = LABELS if gan_options else None
    reference = new_gan(**gan_options)
    reference_trainer = GANTrainer(reference, config())
    expected = reference_trainer.fit(DATA, labels)
    with pytest.raises(KeyboardInterrupt):
        GANTrainer(new_gan(**gan_options), config(), [Crash(at=2)],
                   checkpoint_dir=tmp_path).fit(DATA, labels)  # fmt: skip
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0001", "epoch_0002"]
    resumed = new_gan(seed=7, **gan_options)  # other initial weights: all must come from disk
    trainer = GANTrainer(resumed, config(), checkpoint_dir=tmp_path)
    history = trainer.fit(DATA, labels)
    assert trainer.resumed_from == tmp_path / "epoch_0002"
    assert history == expected  # every epoch's losses, to the last bit
    assert trainer.discriminator_steps == reference_trainer.discriminator_steps == 5 * 10
    assert trainer.generator_steps == reference_trainer.generator_steps
    assert any(name.startswith("generator_ema.") for name in resumed.state_dict())
    assert_same_weights(resumed, reference)  # G, D and the EMA generator
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0004", "epoch_0005"]


def test_a_finished_run_extended_from_resume_from_equals_the_longer_run(tmp_path):
    reference = new_gan()
    expected = GANTrainer(reference, config(epochs=4)).fit(DATA)
    GANTrainer(new_gan(), config(epochs=2), checkpoint_dir=tmp_path).fit(DATA)
    resumed = new_gan(seed=3)
    trainer = GANTrainer(resumed, config(epochs=4))  # no checkpoint_dir: nothing written
    assert trainer.fit(DATA, resume_from=tmp_path / "epoch_0001") == expected
    assert_same_weights(resumed, reference)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0001", "epoch_0002"]


def test_a_run_that_hit_its_step_cap_stays_ended(tmp_path):
    capped = config(epochs=4, max_generator_steps=12)  # 5 G steps per epoch: ends in epoch 3
    first = GANTrainer(new_gan(), capped, checkpoint_dir=tmp_path).fit(DATA)
    assert len(first) == 3
    again = GANTrainer(new_gan(), config(epochs=6, max_generator_steps=12),
                       checkpoint_dir=tmp_path)  # fmt: skip
    assert again.fit(DATA) == first and again.generator_steps == 12


@pytest.mark.parametrize("how", ["truncated", "flipped_byte", "no_checksums"])
def test_a_damaged_checkpoint_is_refused_and_never_loaded(tmp_path, how):
    GANTrainer(new_gan(), config(epochs=2), checkpoint_dir=tmp_path).fit(DATA)
    damage(tmp_path / "epoch_0002", how)
    model, untouched = new_gan(seed=5), new_gan(seed=5)
    trainer = GANTrainer(model, config(epochs=4), checkpoint_dir=tmp_path)
    with pytest.raises(CorruptFileError, match="epoch_0002"):
        trainer.fit(DATA)
    assert_same_weights(model, untouched)  # nothing of the checkpoint reached the model
    assert trainer.history == [] and trainer.generator_steps == 0
    assert all(not opt.state for opt in trainer.optimizers)  # no Adam moments loaded either


@pytest.mark.parametrize(
    ("trainer_change", "gan_change", "data_change", "message"),
    [
        ({"lr_generator": 1e-3}, {}, 0.0, "another trainer.*lr_generator"),
        ({}, {"hidden_dims": (8,)}, 0.0, "another model.*hidden_dims"),
        ({}, {}, 1.0, "another data"),
    ],
)
def test_a_checkpoint_of_other_settings_or_data_is_refused(
    tmp_path, trainer_change, gan_change, data_change, message
):
    GANTrainer(new_gan(), config(epochs=1), checkpoint_dir=tmp_path).fit(DATA)
    trainer = GANTrainer(new_gan(**gan_change), config(epochs=2, **trainer_change),
                         checkpoint_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        trainer.fit(DATA + data_change)


# --- the CLI, killed with SIGKILL in a child process, then the flow run again -----------------
MODEL = "gan-resume-test"
EPOCHS = 5
FLAGS = ["--epochs", str(EPOCHS), "--batch-size", "32", "--latent-dim", "4",
         "--gan-config", '{"hidden_dims": [32]}', "--reference-rows", "200"]  # fmt: skip
GAN_SETTINGS = {"hidden_dims": [32], "latent_dim": 4}  # what FLAGS set, for the flow
TRAINER_SETTINGS = {"epochs": EPOCHS, "batch_size": 32}


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """10,000 rows of 16 features: 8,000 training rows take about 0.2 s per epoch on one
    thread, so a kill right after the second checkpoint lands mid-run."""
    rows = np.random.default_rng(0).normal(size=(10_000, 16))
    path = tmp_path_factory.mktemp("gan-resume") / "rows.csv"
    pd.DataFrame(rows, columns=[f"f{i}" for i in range(16)]).to_csv(
        path, index=False, float_format="%.17g"
    )
    return path


def final_state(folder: Path) -> dict:
    path = folder / "trainer" / f"epoch_{EPOCHS:04d}" / TRAINER_STATE_FILE
    return torch.load(path, weights_only=True)


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
@pytest.mark.usefixtures("no_heartbeats")
def test_cli_killed_mid_training_resumes_into_the_same_run(
    tmp_path, big_csv, mlflow_store, prefect_api_url
):
    from pipelines.train_gan import train_gan_flow

    folder = tmp_path / "checkpoints"
    command = ["train", "gan", "--dataset", big_csv, "--model-name", MODEL,
               "--checkpoint-dir", folder, *FLAGS]  # fmt: skip
    stores = (mlflow_store, prefect_api_url)
    killed_run = killed_cli_run(command, folder, stores, tmp_path / "child.log", EPOCHS)

    options = {"model_name": MODEL, "reference_rows": 200}
    resumed = train_gan_flow(str(big_csv), GAN_SETTINGS, TRAINER_SETTINGS,
                             checkpoint_dir=str(folder), **options)  # fmt: skip
    reference_dir = tmp_path / "uninterrupted"
    reference = train_gan_flow(str(big_csv), GAN_SETTINGS, TRAINER_SETTINGS,
                               checkpoint_dir=str(reference_dir), **options)  # fmt: skip

    assert resumed["run_id"] == killed_run != reference["run_id"]
    assert resumed["epochs_run"] == reference["epochs_run"] == EPOCHS
    for key in ("epoch_d_loss", "epoch_g_loss"):
        logged = epoch_metrics(resumed["run_id"], key)
        assert [step for step, _ in logged] == list(range(EPOCHS)), key  # each epoch once
        assert logged == epoch_metrics(reference["run_id"], key), key
    resumed_state, reference_state = final_state(folder), final_state(reference_dir)
    assert resumed_state["generator_steps"] == reference_state["generator_steps"]
    for name, tensor in reference_state["model"].items():  # G, D and the EMA generator
        assert torch.equal(resumed_state["model"][name], tensor), name
    longer = {**TRAINER_SETTINGS, "epochs": EPOCHS + 1}  # the folder is another run's now
    with pytest.raises(ValueError, match=r"belongs to run .* \(trainer differ\)"):
        train_gan_flow(str(big_csv), GAN_SETTINGS, longer, checkpoint_dir=str(folder), **options)
