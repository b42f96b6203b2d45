"""Data-parallel training: `torchrun --nproc_per_node=2` (gloo, CPU) against one process.

Both runs see the same global batches (one seeded permutation) and the same per-row random draws
(the VAE's noise and the GAN's latents are drawn for the global batch and sliced), so the only
difference is the order of float32 additions: one process sums B per-row gradient terms; two
sum B/2 each and DDP averages the halves. A float32 sum of B terms is off by at most
B * u * sum|terms| (u = 2^-24), a relative gradient error delta <= B * u * kappa, where kappa =
sum|g_i| / |sum g_i| measures cancellation (we allow kappa <= 10). Adam's step
lr * m / (sqrt(v) + eps) moves by at most about 2 * delta * lr for such a relative error in m
and v, so after S steps |theta_2 - theta_1| <= 2 * S * B * u * kappa * lr (the dynamics'
amplification is negligible over a few dozen steps). That bound is the tolerance below; the
measured gap was 3e-8 (VAE) and 1.5e-8 (GAN). For scale, the same VAE trained without the shared
noise stream ends 2e-2 away, and every parameter tensor must move by over 100x the tolerance.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from servers import REPO_ROOT, VENV_BIN, child_env

from generative.distributed import GlobalBatchNoise, World

U = 2.0**-24  # float32 unit roundoff
KAPPA = 10.0  # allowed cancellation in a gradient sum
VAE_CONFIG = {"epochs": 3, "hidden_dims": [16], "latent_dim": 2, "n_samples": 8,
              "batch_size": 64, "patience": 0, "min_steps": 0, "device": "cpu", "random_state": 0,
              "trim_fraction": 0.0, "refit": False}  # fmt: skip
GAN_CONFIG = {"latent_dim": 4, "hidden_dims": [16]}
GAN_TRAINER = {"epochs": 3, "batch_size": 64, "device": "cpu", "autocast": "off"}


def tolerance(steps: int, batch: int, lr: float) -> float:
    """2 * S * B * u * kappa * lr: the float32 reduction-order bound of the module docstring."""
    return 2 * steps * batch * U * KAPPA * lr


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory) -> Path:
    from conftest import make_tabular

    path = tmp_path_factory.mktemp("ddp") / "rows.csv"
    make_tabular(n=1000, d=4, anomalies=50).to_csv(path, index=False, float_format="%.17g")
    return path


def torchrun(args: list, out: Path, mlflow_store: str) -> dict:
    """Run the entry on 2 CPU processes; return rank 0's result.json."""
    command = [VENV_BIN / "torchrun", "--standalone", "--nproc_per_node=2",
               "-m", "pipelines.train_ddp", *args, "--out", out]  # fmt: skip
    env = child_env({"MLFLOW_TRACKING_URI": mlflow_store, "OMP_NUM_THREADS": "1"})
    done = subprocess.run([str(a) for a in command], cwd=REPO_ROOT, env=env, timeout=300,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads((out / "result.json").read_text())


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters (not the buffers, which training does not move)."""
    return {name: parameter.detach() for name, parameter in model.named_parameters()}


def assert_close_and_moved(
    trained: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    initial: dict[str, torch.Tensor],
    atol: float,
) -> None:
    for name, tensor in reference.items():
        gap = (trained[name] - tensor).abs().max().item()
        assert gap <= atol, f"{name}: 2 processes differ from 1 by {gap:.3g} > {atol:.3g}"
        moved = (tensor - initial[name]).abs().max().item()
        assert moved > 100 * atol, f"{name} moved only {moved:.3g}: the test could not fail"


def test_world_shards_weight_and_noise_add_up_to_the_global_batch():
    batch = torch.arange(7)
    worlds = [World(rank=r, size=2) for r in range(2)]
    shards = [w.shard(batch) for w in worlds]
    assert torch.equal(torch.cat(shards), batch)
    values = torch.linspace(-1, 2, 7, dtype=torch.float64)
    weighted = [
        w.loss_weight(len(s), 7) * values[s].mean() for w, s in zip(worlds, shards, strict=True)
    ]
    assert torch.isclose(sum(weighted) / 2, values.mean(), rtol=1e-15)  # what DDP averages
    draws = []
    for world, shard in zip(worlds, shards, strict=True):
        noise = GlobalBatchNoise(torch.Generator().manual_seed(3), world)
        draws.append(noise.draw(torch.zeros(len(shard), 2), global_rows=7))
    expected = torch.randn(7, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.cat(draws), expected)
    with pytest.raises(RuntimeError, match="not this rank's share of 7 global rows"):
        noise.draw(torch.zeros(4, 2), global_rows=7)
    with pytest.raises(ValueError, match="batch of 1 rows, fewer than the 2 processes"):
        worlds[0].check_batches(rows=129, batch_size=64)


def test_the_vae_draws_its_noise_through_the_hook_the_trainer_installs():
    from generative.vae import VAE, VAEConfig

    vae = VAE(VAEConfig((3,), latent_dim=2, hidden_dims=(4,)))
    drawn = []
    vae.noise = lambda like: drawn.append(tuple(like.shape)) or torch.zeros_like(like)
    vae.training_loss(torch.zeros(5, 3), step=0)
    vae.validation_score(torch.zeros(4, 3))
    assert drawn == [(5, 2), (4, 2)]  # both draws go through the hook
    del vae.noise
    mu, logvar = torch.zeros(3, 2), torch.zeros(3, 2)  # z = eps exactly
    noise = GlobalBatchNoise(torch.Generator().manual_seed(5), World(rank=1, size=2))
    with noise.installed(vae, global_rows=6):
        z = vae.reparameterize(mu, logvar, vae.noise)
    expected = torch.randn(6, 2, generator=torch.Generator().manual_seed(5))[3:]
    assert torch.equal(z, expected)  # rank 1's rows of the global draw
    assert "noise" not in vars(vae) and vae.noise is torch.randn_like  # the default is back


def test_gan_options_that_cannot_split_across_processes_are_refused():
    from generative.gan import GAN, GANConfig, GANTrainer, GANTrainerConfig

    data = torch.randn(64, 4)
    gan = GAN(GANConfig(data_shape=(4,), latent_dim=2, hidden_dims=(8,), loss="wgan_gp"))
    world = World(rank=0, size=2)
    with pytest.raises(ValueError, match="gradient-penalty"):
        GANTrainer(gan, GANTrainerConfig(batch_size=16), world=world).fit(data)
    plain = GAN(GANConfig(data_shape=(4,), latent_dim=2, hidden_dims=(8,)))
    with pytest.raises(ValueError, match="R1 and augmentation train in a single process"):
        GANTrainer(plain, GANTrainerConfig(batch_size=16, r1_gamma=1.0), world=world).fit(data)
    with pytest.raises(ValueError, match="max_seconds"):
        config = GANTrainerConfig(batch_size=16, max_seconds=5.0)
        GANTrainer(GAN(GANConfig(data_shape=(4,), latent_dim=2)), config, world=world).fit(data)


@pytest.mark.slow  # about 16 s: the default suite's budget is 8 minutes
def test_two_process_vae_matches_one_process_and_only_rank_0_tracks(
    rows_csv, tmp_path, mlflow_store
):
    from mlflow import MlflowClient

    from anomaly import VAEDetector
    from anomaly.evaluation import DataSpec

    name = "ddp-vae-test"
    args = ["vae", "--dataset", rows_csv, "--label-column", "label", "--model-name", name,
            "--config", json.dumps(VAE_CONFIG)]  # fmt: skip
    result = torchrun(args, tmp_path, mlflow_store)
    trained = VAEDetector.load(tmp_path / "detector")

    train_rows = DataSpec(str(rows_csv), None, "label", ()).load().holdout(0.2, 0).X_train
    reference = VAEDetector(**VAE_CONFIG).fit(train_rows, world=World())
    torch.manual_seed(0)  # the detector's weight initialisation
    start = weights(type(reference.model_)(reference.model_.config))
    fitted_rows = len(reference._split(len(train_rows))[0])  # less calibration and validation
    steps = len(reference.history_) * -(-fitted_rows // 64)
    atol = tolerance(steps, 64, 1e-3)
    assert_close_and_moved(weights(trained.model_), weights(reference.model_), start, atol)
    for key, buffer in reference.model_.named_buffers():  # the likelihood's column marks
        assert torch.equal(trained.model_.get_buffer(key), buffer), key

    client = MlflowClient()
    logged = sorted(
        (m.step, m.value) for m in client.get_metric_history(result["run_id"], "epoch_loss")
    )
    assert [step for step, _ in logged] == [0, 1, 2]  # once per epoch: rank 0 alone logs
    for (_, value), epoch in zip(logged, reference.history_, strict=True):
        assert value == pytest.approx(epoch["loss"], rel=1e-5)  # all-reduced over both ranks
    runs = client.search_runs(
        [client.get_experiment_by_name("genad-train").experiment_id],
        filter_string=f"tags.`genad.model_name` = '{name}'",
    )
    assert [run.info.run_id for run in runs] == [result["run_id"]]
    assert runs[0].data.params["ddp.world_size"] == "2"
    assert len(client.search_model_versions(f"name='{name}'")) == 1


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite (its 8-minute bar)
def test_two_process_gan_matches_one_process(rows_csv, tmp_path, mlflow_store):
    from anomaly.data.gan_data import GanDataSpec, load_gan_data
    from generative.gan import GAN, GANTrainer
    from generative.registry import load_model
    from pipelines.train_gan import resolve_configs

    args = ["gan", "--dataset", rows_csv, "--label-column", "label", "--no-mlflow",
            "--gan-config", json.dumps(GAN_CONFIG),
            "--trainer-config", json.dumps(GAN_TRAINER)]  # fmt: skip
    result = torchrun(args, tmp_path, mlflow_store)
    trained = load_model(tmp_path / "gan")

    data = load_gan_data(GanDataSpec(str(rows_csv), None, "label", None), seed=0)
    gan_config, trainer_config = resolve_configs(GAN_CONFIG, GAN_TRAINER, data, 0)
    torch.manual_seed(0)
    reference = GAN(gan_config)
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    history = GANTrainer(reference, trainer_config, world=World()).fit(torch.from_numpy(data.train))
    steps = len(history) * -(-len(data.train) // 64)  # D steps; G steps are as many (k = 1)
    atol = tolerance(steps, 64, 2e-4)
    assert_close_and_moved(trained.state_dict(), reference.state_dict(), start, atol)
    for ours, theirs in zip(result["history"], history, strict=True):
        for key in ("d_loss", "g_loss"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key
