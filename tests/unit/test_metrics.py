"""Test-split metrics: the rank AUC against scikit-learn, and the driver's score buffers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from raylight.metrics import _binary_auc, classification_metrics
from raylight.train import _Rows


@pytest.mark.parametrize("n,decimals", [(7, 1), (1000, 2), (200_000, 3)])
def test_binary_auc_matches_sklearn_with_ties(n: int, decimals: int) -> None:
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes, whatever the draw
    # Rounded scores: many ties, which must share their average rank.
    score = np.round(rng.random(n) * 0.5 + 0.3 * y, decimals)
    assert _binary_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_binary_auc_one_class_is_nan() -> None:
    assert np.isnan(_binary_auc(np.ones(5, dtype=np.int64), np.linspace(0, 1, 5)))


def test_rows_buffer_grows_past_its_capacity_and_keeps_order() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.random((n, 3)).astype(np.float32) for n in (4096, 50_000, 30_000, 7)]
    labels = [np.arange(len(p)) % 2 for p in parts]
    rows, ys = _Rows(), _Rows()
    for p, y in zip(parts, labels, strict=True):
        rows.add(p)
        ys.add(y)
    np.testing.assert_array_equal(rows.array(), np.concatenate(parts))
    np.testing.assert_array_equal(ys.array(), np.concatenate(labels))
    assert rows.array().dtype == np.float32 and rows.array().shape == (84_103, 3)
    # The buffer is a copy: changing a part afterwards changes nothing kept.
    parts[0][:] = -1
    assert (rows.array()[:4096] >= 0).all()
    proba = np.c_[1 - rows.array()[:, 0], rows.array()[:, 0]]
    m = classification_metrics(ys.array(), proba, ["0", "1"], "1")
    assert m["n"] == 84_103 and 0.0 <= m["roc_auc"] <= 1.0
