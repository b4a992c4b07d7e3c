"""Feature drift of recent inputs against a bundle's training reference.

Numbers: the population stability index (PSI) over the training deciles and the two-sample
Kolmogorov-Smirnov statistic against the reference sample (``bundle.json`` ``reference.numeric
[col].quantiles`` / ``.sample``, written by the data stage). Categories: PSI over the training
proportions, unseen values pooled as ``__other__``. A :class:`DriftWindow` keeps a bounded
rolling window of recent values per feature; computing a report is on demand.

Rules of thumb used for the default thresholds: PSI < 0.1 stable, 0.1 to 0.25 moderate, > 0.25
large; KS above ~0.1 with a few hundred rows is a real shift.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

_EPS = 1e-4  # floor of a bin's share: PSI is infinite for an empty bin otherwise


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two distributions over the same bins (shares)."""
    e = np.clip(np.asarray(expected, dtype=np.float64), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), _EPS, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_drift(ref: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """PSI over the reference deciles and KS against the reference sample."""
    from scipy.stats import ks_2samp

    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    out: dict[str, Any] = {"n": len(v), "psi": None, "ks": None}
    sample = np.asarray(ref.get("sample") or [], dtype=np.float64)
    if len(v) == 0 or len(sample) == 0:
        return out
    edges = np.unique(
        np.asarray(ref.get("quantiles") or np.quantile(sample, np.linspace(0, 1, 11)))
    )
    inner = edges[1:-1]  # open-ended outer bins: values beyond the training range still count
    expected = np.bincount(np.searchsorted(inner, sample, side="right"), minlength=len(inner) + 1)
    actual = np.bincount(np.searchsorted(inner, v, side="right"), minlength=len(inner) + 1)
    out["psi"] = psi(expected / expected.sum(), actual / actual.sum())
    out["ks"] = float(ks_2samp(sample, v).statistic)
    out["mean"], out["ref_mean"] = float(v.mean()), float(ref.get("mean", sample.mean()))
    return out


def categorical_drift(ref: dict[str, float], values: list[Any]) -> dict[str, Any]:
    """PSI over the training categories; values training never saw pooled as __other__."""
    cats = list(ref)
    index = {c: i for i, c in enumerate(cats)}
    other = index.get("__other__")
    if other is None:
        cats.append("__other__")
        other = len(cats) - 1
    counts = np.zeros(len(cats))
    for v in values:
        key = "__missing__" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
        counts[index.get(key, other)] += 1
    n = int(counts.sum())
    out: dict[str, Any] = {"n": n, "psi": None}
    if n == 0:
        return out
    expected = np.array([ref.get(c, 0.0) for c in cats])
    out["psi"] = psi(expected, counts / n)
    out["unseen_share"] = float(counts[other] / n) if "__other__" not in ref else None
    return out


PREDICTION = "(prediction)"  # the predicted class, judged against the training label shares


class DriftWindow:
    """The last ``size`` values of every referenced feature, and drift on demand.

    For a classifier whose reference holds the training split's label shares, the predicted
    class is tracked as one more categorical, ``(prediction)``: a model whose predictions move
    away from the label mix it was trained on is drifting even when no single input is.
    """

    def __init__(
        self,
        reference: dict[str, Any],
        size: int = 1000,
        min_rows: int = 100,
        psi_threshold: float = 0.25,
        ks_threshold: float = 0.15,
    ) -> None:
        self.numeric = dict(reference.get("numeric") or {})
        self.categorical = dict(reference.get("categorical") or {})
        if isinstance(reference.get("target"), dict) and reference["target"]:
            self.categorical[PREDICTION] = dict(reference["target"])
        self.size = size
        self.min_rows = min_rows
        self.psi_threshold = psi_threshold
        self.ks_threshold = ks_threshold
        self.values: dict[str, deque[Any]] = {
            c: deque(maxlen=size) for c in [*self.numeric, *self.categorical]
        }
        self.seen = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Record a batch of input rows (raw values, as the request carried them; the
        predicted class under ``(prediction)``)."""
        for row in rows:
            for c, dq in self.values.items():
                dq.append(row.get(c))
        self.seen += len(rows)

    def snapshot(self) -> dict[str, list[Any]]:
        """A copy of the window's values: compute a report from it off the thread that adds."""
        return {c: list(dq) for c, dq in self.values.items()}

    def report(self, snapshot: dict[str, list[Any]] | None = None) -> dict[str, Any]:
        """Per-feature drift of the window (or of a :meth:`snapshot` of it), and which
        features cross a threshold."""
        values = snapshot if snapshot is not None else self.values
        features: dict[str, Any] = {}
        for c, ref in self.numeric.items():
            vals = np.array([np.nan if v is None else float(v) for v in values[c]])
            features[c] = {"type": "numeric", **numeric_drift(ref, vals)}
        for c, ref in self.categorical.items():
            features[c] = {"type": "categorical", **categorical_drift(ref, list(values[c]))}
        window = max((len(d) for d in values.values()), default=0)
        drifted = []
        if window >= self.min_rows:
            for c, f in features.items():
                big_psi = f.get("psi") is not None and f["psi"] > self.psi_threshold
                big_ks = f.get("ks") is not None and f["ks"] > self.ks_threshold
                f["drifted"] = bool(big_psi or big_ks)
                if f["drifted"]:
                    drifted.append(c)
        return {
            "window": window,
            "seen": self.seen,
            "min_rows": self.min_rows,
            "thresholds": {"psi": self.psi_threshold, "ks": self.ks_threshold},
            "enough_rows": window >= self.min_rows,
            "drifted": drifted,
            "features": features,
        }
