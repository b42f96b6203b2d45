"""Monte Carlo noise keyed by row content.

Scoring draws the K samples of a row from a shared table of standard normals, starting at an
offset given by a hash of the row's bits and the seed: sample k of row i is table row
(offset_i + k) mod M. So the score of a row is a deterministic function of the model, the row and
the seed. It does not change with the batch the row arrives in, its position in it, the device, or
how the work is chunked. The K draws of one row are distinct table rows (K <= M), hence independent
standard normals; rows share table rows, which correlates their errors like common random numbers
and leaves each row's estimate unbiased.
"""

from __future__ import annotations

import functools

import torch

_MASK32 = 0xFFFFFFFF
_MIN_TABLE_ROWS = 1 << 16


def hash32(h: torch.Tensor) -> torch.Tensor:
    """Mix 32-bit integers held in an int64 tensor (the `lowbias32` finaliser), overflow-free."""
    h = h & _MASK32
    h = h ^ (h >> 16)
    h = _mul32(h, 0x7FEB352D)
    h = h ^ (h >> 15)
    h = _mul32(h, 0x846CA68B)
    return h ^ (h >> 16)


def _mul32(h: torch.Tensor, constant: int) -> torch.Tensor:
    """(h * constant) mod 2^32 for h < 2^32, in 16-bit halves so int64 never overflows."""
    low = (h & 0xFFFF) * constant
    high = (((h >> 16) * constant) & 0xFFFF) << 16
    return (low + high) & _MASK32


def row_keys(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One 32-bit key per row of `x`: an exact integer hash of the row's float32 bit pattern.

    The row's bits are read as signed 16-bit halves and projected on random integer
    coefficients with a float64 matmul. Every partial sum is an integer below 2**53, so the
    result is exact whatever order the BLAS sums in, and identical for a row alone or inside
    any batch.
    """
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float32).contiguous()
    halves = flat.view(torch.int16).to(torch.float64)
    sums = (halves @ _coefficients(halves.shape[1], seed, x.device)).to(torch.int64)
    key = hash32(sums[:, 0] ^ hash32(sums[:, 0] >> 32))
    key = hash32(key ^ sums[:, 1] ^ hash32(sums[:, 1] >> 32))
    return hash32(key + seed)


def _coefficients(width: int, seed: int, device: torch.device) -> torch.Tensor:
    """Random integer coefficients small enough that 16-bit values times them sum below 2**53."""
    bound = 1 << max(1, 37 - max(1, width - 1).bit_length())
    generator = torch.Generator().manual_seed(seed)
    coefficients = torch.randint(1, bound, (width, 2), generator=generator, dtype=torch.int64)
    return coefficients.to(device=device, dtype=torch.float64)


def normal_table(
    n_samples: int, dim: int, seed: int, *, dtype: torch.dtype, device
) -> torch.Tensor:
    """The shared table of standard normals, (M, dim) with M = max(65536, n_samples); cached,
    so treat it as read-only."""
    rows = max(_MIN_TABLE_ROWS, n_samples)
    return _cached_table(rows, dim, seed, dtype, torch.device(device))


@functools.lru_cache(maxsize=8)
def _cached_table(
    rows: int, dim: int, seed: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 0x5EED)
    table = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    return table.to(device=device, dtype=dtype)


def keyed_normal(table: torch.Tensor, keys: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Draws (count, len(keys), dim): entry (k, i) is table row (keys[i] + start + k) mod M."""
    sample = torch.arange(start, start + count, device=keys.device, dtype=torch.int64)
    index = (keys[None, :] + sample[:, None]) % table.shape[0]
    return table[index]
