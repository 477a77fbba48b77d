"""How two feature computations are compared: the same 1280 features per image, up to
float error."""

from __future__ import annotations

import numpy as np


def assert_same_features(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Per image cosine >= 0.9999 and max abs difference <= 1e-3 of the largest feature,
    on features of realistic magnitude (not the ~1e-11 of an uncalibrated network)."""
    assert ours.shape == theirs.shape == (len(theirs), 1280)
    assert np.abs(theirs).mean() > 0.01
    cosine = np.sum(ours * theirs, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert cosine.min() >= 0.9999, cosine.min()
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()
