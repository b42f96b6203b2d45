"""Choosing the correction settings without looking at MNIST.

Settings are selected on held-out Fashion-MNIST training rows against three proxy novelty
sets made from other held-out Fashion-MNIST rows, each a known way for a likelihood to be
fooled or to be right for the wrong reason:

- `shrink`: the image resized to 14x14 (area average) and centred on a black 28x28 canvas. It
  is simpler and has more background than Fashion-MNIST, the failure mode of the raw likelihood;
- `vflip`: the image upside down: the same pixels and local statistics, a different shape;
- `invert`: 255 - x, a white background: different low-level statistics.

The score of a setting is its mean AUROC over the three proxies (novel = positive class).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from anomaly.complexity import COMPRESSORS
from anomaly.corrections import (
    BackgroundSettings,
    background_log_px,
    compressor_bits,
    train_background,
)
from anomaly.detector import VAEDetector

RADII = (1, 2, 3)
MUTATION_RATES = (0.0, 0.1, 0.3)


def shrink(images: np.ndarray) -> np.ndarray:
    """Each image at half size, centred on a black canvas of the original size."""
    x = torch.from_numpy(images.astype(np.float32))
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(h // 2, w // 2), mode="area")
    out = torch.zeros_like(x)
    top, left = (h - h // 2) // 2, (w - w // 2) // 2
    out[..., top : top + h // 2, left : left + w // 2] = small
    return out.round().clamp(0, 255).numpy().astype(np.uint8)


PROXIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "shrink": shrink,
    "vflip": lambda images: np.ascontiguousarray(images[..., ::-1, :]),
    "invert": lambda images: (255 - images).astype(np.uint8),
}


def auroc(normal: np.ndarray, novel: np.ndarray) -> float:
    """AUROC of detecting `novel` rows by a normality score (higher = more normal)."""
    labels = np.r_[np.zeros(len(normal)), np.ones(len(novel))]
    return float(roc_auc_score(labels, -np.r_[normal, novel]))


def proxy_aurocs(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """AUROC of each proxy set against `scores["normal"]`, and their mean."""
    result = {name: auroc(scores["normal"], scores[name]) for name in PROXIES}
    return {**result, "mean": float(np.mean(list(result.values())))}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images as float32 values k/255."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)


def select(
    detector: VAEDetector, fit_images: np.ndarray, normal: np.ndarray, source: np.ndarray
) -> dict:
    """Score the raw likelihood, every compressor and every background setting on the proxies.

    `detector` is fitted (correction "none") on `fit_images`; backgrounds are trained on all of
    `fit_images`. Returns the rows of the selection tables and the chosen settings.
    """
    sets = {"normal": normal, **{name: make(source) for name, make in PROXIES.items()}}
    tensors = {name: to_tensor(images) for name, images in sets.items()}
    log_px = {name: detector.score_samples(images) for name, images in sets.items()}
    rows = {
        "raw": [
            {"setting": f"{detector.score_method} K={detector.n_samples}", **proxy_aurocs(log_px)}
        ]
    }
    rows["compressor"] = []
    for name in COMPRESSORS:
        bits = {k: compressor_bits(v, name) for k, v in tensors.items()}
        alone = proxy_aurocs(bits)
        corrected = proxy_aurocs({k: log_px[k] + math.log(2) * bits[k] for k in sets})
        rows["compressor"].append({"setting": name, "alone": alone, "corrected": corrected})
    rows["background"] = []
    train = to_tensor(fit_images)
    for radius, rate in itertools.product(RADII, MUTATION_RATES):
        settings = BackgroundSettings(radius=radius, mutation_rate=rate)
        start = time.perf_counter()
        model = train_background(train, settings, seed=detector.random_state, device="cpu")
        bg = {k: background_log_px(model, v) for k, v in tensors.items()}
        ratio = proxy_aurocs({k: log_px[k] - bg[k] for k in sets})
        rows["background"].append(
            {
                "setting": (radius, rate),
                "alone": proxy_aurocs(bg),
                "corrected": ratio,
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"background radius={radius} mutation={rate}: LR proxy mean {ratio['mean']:.4f}")
    best_compressor = max(rows["compressor"], key=lambda r: r["corrected"]["mean"])
    best_background = max(rows["background"], key=lambda r: r["corrected"]["mean"])
    chosen = {"compressor": best_compressor["setting"], "background": best_background["setting"]}
    return {"rows": rows, "chosen": chosen, "normal_log_px": log_px["normal"]}


def selection_tables(selection: dict) -> list[str]:
    """Markdown tables of the selection stage."""
    names = list(PROXIES)
    head = "| setting | " + " | ".join(names) + " | mean |"
    rule = "|---" * (len(names) + 2) + "|"

    def cells(values: dict) -> str:
        return " | ".join(f"{values[k]:.4f}" for k in [*names, "mean"])

    rows = selection["rows"]
    lines = ["**Raw likelihood on the proxies** (AUROC):", "", head, rule]
    lines += [f"| {r['setting']} | {cells(r)} |" for r in rows["raw"]]
    lines += ["", "**Compressors** (AUROC; alone = code length as the normality score):", ""]
    lines += [head.replace("| setting |", "| compressor | score |"), rule + "---|"]
    for r in rows["compressor"]:
        lines.append(f"| {r['setting']} | alone | {cells(r['alone'])} |")
        lines.append(f"| {r['setting']} | complexity-corrected | {cells(r['corrected'])} |")
    lines += ["", "**Background models** (LocalAR, logistic, 3 epochs; AUROC):", ""]
    lines += [head.replace("| setting |", "| radius | mutation rate | score |"), rule + "---|---|"]
    for r in rows["background"]:
        radius, rate = r["setting"]
        lines.append(f"| {radius} | {rate} | alone | {cells(r['alone'])} |")
        lines.append(f"| {radius} | {rate} | likelihood ratio | {cells(r['corrected'])} |")
    chosen = selection["chosen"]
    radius, rate = chosen["background"]
    lines += [
        "",
        f"Chosen by the best proxy mean: compressor **{chosen['compressor']}**, background "
        f"radius **{radius}**, mutation rate **{rate}**.",
    ]
    return lines
