"""VAEDetector: a VAE's log-likelihood estimate, the "vae" family of the detector contract
(`anomaly.base.BaseDetector`: calibration, thresholds, flag rules and persistence)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.base import BASE_FITTED_ATTRIBUTES, BaseDetector, keep_params, register_detector
from anomaly.corrections import CORRECTIONS, check_applicable, score_terms, train_background
from anomaly.density import density_log_px
from anomaly.detector_files import read_networks, write_networks
from anomaly.detector_params import (
    background_settings,
    check_params,
    density_config,
    estimated_outlier_share,
    is_image_shape,
    refuse_renamed,
    refusing_renamed,
    trainer_config,
    trim_fraction,
    upgrade_params,
)
from anomaly.errors import ConfigError
from anomaly.preprocessing import (
    TABULAR_SCALERS,
    ImageScaler,
    QuantileScaler,
    Standardizer,
    preprocessor_from_dict,
)
from generative.distributed import World
from generative.registry import build_model
from generative.training import Callback, EarlyStopping, ProgressBar, Trainer


@register_detector("vae")
class VAEDetector(BaseDetector):
    """Flag rows that a variational autoencoder, trained on normal data, finds unlikely.

    `score_samples(X)` is an estimate of log p(x) in nats (higher = more normal), or its
    `correction` (below), by `score_method="elbo"` (a lower bound), `"iwae"` (the
    importance-sampled bound, tighter with K) or `"prior_mc"` (the seed's Monte Carlo estimate
    from prior samples), each with K = `n_samples`.
    `precision="bf16"` runs the networks under bfloat16 autocast when scoring (about 2.5x faster
    on CPUs with bf16 units; scores move by ~0.05 nats of ~180 on Fashion-MNIST).
    Works for tabular arrays (n, d) and images (n, c, h, w) (or (n, h, w)).

    `fit` holds out `calibration_fraction` of the rows (and `validation_fraction`, whose score
    each epoch logs and early stopping reads) and trains on the rest. Two rules set the
    threshold `offset_`:
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

    Training rows may hold unlabelled anomalies (history nobody cleaned). By default the VAE
    trains with a trimmed ELBO: after `trim_warmup_epochs`, each batch leaves out its
    `trim_fraction` of rows with the highest loss ("contamination": the `contamination` share),
    so probable anomalies get no gradient; with `refit` a second VAE then trains from scratch on
    the training rows whose ELBO under the first is above its `trim_fraction` quantile (the
    first model's scores pick the rows; the second model's are the scores). "estimate" trims
    `contamination` in the first fit and, in the refit, the share of training rows whose loss
    under the first model is beyond Tukey's upper fence (Q3 + 1.5 IQR). `refit_folds` k > 1
    picks the refit's rows by out-of-fold ELBOs: k first models, each trained on all but one
    fold of the training rows, score the fold they left out (about k - 1 times the first
    fit's cost). `trim_fraction=0`
    and `refit=False` train on every row as given. `batch_growth` g > 1 trains epoch e in
    batches of `batch_size` * g^e rows (ALTBI's batch increment: fewer, larger steps later).
    `min_steps` raises the epochs of a small training set until it gets that many steps; None
    is 300 for tables (30 epochs of a 200-row table are only 60 steps) and 0 for images.
    `patience` > 0 stops training when the validation score has not improved for that many
    epochs and keeps the best weights; the default 0 trains every epoch (a small set's few
    validation rows would stop it by chance).
    `teacher_decay` d > 0 ranks each batch's rows for trimming by an exponential moving average
    of the VAE's weights (decay d per step) instead of the VAE itself (EMA-teacher filtering);
    None is 0.99 for a table that trims and 0 (the VAE ranks its own rows) for images and
    `latent_layers` > 1.
    `input_mask` m > 0 zeroes each encoder input feature with probability m at every training
    step while the decoder reconstructs them all (a denoising VAE: features learned from the
    others). `scaling` scales tabular features: "standard", "robust" (median and IQR) or
    "quantile" (each feature to standard-normal scores of its empirical quantiles).
    docs/detector.md shows what each part measured.

    `latent_layers` L > 1 replaces the VAE with a hierarchical VAE of L stochastic layers and
    top-down inference (`generative.hvae`; MLP blocks, the bottom layer sized as the VAE's
    latent, each layer above half the one below), scored by "elbo" or "iwae".

    Architecture options left at "auto"/None are resolved in `fit`: MLP with the Huber
    likelihood (a learned scale per feature) for tabular data; conv net with an 8-bit
    discretised logistic likelihood for images (`image_mode="scale"`), or Bernoulli on
    binarised pixels (`image_mode="binarize"`).

    Fitted attributes: `model_` (the VAE), `preprocessor_`, `offset_`, `calibration_scores_`,
    `threshold_` (alias of `offset_`, PyOD's name), `n_features_in_`, `input_shape_`,
    `active_units_`, `history_`, `background_` (the background model, or None),
    `trim_fraction_` (the share the last fit trimmed).
    """

    _fitted_attributes = (*BASE_FITTED_ATTRIBUTES, "active_units_")

    @refusing_renamed
    def __init__(
        self,
        *,
        score_method: str = "iwae",
        n_samples: int = 100,
        precision: str = "fp32",
        latent_dim: int | None = None,
        latent_layers: int = 1,
        hidden_dims: tuple[int, ...] | None = None,
        backbone: str = "auto",
        likelihood: str = "auto",
        image_mode: str = "scale",
        epochs: int = 30,
        min_steps: int | None = None,
        batch_size: int = 128,
        batch_growth: float = 1.0,
        learning_rate: float = 1e-3,
        kl_warmup_steps: int = 0,
        free_bits: float = 0.0,
        input_mask: float = 0.0,
        scaling: str = "standard",
        trim_fraction: float | str = "contamination",
        trim_warmup_epochs: int = 1,
        teacher_decay: float | None = None,
        refit: bool = True,
        refit_folds: int = 1,
        patience: int = 0,
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
        keep_params(self, locals())  # scikit-learn: each parameter stored as given

    def set_params(self, **params: Any) -> VAEDetector:
        """scikit-learn's `set_params`; an old parameter name gets an error naming the new."""
        refuse_renamed(type(self).__name__, params)
        return super().set_params(**params)

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
        options = {"callbacks": callbacks, "checkpoint_dir": checkpoint_dir, "world": world}
        return self._fit(X, options)

    # --- the density ---------------------------------------------------------------------
    def _fit_density(
        self,
        X: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        *,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | os.PathLike | None = None,
        world: World | None = None,
    ) -> torch.Tensor:
        """Train the VAE (and the background model of a correction that needs one) on the
        training rows; every row of X, preprocessed, as a float32 tensor."""
        self.preprocessor_ = self._make_preprocessor(X).fit(X[train_idx])
        data = self._to_tensor(self.preprocessor_.transform(X))
        options = {"callbacks": callbacks, "checkpoint_dir": checkpoint_dir, "world": world}
        self.trim_fraction_ = trim_fraction(self)
        if self.refit:
            elbo = self._first_pass_elbo(data, train_idx, val_idx, options)
            train_idx = self._kept_for_refit(elbo, train_idx)
            if checkpoint_dir is not None:
                options["checkpoint_dir"] = Path(checkpoint_dir) / "refit"
        device = self._train_vae(data, train_idx, val_idx, **options)
        self.active_units_ = self.model_.active_units(data[train_idx].to(device))
        self.background_ = None
        if CORRECTIONS[self.correction].needs_background:
            self.background_ = train_background(
                data[train_idx],
                background_settings(self),
                seed=self.random_state,
                device=self.device,
                verbose=self.verbose,
            )
        return data

    def _train_vae(
        self,
        data: torch.Tensor,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        *,
        callbacks: Sequence[Callback],
        checkpoint_dir: str | os.PathLike | None,
        world: World | None,
        stage: str = "",
    ) -> torch.device:
        """A fresh `model_` trained on the rows `train_idx` of `data` (early stopping, when
        `patience` > 0, on `val_idx`); sets `history_` and returns the device it trained on.
        `stage` names a training before the final one for the callbacks ("first_pass")."""
        if world is not None and world.size > 1 and self.trim_fraction_ > 0:
            raise ConfigError(
                "trim_fraction ranks the rows of a whole batch, which is split across the "
                f"{world.size} processes: pass trim_fraction=0 to train data-parallel"
            )
        torch.manual_seed(self.random_state)  # the weight initialisation, for repeatable fits
        shape = tuple(data.shape[1:])
        family, config = density_config(self, shape, len(train_idx), trim=self.trim_fraction_)
        self.model_ = build_model(family, config)
        self.model_.likelihood.fit_columns(data[train_idx])
        discrete = self.model_.likelihood.discrete
        check_applicable(self.correction, shape, discrete, self.compressor)
        callbacks = [*self._callbacks(len(val_idx)), *callbacks]
        trainer = Trainer(
            self.model_,
            trainer_config(
                self, len(train_idx), images=is_image_shape(shape), trim=self.trim_fraction_
            ),
            callbacks,
            checkpoint_dir=checkpoint_dir,
            world=world,
            stage=stage,
        )
        self.history_ = trainer.fit(data[train_idx], data[val_idx] if len(val_idx) else None)
        return trainer.device

    def _first_pass_elbo(
        self, data: torch.Tensor, train_idx: np.ndarray, val_idx: np.ndarray, options: dict
    ) -> np.ndarray:
        """Each training row's ELBO under a first model: the model trained on every training
        row (`refit_folds=1`), or, with k folds, the model trained on the other k - 1 folds
        (an out-of-fold score, so a model cannot vouch for an anomaly it memorised)."""
        if self.refit_folds == 1:
            device = self._train_vae(data, train_idx, val_idx, **options, stage="first_pass")
            return self._elbo(data[train_idx], device)
        rng = np.random.default_rng(self.random_state)
        fold_of = rng.permutation(len(train_idx)) % self.refit_folds
        elbo = np.empty(len(train_idx))
        for fold in range(self.refit_folds):
            fold_options = dict(options)
            if options["checkpoint_dir"] is not None:
                fold_options["checkpoint_dir"] = Path(options["checkpoint_dir"]) / f"fold{fold}"
            fold_options["stage"] = f"first_pass_fold{fold}"
            device = self._train_vae(data, train_idx[fold_of != fold], val_idx, **fold_options)
            elbo[fold_of == fold] = self._elbo(data[train_idx[fold_of == fold]], device)
        return elbo

    @torch.no_grad()
    def _elbo(self, rows: torch.Tensor, device: torch.device) -> np.ndarray:
        self.model_.eval()
        elbo = density_log_px(
            self.model_, rows.to(device), method="elbo", n_samples=100, seed=self.random_state
        )
        return elbo.double().cpu().numpy()

    def _kept_for_refit(self, elbo: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
        """The training rows whose first-pass ELBO is above its `trim_fraction_` quantile (the
        rows a refit trains on). With `trim_fraction="estimate"`, first sets `trim_fraction_`
        to the share of rows beyond the loss's upper fence."""
        if self.trim_fraction == "estimate":
            self.trim_fraction_ = estimated_outlier_share(-elbo)
        n_keep = len(train_idx) - math.floor(self.trim_fraction_ * len(train_idx))
        order = np.argsort(-elbo, kind="stable")
        return np.sort(train_idx[order[:n_keep]])

    def _check_params(self) -> None:
        """ValueError naming a parameter out of its range (see `anomaly.detector_params`)."""
        check_params(self)
        super()._check_params()

    def _make_preprocessor(self, X: np.ndarray) -> Standardizer | QuantileScaler | ImageScaler:
        if X.ndim == 4:
            return ImageScaler(mode=self.image_mode)
        return TABULAR_SCALERS[self.scaling]()

    def _callbacks(self, n_val: int) -> list:
        callbacks: list = [ProgressBar("VAEDetector.fit")] if self.verbose else []
        if n_val and self.patience:
            callbacks.append(EarlyStopping(patience=self.patience))
        return callbacks

    def _transform(self, X: np.ndarray) -> torch.Tensor:
        return self._to_tensor(self.preprocessor_.transform(X))

    def _terms(self, data: torch.Tensor, *, everything: bool) -> dict[str, np.ndarray]:
        """`log_px` (nats), with a background model `background_log_px` (nats), for images
        `compressor_bits` (with `everything=False` only when the correction needs it), and
        `score`, the `correction` of log p(x)."""
        return score_terms(
            self.correction,
            self._log_px(data),
            data,
            background=getattr(self, "background_", None),
            compressor=self.compressor,
            everything=everything,
        )

    def _log_px(self, data: torch.Tensor) -> np.ndarray:
        scores = density_log_px(
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

    # --- persistence (the family's part; see `BaseDetector.save` and `load`) ----------------
    def _write_density(self, folder: Path) -> None:
        write_networks(folder, self.model_, self.background_)

    def _density_state(self) -> dict[str, Any]:
        return {
            "preprocessor": self.preprocessor_.to_dict(),
            "active_units": self.active_units_,
            "history": self.history_,
        }

    def _load_density(self, folder: Path, state: dict[str, Any], device: str) -> None:
        self.model_, self.background_ = read_networks(folder, self.correction, device)
        self.preprocessor_ = preprocessor_from_dict(state["preprocessor"])
        self.active_units_ = int(state["active_units"])
        self.history_ = state["history"]

    @classmethod
    def _params_from_state(cls, params: dict[str, Any]) -> dict[str, Any]:
        return upgrade_params(params)
