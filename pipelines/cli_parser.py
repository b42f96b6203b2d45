"""Argument parsing for the `genad` command line (handlers live in `pipelines.cli`, the training
ones in `pipelines.cli_train`, the scheduled-scoring ones and their parsers in
`pipelines.cli_schedule`). Choices come from the registries that define them (corrections,
flag rules, bad-row policies, output formats, directions, metrics, model families)."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

from pipelines import cli_schedule, cli_train

RESUMABLE_HELP = "checkpoint every epoch here; rerun with the same folder to resume a killed run"


def _data_arguments(
    parser: argparse.ArgumentParser, dataset_flag: str, *, novelty: bool = True
) -> None:
    """The data flags: the data set, split, label column, novelty classes (unless not
    `novelty`) and seed."""
    parser.add_argument(
        dataset_flag, required=True,
        help="a catalog name (fashion-mnist, mnist, adbench/<name>) or a CSV/Parquet/npz file "
        "or image folder",
    )  # fmt: skip
    parser.add_argument("--split", default=None, help="train/test/all for image sets")
    parser.add_argument("--label-column", default=None, help="label column of a CSV/Parquet file")
    if novelty:
        parser.add_argument(
            "--novelty-class", type=int, action="append", default=None,
            help="a class treated as the novelty (repeatable); others are normal",
        )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)


def _name_and_rows(parser: argparse.ArgumentParser, family: str, rows_help: str) -> None:
    """--model-name (default genad-<family>-<data>) and --max-rows."""
    parser.add_argument(
        "--model-name", default=None, help=f"registered name (default genad-{family}-<data>)"
    )
    parser.add_argument("--max-rows", type=int, default=None, help=rows_help)


# VAEDetector's numeric flags: (flag, type, help). Each becomes the parameter of its name.
DETECTOR_NUMBERS = (
    ("--epochs", int, "training epochs (small tables get more: see --min-steps)"),
    ("--n-samples", int, "K samples per row for the score"),
    ("--target-fpr", float,
     "flag at most this share of new normal rows (threshold on held-out calibration rows)"),
    ("--contamination", float,
     "flag this share of the training rows (used when --target-fpr is not given)"),
)  # fmt: skip
ROBUST_TRAINING_NUMBERS = (
    ("--refit-folds", int,
     "pick the refit's rows by out-of-fold ELBOs of this many first models (default 1)"),
    ("--teacher-decay", float,
     "rank the rows to trim by a moving average of the weights of this decay (0: off; "
     "default 0.99 for tables that trim, 0 otherwise)"),
    ("--input-mask", float,
     "zero each encoder input with this probability while training (0: off)"),
    ("--latent-layers", int, "stochastic layers (> 1: a hierarchical VAE)"),
    ("--min-steps", int,
     "train small sets for at least this many steps (default 300 for tables, 0 for images)"),
    ("--patience", int,
     "stop after this many epochs without a better validation score (default 0: never)"),
)  # fmt: skip


def _numbers(parser: argparse.ArgumentParser, flags: tuple[tuple[str, type, str], ...]) -> None:
    """One optional flag per (flag, type, help) of `flags`."""
    for flag, kind, text in flags:
        parser.add_argument(flag, type=kind, help=text)


def _detector_arguments(parser: argparse.ArgumentParser) -> None:
    from anomaly.corrections import CORRECTIONS
    from generative.vae import METHODS

    parser.add_argument("--config", help="VAEDetector parameters as JSON text or a .json file")
    parser.add_argument("--score-method", choices=sorted(METHODS), help="the log p(x) estimate")
    parser.add_argument("--score", help=argparse.SUPPRESS)  # renamed: refused with a hint
    _numbers(parser, DETECTOR_NUMBERS)
    parser.add_argument(
        "--correction", choices=list(CORRECTIONS),
        help="score by a likelihood ratio or a complexity-corrected likelihood (images only)",
    )  # fmt: skip
    _robust_arguments(parser)


def _robust_arguments(parser: argparse.ArgumentParser) -> None:
    """The contamination-robust training options of VAEDetector (tabular history with
    unlabelled anomalies in it)."""
    from anomaly.detector_params import SCALINGS
    from generative.vae import LIKELIHOODS

    parser.add_argument(
        "--trim-fraction", type=_trim_fraction,
        help="share of each batch (highest loss) left out of the ELBO, 'contamination' or "
        "'estimate' (the refit trims the share beyond the first model's loss fence)",
    )  # fmt: skip
    parser.add_argument(
        "--refit", action=argparse.BooleanOptionalAction, default=None,
        help="train again on the rows the first model keeps (drops the trim fraction)",
    )  # fmt: skip
    parser.add_argument("--scaling", choices=SCALINGS, help="tabular scaling of the features")
    parser.add_argument(
        "--likelihood", choices=["auto", *sorted(LIKELIHOODS)],
        help="the decoder's p(x|z) (auto: huber for tables); gaussian_bernoulli: Bernoulli flags",
    )  # fmt: skip
    _numbers(parser, ROBUST_TRAINING_NUMBERS)


def _trim_fraction(text: str) -> float | str:
    """--trim-fraction's value: a number, or the word 'contamination' or 'estimate'."""
    from anomaly.detector_params import TRIM_WORDS

    if text in TRIM_WORDS:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 0.5), 'contamination' or 'estimate', got {text!r}"
        ) from None


def _score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-uri", required=True, help="e.g. models:/NAME@champion")
    parser.add_argument("--input", required=True, help="CSV, Parquet, npz or image folder")
    parser.add_argument("--output", required=True, help="Parquet file to write")
    _create_dirs_argument(parser)
    batch_arguments(parser)
    parser.add_argument(
        "--typicality-group-size", type=int, default=None,
        help="also test groups of this many consecutive rows for typicality",
    )  # fmt: skip
    parser.add_argument(
        "--typicality-level", type=float, default=0.05,
        help="level of the typicality test (used with --typicality-group-size)",
    )  # fmt: skip


def batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The batch engine's flags that `score` and `schedule score` share: partitioning, the
    flag rule and level, and the bad-row policy."""
    from anomaly.batchio.badrows import BAD_ROW_POLICIES
    from anomaly.thresholds import FLAG_RULES

    parser.add_argument("--rows-per-partition", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument(
        "--flag-rule", choices=list(FLAG_RULES), default=None,
        help="override the model's rule: threshold, alpha (p <= level) or fdr (BH over the input)",
    )  # fmt: skip
    parser.add_argument("--flag-level", type=float, default=None, help="alpha or FDR level")
    parser.add_argument(
        "--bad-rows", choices=BAD_ROW_POLICIES, default="fail",
        help="on a bad row: fail naming it, or skip it and list it in <output>.rejected.csv",
    )  # fmt: skip


def _create_dirs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--create-dirs", action="store_true",
        help="create the --output's folder if it does not exist (else it is refused)",
    )  # fmt: skip


def build_parser(handlers: ModuleType) -> argparse.ArgumentParser:
    """The parser; each subcommand's `handler` is the matching `cmd_*` of `handlers`."""
    parser = argparse.ArgumentParser(prog="genad", description=handlers.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands, handlers)
    _add_train(commands)
    _add_promote(commands, handlers)
    _add_score(commands, handlers)
    _add_synth(commands, handlers)
    _add_translate(commands, handlers)
    models = commands.add_parser("models", help="the model registry").add_subparsers(
        dest="action", required=True
    )
    listing = models.add_parser("list", help=handlers.cmd_models_list.__doc__)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=handlers.cmd_models_list)
    return parser


def _add_demo(commands: Any, handlers: ModuleType) -> None:
    demo = commands.add_parser("demo", help=handlers.cmd_demo.__doc__)
    demo.add_argument("--dataset", default="fashion-mnist")
    demo.add_argument(
        "--normal-class", type=int, default=0,
        help="the class trained on; every other class is the novelty (ADBench: 0, the normal rows)",
    )  # fmt: skip
    demo.add_argument("--model-name", default=None)
    demo.add_argument("--workdir", default=".state/demo", help="where the scores are written")
    demo.add_argument("--seed", type=int, default=0)
    _detector_arguments(demo)
    demo.set_defaults(handler=handlers.cmd_demo)


def _add_train(commands: Any) -> None:
    train = commands.add_parser("train", help="train a model").add_subparsers(
        dest="family", required=True
    )
    vae = train.add_parser("vae", help=cli_train.cmd_train.__doc__)
    _data_arguments(vae, "--dataset")
    vae.add_argument("--model-name", default=None, help="registered name (default genad-<data>)")
    vae.add_argument("--validation-fraction", type=float, default=0.2)
    vae.add_argument(
        "--checkpoint-dir", default=None,
        help="checkpoint every epoch here; rerun with the same folder to resume a killed run",
    )  # fmt: skip
    _detector_arguments(vae)
    vae.set_defaults(handler=cli_train.cmd_train)
    _add_train_gan(train)
    _add_train_progressive(train)
    _add_train_cyclegan(train)


def _add_train_gan(train: Any) -> None:
    from generative.gan import GAN_LOSSES
    from generative.gan.networks import ARCHITECTURES
    from generative.gan.trainer import OPTIMIZERS

    gan = train.add_parser("gan", help=cli_train.cmd_train_gan.__doc__)
    _data_arguments(gan, "--dataset", novelty=False)
    _name_and_rows(gan, "gan", "train on a seeded subset")
    gan.add_argument(
        "--holdout-fraction", type=float, default=0.2,
        help="rows held out for the quality metrics when the data have no test split",
    )  # fmt: skip
    gan.add_argument("--reference-rows", type=int, default=2000, help="real rows for the metrics")
    gan.add_argument("--checkpoint-dir", default=None, help=RESUMABLE_HELP)
    gan.add_argument("--gan-config", help="GANConfig fields as JSON text or a .json file")
    gan.add_argument("--trainer-config", help="GANTrainerConfig fields as JSON text or a file")
    gan.add_argument("--conditional", action="store_true", help="one class per label value")
    gan.add_argument("--loss", choices=sorted(GAN_LOSSES))
    gan.add_argument("--architecture", choices=sorted(ARCHITECTURES), help="default: dcgan/mlp")
    gan.add_argument("--latent-dim", type=int)
    gan.add_argument("--base-channels", type=int, help="DCGAN width")
    gan.add_argument("--ema-decay", type=float, help="EMA of the generator's weights (0 = off)")
    gan.add_argument(
        "--spectral-norm", action="store_true", default=None, help="spectral norm on D's layers"
    )
    gan.add_argument("--epochs", type=int)
    gan.add_argument("--batch-size", type=int)
    gan.add_argument("--lr", type=float, help="learning rate of both nets")
    gan.add_argument("--n-critic", type=int, help="D steps per G step")
    gan.add_argument("--optimizer", choices=sorted(OPTIMIZERS))
    gan.add_argument(
        "--augment", help="differentiable augmentation of D's inputs: color,translation,cutout"
    )
    gan.add_argument("--ada-target", type=float, help="adapt its strength (ADA; e.g. 0.6)")
    gan.add_argument("--r1-gamma", type=float, help="R1 penalty weight on D (0 = off)")
    gan.add_argument("--lr-decay-start", type=float, help="lrs -> 0 linearly after this share")
    gan.set_defaults(handler=cli_train.cmd_train_gan)


def _add_train_progressive(train: Any) -> None:
    """The `progan` and `stylegan` subcommands of `genad train`."""
    from generative.gan import GAN_LOSSES
    from pipelines.train_progressive import PROGRESSIVE_FAMILIES

    labels = {"progan": "a Progressive GAN", "stylegan": "a StyleGAN"}
    for family in PROGRESSIVE_FAMILIES:
        what = f"grow {labels[family]} from 4x4 and register its generator as `challenger`"
        parser = train.add_parser(family, help=what)
        parser.add_argument("--dataset", required=True, help="fashion-mnist, mnist or an image npz")
        parser.add_argument("--split", default=None, help="train/test/all for image sets")
        _name_and_rows(parser, family, "train on a seeded subset")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--reference-rows", type=int, default=2000, help="rows for FID/KID")
        parser.add_argument("--model-config", help="config fields as JSON text or a .json file")
        parser.add_argument("--trainer-config", help="ProgressiveTrainerConfig JSON or file")
        parser.add_argument(
            "--loss", choices=sorted(GAN_LOSSES), help="D/G loss (default non_saturating)"
        )
        parser.add_argument(
            "--r1-gamma", type=float, help="lazy R1 weight on D (default 1; 0 with wgan_gp)"
        )
        parser.add_argument("--channel-base", type=int, help="maps at side r: base / r")
        parser.add_argument("--max-channels", type=int, help="at most this many maps")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--fade-images", type=int, help="real images per fade-in phase")
        parser.add_argument("--stable-images", type=int, help="real images per stable phase")
        parser.add_argument("--final-images", type=int, help="the last stage's stable phase")
        parser.add_argument("--lr", type=float, help="Adam learning rate of both nets")
        parser.add_argument("--lr-decay-start", type=float, help="lr falls to 0 after this share")
        parser.add_argument(
            "--augment", help="differentiable augmentation of D's inputs: color,translation,cutout"
        )
        parser.add_argument("--ada-target", type=float, help="adapt its strength (ADA; e.g. 0.6)")
        parser.add_argument("--budget-s", type=float, help="stop after this many seconds")
        if family == "stylegan":
            parser.add_argument(
                "--fixed-resolution",
                action="store_true",
                help="train at the data's size from the start, without progressive growing",
            )
        parser.add_argument("--checkpoint-dir", help="keep the per-stage checkpoints here")
        parser.add_argument("--resume-from", help="a stage checkpoint folder to continue from")
        parser.add_argument(
            "--log-checkpoints", action="store_true", help="also log them to the MLflow run"
        )
        parser.set_defaults(handler=cli_train.cmd_train_progressive, progressive_family=family)


def _add_train_cyclegan(train: Any) -> None:
    from generative.cyclegan import TRANSFORMS

    cyc = train.add_parser("cyclegan", help=cli_train.cmd_train_cyclegan.__doc__)
    cyc.add_argument(
        "--dataset", default=None,
        help="an image set split into A and T(B) by --transform (e.g. mnist)",
    )  # fmt: skip
    cyc.add_argument(
        "--transform", choices=sorted(TRANSFORMS), default=None,
        help="the invertible T making domain B from --dataset (or relating the two domains)",
    )  # fmt: skip
    cyc.add_argument("--domain-a", default=None, help="domain A: a data set, npz or image folder")
    cyc.add_argument("--domain-b", default=None, help="domain B: a data set, npz or image folder")
    _name_and_rows(cyc, "cyclegan", "training images per domain")
    cyc.add_argument("--seed", type=int, default=0)
    cyc.add_argument("--test-rows", type=int, default=500, help="test images for the metrics")
    cyc.add_argument("--checkpoint-dir", default=None, help=RESUMABLE_HELP)
    cyc.add_argument(
        "--classifier-epochs", type=int, default=2,
        help="epochs of the domain-B classifier for the accuracy metrics (0 = none)",
    )  # fmt: skip
    cyc.add_argument("--cyclegan-config", help="CycleGANConfig fields as JSON text or a file")
    cyc.add_argument("--trainer-config", help="CycleGANTrainerConfig fields as JSON or a file")
    cyc.add_argument("--base-channels", type=int, help="generator width k (c7s1-k)")
    cyc.add_argument("--residual-blocks", type=int)
    cyc.add_argument("--lambda-cycle", type=float, help="cycle-consistency weight (10)")
    cyc.add_argument(
        "--lambda-identity", type=float, help="identity weight, a multiple of lambda-cycle (0.5)"
    )
    cyc.add_argument("--history-size", type=int, help="generated images D draws from (50)")
    cyc.add_argument("--epochs", type=int)
    cyc.add_argument("--batch-size", type=int)
    cyc.add_argument("--max-steps", type=int, help="stop after this many steps")
    cyc.add_argument("--decay-fraction", type=float, help="linear lr decay over this last share")
    cyc.add_argument("--lr", type=float, help="learning rate of all four nets")
    cyc.set_defaults(handler=cli_train.cmd_train_cyclegan)


def _add_translate(commands: Any, handlers: ModuleType) -> None:
    from generative.cyclegan.model import DIRECTIONS
    from pipelines.translate import OUTPUT_FORMATS

    translate = commands.add_parser("translate", help=handlers.cmd_translate.__doc__)
    translate.add_argument("--model", required=True, help="e.g. models:/NAME@challenger")
    translate.add_argument("--input", required=True, help="an npz file (X) or a PNG folder")
    translate.add_argument("--output", required=True, help="out.npz or a folder (PNGs)")
    _create_dirs_argument(translate)
    translate.add_argument(
        "--direction", choices=list(DIRECTIONS), default="a_to_b",
        help="a_to_b (G_AB) or b_to_a (G_BA)",
    )  # fmt: skip
    translate.add_argument(
        "--format", choices=OUTPUT_FORMATS, default=None,
        help="override the format the output's suffix names",
    )  # fmt: skip
    translate.set_defaults(handler=handlers.cmd_translate)


def _add_promote(commands: Any, handlers: ModuleType) -> None:
    from pipelines.promote import METRICS

    promote = commands.add_parser("promote", help=handlers.cmd_promote.__doc__)
    promote.add_argument("--model-name", required=True)
    _data_arguments(promote, "--validation")
    promote.add_argument("--holdout-fraction", type=float, default=0.2)
    promote.add_argument("--all-rows", action="store_true", help="use every validation row")
    promote.add_argument("--metric", choices=METRICS, default="auroc")
    promote.add_argument("--margin", type=float, default=0.0)
    promote.set_defaults(handler=handlers.cmd_promote)


def _add_synth(commands: Any, handlers: ModuleType) -> None:
    from pipelines.synth import FORMATS

    synth = commands.add_parser("synth", help=handlers.cmd_synth.__doc__)
    synth.add_argument("--model", required=True, help="e.g. models:/NAME@challenger")
    synth.add_argument("--n", type=int, required=True, help="samples per class (or in all)")
    synth.add_argument(
        "--classes", type=int, nargs="+", default=None,
        help="class labels (conditional models; default: every class)",
    )  # fmt: skip
    synth.add_argument(
        "--output", required=True, help="out.npz, out.parquet (tables) or a folder (PNGs)"
    )
    _create_dirs_argument(synth)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--truncation", type=float, default=None,
        help="GANs: truncate z to [-t, t]; StyleGAN: psi in [0, 1]",
    )  # fmt: skip
    synth.add_argument(
        "--mix-seed", type=int, default=None, help="StyleGAN: mix in this seed's styles"
    )
    synth.add_argument("--mix-layer", type=int, default=None, help="StyleGAN: from this layer on")
    synth.add_argument(
        "--format", choices=list(FORMATS), default=None,
        help="override the format the output's suffix names",
    )  # fmt: skip
    synth.set_defaults(handler=handlers.cmd_synth)


def _add_score(commands: Any, handlers: ModuleType) -> None:
    score = commands.add_parser("score", help=handlers.cmd_score.__doc__)
    _score_arguments(score)
    score.add_argument("--workers", type=int, default=0, help="local Dask worker processes")
    score.add_argument("--dask-address", default=None, help="existing Dask scheduler address")
    score.set_defaults(handler=handlers.cmd_score)
    cli_schedule.add_parsers(commands, batch_arguments)
