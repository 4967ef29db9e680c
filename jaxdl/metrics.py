"""Classification metrics from label/prediction arrays, computed by scikit-learn.

Macro averages weight every class equally, which is what the course reports used and what matters on SVHN,
where the digit 1 is about 19% of the data and 9 about 6%: a micro average would be the accuracy again.
Per-class tables and confusion matrices list every class in `num_classes`, so they keep their shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def summary(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """accuracy and macro precision/recall/F1 over the classes that occur in either array (a class that
    occurs in neither says nothing about the classifier); a class never predicted has precision 0."""
    precision, recall, f1, _ = skm.precision_recall_fscore_support(labels, predictions, average="macro",
                                                                   zero_division=0)
    return {"accuracy": float(skm.accuracy_score(labels, predictions)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}


def per_class(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 10) -> dict[str, dict[str, Any]]:
    """{class: {precision, recall, f1-score, support}} plus the macro and weighted averages."""
    return skm.classification_report(labels, predictions, labels=list(range(num_classes)),
                                     target_names=[str(c) for c in range(num_classes)], output_dict=True,
                                     zero_division=0)


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """(true, predicted) counts, num_classes x num_classes."""
    return skm.confusion_matrix(labels, predictions, labels=list(range(num_classes)))
