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

Where a row's result depends on the other rows of its batch (a discriminator's minibatch
statistics) or draws are made deep inside a net (StyleGAN's noise maps), the trainer runs the
forward passes in a `global_batch(world, rows)` block: a layer then gathers every rank's rows
with `active_batch().gather` (differentiable: `World.gather_rows`), computes as one process
would and keeps its own rows, and `draw_rows` draws for the whole global batch and slices.
Nets without such layers, or run outside such a block, do as they always did.

With world size 1 (no torchrun) nothing is initialised and every collective is the identity.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

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

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (what DDP does), in one
        all-reduce; for models whose loss calls several nets, which DDP cannot wrap."""
        if not self.distributed:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        means = (flat / self.size).split([grad.numel() for grad in grads])
        for grad, mean in zip(grads, means, strict=True):
            grad.copy_(mean.view_as(grad))

    def gather_rows(self, local: torch.Tensor, global_rows: int) -> torch.Tensor:
        """The global batch of `global_rows` rows whose `shard` on this rank is `local`: every
        rank's share, in rank order (the inverse of `shard`). Differentiable: the gradient that
        reaches `local` is the sum of every rank's gradient for these rows, so a loss of rows
        that depend on other ranks' rows (minibatch statistics) trains as in one process."""
        if not self.distributed:
            return local
        sizes = [len(part) for part in torch.arange(global_rows).tensor_split(self.size)]
        if len(local) != sizes[self.rank]:
            raise ValueError(f"{len(local)} rows are not rank {self.rank}'s share of {sizes}")
        rows = local.float()  # gloo sums float32 (exact for bf16 and back)
        before = rows.new_zeros((sum(sizes[: self.rank]), *rows.shape[1:]))
        after = rows.new_zeros((sum(sizes[self.rank + 1 :]), *rows.shape[1:]))
        # each row is non-zero on one rank only: the sum is every rank's rows, exactly
        return _SumOverRanks.apply(torch.cat([before, rows, after])).to(local.dtype)

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` in DistributedDataParallel when there are several ranks, else as is."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)


class _SumOverRanks(torch.autograd.Function):
    """The element-wise sum over all ranks, differentiable any number of times: a sum that
    every rank sees passes back the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        summed = values.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(grad)


@dataclass(frozen=True)
class GlobalBatch:
    """This rank's share of a global batch of `rows` rows on `world`, for the layers and the
    random draws whose result for a row depends on the other rows of its batch."""

    world: World
    rows: int

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """The whole global batch from this rank's rows (differentiable: `World.gather_rows`)."""
        return self.world.gather_rows(local, self.rows)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor of the whole global batch."""
        return self.world.shard(rows)


_ACTIVE_BATCH: ContextVar[GlobalBatch | None] = ContextVar("global_batch", default=None)


@contextlib.contextmanager
def global_batch(world: World, rows: int) -> Iterator[None]:
    """Inside the block this rank's tensors are its share of a global batch of `rows` rows on
    `world` (`active_batch`); with one process nothing changes."""
    token = _ACTIVE_BATCH.set(GlobalBatch(world, rows) if world.distributed else None)
    try:
        yield
    finally:
        _ACTIVE_BATCH.reset(token)


def active_batch() -> GlobalBatch | None:
    """The global batch of the `global_batch` block running now (None outside one, and with
    one process): what a layer that mixes rows (minibatch statistics) gathers."""
    return _ACTIVE_BATCH.get()


def draw_rows(
    sample: Callable[[tuple[int, ...]], torch.Tensor], shape: Sequence[int]
) -> torch.Tensor:
    """Per-row random numbers of `shape` from `sample(shape)`; inside a `global_batch` block
    this rank's rows of `sample` for the whole global batch, so a row's draw does not depend
    on how its batch is split across processes."""
    batch = active_batch()
    if batch is None:
        return sample(tuple(shape))
    return batch.shard(sample((batch.rows, *shape[1:])))


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
    """Leave the process group (after a barrier, so no rank exits while others still talk).

    First frees what reference cycles still hold (DDP wrappers and their reducers) while the
    group is alive: left to interpreter shutdown, one torn down after the group can abort the
    process ("terminate called without an active exception", seen on rank 1 of a GAN run and
    of tests/ddp_families.py's StyleGAN run)."""
    if world.distributed and dist.is_initialized():
        gc.collect()
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
