"""Data-parallel CycleGAN, ProGAN and StyleGAN: `torchrun --nproc_per_node=2` (gloo, CPU)
against one process.

CycleGAN.

Both runs walk the same global batches (the last split unevenly, 2 + 1 rows), average the
gradients of the global batch's mean loss, and draw the image histories' swaps for the whole
global batch of fakes on every rank, so only float summation order differs. The weights are
not compared directly: a conv bias before instance norm has a gradient that is zero up to
rounding, and Adam's normalised step turns its sign into a move of +-lr, so such weights differ
by about lr even when nothing is wrong. The nets' outputs do not depend on them: after the two
steps here they differ by 5e-5 (measured) between 2 processes and 1, and by 6e-3 when each rank
keeps its own histories of its own fakes (the error this guards against); training moves them
by 0.6. The tolerance sits between the two.

ProGAN and StyleGAN (WGAN-GP, grown 4x4 -> 8x8, 6 steps). D's minibatch-stddev layer groups rows
across the ranks (ProGAN: groups of 2 in a batch of 6 pair rows 0-3, 1-4, 2-5; StyleGAN: a batch
of 5, split 3 + 2, is one group); the latents, the penalty's mixing weights, StyleGAN's mixing
latents and noise maps are drawn for the global batch. G's and D's outputs after training
differ by 1.8e-6 (ProGAN) and 1.2e-6 (StyleGAN) between 2 processes and 1 (measured); with
per-rank minibatch-stddev statistics by 6.7e-2 and 2.0e-2, with per-rank random draws by 0.52
and 0.16; training moves them by 0.16 and 0.20. PROGRESSIVE_ATOL = 1e-4 sits between: 50x
the measured gap, a 200th of the smallest broken one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from servers import REPO_ROOT, VENV_BIN, child_env

from generative.cyclegan import CycleGAN
from generative.distributed import World
from generative.progressive import ProgressiveModel
from generative.progressive.trainer import ProgressiveTrainer
from generative.registry import load_model

sys.path.insert(0, str(Path(__file__).parent))
from ddp_families import (  # noqa: E402
    domains,
    images,
    progressive_parts,
    train_cyclegan,
    train_progressive,
)

ATOL = 5e-4
PROGRESSIVE_ATOL = 1e-4


def torchrun(*args: object) -> None:
    """Run `torchrun --nproc_per_node=2 ARGS` on 2 CPU processes (in the repository root)."""
    command = [VENV_BIN / "torchrun", "--standalone", "--nproc_per_node=2", *args]
    env = child_env({"OMP_NUM_THREADS": "1"})
    done = subprocess.run([str(a) for a in command], cwd=REPO_ROOT, env=env, timeout=300,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def train_family(family: str, out: Path) -> None:
    """Run tests/ddp_families.py for `family` on 2 CPU processes."""
    torchrun(Path(__file__).parent / "ddp_families.py", family, out)


@torch.no_grad()
def outputs(model: CycleGAN) -> torch.Tensor:
    """Both generators' and both discriminators' outputs on the training images, flat."""
    a, b = domains()
    model.eval()
    nets = (model.g_ab(a), model.g_ba(b), model.d_a(a), model.d_b(b))
    return torch.cat([out.flatten() for out in nets])


def assert_same_history(folder: Path, history: list[dict[str, float]]) -> None:
    """The history rank 0 logged (all-reduced shares of the global means) is the 1-process one."""
    logged = json.loads((folder / "history.json").read_text())
    assert len(logged) == len(history) >= 1
    for got, expected in zip(logged, history, strict=True):
        for key, value in expected.items():
            assert abs(got[key] - value) <= 1e-4 * max(1.0, abs(value)), key


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite (its 8-minute bar)
def test_two_process_cyclegan_matches_one_process(tmp_path):
    train_family("cyclegan", tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference, history = train_cyclegan(World())
        trained = CycleGAN(reference.config)
        trained.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
        torch.manual_seed(0)
        expected, start = outputs(reference), outputs(CycleGAN(reference.config))
        gap = (outputs(trained) - expected).abs().max().item()
    finally:
        torch.set_num_threads(threads)
    assert gap <= ATOL, f"2 processes differ from 1 by {gap:.3g}"
    moved = (expected - start).abs().max().item()
    assert moved > 100 * ATOL, f"training moved the outputs only {moved:.3g}"
    assert len(history) == 1
    assert_same_history(tmp_path, history)


@torch.no_grad()
def progressive_outputs(model: ProgressiveModel) -> torch.Tensor:
    """G's images of fixed latents (fixed noise maps) and D's values of the images, flat."""
    model.eval()
    z = torch.randn(10, model.config.latent_dim, generator=torch.Generator().manual_seed(9))
    fixed = {"noise_mode": "const"} if model.family == "stylegan" else {}
    return torch.cat([model.generator(z, **fixed).flatten(), model.discriminator(images())])


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite (its 8-minute bar)
@pytest.mark.parametrize("family", ["progan", "stylegan"])
def test_two_process_progressive_growth_matches_one_process(family, tmp_path):
    train_family(family, tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference, history = train_progressive(family, World())
        trained, _ = progressive_parts(family)
        trained.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
        expected = progressive_outputs(reference)
        gap = (progressive_outputs(trained) - expected).abs().max().item()
        initial = progressive_outputs(progressive_parts(family)[0])
        moved = (expected - initial).abs().max().item()
    finally:
        torch.set_num_threads(threads)
    assert gap <= PROGRESSIVE_ATOL, f"2 processes differ from 1 by {gap:.3g}"
    assert moved > 100 * PROGRESSIVE_ATOL, f"training moved the outputs only {moved:.3g}"
    assert_same_history(tmp_path, history)


@pytest.mark.parametrize("family", ["progan", "stylegan"])
def test_progressive_options_that_cannot_split_across_processes_are_refused(family):
    world = World(rank=0, size=2)  # refused before any collective: no process group needed
    model, config = progressive_parts(family)
    with pytest.raises(ValueError, match="max_seconds"):
        ProgressiveTrainer(model, replace(config, max_seconds=60.0), world=world).fit(images())
    with pytest.raises(ValueError, match="batch_size"):
        ProgressiveTrainer(model, replace(config, batch_size=1), world=world).fit(images())


def test_train_ddp_offers_every_family_and_needs_a_dataset_but_for_cyclegan_domains():
    from pipelines.train_ddp import parse_args

    for family in ("vae", "gan", "cyclegan", "progan", "stylegan"):
        assert parse_args([family, "--dataset", "mnist", "--out", "x"]).family == family
    assert parse_args(["cyclegan", "--domain-a", "a", "--domain-b", "b", "--out", "x"])
    with pytest.raises(SystemExit):
        parse_args(["progan", "--out", "x"])


ENTRY_OPTIONS = {
    "stylegan": ('{"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 32, '
                 '"max_channels": 8}',
                 '{"batch_size": 8, "fade_images": 8, "stable_images": 8, "device": "cpu", '
                 '"autocast": "off"}', 7),  # 32x32 (padded MNIST): 4 stages, 7 phases
    "cyclegan": ('{"base_channels": 4, "residual_blocks": 1, "discriminator_layers": 1}',
                 '{"epochs": 1, "batch_size": 8, "device": "cpu", "autocast": "off"}', 1),
}  # fmt: skip


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
@pytest.mark.parametrize("family", sorted(ENTRY_OPTIONS))
def test_train_ddp_entry_trains_an_image_family_on_two_processes(family, data_env, tmp_path):
    model_config, trainer_config, phases = ENTRY_OPTIONS[family]
    extra = ["--transform", "invert_rot90"] if family == "cyclegan" else []
    torchrun("-m", "pipelines.train_ddp", family, "--dataset", "mnist", "--max-rows", 32, *extra,
             "--gan-config", model_config, "--trainer-config", trainer_config, "--no-mlflow",
             "--out", tmp_path)  # fmt: skip
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["run_id"] is None
    assert len(result["history"]) == phases
    assert load_model(tmp_path / family).family == family
