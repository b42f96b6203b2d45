"""A detector with a heavy-tailed decoder likelihood (`huber`, `student_t`) on a Student-t
sample with planted far outliers: the outliers rank below the median normal row, and a saved
detector scores exactly as the fitted one."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly import VAEDetector


@pytest.mark.parametrize("likelihood", ["huber", "student_t"])
def test_ranks_planted_outliers_last_and_reloads(likelihood: str, tmp_path) -> None:
    rng = np.random.default_rng(0)
    normal = rng.standard_t(3, size=(600, 4))
    outliers = rng.normal(0.0, 0.3, size=(20, 4)) + np.array([6.0, -6.0, 6.0, -6.0])
    detector = VAEDetector(likelihood=likelihood, epochs=20, random_state=0).fit(normal)
    scores = detector.score_samples(np.vstack([normal[:200], outliers]))
    assert np.all(scores[200:] < np.median(scores[:200]))
    reloaded = VAEDetector.load(detector.save(tmp_path / likelihood))
    np.testing.assert_allclose(reloaded.score_samples(normal[:50]), scores[:50], rtol=1e-6)
