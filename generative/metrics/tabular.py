"""Quality of synthetic tabular rows: per-feature marginal distances and a classifier
two-sample test (C2ST, Lopez-Paz & Oquab 2017).

The marginal distances (Kolmogorov–Smirnov statistic and Wasserstein-1) say which columns are
off; the C2ST AUC says whether the joint distribution is distinguishable at all, including
through correlations the marginals cannot see.

scipy.stats, scikit-learn's classifier and threadpoolctl are imported by the functions that use
them: `generative.registry` imports this package, and a registered model that loads it (its
`requirements.txt`, see `pipelines.tracking`) should not need them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

TableLike = np.ndarray | pd.DataFrame


def _as_table(x: TableLike, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D table, got shape {array.shape}")
    return array


def _checked_pair(real: TableLike, synthetic: TableLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_table(real, "real"), _as_table(synthetic, "synthetic")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"real has {a.shape[1]} columns, synthetic {b.shape[1]}")
    return a, b


def feature_distances(
    real: TableLike, synthetic: TableLike, feature_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per feature: `ks` (two-sample Kolmogorov–Smirnov statistic), `ks_pvalue` (not
    corrected for the number of features) and `wasserstein_1` (in the feature's own units),
    as computed by scipy.stats.ks_2samp and scipy.stats.wasserstein_distance.

    Feature names default to the real table's columns when it is a DataFrame, else f0, f1, ...
    """
    from scipy import stats

    a, b = _checked_pair(real, synthetic)
    if feature_names is None:
        if isinstance(real, pd.DataFrame):
            feature_names = [str(c) for c in real.columns]
        else:
            feature_names = [f"f{j}" for j in range(a.shape[1])]
    if len(feature_names) != a.shape[1]:
        raise ValueError(f"{len(feature_names)} feature names for {a.shape[1]} columns")
    rows = []
    for j in range(a.shape[1]):
        ks = stats.ks_2samp(a[:, j], b[:, j])
        w1 = stats.wasserstein_distance(a[:, j], b[:, j])
        rows.append({"ks": ks.statistic, "ks_pvalue": ks.pvalue, "wasserstein_1": w1})
    return pd.DataFrame(rows, index=pd.Index(list(feature_names), name="feature"))


def c2st_auc(real: TableLike, synthetic: TableLike, *, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated ROC AUC of a classifier telling real rows from synthetic ones.

    0.5 means indistinguishable, 1.0 means perfectly separable. The larger set is subsampled
    (seeded) to the size of the smaller one, so chance is exactly 0.5. The classifier is
    scikit-learn's HistGradientBoostingClassifier: unlike a linear model it also detects
    differences in spread, shape and interactions, it needs no feature scaling, and it is fast
    on tens of thousands of rows. The AUC is the mean over stratified folds, each scored on
    rows the classifier did not see, so an overfitting classifier does not inflate it.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits

    a, b = _checked_pair(real, synthetic)
    size = min(len(a), len(b))
    if size < folds:
        raise ValueError(f"C2ST with {folds} folds needs >= {folds} rows per set, got {size}")
    rng = np.random.default_rng(seed)
    a = a[rng.choice(len(a), size, replace=False)]
    b = b[rng.choice(len(b), size, replace=False)]
    X = np.concatenate([a, b])
    y = np.concatenate([np.ones(size, dtype=int), np.zeros(size, dtype=int)])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    classifier = HistGradientBoostingClassifier(random_state=seed)
    # After torch has trained in the same process its OpenMP threads keep spinning and the
    # classifier's OpenMP threads crawl (measured on 2 cores: 59 s for 320 rows, 0.2 s with
    # one thread), so the classifier runs on one.
    with threadpool_limits(limits=1, user_api="openmp"):
        scores = cross_val_score(classifier, X, y, cv=splitter, scoring="roc_auc")
    return float(scores.mean())
