"""Measuring a CycleGAN where the answer is known: with domain B = T(domain A) for an
invertible transform T, a perfect G_AB is T and a perfect G_BA is T^-1.

All errors are mean absolute differences per pixel on the [0, 1] scale. `translation_metrics`
reports them for the trained generators; the same call on the untrained model (its initial
weights) and the identity-map errors give the baselines.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from generative.cyclegan.model import CycleGAN
from generative.cyclegan.transforms import InvertibleTransform

Classifier = Callable[[torch.Tensor], torch.Tensor]  # [0, 1] images -> predicted labels


def mean_abs(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean |x - y| over every value."""
    return float((x.float() - y.float()).abs().mean())


@torch.no_grad()
def translation_metrics(
    model: CycleGAN,
    test_a: torch.Tensor,
    test_b: torch.Tensor,
    *,
    transform: InvertibleTransform | None = None,
    classify_b: Classifier | None = None,
    labels_a: torch.Tensor | None = None,
) -> dict[str, float]:
    """Errors of `model` on [0, 1] test images of A and of B.

    Always: cycle_error_a = |G_BA(G_AB(a)) - a|, cycle_error_b = |G_AB(G_BA(b)) - b|.
    With `transform` T: translation_error_ab = |G_AB(a) - T(a)| and translation_error_ba =
    |G_BA(b) - T^-1(b)|, plus the identity map's errors |a - T(a)|, |b - T^-1(b)|.
    With `classify_b` (a domain-B classifier) and the labels of the A images: accuracy_ab,
    the share of G_AB(a) it labels as a's label, and (with T) accuracy_target on T(a), the
    ceiling a perfect translator would reach.
    """
    fake_b, fake_a = model.translate(test_a, "a_to_b"), model.translate(test_b, "b_to_a")
    metrics = {
        "cycle_error_a": mean_abs(model.translate(fake_b, "b_to_a"), test_a),
        "cycle_error_b": mean_abs(model.translate(fake_a, "a_to_b"), test_b),
    }
    if transform is not None:
        target_b, target_a = transform(test_a), transform.apply(test_b, inverse=True)
        metrics.update(
            translation_error_ab=mean_abs(fake_b, target_b),
            translation_error_ba=mean_abs(fake_a, target_a),
            identity_map_error_ab=mean_abs(test_a, target_b),
            identity_map_error_ba=mean_abs(test_b, target_a),
        )
    if classify_b is not None and labels_a is not None:
        labels = labels_a.long().cpu()
        metrics["accuracy_ab"] = float((classify_b(fake_b).cpu() == labels).float().mean())
        if transform is not None:
            hits = classify_b(transform(test_a)).cpu() == labels
            metrics["accuracy_target"] = float(hits.float().mean())
    return metrics
