"""Core scoring metrics in numpy (no extra dependencies): what training reports on the test split.

The evaluation stage (``raylight.evaluate``) builds the full report on top of these.
"""

from __future__ import annotations

import numpy as np


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC via the rank statistic (ties get average ranks)."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    # Runs of tied scores share their average rank (vectorized: a test split can have millions
    # of rows, and a Python loop over them took seconds).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(score)] - 1
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends) / 2.0 + 1.0, ends - starts + 1)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(
    y: np.ndarray, proba: np.ndarray, classes: list[str], positive_label: str | None = None
) -> dict[str, float]:
    """Accuracy, macro F1, log loss, ROC-AUC (binary), and the majority-class baseline."""
    y = y.astype(np.int64)
    pred = proba.argmax(-1)
    k = proba.shape[1]
    f1s = []
    for c in range(k):
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    eps = 1e-12
    logloss = float(-np.log(np.clip(proba[np.arange(len(y)), y], eps, 1.0)).mean())
    counts = np.bincount(y, minlength=k)
    out = {
        "n": len(y),
        "accuracy": float((pred == y).mean()),
        "f1_macro": float(np.mean(f1s)),
        "log_loss": logloss,
        "baseline_accuracy": float(counts.max() / len(y)),
    }
    if k == 2:
        pos = classes.index(positive_label) if positive_label in classes else 1
        out["roc_auc"] = _binary_auc((y == pos).astype(np.int64), proba[:, pos])
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R², and the RMSE of always predicting the mean."""
    y = y.astype(np.float64)
    pred = pred.astype(np.float64)
    err = pred - y
    var = float(((y - y.mean()) ** 2).mean())
    mse = float((err**2).mean())
    return {
        "n": len(y),
        "rmse": mse**0.5,
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - mse / var if var > 0 else float("nan"),
        "baseline_rmse": var**0.5,
    }
