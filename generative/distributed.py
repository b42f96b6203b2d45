"""Data-parallel training across processes with `torch.distributed`, launched by torchrun.

A `World` is this process's place among the training processes (rank, size, device). Every
rank draws the same global minibatch from the same seeded permutation (the trainers' generator
is seeded identically everywhere) and takes its even share of it (`World.shard`: DistributedSampler
semantics for in-memory tensors, global batch = the configured batch_size). Each rank's loss is
weighted by `World.loss_weight` so that DistributedDataParallel's gradient average equals the
gradient of the global batch's mean loss, also for an uneven last batch. Random draws per row
(a VAE's reparameterisation noise through its `noise` hook, a GAN's latents) are made for the
whole global batch on every rank and sliced (`GlobalBatchNoise`, `World.shard`), so a run on W
processes follows the same random stream as one process with the same global batch: only float
summation order differs.

With world size 1 (no torchrun) nothing is initialised and every collective is the identity.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's rank among `size` training processes, and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ValueError(
                f"rank must be in [0, size) with size >= 1, got {self.rank}/{self.size}"
            )

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes checkpoints and registers models."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process (collectives do something)."""
        return self.size > 1

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch (sizes differ by at most one row)."""
        return rows.tensor_split(self.size)[self.rank]

    def loss_weight(self, local_rows: int, global_rows: int) -> float:
        """The factor for this rank's mean loss so that the mean over ranks of the weighted
        gradients (what DDP computes) is the gradient of the global batch's mean loss."""
        return local_rows * self.size / global_rows

    def check_batches(self, rows: int, batch_size: int) -> None:
        """Every global batch must give each rank at least one row."""
        last = rows % batch_size or batch_size
        if min(batch_size, rows, last) < self.size:
            raise ValueError(
                f"{rows} rows in batches of {batch_size} leave a batch of {last} rows, fewer than "
                f"the {self.size} processes: change batch_size or drop a few rows"
            )

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `values` over all ranks (the tensor itself on one rank)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` holds on every rank (so all ranks take the same branch)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` in DistributedDataParallel when there are several ranks, else as is."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)


def init_from_env() -> World:
    """The World torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):
    the process group is initialised with NCCL on CUDA, gloo otherwise. Without torchrun's
    variables: a single-process World on CUDA when present, else the CPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():
        missing = [name for name in ENV_VARIABLES if name not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={size} but {missing} are not set: launch with torchrun")
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(rank=rank, size=size, local_rank=local_rank, device=device)


def shutdown(world: World) -> None:
    """Leave the process group (after a barrier, so no rank exits while others still talk)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class TrainingLoss(nn.Module):
    """`model.training_loss` as `forward`, so DistributedDataParallel (which synchronises
    gradients of what its forward computed) can wrap it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The model's (loss, metrics) on `batch`."""
        return self.model.training_loss(batch, step)


class GlobalBatchNoise:
    """Standard normals for per-row noise, drawn for the whole global batch from `generator`
    (on the CPU) and cut to this rank's rows, so the noise a row gets does not depend on how
    its batch is split across processes.

    A model that draws per-row noise exposes it as a `noise(like) -> tensor shaped like like`
    attribute (see `generative.vae.VAE.noise`); `installed` points that hook here for the
    duration of one batch. The generator's state is part of the trainer's checkpoints.
    """

    def __init__(self, generator: torch.Generator, world: World) -> None:
        self.generator = generator
        self.world = world

    def draw(self, like: torch.Tensor, global_rows: int | None) -> torch.Tensor:
        """Normals shaped like `like`, on its device and dtype: this rank's share of a draw for
        `global_rows` rows (None: a draw of like's own shape, e.g. for validation)."""
        shape = tuple(like.shape) if global_rows is None else (global_rows, *like.shape[1:])
        noise = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        if global_rows is not None:
            noise = self.world.shard(noise)
        if noise.shape != like.shape:
            raise RuntimeError(
                f"noise for rows {tuple(like.shape)} is not this rank's share of "
                f"{global_rows} global rows: only per-row noise can be sharded"
            )
        return noise.to(device=like.device, dtype=like.dtype)

    @contextlib.contextmanager
    def installed(self, model: nn.Module, global_rows: int | None) -> Iterator[None]:
        """Inside the block `model.noise` draws from here for a batch of `global_rows` rows
        (None: unsharded draws); afterwards the model's own hook is back."""
        own_hook = "noise" in vars(model)
        previous = model.noise
        model.noise = functools.partial(self.draw, global_rows=global_rows)
        try:
            yield
        finally:
            if own_hook:
                model.noise = previous
            else:  # the class's default shows through again
                del model.noise
