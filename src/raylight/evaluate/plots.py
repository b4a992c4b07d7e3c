"""The report's plots (matplotlib, Agg), each returned as PNG bytes to embed in the HTML."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _fig(w: float = 4.8, h: float = 3.8) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def confusion(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> bytes:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, pred, labels=list(range(len(classes))))
    fig, ax = _fig(1.2 + 0.8 * len(classes), 1.0 + 0.7 * len(classes))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")  # fmt: skip
    ax.set_title("confusion matrix")
    return _png(fig)


def roc_pr(y: np.ndarray, proba: np.ndarray, classes: list[str], positive: int | None) -> bytes:
    """ROC and precision-recall curves: of the positive class (binary) or one per class."""
    import matplotlib
    from sklearn.metrics import precision_recall_curve, roc_curve

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    which = [positive] if len(classes) == 2 and positive is not None else range(len(classes))
    for c in which:
        yc = (y == c).astype(int)
        if yc.min() == yc.max():
            continue
        fpr, tpr, _ = roc_curve(yc, proba[:, c])
        prec, rec, _ = precision_recall_curve(yc, proba[:, c])
        a.plot(fpr, tpr, label=classes[c])
        b.plot(rec, prec, label=classes[c])
    a.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    a.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    b.set(xlabel="recall", ylabel="precision", title="precision-recall")
    a.legend(fontsize=8)
    return _png(fig)


def calibration(bins: list[dict[str, float]]) -> bytes:
    fig, ax = _fig()
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="perfectly calibrated")
    conf = [b["confidence"] for b in bins]
    acc = [b["accuracy"] for b in bins]
    ax.plot(conf, acc, marker="o", label="model")
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", title="reliability diagram",
           xlim=(0, 1), ylim=(0, 1))  # fmt: skip
    ax.legend(fontsize=8)
    return _png(fig)


def residuals(y: np.ndarray, pred: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    res = pred - y
    a.scatter(pred, res, s=6, alpha=0.5)
    a.axhline(0, c="grey", lw=0.8)
    a.set(xlabel="predicted", ylabel="residual (predicted - true)", title="residuals")
    b.hist(res, bins=40)
    b.set(xlabel="residual", ylabel="rows", title="residual distribution")
    return _png(fig)


def importance(values: dict[str, float], top: int = 20) -> bytes:
    items = list(values.items())[:top][::-1]
    fig, ax = _fig(6, 0.6 + 0.3 * len(items))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="mean |attribution|", title="feature importance (Integrated Gradients)")
    return _png(fig)


def slice_bars(rows: list[dict[str, Any]], metric: str, column: str) -> bytes:
    fig, ax = _fig(6, 0.8 + 0.32 * len(rows))
    labels = [f"{r['value']} (n={r['n']})" for r in rows][::-1]
    vals = [r["metrics"][metric] for r in rows][::-1]
    lo = [r["metrics"][metric] - r["ci"][0] for r in rows][::-1]
    hi = [r["ci"][1] - r["metrics"][metric] for r in rows][::-1]
    err = np.nan_to_num(np.array([lo, hi]), nan=0.0).clip(min=0)
    colors = ["tab:red" if r.get("worst") else "tab:blue" for r in rows][::-1]
    ax.barh(labels, vals, xerr=err, color=colors)
    ax.set(xlabel=metric, title=f"{metric} by {column}")
    return _png(fig)


def pixel_attribution(pixels: np.ndarray, attr: np.ndarray, title: str) -> bytes:
    """An image beside its per-pixel attributions (red: toward the explained class, blue:
    against; one symmetric color scale per image). Arrays are [C, H, W]; channels are summed
    for the map and shown as RGB (3) or gray (1)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(6.0, 3.2))
    img = np.transpose(pixels, (1, 2, 0))
    if img.shape[2] == 3:
        lo, hi = img.min(), img.max()
        left.imshow((img - lo) / (hi - lo or 1.0))
    else:
        left.imshow(img[:, :, 0], cmap="gray")
    heat = attr.sum(axis=0)
    bound = float(np.abs(heat).max()) or 1.0
    shown = right.imshow(heat, cmap="bwr", vmin=-bound, vmax=bound)
    fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    left.set_title("input")
    right.set_title(title)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)
