"""VAEEnsembleDetector: several VAEDetectors, each trained on its own subsample of the training
rows with its own seed, their log p(x) combined per row; the "vae_ensemble" family of the
detector contract (`anomaly.base.BaseDetector`: calibration, thresholds, flag rules and
persistence).

Each member has its own preprocessor, so each member's log p of its scaled rows is first put in
the data's units (adding the scaler's log-Jacobian, -sum(log scale_)); then "mean" averages the
members' log p(x) and "logmeanexp" takes the log of their mean density (the mixture's log p)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import logsumexp

from anomaly.base import BASE_FITTED_ATTRIBUTES, BaseDetector, keep_params, register_detector
from anomaly.detector import VAEDetector
from anomaly.detector_params import refuse_renamed, upgrade_params
from anomaly.errors import ConfigError

COMBINES = ("mean", "logmeanexp")
# VAEDetector parameters the ensemble sets for its members: the seeds are derived from the
# ensemble's random_state, and the split and rule belong to the ensemble's own calibration.
FORBIDDEN_MEMBER_PARAMS = (
    "random_state",
    "validation_fraction",
    "calibration_fraction",
    "contamination",
    "target_fpr",
    "flag_rule",
    "alpha",
)
MEMBER_FOLDER = "member_{}"
# Member seeds are drawn below this bound (any torch / numpy seed accepts them).
SEED_BOUND = 2**31 - 1


@register_detector("vae_ensemble")
class VAEEnsembleDetector(BaseDetector):
    """Flag rows that an ensemble of variational autoencoders finds unlikely.

    `n_estimators` VAEDetectors (parameters `member_params`, e.g. {"epochs": 50}) each train on
    `max_samples` of the training rows (a share in (0, 1] or a count >= 2), drawn without
    replacement per member, with a seed drawn from `random_state`. `score_samples(X)` (= the
    `log_px` term) combines the members' log p(x) in the data's units by `combine`: "mean" (the
    mean of the members' log p(x)) or "logmeanexp" (log of the mean density: the mixture, which
    is >= "mean" per row). The ensemble's own calibration split serves every member.

    `contamination` is also the members' (for `trim_fraction="contamination"`); the other rule
    and split parameters, and `random_state`, are the ensemble's only. Tabular arrays and
    images, as VAEDetector; member corrections other than "none" are refused.

    Fitted attributes: `estimators_` (the fitted members), `offset_`, `calibration_scores_`,
    `threshold_`, `n_features_in_`, `input_shape_`.
    """

    _fitted_attributes = (*BASE_FITTED_ATTRIBUTES, "estimators_")

    def __init__(
        self,
        *,
        n_estimators: int = 5,
        max_samples: float | int = 1.0,
        combine: str = "mean",
        member_params: dict[str, Any] | None = None,
        validation_fraction: float = 0.1,
        calibration_fraction: float = 0.2,
        contamination: float = 0.1,
        target_fpr: float | None = None,
        flag_rule: str = "threshold",
        alpha: float | None = None,
        random_state: int = 0,
        verbose: bool = False,
    ) -> None:
        keep_params(self, locals())  # scikit-learn: each parameter stored as given

    # --- parameters --------------------------------------------------------------------------
    def _check_params(self) -> None:
        """ConfigError naming the first parameter out of its range (members' included)."""
        n = self.n_estimators
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ConfigError(f"n_estimators must be an integer >= 1, got {n!r}")
        check_max_samples(self.max_samples)
        if self.combine not in COMBINES:
            raise ConfigError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        check_member_params(self.member_params)
        super()._check_params()
        try:  # the members' own checks, before any training
            self._make_member(0)._check_params()
        except ValueError as error:
            raise ConfigError(f"member_params: {error}") from error

    def _make_member(self, seed: int) -> VAEDetector:
        """An unfitted member with the seed `seed`."""
        params = dict(self.member_params or {})
        return VAEDetector(**params, contamination=self.contamination, random_state=seed)

    def _n_member_rows(self, n_train: int) -> int:
        """How many training rows each member trains on (ConfigError if more than there are)."""
        if isinstance(self.max_samples, float | np.floating):
            return max(1, round(float(self.max_samples) * n_train))
        if self.max_samples > n_train:
            raise ConfigError(
                f"max_samples={self.max_samples} is more than the {n_train} training rows; "
                "use a smaller count or a share in (0, 1]"
            )
        return int(self.max_samples)

    # --- the density ---------------------------------------------------------------------
    def _fit_density(
        self, X: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, **options: Any
    ) -> np.ndarray:
        """Train each member on its subsample of `train_idx` (early stopping on `val_idx`);
        `options` (VAEDetector.fit's: callbacks, checkpoint_dir, world) go to every member,
        with a checkpoint folder of its own. Returns X (the ensemble's input form)."""
        n_rows = self._n_member_rows(len(train_idx))
        rng = np.random.default_rng(self.random_state)
        self.estimators_ = []
        for i in self._progress(range(self.n_estimators)):
            member = self._make_member(int(rng.integers(SEED_BOUND)))
            rows = np.sort(rng.choice(train_idx, size=n_rows, replace=False))
            member._fit_density(X, rows, val_idx, **member_options(options, i))
            member.input_shape_, member.n_features_in_ = self.input_shape_, self.n_features_in_
            self.estimators_.append(member)
        return self._transform(X)

    def _progress(self, members: Iterable[int]) -> Iterable[int]:
        """`members`, with a progress bar when `verbose`."""
        if not self.verbose:
            return members
        from tqdm.auto import tqdm  # only then: scoring a registered model never shows a bar

        return tqdm(members, desc="VAEEnsembleDetector.fit", total=self.n_estimators)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)

    def _terms(self, rows: np.ndarray, *, everything: bool) -> dict[str, np.ndarray]:
        """`log_px` (nats, data units) combined over the members by `combine`, `score` (the
        same) and, with `everything`, `member_log_px` (n_rows, n_estimators)."""
        members = self.member_log_px(rows)
        if self.combine == "mean":
            combined = members.mean(axis=1)
        else:
            combined = logsumexp(members, axis=1) - math.log(members.shape[1])
        terms = {"log_px": combined, "score": combined}
        if everything:
            terms["member_log_px"] = members
        return terms

    def member_log_px(self, rows: np.ndarray) -> np.ndarray:
        """(n_rows, n_estimators): each member's log p(x) of the checked raw `rows`, in the
        data's units (its log p of its preprocessed rows plus its `log_jacobian`)."""
        columns = [
            member._terms(member._transform(rows), everything=False)["log_px"]
            + log_jacobian(member)
            for member in self.estimators_
        ]
        return np.stack(columns, axis=1)

    # --- persistence (the family's part; see `BaseDetector.save` and `load`) ----------------
    def _write_density(self, folder: Path) -> None:
        for i, member in enumerate(self.estimators_):
            member_folder = folder / MEMBER_FOLDER.format(i)
            member_folder.mkdir()
            member._write_density(member_folder)

    def _density_state(self) -> dict[str, Any]:
        return {
            "members": [
                {"params": member.get_params(), "state": member._density_state()}
                for member in self.estimators_
            ]
        }

    def _load_density(self, folder: Path, state: dict[str, Any], device: str) -> None:
        self.estimators_ = []
        for i, saved in enumerate(state["members"]):
            member = VAEDetector(**VAEDetector._params_from_state(saved["params"]))
            member._load_density(folder / MEMBER_FOLDER.format(i), saved["state"], device)
            member.input_shape_, member.n_features_in_ = self.input_shape_, self.n_features_in_
            self.estimators_.append(member)

    @classmethod
    def _params_from_state(cls, params: dict[str, Any]) -> dict[str, Any]:
        """detector.json's parameters: the member parameters as the constructor had them."""
        if params.get("member_params") is not None:
            params = {**params, "member_params": upgrade_params(params["member_params"])}
        return params


def log_jacobian(member: VAEDetector) -> float:
    """log |d(preprocessed)/d(raw)| of the member's preprocessor: -sum(log scale_) over the
    columns its likelihood models with a density (a two-valued column of the
    "gaussian_bernoulli" likelihood has a probability mass, which rescaling leaves alone);
    0.0 for a preprocessor without `scale_` (images: the same for every member)."""
    scale = getattr(member.preprocessor_, "scale_", None)
    if scale is None:
        return 0.0
    log_scale = np.log(np.asarray(scale, np.float64)).ravel()
    masses = getattr(member.model_.likelihood, "binary_mask", None)
    if masses is not None:
        log_scale = log_scale[~masses.cpu().numpy()]
    return -float(np.sum(log_scale))


def member_options(options: dict[str, Any], i: int) -> dict[str, Any]:
    """Member i's fit options: the ensemble's, with a checkpoint folder of its own."""
    if options.get("checkpoint_dir") is None:
        return options
    return {**options, "checkpoint_dir": Path(options["checkpoint_dir"]) / MEMBER_FOLDER.format(i)}


def check_max_samples(value: Any) -> None:
    """ConfigError unless `value` is a share in (0, 1] or a row count >= 2."""
    if isinstance(value, float | np.floating) and 0.0 < value <= 1.0:
        return
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 2:
        return
    raise ConfigError(
        f"max_samples must be a share of the training rows in (0, 1] or a row count >= 2, "
        f"got {value!r}"
    )


def check_member_params(params: Any) -> None:
    """ConfigError naming a member parameter the ensemble sets itself, or one VAEDetector
    does not take; `correction` other than "none" is refused."""
    if params is None:
        return
    if not isinstance(params, Mapping):
        raise ConfigError(f"member_params must be a dict or None, got {params!r}")
    refuse_renamed("member_params", params)
    forbidden = sorted(set(params) & set(FORBIDDEN_MEMBER_PARAMS))
    if forbidden:
        raise ConfigError(
            f"member_params must not set {forbidden}: the ensemble sets the members' seeds, "
            "split and rule (use VAEEnsembleDetector's own parameters)"
        )
    unknown = sorted(set(params) - set(VAEDetector().get_params()))
    if unknown:
        raise ConfigError(f"member_params has unknown VAEDetector parameter(s) {unknown}")
    if params.get("correction", "none") != "none":
        raise ConfigError(
            f"member_params: correction={params['correction']!r} is not supported by the "
            "ensemble; only 'none'"
        )
    if params.get("scaling") == "quantile":
        raise ConfigError(
            "member_params: scaling='quantile' is not supported by the ensemble: each member's "
            "quantile map has its own per-row Jacobian, so the members' log p(x) cannot be put "
            "in the data's units; use 'standard' or 'robust'"
        )
