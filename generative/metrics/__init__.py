"""Quality metrics for generative models.

Images: FID, KID and precision/recall in the feature space of a domain FeatureNet (a small CNN
classifier trained on the dataset's training split, standing in for Inception), and the
classification accuracy score (CAS). Tabular rows: per-feature KS / Wasserstein-1 distances and
a classifier two-sample test (C2ST AUC). Torch, numpy, scipy and scikit-learn only.
"""

from generative.metrics.cas import classification_accuracy_score
from generative.metrics.features import (
    FeatureNet,
    FeatureNetConfig,
    accuracy,
    train_feature_net,
)
from generative.metrics.fid import fid, frechet_distance, gaussian_stats, kid
from generative.metrics.precision_recall import precision_recall
from generative.metrics.quality import (
    FEATURE_METRICS,
    QualityOptions,
    feature_quality,
    image_quality,
    register_metric,
)
from generative.metrics.tabular import c2st_auc, feature_distances

__all__ = [
    "FEATURE_METRICS",
    "FeatureNet",
    "FeatureNetConfig",
    "QualityOptions",
    "accuracy",
    "c2st_auc",
    "classification_accuracy_score",
    "feature_distances",
    "feature_quality",
    "fid",
    "frechet_distance",
    "gaussian_stats",
    "image_quality",
    "kid",
    "precision_recall",
    "register_metric",
    "train_feature_net",
]
