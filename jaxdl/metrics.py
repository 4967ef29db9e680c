"""Classification metrics from label/prediction arrays, computed by scikit-learn.

Macro averages weight every class equally, which is what the course reports used and what matters on SVHN,
where the digit 1 is about 19% of the data and 9 about 6%: a micro average would be the accuracy again.
Per-class tables and confusion matrices list every class of the data set, so they keep their shape: pass
the data's class names (`classes=ds.classes`) or their number; without either, the classes are
0..the largest label or prediction seen, which drops a top class that neither array contains.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def class_names(labels: np.ndarray, predictions: np.ndarray, num_classes: int | None = None,
                classes: Sequence[str] | None = None) -> list[str]:
    """The name of every class: `classes` (a Dataset's), else "0".."num_classes-1", else "0".."largest seen"."""
    if classes is not None:
        if num_classes is not None and num_classes != len(classes):
            raise ValueError(f"num_classes={num_classes} but {len(classes)} class names were given")
        names = [str(c) for c in classes]
    elif num_classes is not None:
        names = [str(c) for c in range(num_classes)]
    else:
        seen = np.concatenate([np.ravel(labels), np.ravel(predictions)])
        names = [str(c) for c in range(int(seen.max()) + 1 if seen.size else 0)]
    if not names:
        raise ValueError("no classes: give classes= (the data's class names) or num_classes=")
    return names


def per_class(labels: np.ndarray, predictions: np.ndarray, num_classes: int | None = None, *,
              classes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """{class name: {precision, recall, f1-score, support}} plus the macro and weighted averages, for every class
    of `classes` (e.g. `ds.classes`) or of range(num_classes) (see class_names for the default)."""
    names = class_names(labels, predictions, num_classes, classes)
    return skm.classification_report(labels, predictions, labels=list(range(len(names))), target_names=names,
                                     output_dict=True, zero_division=0)


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int | None = None, *,
              classes: Sequence[str] | None = None) -> np.ndarray:
    """(true, predicted) counts, one row and column per class (see class_names)."""
    names = class_names(labels, predictions, num_classes, classes)
    return skm.confusion_matrix(labels, predictions, labels=list(range(len(names))))
