"""Out-of-distribution scores beyond the compressor: Likelihood Regret and hierarchical LLR^{>k}.

Fashion-MNIST is normal, MNIST novel. Two models are fitted on Fashion-MNIST training rows
0-54,999: the default `VAEDetector` with the likelihood-ratio correction (conv VAE, discretised
logistic, early stopping), and a 3-layer hierarchical VAE (MLP blocks, top-down inference,
discretised logistic) trained for a fixed number of epochs. Per image:

- compressor alone (PNG bits), complexity-corrected and likelihood ratio (the existing scores);
- Likelihood Regret of the detector's VAE (`anomaly.regret`), as a normality score -regret;
- the HVAE's IWAE bound and its hierarchical likelihood ratios -LLR^{>k}, k = 1, 2;
- sums of two scores, each standardised on held-out Fashion-MNIST rows.

Selection without MNIST: every score's AUROC on the three proxy novelty sets of
`benchmarks/ood_selection.py` (made from held-out rows 55,000+), and the best proxy mean among
the scores that are not the compressor alone is "chosen" before MNIST is scored. MNIST test is
the test. Writes docs/results/ood_likelihood.json and a markdown report.

Usage (from the repository root):
    .venv/bin/python benchmarks/ood_scores.py --threads 1 --out .state/bench/ood_scores.md \
        --json docs/results/ood_likelihood.json
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import base_parser, header_lines, log, ratio_detector, table_head, write_report
from ood_selection import PROXIES, auroc
from provenance import command_line, git_commit

from anomaly.data import load_dataset
from anomaly.regret import likelihood_regret
from generative.hvae import HVAE, HVAEConfig, estimate_hvae_log_px
from generative.training import Trainer, TrainerConfig

HVAE_SETTINGS = {
    "latent_dims": (32, 16, 8),
    "block_widths": (512, 256, 128),
    "likelihood": "logistic256",
    "kl_warmup_steps": 5000,
}
COMPRESSOR = "compressor alone"


def parse_args():
    """The command-line options."""
    parser = base_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=20, help="most detector VAE epochs")
    parser.add_argument(
        "--detector-params", type=json.loads, default={},
        help='more VAEDetector parameters (JSON), e.g. \'{"trim_fraction": 0, "refit": false}\'',
    )  # fmt: skip
    parser.add_argument("--hvae-epochs", type=int, default=30, help="0 = no HVAE scores")
    parser.add_argument("--k", type=int, default=100, help="importance samples per row")
    parser.add_argument("--fit-rows", type=int, default=55_000)
    parser.add_argument("--selection-rows", type=int, default=1000, help="per proxy set")
    parser.add_argument("--test-rows", type=int, default=2000, help="per test set")
    parser.add_argument("--regret-steps", type=int, default=20, help="0 = no regret scores")
    parser.add_argument("--regret-samples", type=int, default=4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def image_sets(args) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fit images and the named sets scored: held-out normal rows, the proxies made from
    other held-out rows, Fashion-MNIST test and MNIST test."""
    train = load_dataset("fashion-mnist", split="train").X
    held, n = train[args.fit_rows :], args.selection_rows
    source = held[n : 2 * n]
    sets = {"normal": held[:n], **{name: make(source) for name, make in PROXIES.items()}}
    sets["fashion_test"] = load_dataset("fashion-mnist", split="test").X[: args.test_rows]
    sets["mnist_test"] = load_dataset("mnist", split="test").X[: args.test_rows]
    return train[: args.fit_rows], sets


def detector_scores(args, fit_images: np.ndarray, sets: dict) -> dict[str, dict]:
    """Per set: the detector's scores and the Likelihood Regret of its VAE."""
    det = ratio_detector(
        epochs=args.epochs, patience=3, k=args.k, seed=0, verbose=True, **args.detector_params
    )
    det.fit(fit_images)
    scores: dict[str, dict] = {}
    for name, images in sets.items():
        terms = det.score_terms(images)
        scores[name] = {
            "likelihood ratio": terms["log_px"] - terms["background_log_px"],
            "complexity-corrected": terms["log_px"] + math.log(2) * terms["compressor_bits"],
            COMPRESSOR: terms["compressor_bits"],
            "VAE IWAE log p(x)": terms["log_px"],
        }
        if args.regret_steps > 0:
            scores[name]["likelihood regret"] = regret_normality(det, images, args, name)
    return scores


def regret_normality(det, images: np.ndarray, args, name: str) -> np.ndarray:
    """-Likelihood Regret of the detector's VAE for each image."""
    data = torch.from_numpy(det.preprocessor_.transform(images))
    start = time.perf_counter()
    regret = likelihood_regret(
        det.model_, data, steps=args.regret_steps, n_samples=args.regret_samples, progress=True
    ).double()
    log(f"{name}: regret of {len(images)} rows in {time.perf_counter() - start:.0f} s")
    return -regret.numpy()


def train_hvae(args, fit_images: np.ndarray) -> HVAE:
    """The hierarchical VAE, `args.hvae_epochs` epochs of Adam on the fit images."""
    torch.manual_seed(0)
    model = HVAE(HVAEConfig(input_shape=(784,), **HVAE_SETTINGS))
    config = TrainerConfig(epochs=args.hvae_epochs, batch_size=128, learning_rate=1e-3)
    Trainer(model, config).fit(to_rows(fit_images))
    return model.eval()


def to_rows(images: np.ndarray) -> torch.Tensor:
    """uint8 images as float rows k/255, (n, 784)."""
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)


def hvae_scores(model: HVAE, sets: dict, k: int) -> dict[str, dict]:
    """Per set: the HVAE's IWAE bound and -LLR^{>k} for k = 1 .. L-1."""
    scores: dict[str, dict] = {}
    for name, images in sets.items():
        rows = to_rows(images)
        bounds = [
            estimate_hvae_log_px(model, rows, n_samples=k, prior_layers=layers).double().numpy()
            for layers in range(model.config.n_layers)
        ]
        scores[name] = {"HVAE IWAE log p(x)": bounds[0]}
        for layers in range(1, model.config.n_layers):
            scores[name][f"HVAE -LLR>{layers}"] = bounds[layers] - bounds[0]
    return scores


def add_pairs(scores: dict[str, dict]) -> None:
    """Sums of two scores standardised on the held-out normal rows (compressor left out)."""
    normal = scores["normal"]
    names = [n for n in normal if n != COMPRESSOR]
    centre = {n: (normal[n].mean(), normal[n].std()) for n in names}
    for a, b in itertools.combinations(names, 2):
        for per_set in scores.values():
            per_set[f"{a} + {b}"] = sum((per_set[n] - centre[n][0]) / centre[n][1] for n in (a, b))


def evaluate(scores: dict[str, dict]) -> list[dict]:
    """AUROC of every score on each proxy (against held-out normal rows) and on MNIST test."""
    rows = []
    for name in scores["normal"]:
        row = {"score": name}
        for proxy in PROXIES:
            row[f"auroc_{proxy}"] = auroc(scores["normal"][name], scores[proxy][name])
        row["proxy_mean"] = float(np.mean([row[f"auroc_{p}"] for p in PROXIES]))
        row["auroc_mnist"] = auroc(scores["fashion_test"][name], scores["mnist_test"][name])
        rows.append(row)
    rows.sort(key=lambda r: -r["proxy_mean"])
    chosen = next(r for r in rows if r["score"] != COMPRESSOR)
    for r in rows:
        r["chosen_on_proxies"] = r is chosen
    return rows


def report(rows: list[dict], args, wall_s: float) -> list[str]:
    """The markdown report."""
    lines = header_lines("Fashion-MNIST vs MNIST: regret and hierarchical scores", wall_s)
    lines += [
        f"Rows: {args.selection_rows} held-out normal and per proxy; {args.test_rows} "
        f"Fashion-MNIST test and {args.test_rows} MNIST test. IWAE K = {args.k}; regret "
        f"{args.regret_steps} Adam steps, {args.regret_samples} draws. Sorted by proxy mean.",
        "",
        *table_head(["score", "shrink", "vflip", "invert", "proxy mean", "MNIST", "chosen"]),
    ]
    for r in rows:
        cells = [r[f"auroc_{p}"] for p in PROXIES] + [r["proxy_mean"], r["auroc_mnist"]]
        mark = "**chosen**" if r["chosen_on_proxies"] else ""
        lines.append(f"| {r['score']} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {mark} |")
    return lines


def main() -> None:
    """Fit, score, select on the proxies, test on MNIST, write the report and the JSON."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    fit_images, sets = image_sets(args)
    scores = detector_scores(args, fit_images, sets)
    if args.hvae_epochs > 0:
        log("training the hierarchical VAE")
        for name, extra in hvae_scores(train_hvae(args, fit_images), sets, args.k).items():
            scores[name].update(extra)
    add_pairs(scores)
    rows = evaluate(scores)
    write_report(args.out, report(rows, args, time.perf_counter() - start))
    if args.json is not None:
        write_json(args, rows)


def write_json(args, rows: list[dict]) -> None:
    """The run's rows, tagged with its detector parameters, into `args.json`; rows of earlier
    runs with other detector parameters are kept beside them."""
    commit = git_commit()
    mine = [{**r, "score": "compressor" if r["score"] == COMPRESSOR else r["score"],
             "detector_params": args.detector_params, "commit": commit} for r in rows]  # fmt: skip
    kept = []
    if args.json.exists():
        earlier = json.loads(args.json.read_text())
        kept = [{"detector_params": {}, "commit": earlier["commit"], **r} for r in earlier["rows"]]
        kept = [r for r in kept if r["detector_params"] != args.detector_params]
    document = {"command": command_line(), "commit": commit,
                "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
                "rows": mine + kept}  # fmt: skip
    args.json.write_text(json.dumps(document, indent=1) + "\n")
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
