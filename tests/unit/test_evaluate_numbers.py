"""Evaluation numbers on small frames: fairness against hand-computed rates, calibration,
slices with intervals, and Integrated Gradients' completeness after folding onto columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raylight.evaluate import explain, fairness, metrics


def test_group_fairness_matches_hand_computed_rates() -> None:
    # group a: 4 rows, group b: 4 rows; positive class = 1
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    pred = np.array([1, 0, 1, 0, 1, 1, 1, 0])
    sex = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    f = fairness.group_fairness(y, pred, {"sex": sex}, positive=1)["sex"]
    a, b = f["groups"]["a"], f["groups"]["b"]
    # selection rate: predicted positive share. a: 2/4, b: 3/4
    assert (a["selection_rate"], b["selection_rate"]) == (0.5, 0.75)
    # TPR: a has positives rows 0,1 → predicted 1 of 2; b has positive row 4 → 1 of 1
    assert (a["tpr"], b["tpr"]) == (0.5, 1.0)
    # FPR: a negatives rows 2,3 → 1 of 2 predicted positive; b negatives 5,6,7 → 2 of 3
    assert a["fpr"] == 0.5 and b["fpr"] == pytest.approx(2 / 3)
    assert (a["count"], b["count"]) == (4, 4)
    assert f["demographic_parity_difference"] == pytest.approx(0.25)
    assert f["demographic_parity_ratio"] == pytest.approx(0.5 / 0.75)
    # equalized odds difference: max(|TPR gap|, |FPR gap|) = max(0.5, 1/6)
    assert f["equalized_odds_difference"] == pytest.approx(0.5)


def test_calibration_error_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 20_000)
    y_cal = (rng.uniform(size=p.size) < p).astype(int)  # true class 1 with probability p
    proba = np.stack([1 - p, p], axis=1)
    ece_cal, bins = metrics.expected_calibration_error(y_cal, proba)
    assert ece_cal < 0.02 and sum(b["count"] for b in bins) == p.size
    y_over = (rng.uniform(size=p.size) < 0.5).astype(int)  # coin flips, confident model
    ece_over, _ = metrics.expected_calibration_error(y_over, proba)
    assert ece_over > 0.2


def test_slices_give_per_value_metrics_intervals_and_the_worst() -> None:
    rng = np.random.default_rng(1)
    n = 600
    group = np.array(["good"] * 300 + ["bad"] * 300)
    y = rng.integers(0, 2, n)
    proba = np.zeros((n, 2))
    right = np.where(group == "good", rng.uniform(size=n) < 0.95, rng.uniform(size=n) < 0.6)
    pred = np.where(right, y, 1 - y)
    proba[np.arange(n), pred] = 0.9
    proba[np.arange(n), 1 - pred] = 0.1
    s = metrics.slices("classification", y, proba, {"group": group}, ["n", "y"], 1, n_boot=100)
    rows = {r["value"]: r for r in s["columns"]["group"]}
    assert rows["good"]["metrics"]["accuracy"] > 0.9 > rows["bad"]["metrics"]["accuracy"]
    lo, hi = rows["bad"]["ci"]
    assert lo < rows["bad"]["metrics"]["accuracy"] < hi and hi - lo < 0.15
    assert s["worst"][0]["value"] == "bad" and rows["bad"].get("worst")


def test_integrated_gradients_folded_onto_columns_keeps_completeness(tmp_path: Path) -> None:
    import torch
    from helpers.bundles import write_tiny

    from raylight import bundle

    write_tiny(tmp_path / "b")
    b = bundle.load(str(tmp_path / "b"))
    import pandas as pd

    raw = pd.DataFrame({"x": [0.5, 3.0, -1.0], "c": ["a", "b", "a"]})
    feats, _ = b.encode(raw)
    res = explain.explain(b, feats, raw.to_dict(orient="records"), sample=3, examples=3, steps=64)
    assert set(res["importance"]) == {"x", "c"}  # encoded c=a, c=b, c=__other__ fold into c
    with torch.no_grad():
        p = torch.softmax(b.model(torch.as_tensor(feats)), -1).numpy()
        p0 = torch.softmax(b.model(torch.zeros(1, feats.shape[1])), -1).numpy()[0]
    for k, ex in enumerate(res["examples"]):
        cls = b.classes.index(ex["explained_class"])
        total = sum(ex["attributions"].values())
        assert total == pytest.approx(p[k, cls] - p0[cls], abs=2e-3)
    assert res["max_convergence_delta"] < 2e-3
