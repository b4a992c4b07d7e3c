"""Group fairness of a classifier with fairlearn: per-group rates and the gaps between groups.

For each sensitive attribute: per group the row count, selection rate (share predicted
positive), true and false positive rates and accuracy (``fairlearn.metrics.MetricFrame``), and
the summary gaps ``demographic_parity_difference`` / ``_ratio`` and
``equalized_odds_difference`` (fairlearn's own functions). Multi-class models are judged one
class against the rest, the class being the configured positive label.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def group_fairness(
    y: np.ndarray, pred: np.ndarray, groups: dict[str, np.ndarray], positive: int
) -> dict[str, Any]:
    """Fairness of hard predictions ``pred`` against labels ``y`` for each sensitive column.

    Args:
        y: Encoded labels.
        pred: Encoded predicted classes.
        groups: Sensitive column → each row's group (raw values; missing becomes "(missing)").
        positive: Index of the positive class.

    Returns:
        ``{column: {"groups": {group: {...rates}}, "demographic_parity_difference": ...,
        "demographic_parity_ratio": ..., "equalized_odds_difference": ...}}``
    """
    import pandas as pd
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    yt = (np.asarray(y) == positive).astype(int)
    yp = (np.asarray(pred) == positive).astype(int)
    out: dict[str, Any] = {}
    for col, values in groups.items():
        sf = (
            pd.Series(values, name=col)
            .astype("object")
            .where(pd.notna(values), "(missing)")
            .astype(str)
        )
        frame = MetricFrame(
            metrics={
                "count": lambda yt_, yp_: len(yt_),
                "selection_rate": selection_rate,
                "tpr": true_positive_rate,
                "fpr": false_positive_rate,
                "accuracy": accuracy_score,
            },
            y_true=yt,
            y_pred=yp,
            sensitive_features=sf,
        )
        by_group = frame.by_group.to_dict(orient="index")
        out[col] = {
            "groups": {str(g): {k: float(v) for k, v in m.items()} for g, m in by_group.items()},
            "demographic_parity_difference": float(demographic_parity_difference(yt, yp, sensitive_features=sf)),
            "demographic_parity_ratio": float(demographic_parity_ratio(yt, yp, sensitive_features=sf)),
            "equalized_odds_difference": float(equalized_odds_difference(yt, yp, sensitive_features=sf)),
        }  # fmt: skip
    return out
