"""Crash-safe training: per-epoch checkpoints, exact resume, damaged checkpoints refused.

Why the tolerance is zero: on one torch thread the same operations run in the same order on the
same values. A checkpoint restores everything that feeds them exactly (the weights, Adam's
moments and step counts, the global and the permutation RNG states, the step counter for the
KL warm-up, early stopping's best weights), so the resumed run computes bit for bit what the
uninterrupted run computes, and its parameters and metrics are equal, not merely close.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from resumes import Crash, assert_same_weights, damage, epoch_metrics, killed_cli_run

from generative.checkpoints import TRAINER_STATE_FILE, checkpoint_folders, write_checkpoint
from generative.checksums import CorruptFileError
from generative.distributed import World
from generative.training import EarlyStopping, Trainer, TrainerConfig
from generative.vae import VAE, VAEConfig

D = 8
DATA = torch.randn(600, D, generator=torch.Generator().manual_seed(1))
TRAIN, VAL = DATA[:500], DATA[500:]


def new_model() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig((D,), latent_dim=2, hidden_dims=(16,), likelihood="gaussian_learned"))


def config(**overrides) -> TrainerConfig:
    options = {"epochs": 5, "batch_size": 64, "learning_rate": 1e-2, "device": "cpu"}
    return TrainerConfig(**{"autocast": "off", **options, **overrides})


def test_resume_after_a_crash_is_bitwise_the_uninterrupted_run(tmp_path):
    reference = new_model()
    stopper = EarlyStopping(patience=100)
    expected = Trainer(reference, config(), [stopper]).fit(TRAIN, VAL)
    with pytest.raises(KeyboardInterrupt):
        Trainer(new_model(), config(), [EarlyStopping(patience=100), Crash(at=2)],
                checkpoint_dir=tmp_path).fit(TRAIN, VAL)  # fmt: skip
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0001", "epoch_0002"]
    resumed_model, resumed_stopper = new_model(), EarlyStopping(patience=100)
    trainer = Trainer(resumed_model, config(), [resumed_stopper], checkpoint_dir=tmp_path)
    history = trainer.fit(TRAIN, VAL)
    assert trainer.resumed_from == tmp_path / "epoch_0002"
    assert history == expected  # every epoch's metrics, to the last bit
    assert trainer.step == 5 * 8  # 500 rows in batches of 64: 8 steps per epoch
    assert resumed_stopper.best_epoch == stopper.best_epoch
    assert_same_weights(resumed_model, reference)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0004", "epoch_0005"]


def test_a_checkpoint_in_the_layout_before_the_common_loop_still_resumes(tmp_path):
    """Checkpoints written before `Trainer` ran on `generative.loop` named three things
    otherwise (`should_stop`, `optimizer`, `rng.generator`); they resume exactly."""
    reference = new_model()
    expected = Trainer(reference, config(epochs=4)).fit(TRAIN, VAL)
    Trainer(new_model(), config(epochs=2), checkpoint_dir=tmp_path).fit(TRAIN, VAL)
    folder = tmp_path / "epoch_0002"
    state = torch.load(folder / TRAINER_STATE_FILE, weights_only=True)
    state["should_stop"], state["optimizer"] = state.pop("stopped"), state.pop("optimizers")[0]
    state["rng"]["generator"] = state["rng"].pop("batches")
    write_checkpoint(folder, state)  # with its checksum, as the earlier trainer wrote it
    resumed = new_model()
    assert Trainer(resumed, config(epochs=4), checkpoint_dir=tmp_path).fit(TRAIN, VAL) == expected
    assert_same_weights(resumed, reference)


def test_a_world_run_resumes_its_shared_noise_stream_bitwise(tmp_path):
    """With a World the VAE's noise comes from the trainer's own generator (the global-batch
    draw); the checkpoint carries its state, so the resumed run draws what the uninterrupted
    one drew. The run without a World draws other noise, so a lost noise state would show."""
    reference = new_model()
    expected = Trainer(reference, config(), world=World()).fit(TRAIN, VAL)
    assert expected != Trainer(new_model(), config()).fit(TRAIN, VAL)
    with pytest.raises(KeyboardInterrupt):
        Trainer(new_model(), config(), [Crash(at=2)], checkpoint_dir=tmp_path,
                world=World()).fit(TRAIN, VAL)  # fmt: skip
    resumed_model = new_model()
    trainer = Trainer(resumed_model, config(), checkpoint_dir=tmp_path, world=World())
    assert trainer.fit(TRAIN, VAL) == expected
    assert trainer.resumed_from == tmp_path / "epoch_0002"
    assert_same_weights(resumed_model, reference)
    assert "noise" not in vars(resumed_model)  # the hook is the VAE's own again after training


@pytest.mark.parametrize("how", ["truncated", "flipped_byte", "other_epoch", "no_checksums"])
def test_a_damaged_checkpoint_is_refused_and_never_loaded(tmp_path, how):
    Trainer(new_model(), config(epochs=2), checkpoint_dir=tmp_path).fit(TRAIN)
    damage(tmp_path / "epoch_0002", how)
    model, untouched = new_model(), new_model()
    with pytest.raises(CorruptFileError, match="epoch_0002"):
        Trainer(model, config(epochs=4), checkpoint_dir=tmp_path).fit(TRAIN)
    assert_same_weights(model, untouched)  # nothing of the checkpoint reached the model


@pytest.mark.parametrize(
    ("change", "message"),
    [({"learning_rate": 5e-3}, "another trainer.*learning_rate"), ({"data": True}, "another data")],
)
def test_a_checkpoint_of_other_settings_or_data_is_refused(tmp_path, change, message):
    Trainer(new_model(), config(epochs=1), checkpoint_dir=tmp_path).fit(TRAIN)
    data = TRAIN + 1.0 if change.pop("data", False) else TRAIN
    with pytest.raises(ValueError, match=message):
        Trainer(new_model(), config(epochs=1, **change), checkpoint_dir=tmp_path).fit(data)


def test_a_killed_write_leaves_no_checkpoint_behind(tmp_path):
    Trainer(new_model(), config(epochs=1), checkpoint_dir=tmp_path).fit(TRAIN)
    staging = tmp_path / ".epoch_0002.123"  # what a kill during a write leaves
    staging.mkdir()
    (staging / TRAINER_STATE_FILE).write_bytes(b"half a file")
    trainer = Trainer(new_model(), config(epochs=2), checkpoint_dir=tmp_path)
    trainer.fit(TRAIN)
    assert trainer.resumed_from == tmp_path / "epoch_0001"
    assert not staging.exists()
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["epoch_0001", "epoch_0002"]


def test_an_epoch_logged_but_not_checkpointed_is_not_logged_twice(tmp_path, mlflow_store):
    from mlflow import MlflowClient

    from pipelines.train import MlflowEpochLogger

    client = MlflowClient()
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    with pytest.raises(KeyboardInterrupt):  # dies after logging epoch 3, before checkpointing it
        Trainer(new_model(), config(epochs=4), [MlflowEpochLogger(run_id), Crash(at=2)],
                checkpoint_dir=tmp_path).fit(TRAIN)  # fmt: skip
    history = Trainer(new_model(), config(epochs=4), [MlflowEpochLogger(run_id)],
                      checkpoint_dir=tmp_path).fit(TRAIN)  # fmt: skip
    logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "epoch_loss"))
    assert logged == [(epoch, logs["loss"]) for epoch, logs in enumerate(history)]


def test_a_checkpoint_dir_of_other_flow_settings_or_a_lost_run_is_refused(tmp_path, mlflow_store):
    from mlflow import MlflowClient

    from pipelines.train import record_run, recorded_run

    client = MlflowClient()
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    identity = {"model_name": "m", "epochs": 5, "hidden_dims": (16,)}
    assert recorded_run(str(tmp_path), identity) is None  # nothing recorded yet
    record_run(str(tmp_path), run_id, identity)
    assert recorded_run(str(tmp_path), identity) == run_id
    with pytest.raises(ValueError, match=r"belongs to run .* \(epochs differ\)"):
        recorded_run(str(tmp_path), {**identity, "epochs": 6})
    record_run(str(tmp_path), "0" * 32, identity)
    with pytest.raises(ValueError, match="tracking store does not have"):
        recorded_run(str(tmp_path), identity)


# --- the flow, killed with SIGKILL in a child process and run again --------------------------
FLOW_CONFIG = {"epochs": 5, "hidden_dims": [32], "latent_dim": 4, "n_samples": 8,
               "batch_size": 32, "patience": 0, "target_fpr": 0.1, "device": "cpu"}  # fmt: skip
CLI_DEFAULTS = {"verbose": True}  # what `genad train vae` adds to --config


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """20,000 labelled rows: about 0.7 s per epoch on one thread, so a kill lands mid-run."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 16))
    y = (rng.random(20_000) < 0.05).astype(int)
    X[y == 1] += 2.5
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(16)]).assign(label=y)
    path = tmp_path_factory.mktemp("resume") / "rows.csv"
    frame.to_csv(path, index=False, float_format="%.17g")
    return path


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "trainer" / "epoch_0005" / TRAINER_STATE_FILE, weights_only=True)
    return state["model"]


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
@pytest.mark.usefixtures("no_heartbeats")
def test_flow_killed_mid_training_resumes_into_the_same_run(
    tmp_path, big_csv, mlflow_store, prefect_api_url
):
    from pipelines.train import train_vae_flow

    folder = tmp_path / "checkpoints"
    command = ["train", "vae", "--dataset", big_csv, "--label-column", "label",
               "--model-name", "resume-test", "--checkpoint-dir", folder,
               "--config", json.dumps(FLOW_CONFIG)]  # fmt: skip
    stores = (mlflow_store, prefect_api_url)
    killed_run = killed_cli_run(command, folder, stores, tmp_path / "child.log", 5)

    options = {"model_name": "resume-test", "label_column": "label"}
    config = {**CLI_DEFAULTS, **FLOW_CONFIG}
    resumed = train_vae_flow(str(big_csv), config, checkpoint_dir=str(folder), **options)
    reference_dir = tmp_path / "uninterrupted"
    reference = train_vae_flow(str(big_csv), config, checkpoint_dir=str(reference_dir), **options)

    assert resumed["run_id"] == killed_run != reference["run_id"]
    for key in ("epoch_loss", "epoch_elbo", "epoch_val_score"):
        logged = epoch_metrics(resumed["run_id"], key)
        assert [step for step, _ in logged] == [0, 1, 2, 3, 4], key  # each epoch once
        assert logged == epoch_metrics(reference["run_id"], key), key
    for name, tensor in final_weights(reference_dir).items():
        assert torch.equal(final_weights(folder)[name], tensor), name
    assert resumed["threshold"] == reference["threshold"]
    assert resumed["val_log_px_median_normal"] == reference["val_log_px_median_normal"]


def without_field(folder: Path, field: str) -> None:
    """Rewrite the checkpoint as one written before the model config had `field`."""
    state = torch.load(folder / TRAINER_STATE_FILE, weights_only=True)
    described = json.loads(state["fingerprint"]["model"])
    del described[field]
    state["fingerprint"] = {
        key: value for key, value in state["fingerprint"].items() if key != "defaults"
    }
    state["fingerprint"]["model"] = json.dumps(described, sort_keys=True)
    write_checkpoint(folder, state)


def test_a_config_field_added_since_the_checkpoint_resumes_only_at_its_default(tmp_path):
    """A field the checkpoint's fingerprint lacks (added to the config later) is no change when
    the run holds it at its default, whose behaviour is the old one; a value other than the
    default is a change, refused by name."""
    reference = new_model()
    expected = Trainer(reference, config(epochs=3)).fit(TRAIN, VAL)
    Trainer(new_model(), config(epochs=2), checkpoint_dir=tmp_path).fit(TRAIN, VAL)
    without_field(tmp_path / "epoch_0002", "input_mask")
    resumed = new_model()
    assert Trainer(resumed, config(epochs=3), checkpoint_dir=tmp_path).fit(TRAIN, VAL) == expected
    assert_same_weights(resumed, reference)
    other = tmp_path / "other"
    Trainer(new_model(), config(epochs=1), checkpoint_dir=other).fit(TRAIN, VAL)
    without_field(other / "epoch_0001", "input_mask")
    torch.manual_seed(0)
    masked = VAE(VAEConfig((D,), latent_dim=2, hidden_dims=(16,), input_mask=0.2))
    with pytest.raises(ValueError, match="input_mask: None -> 0.2"):
        Trainer(masked, config(epochs=2), checkpoint_dir=other).fit(TRAIN, VAL)
