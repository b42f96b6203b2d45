"""VAEDetector: a VAE's log-likelihood estimate behind scikit-learn's outlier-detector contract."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted

from anomaly.corrections import CORRECTIONS, check_applicable, score_terms, train_background
from anomaly.detector_files import (
    fitted_attributes,
    read_networks,
    read_state,
    write_detector_files,
)
from anomaly.detector_params import (
    background_settings,
    check_params,
    refuse_renamed,
    refusing_renamed,
    trainer_config,
    upgrade_params,
    vae_config,
)
from anomaly.preprocessing import ImageScaler, Standardizer
from anomaly.thresholds import FLAG_RULES, conformal_offset, conformal_p_values
from anomaly.validation import check_input
from generative.distributed import World
from generative.registry import atomic_directory
from generative.training import Callback, EarlyStopping, ProgressBar, Trainer
from generative.vae import VAE, estimate_log_px

FITTED_ATTRIBUTES = ("offset_", "n_features_in_", "input_shape_", "active_units_")


class VAEDetector(OutlierMixin, BaseEstimator):
    """Flag rows that a variational autoencoder, trained on normal data, finds unlikely.

    `score_samples(X)` is an estimate of log p(x) in nats (higher = more normal), or its
    `correction` (below), by `score_method="elbo"` (a lower bound), `"iwae"` (the
    importance-sampled bound, tighter with K) or `"prior_mc"` (the seed's Monte Carlo estimate
    from prior samples), each with K = `n_samples`.
    `precision="bf16"` runs the networks under bfloat16 autocast when scoring (about 2.5x faster
    on CPUs with bf16 units; scores move by ~0.05 nats of ~180 on Fashion-MNIST).
    Works for tabular arrays (n, d) and images (n, c, h, w) (or (n, h, w)).

    `fit` holds out `calibration_fraction` of the rows (and `validation_fraction` for early
    stopping) and trains on the rest. Two rules set the threshold `offset_`:
    - `target_fpr` = q (the guarantee): set on the held-out calibration scores only, so a new
      normal row is flagged with probability at most q (a conformal order statistic; exact for
      continuous scores). Use it when the flags must hold a false-alarm rate on new data.
    - `contamination` = c (used when `target_fpr` is None; scikit-learn's and PyOD's meaning):
      the c-quantile of the scores of all the rows given to `fit`, so `fit_predict(X)` flags a
      share c of X. On new normal rows it flags more than c when the model fits its training
      rows better than unseen ones (docs/detector.md measures by how much).

    `p_values(X)` are conformal p-values against the calibration scores. `predict` flags by
    `flag_rule`: "threshold" (the default, below `offset_`), "alpha" (p <= level: a normal row
    is flagged with probability <= level) or "fdr" (Benjamini-Hochberg over the rows scored
    together: the expected share of normal rows among the flagged <= level); the level is
    `alpha`, else `target_fpr`, else `contamination`.

    `correction` turns the score into one that is robust to the likelihood's out-of-distribution
    failure (images only; see `anomaly.corrections`): "likelihood_ratio" subtracts the log p(x)
    of a local autoregressive background model (`background_radius`, trained for
    `background_epochs` on inputs perturbed at `background_mutation_rate`); "complexity" adds
    the `compressor`'s code length (needs a discrete likelihood). `score_terms(X)` returns the
    raw terms. Thresholds, p-values and flags always use the corrected score.

    Architecture options left at "auto"/None are resolved in `fit`: MLP with Gaussian (learned
    variance) likelihood for tabular data; conv net with an 8-bit discretised logistic likelihood
    for images (`image_mode="scale"`), or Bernoulli on binarised pixels (`image_mode="binarize"`).

    Fitted attributes: `model_` (the VAE), `preprocessor_`, `offset_`, `calibration_scores_`,
    `threshold_` (alias of `offset_`, PyOD's name), `n_features_in_`, `input_shape_`,
    `active_units_`, `history_`, `background_` (the background model, or None).
    """

    @refusing_renamed
    def __init__(
        self,
        *,
        score_method: str = "iwae",
        n_samples: int = 100,
        precision: str = "fp32",
        latent_dim: int | None = None,
        hidden_dims: tuple[int, ...] | None = None,
        backbone: str = "auto",
        likelihood: str = "auto",
        image_mode: str = "scale",
        epochs: int = 100,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        kl_warmup_steps: int = 0,
        free_bits: float = 0.0,
        patience: int = 10,
        validation_fraction: float = 0.1,
        calibration_fraction: float = 0.2,
        contamination: float = 0.1,
        target_fpr: float | None = None,
        flag_rule: str = "threshold",
        alpha: float | None = None,
        correction: str = "none",
        compressor: str = "png",
        background_radius: int = 1,
        background_mutation_rate: float = 0.1,
        background_epochs: int = 3,
        random_state: int = 0,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        self.score_method = score_method
        self.n_samples = n_samples
        self.precision = precision
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.backbone = backbone
        self.likelihood = likelihood
        self.image_mode = image_mode
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.kl_warmup_steps = kl_warmup_steps
        self.free_bits = free_bits
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.calibration_fraction = calibration_fraction
        self.contamination = contamination
        self.target_fpr = target_fpr
        self.flag_rule = flag_rule
        self.alpha = alpha
        self.correction = correction
        self.compressor = compressor
        self.background_radius = background_radius
        self.background_mutation_rate = background_mutation_rate
        self.background_epochs = background_epochs
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def set_params(self, **params: Any) -> VAEDetector:
        """scikit-learn's `set_params`; an old parameter name gets an error naming the new."""
        refuse_renamed(type(self).__name__, params)
        return super().set_params(**params)

    # --- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | os.PathLike | None = None,
        world: World | None = None,
    ) -> VAEDetector:
        """Train on X (normal data) and set the threshold on a held-out calibration split.

        `callbacks` are extra `generative.training.Callback`s (e.g. a per-epoch metrics logger).
        `checkpoint_dir`: the VAE's trainer writes a checkpoint there after every epoch and a
        fit with the same folder resumes from the latest one (a checkpoint from other
        parameters or data is refused with ValueError, a damaged one with CorruptFileError).
        `world`: train the VAE data-parallel across torchrun's processes
        (`generative.distributed`); every rank then fits the same detector.
        """
        self._check_params()
        X = check_input(X)
        train_idx, val_idx, cal_idx = self._split(len(X))
        self.preprocessor_ = self._make_preprocessor(X).fit(X[train_idx])
        data = self._to_tensor(self.preprocessor_.transform(X))
        torch.manual_seed(self.random_state)  # the weight initialisation, for repeatable fits
        self.model_ = VAE(vae_config(self, tuple(data.shape[1:])))
        discrete = self.model_.likelihood.discrete
        check_applicable(self.correction, tuple(data.shape[1:]), discrete, self.compressor)
        callbacks = [*self._callbacks(len(val_idx)), *callbacks]
        trainer = Trainer(
            self.model_,
            trainer_config(self),
            callbacks,
            checkpoint_dir=checkpoint_dir,
            world=world,
        )
        self.history_ = trainer.fit(data[train_idx], data[val_idx] if len(val_idx) else None)
        self.input_shape_ = tuple(X.shape[1:])
        self.n_features_in_ = math.prod(self.input_shape_)
        self.active_units_ = self.model_.active_units(data[train_idx].to(trainer.device))
        self.background_ = None
        if CORRECTIONS[self.correction].needs_background:
            self.background_ = train_background(
                data[train_idx],
                background_settings(self),
                seed=self.random_state,
                device=self.device,
                verbose=self.verbose,
            )
        self.calibration_scores_ = np.sort(self._scores(data[cal_idx]))
        self.offset_ = self._threshold(data, np.concatenate([train_idx, val_idx]))
        return self

    def _check_params(self) -> None:
        """ValueError naming a parameter out of its range (see `anomaly.detector_params`)."""
        check_params(self)

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shuffled disjoint index sets: training, validation (early stopping), calibration."""
        n_cal = max(1, round(self.calibration_fraction * n))
        n_val = round(self.validation_fraction * n)
        if n - n_cal - n_val < 2:
            n_val = 0
        if n - n_cal < 1 or n < 2:
            raise ValueError(
                "VAEDetector needs at least 2 samples (training plus calibration), "
                f"got {n} sample(s)"
            )
        order = np.random.default_rng(self.random_state).permutation(n)
        return order[n_cal + n_val :], order[n_cal : n_cal + n_val], order[:n_cal]

    def _make_preprocessor(self, X: np.ndarray) -> Standardizer | ImageScaler:
        return ImageScaler(mode=self.image_mode) if X.ndim == 4 else Standardizer()

    def _callbacks(self, n_val: int) -> list:
        callbacks: list = [ProgressBar("VAEDetector.fit")] if self.verbose else []
        if n_val and self.patience:
            callbacks.append(EarlyStopping(patience=self.patience))
        return callbacks

    def _threshold(self, data: torch.Tensor, fitted_rows: np.ndarray) -> float:
        """`offset_`: by `target_fpr` on the calibration scores, else the `contamination`
        quantile of the scores of every row given to `fit` (`fitted_rows` plus calibration)."""
        if self.target_fpr is not None:
            return self._calibrated_offset(self.calibration_scores_)
        scores = np.concatenate([self._scores(data[fitted_rows]), self.calibration_scores_])
        return float(np.percentile(scores, 100.0 * self.contamination))

    def _calibrated_offset(self, calibration_scores: np.ndarray) -> float:
        offset = conformal_offset(calibration_scores, self.target_fpr)
        if offset == -np.inf:
            warnings.warn(
                f"{len(calibration_scores)} calibration rows are too few to flag at target_fpr "
                f"{self.target_fpr}: nothing will be flagged; use more data or a larger "
                "calibration_fraction",
                stacklevel=4,  # the caller of fit
            )
        return offset

    # --- scoring ---------------------------------------------------------------------------
    @property
    def threshold_(self) -> float:
        """PyOD's name for `offset_`: rows scoring below it are flagged."""
        check_is_fitted(self, "offset_")
        return self.offset_

    def score_samples(self, X: Any) -> np.ndarray:
        """Estimated log p(x) per row in nats, or the `correction` of it (higher = more
        normal)."""
        return self._scores(self._prepare(X))

    def score_terms(self, X: Any, *, all_terms: bool = True) -> dict[str, np.ndarray]:
        """The terms the score is built from, per row, and `score` (= `score_samples`):
        `log_px` (nats), with a background model `background_log_px` (nats), and for images
        `compressor_bits` (the `compressor`'s code length; with `all_terms=False` only when
        the correction needs it)."""
        return self._terms(self._prepare(X), everything=all_terms)

    def _prepare(self, X: Any) -> torch.Tensor:
        check_is_fitted(self, FITTED_ATTRIBUTES)
        images = len(self.input_shape_) == 3
        X = check_input(
            X,
            n_features=None if images else self.n_features_in_,
            image_shape=self.input_shape_ if images else None,
            estimator=type(self).__name__,
        )
        return self._to_tensor(self.preprocessor_.transform(X))

    def _scores(self, data: torch.Tensor) -> np.ndarray:
        if self.correction == "none":
            return self._log_px(data)
        return self._terms(data, everything=False)["score"]

    def _terms(self, data: torch.Tensor, *, everything: bool) -> dict[str, np.ndarray]:
        return score_terms(
            self.correction,
            self._log_px(data),
            data,
            background=getattr(self, "background_", None),
            compressor=self.compressor,
            everything=everything,
        )

    def decision_function(self, X: Any) -> np.ndarray:
        """score_samples(X) - offset_: negative for flagged rows."""
        return self.score_samples(X) - self.offset_

    def p_values(self, X: Any) -> np.ndarray:
        """Conformal p-values against the calibration scores: small = unlikely under normality
        (a normal row gets p <= a with probability <= a)."""
        return conformal_p_values(self.calibration_scores_, self.score_samples(X))

    @property
    def flag_level(self) -> float:
        """The level of the `alpha` and `fdr` rules: `alpha`, else `target_fpr`, else
        `contamination`."""
        for level in (self.alpha, self.target_fpr):
            if level is not None:
                return level
        return self.contamination

    def flags(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p-values, flags) of `score_samples` values already computed, by `flag_rule`:
        "threshold" (below `offset_`), "alpha" (p <= level) or "fdr" (Benjamini-Hochberg over
        these rows)."""
        check_is_fitted(self, FITTED_ATTRIBUTES)
        p = conformal_p_values(self.calibration_scores_, scores)
        rule = FLAG_RULES[self.flag_rule]
        return p, rule(scores, p, self.offset_, self.flag_level)

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, -1 for rows flagged by `flag_rule` (for "fdr", over the rows of X)."""
        _, flagged = self.flags(self.score_samples(X))
        return np.where(flagged, -1, 1)

    def _log_px(self, data: torch.Tensor) -> np.ndarray:
        scores = estimate_log_px(
            self.model_,
            data,
            method=self.score_method,
            n_samples=self.n_samples,
            seed=self.random_state,
            precision=self.precision,
            progress=self.verbose,
        )
        return scores.double().cpu().numpy()

    @staticmethod
    def _to_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted detector to folder `path` atomically (state_dict + JSON, no pickle;
        see `anomaly.detector_files`)."""
        check_is_fitted(self, FITTED_ATTRIBUTES)
        with atomic_directory(path) as staging:
            write_detector_files(staging, self.model_, self.background_, self._state())
        return Path(path)

    def _state(self) -> dict[str, Any]:
        return {
            "params": self.get_params(),
            "preprocessor": self.preprocessor_.to_dict(),
            "offset": self.offset_,
            "calibration_scores": self.calibration_scores_.tolist(),
            "input_shape": list(self.input_shape_),
            "active_units": self.active_units_,
            "history": self.history_,
        }

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> VAEDetector:
        """Load a detector written by `save`; the networks go to `device`."""
        folder = Path(path)
        state = read_state(folder)
        detector = cls(**upgrade_params(state["params"]))
        detector.model_, detector.background_ = read_networks(folder, detector.correction, device)
        for name, value in fitted_attributes(state).items():
            setattr(detector, name, value)
        return detector
