"""How well the classifier does on the test split: accuracy, macro-F1 and the worst classes
from a confusion matrix, and what the number means.  Pure: numpy in, dataclasses out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fruits_pipeline.results.report import ClassScore, WeightsFacts


@dataclass
class Scores:
    """Accuracy and macro-F1 (ratios in [0, 1]) on the test split, and the worst classes."""

    accuracy: float
    macro_f1: float
    test_images: int
    worst_classes: list[ClassScore]


def metrics(matrix: np.ndarray, labels: list[str], worst: int = 10) -> Scores:
    """Return accuracy, macro-F1 and the ``worst`` classes of a confusion matrix.

    Macro-F1 averages the F1 of every label that is in the test split or was predicted (as
    scikit-learn's ``f1_score(average="macro")``); a label with no right prediction has F1
    0.  The worst classes are the test labels with the lowest F1 (then the most test
    images), each with the label it was most often taken for.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    right = np.diag(counts)
    total = int(counts.sum())
    recall = np.divide(right, support, out=np.zeros(len(labels)), where=support > 0)
    precision = np.divide(right, predicted, out=np.zeros(len(labels)), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(len(labels)), where=denominator > 0
    )
    present = (support > 0) | (predicted > 0)
    tested = [i for i in range(len(labels)) if support[i] > 0]
    tested.sort(key=lambda i: (f1[i], -support[i], labels[i]))
    rows = []
    for i in tested[:worst]:
        wrong = counts[i].copy()
        wrong[i] = 0
        j = int(np.argmax(wrong))
        rows.append(
            ClassScore(
                label=labels[i],
                support=int(support[i]),
                recall=round(float(recall[i]), 4),
                precision=round(float(precision[i]), 4),
                f1=round(float(f1[i]), 4),
                confused_with=labels[j] if wrong[j] else None,
                confused_count=int(wrong[j]),
            )
        )
    return Scores(
        accuracy=float(right.sum() / total) if total else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        test_images=total,
        worst_classes=rows,
    )


def meaning_note(weights: WeightsFacts) -> str:
    """Return the sentence the report gives about what the accuracy means."""
    if weights.meaningful:
        return (
            f"Features from {weights.source}: this is the accuracy of the classifier "
            "trained on them."
        )
    return (
        f"NOT MEANINGFUL: the features come from seeded random weights "
        f"({weights.source}). This accuracy only shows that the pipeline runs; it says "
        "nothing about how well real features classify fruit. Use --weights imagenet or a "
        "MobileNetV2 weights file for the number that matters."
    )
