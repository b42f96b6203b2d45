"""Batch-invariant evaluation: every block a network sees has the same number of rows.

Matrix products and convolutions pick kernels (and so summation orders) by the batch's row
count, so a row's float32 result can move by an ulp or more when it is evaluated in another
batch. Padding each block with zero rows to one fixed count makes a row's result bit-identical
alone, in any batch, in any order and under any chunking: what scikit-learn's subset-invariance
check asks, and what lets distributed and chunked scoring reproduce in-process scoring exactly.
"""

from __future__ import annotations

import torch


def pad_rows(block: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor (all with the same number of rows, at most `block`) padded with zero rows
    to `block` rows; tensors already that long are returned as they are."""
    missing = block - tensors[0].shape[0]
    if missing <= 0:
        return tensors
    return tuple(torch.cat([t, t.new_zeros(missing, *t.shape[1:])]) for t in tensors)
