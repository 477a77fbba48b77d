"""Pure: the scaler, the PCA and the logistic regression folded into one dense layer.

From the 1280 features to the classifier's logits every step is affine:

- the scaler: ``z = (x - shift) * scale`` (Spark's ``StandardScalerModel``: ``shift`` is the
  mean with ``withMean``, ``scale`` is ``1 / std`` with ``withStd``, 0 where std is 0);
- the PCA: ``p = components.T @ z`` (Spark's ``PCAModel`` projects without centering: the
  scaler already did);
- the logistic regression: ``logits = coefficients @ p + intercepts``.

So ``logits = x @ weight + bias`` with ``weight = (scale * components) @ coefficients.T`` and
``bias = intercepts - (shift * scale) @ components @ coefficients.T``, exactly (computed in
float64, rounded once to float32).  An on-device model is then MobileNetV2, this one dense
layer and a softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearChain:
    """The affine steps from features to logits, as numpy arrays (d features, k components,
    n labels)."""

    shift: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    components: np.ndarray  # (d, k)
    coefficients: np.ndarray  # (n, k)
    intercepts: np.ndarray  # (n,)


@dataclass(frozen=True)
class DenseHead:
    """One dense layer, ``logits = features @ weight + bias``, float32."""

    weight: np.ndarray  # (d, n)
    bias: np.ndarray  # (n,)

    @property
    def labels(self) -> int:
        return int(self.bias.shape[0])


def scaler_arrays(
    mean: np.ndarray, std: np.ndarray, with_mean: bool, with_std: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(shift, scale)`` of a Spark ``StandardScalerModel`` from its mean, std and
    settings: Spark multiplies by ``1 / std``, and by 0 where std is 0."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    shift = mean if with_mean else np.zeros_like(mean)
    if not with_std:
        return shift, np.ones_like(std)
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0)
    return shift, scale


def fold(chain: LinearChain) -> DenseHead:
    """Return the dense layer that computes ``chain``'s logits from the features.

    Raises ValueError when the arrays' shapes do not chain.
    """
    shift = np.asarray(chain.shift, dtype=np.float64)
    scale = np.asarray(chain.scale, dtype=np.float64)
    components = np.asarray(chain.components, dtype=np.float64)
    coefficients = np.asarray(chain.coefficients, dtype=np.float64)
    intercepts = np.asarray(chain.intercepts, dtype=np.float64)
    d, k = components.shape
    n = intercepts.shape[0]
    if shift.shape != (d,) or scale.shape != (d,) or coefficients.shape != (n, k):
        raise ValueError(
            f"the steps do not chain: shift {shift.shape}, scale {scale.shape}, components "
            f"{components.shape}, coefficients {coefficients.shape}, intercepts {intercepts.shape}"
        )
    projection = (scale[:, None] * components) @ coefficients.T  # (d, n)
    bias = intercepts - (shift * scale) @ components @ coefficients.T
    return DenseHead(weight=projection.astype(np.float32), bias=bias.astype(np.float32))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Return the softmax of ``logits`` along the last axis (shifted by the maximum, so it
    neither overflows nor underflows to all zeros)."""
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
