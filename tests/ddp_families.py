"""Tiny training runs of the families for tests/test_distributed_families.py: `torchrun
--nproc_per_node=2 tests/ddp_families.py FAMILY OUT` (FAMILY: cyclegan, progan or stylegan)
trains on every rank; rank 0 writes OUT/model.pt (the state_dict) and OUT/history.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from generative.cyclegan import CycleGAN, CycleGANConfig, CycleGANTrainer, CycleGANTrainerConfig
from generative.distributed import World, init_from_env, shutdown
from generative.progressive import ProGAN, ProGANConfig, ProgressiveModel
from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from generative.stylegan import StyleGAN, StyleGANConfig

CYCLEGAN = {"image_shape": (1, 8, 8), "base_channels": 4, "residual_blocks": 1,
            "discriminator_layers": 1, "history_size": 4}  # fmt: skip
CYCLEGAN_TRAINER = {"epochs": 1, "batch_size": 5, "lr_generator": 1e-3,
                    "lr_discriminator": 1e-3, "seed": 4, "device": "cpu",
                    "autocast": "off"}  # fmt: skip

# minibatch groups of 2 in a batch of 6 pair rows 0-3, 1-4 and 2-5: across the two ranks
PROGAN = {"data_shape": (1, 8, 8), "latent_dim": 8, "channel_base": 32, "max_channels": 8,
          "minibatch_group": 2}  # fmt: skip
# a batch of 5 (3 + 2 rows) is one minibatch group; mixing and noise are drawn per row
STYLEGAN = {**PROGAN, "w_dim": 8, "mapping_layers": 2, "minibatch_group": 4,
            "style_mixing_prob": 0.5}  # fmt: skip
PROGRESSIVE = {"progan": (ProGAN, ProGANConfig, PROGAN, 6),
               "stylegan": (StyleGAN, StyleGANConfig, STYLEGAN, 5)}  # fmt: skip


def domains() -> tuple[torch.Tensor, torch.Tensor]:
    """8 A and 6 B images: an epoch is a batch of 5 (3 + 2 rows on two ranks) and one of 3
    (2 + 1); the first batch of fakes overflows the history of 4, so swaps are drawn."""
    generator = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 8, 8, generator=generator), torch.rand(6, 1, 8, 8, generator=generator)


def train_cyclegan(world: World) -> tuple[CycleGAN, list[dict[str, float]]]:
    """The tiny CycleGAN trained on `world` (seeded: every rank starts from the same weights)."""
    torch.manual_seed(0)
    model = CycleGAN(CycleGANConfig(**CYCLEGAN))
    trainer = CycleGANTrainer(model, CycleGANTrainerConfig(**CYCLEGAN_TRAINER), world=world)
    return model, trainer.fit(*domains())


def images() -> torch.Tensor:
    """20 random 8x8 images: two stages (4x4, 8x8), each phase two steps."""
    return torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(2))


def progressive_parts(family: str) -> tuple[ProgressiveModel, ProgressiveTrainerConfig]:
    """A tiny ProGAN or StyleGAN (seeded weights) and its trainer's WGAN-GP configuration."""
    net, net_config, options, batch_size = PROGRESSIVE[family]
    torch.manual_seed(0)
    model = net(net_config(**options))
    config = ProgressiveTrainerConfig(batch_size=batch_size, fade_images=2 * batch_size,
                                      stable_images=2 * batch_size, seed=5, device="cpu",
                                      autocast="off")  # fmt: skip
    return model, config


def train_progressive(family: str, world: World) -> tuple[ProgressiveModel, list[dict[str, float]]]:
    """The tiny ProGAN or StyleGAN grown on `world`."""
    model, config = progressive_parts(family)
    return model, ProgressiveTrainer(model, config, world=world).fit(images())


def main(family: str, out: Path) -> None:
    """Train `family` on torchrun's processes; rank 0 writes the results."""
    torch.set_num_threads(1)
    world = init_from_env()
    try:
        if family == "cyclegan":
            model, history = train_cyclegan(world)
        else:
            model, history = train_progressive(family, world)
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), out / "model.pt")
            (out / "history.json").write_text(json.dumps(history))
    finally:
        shutdown(world)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
