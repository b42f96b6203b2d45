"""MNIST test NLL in nats at fixed CPU budgets: Burda's 1-layer VAE against hierarchical VAEs.

Dynamically binarised MNIST (every training batch redrawn as Bernoulli(pixel intensity)), a
Bernoulli decoder, the 10,000 test digits binarised once (generator seed 0). Each model trains
on one torch thread with Adam (lr 1e-3, batch 128) and no early stopping; a snapshot is saved
when the training process's CPU time passes each budget mark (minutes). Then every snapshot is
scored: test NLL = -IWAE bound with k = 5000 (the batched estimator; its rows/s reported), and
the ELBO beside it.

Runs resume: a model's training checkpoints and snapshots live under `--state`, so a later
run with larger marks continues the same training, and snapshots already scored are not
rescored. `--report` only gathers the scored snapshots into the tables.

Usage (from the repository root):
    .venv/bin/python benchmarks/mnist_nll.py --model vae1 --marks 5,10,20,30
    .venv/bin/python benchmarks/mnist_nll.py --report --json docs/results/mnist_nll.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import base_parser, log, replace_section, set_threads, table_head
from provenance import command_line, git_commit

from generative.callbacks import Callback
from generative.hvae import HVAE, HVAEConfig, estimate_hvae_log_px
from generative.registry import load_model, save_model
from generative.training import Trainer, TrainerConfig

MNIST_SHAPE = (784,)
BINARY = {"likelihood": "bernoulli", "binarize_training": True}
MODELS: dict[str, dict[str, Any]] = {
    # Burda et al. (2015)'s 1-layer VAE: 784-200-200-50, tanh (a 1-layer HVAE is a plain VAE)
    "vae1": {"latent_dims": (50,), "block_widths": (200,), "activation": "tanh"},
    # two stochastic layers, top-down inference, ELBO with KL warm-up
    "hvae2": {"latent_dims": (64, 32), "block_widths": (512, 256), "kl_warmup_steps": 10_000},
    # the same network trained on the importance-weighted bound, K = 5
    "hvae2_iwae5": {
        "latent_dims": (64, 32),
        "block_widths": (512, 256),
        "objective": "iwae",
        "train_samples": 5,
    },  # fmt: skip
}
BATCH_SIZE, LEARNING_RATE, MAX_EPOCHS = 128, 1e-3, 100_000
DOCS_SECTION = "## MNIST test NLL: 1-layer VAE and hierarchical VAEs at CPU budgets (issue 20)"


class CpuBudget(Callback):
    """Counts the training process's CPU seconds across resumes; at the end of the first epoch
    past each mark (minutes) it saves a snapshot, and after the last mark it stops training."""

    def __init__(self, marks: list[float], folder: Path) -> None:
        self.marks, self.folder, self.spent = sorted(marks), folder, 0.0

    def on_train_begin(self, trainer: Any) -> None:
        self.trainer, self.last = trainer, time.process_time()

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.spent}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent = float(state["spent"])
        self.trainer.should_stop = self.spent >= 60 * self.marks[-1]  # larger marks: go on

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        now = time.process_time()
        self.spent, self.last = self.spent + now - self.last, now
        for mark in self.marks:
            target = self.folder / f"min_{mark:g}"
            if self.spent >= 60 * mark and not target.exists():
                save_model(trainer.model, target)
                info = {"mark_min": mark, "cpu_min": self.spent / 60, "epochs": epoch + 1,
                        "steps": trainer.step, "train_logs": logs}  # fmt: skip
                (target / "snapshot.json").write_text(json.dumps(info))
                log(f"snapshot {target.name}: {self.spent / 60:.1f} CPU min, epoch {epoch + 1}")
        trainer.should_stop = self.spent >= 60 * self.marks[-1]
        self.last = time.process_time()  # the snapshot's writing is not training time


def mnist(split: str) -> torch.Tensor:
    """MNIST digits as float rows in [0, 1], (n, 784)."""
    from anomaly.data import load_dataset

    images = load_dataset("mnist", split=split).X
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)


def binarized_test() -> torch.Tensor:
    """The test digits binarised once: Bernoulli(intensity) with generator seed 0."""
    x = mnist("test")
    return (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < x).float()


def train(name: str, marks: list[float], state: Path) -> None:
    """Train model `name` (resuming under `state`) until the last mark, saving snapshots."""
    folder = state / name
    model = HVAE(HVAEConfig(input_shape=MNIST_SHAPE, **BINARY, **MODELS[name]))
    config = TrainerConfig(
        epochs=MAX_EPOCHS, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE, device="cpu"
    )
    trainer = Trainer(model, config, [CpuBudget(marks, folder)], checkpoint_dir=folder / "ckpt")
    trainer.fit(mnist("train"))


def score(name: str, state: Path, k: int, rows: int, marks: list[float]) -> None:
    """Score the snapshots of `name` at `marks` not yet scored with these k and rows."""
    test = binarized_test()[:rows]
    for snapshot in sorted((state / name).glob("min_*")):
        result_path = snapshot / f"score_k{k}_rows{rows}.json"
        if result_path.exists() or float(snapshot.name[4:]) not in marks:
            continue
        model = load_model(snapshot).eval()
        start = time.perf_counter()
        iwae = estimate_hvae_log_px(model, test, n_samples=k, progress=True)
        seconds = time.perf_counter() - start
        elbo = estimate_hvae_log_px(model, test, method="elbo", n_samples=100)
        info = json.loads((snapshot / "snapshot.json").read_text())
        result = {**info, "model": name, "config": model.config.to_dict(), "k": k, "rows": rows,
                  "test_nll_nats": -iwae.mean().item(), "nll_sem": iwae.std().item() / rows**0.5,
                  "neg_elbo_nats": -elbo.mean().item(), "iwae_rows_per_s": rows / seconds,
                  "threads": torch.get_num_threads(), "commit": git_commit()}  # fmt: skip
        result_path.write_text(json.dumps(result, indent=1))
        log(f"{name} {snapshot.name}: NLL {result['test_nll_nats']:.2f}, -ELBO "
            f"{result['neg_elbo_nats']:.2f}, {result['iwae_rows_per_s']:.1f} rows/s")  # fmt: skip


def report(state: Path, json_path: Path | None, docs: Path | None) -> None:
    """Tables of every scored snapshot: markdown to stdout (and docs), rows to `json_path`."""
    results = [json.loads(p.read_text()) for p in sorted(state.glob("*/min_*/score_k*.json"))]
    results.sort(key=lambda r: (r["model"], r["rows"], r["mark_min"]))
    lines = [
        DOCS_SECTION,
        "",
        f"Command: `{command_line()}`, after training runs of "
        "`benchmarks/mnist_nll.py --model NAME --marks ... --train-only` and scoring runs "
        "with `--score-only --rows N` (one torch thread each).",
        "",
        "Protocol: dynamically binarised MNIST training digits (every batch redrawn as "
        "Bernoulli(intensity)), Adam at 1e-3, batch 128, no early stopping; the test digits "
        "binarised once (seed 0); test NLL = -(IWAE bound, k = 5000) per digit, averaged over "
        "the first N test digits (± its standard error); -ELBO with 100 samples beside it. "
        "CPU min is the training process's CPU time (`time.process_time`) at the snapshot. "
        "`vae1` is Burda et al.'s 1-layer VAE (784-200-200-50, tanh), `hvae2` a 2-layer "
        "top-down hierarchical VAE (latents 64 and 32, blocks 512 and 256, ELU, KL warm-up "
        "over 10,000 steps). IWAE rows/s with the torch threads shown, on a machine running "
        "other jobs.",
        "",
    ]
    lines += table_head(["model", "objective", "CPU min", "epochs", "k", "test digits",
                         "test NLL (nats)", "-ELBO", "IWAE rows/s", "threads"])  # fmt: skip
    for r in results:
        lines.append(
            f"| {r['model']} | {r['config']['objective']} | {r['cpu_min']:.1f} | {r['epochs']} "
            f"| {r['k']} | {r['rows']} | {r['test_nll_nats']:.2f} ± {r['nll_sem']:.2f} | "
            f"{r['neg_elbo_nats']:.2f} | {r['iwae_rows_per_s']:.1f} | {r.get('threads', 1)} |"
        )
    print("\n".join(lines))
    if docs is not None:
        replace_section(docs, "\n".join(lines) + "\n")
    if json_path is not None:
        rows = [{"model": r["model"], "objective": r["config"]["objective"],
                 "budget_cpu_min": r["mark_min"], "test_nll_nats": round(r["test_nll_nats"], 3),
                 "k": r["k"], "test_rows": r["rows"], "neg_elbo_nats": round(r["neg_elbo_nats"], 3),
                 "iwae_rows_per_s": round(r["iwae_rows_per_s"], 2)} for r in results]  # fmt: skip
        document = {"command": command_line(), "commit": git_commit(),
                    "date": time.strftime("%Y-%m-%d"), "rows": rows}  # fmt: skip
        json_path.write_text(json.dumps(document, indent=1) + "\n")
        log(f"wrote {json_path}")


def main() -> None:
    """Train and score one model, or write the report."""
    parser = base_parser(__doc__)
    parser.add_argument("--model", choices=sorted(MODELS))
    parser.add_argument("--marks", default="30,120", help="CPU-minute budgets, comma-separated")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=10_000, help="test digits scored")
    parser.add_argument("--state", type=Path, default=Path(".state/mnist_nll"))
    parser.add_argument("--train-only", action="store_true", help="train, score later")
    parser.add_argument("--score-only", action="store_true", help="score the --marks snapshots")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--docs", type=Path)
    args = parser.parse_args()
    set_threads(args.threads, f"model {args.model}, marks {args.marks}")
    if args.report:
        report(args.state, args.json, args.docs)
        return
    if args.model is None:
        parser.error("--model is needed unless --report")
    marks = [float(m) for m in args.marks.split(",")]
    if not args.score_only:
        train(args.model, marks, args.state)
    if not args.train_only:
        score(args.model, args.state, args.k, args.rows, marks)


if __name__ == "__main__":
    main()
