"""Metrics of a model on labelled rows, overall and per slice, from scikit-learn.

Classification: accuracy, precision/recall/F1 (macro and per class), ROC-AUC and PR-AUC
(binary: of the positive class; multi-class: one-vs-rest macro), log loss and expected
calibration error (equal-width confidence bins). Regression: RMSE, MAE, R².
Slices: the same metrics for each value of a column, with a bootstrap confidence interval of
the headline metric and the rows behind it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

HEADLINE = {"classification": "accuracy", "regression": "rmse"}


def expected_calibration_error(
    y: np.ndarray, proba: np.ndarray, bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """ECE of the top-class confidence, and the reliability diagram's bins.

    Returns:
        (ECE, bins with ``lo``, ``hi``, ``count``, ``confidence`` and ``accuracy``).
    """
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        if n == 0:
            continue
        c, a = float(conf[m].mean()), float(correct[m].mean())
        ece += n / len(y) * abs(a - c)
        table.append(
            {"lo": edges[b], "hi": edges[b + 1], "count": n, "confidence": c, "accuracy": a}
        )
    return float(ece), table


def classification(
    y: np.ndarray, proba: np.ndarray, classes: list[str], positive: int | None
) -> dict[str, Any]:
    """Every classification metric; ``positive`` is the positive class index (binary)."""
    from sklearn import metrics as skm

    y = y.astype(np.int64)
    # float64: scikit-learn clips probabilities at the dtype's eps (1e-7 for float32), which
    # would make log loss disagree with training's own (clipped at 1e-12).
    proba = proba.astype(np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 ± 1e-7
    k = len(classes)
    pred = proba.argmax(axis=1)
    labels = list(range(k))
    p, r, f, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "n": len(y),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
        "log_loss": float(skm.log_loss(y, np.clip(proba, 1e-12, 1.0), labels=labels)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "baseline_accuracy": float(np.bincount(y, minlength=k).max() / len(y)),
    }  # fmt: skip
    present = np.unique(y)
    if k == 2 and positive is not None and len(present) == 2:
        yp = (y == positive).astype(np.int64)
        out["roc_auc"] = float(skm.roc_auc_score(yp, proba[:, positive]))
        out["pr_auc"] = float(skm.average_precision_score(yp, proba[:, positive]))
    elif k > 2 and len(present) == k:
        onehot = np.eye(k)[y]
        out["roc_auc"] = float(skm.roc_auc_score(onehot, proba, average="macro", multi_class="ovr"))
        out["pr_auc"] = float(skm.average_precision_score(onehot, proba, average="macro"))
    out["ece"], _ = expected_calibration_error(y, proba)
    return out


def regression(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn import metrics as skm

    y = y.astype(np.float64)
    pred = pred.astype(np.float64)
    return {
        "n": len(y),
        "rmse": float(math.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else float("nan"),
        "baseline_rmse": float(np.std(y)),
    }


def headline(task: str, y: np.ndarray, out: np.ndarray) -> float:
    """The one number a slice is judged by: accuracy, or RMSE for regression."""
    if task == "classification":
        return float((out.argmax(axis=1) == y).mean())
    return float(np.sqrt(np.mean((out.astype(np.float64) - y.astype(np.float64)) ** 2)))


def bootstrap_ci(
    task: str, y: np.ndarray, out: np.ndarray, n_boot: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the headline metric (resampling rows)."""
    if len(y) < 2 or n_boot <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        stats[i] = headline(task, y[idx], out[idx])
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))


def slices(
    task: str,
    y: np.ndarray,
    out: np.ndarray,
    columns: dict[str, np.ndarray],
    classes: list[str],
    positive: int | None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    min_rows: int = 1,
    worst_k: int = 3,
) -> dict[str, Any]:
    """Metrics per value of each slice column, with bootstrap CIs; the worst slices flagged.

    Args:
        task: "classification" or "regression".
        y: Encoded labels (or targets).
        out: Class probabilities (classification) or predictions (regression).
        columns: Slice column name → its raw values per row (numbers are cut into quartiles).
        classes, positive: As for :func:`classification`.
        n_boot, level, seed: Bootstrap resamples, interval level, seed.
        min_rows: Slices with fewer rows are listed but never called "worst".
        worst_k: How many of the worst slices (by the headline metric) to flag.
    """
    key = HEADLINE[task]
    higher_is_better = task == "classification"
    result: dict[str, Any] = {"metric": key, "level": level, "columns": {}, "worst": []}
    rows: list[dict[str, Any]] = []
    for col, values in columns.items():
        groups = _groups(values)
        col_rows = []
        for label, mask in groups:
            n = int(mask.sum())
            if n == 0:
                continue
            ys, os_ = y[mask], out[mask]
            if task == "classification":
                m = classification(ys, os_, classes, positive)
                m.pop("per_class", None)
            else:
                m = regression(ys, os_)
            lo, hi = bootstrap_ci(task, ys, os_, n_boot, level, seed)
            row = {"column": col, "value": label, "n": n, "metrics": m, "ci": [lo, hi]}
            col_rows.append(row)
            rows.append(row)
        result["columns"][col] = col_rows
    eligible = [r for r in rows if r["n"] >= min_rows]
    eligible.sort(key=lambda r: r["metrics"][key], reverse=not higher_is_better)
    worst = eligible[:worst_k]
    for r in worst:
        r["worst"] = True
    result["worst"] = [
        {"column": r["column"], "value": r["value"], key: r["metrics"][key], "n": r["n"]}
        for r in worst
    ]
    return result


def _groups(values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """One boolean mask per value; numeric columns cut into quartile bins; missing kept apart."""
    import pandas as pd

    s = pd.Series(values)
    missing = s.isna().to_numpy()
    out: list[tuple[str, np.ndarray]] = []
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    if numeric and s.nunique(dropna=True) > 10:
        bins = pd.qcut(s, q=4, duplicates="drop")
        for interval in bins.cat.categories:
            out.append((str(interval), (bins == interval).to_numpy()))
    else:
        for v in sorted(s.dropna().unique(), key=str):
            out.append((str(v), (s == v).to_numpy()))
    if missing.any():
        out.append(("(missing)", missing))
    return out
