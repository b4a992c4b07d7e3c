"""Drift math and the training reference it compares with: a window that follows the training
distribution stays below the thresholds; a shifted feature crosses them; the data stage's
reference sample is a fair sample of the training column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raylight.data.contract import check_batch
from raylight.data.preprocess import merge_samples, merge_stats, partial_stats
from raylight.serve.drift import DriftWindow, categorical_drift, numeric_drift, psi


def _reference(rng: np.random.Generator) -> dict:
    sample = np.sort(rng.normal(40, 10, 1000))
    return {
        "numeric": {"age": {"mean": 40.0, "std": 10.0, "sample": sample.tolist(),
                            "quantiles": np.quantile(sample, np.linspace(0, 1, 11)).tolist()}},
        "categorical": {"sex": {"Female": 0.33, "Male": 0.67}},
    }  # fmt: skip


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0.0)
    assert psi(np.array([0.5, 0.5]), np.array([0.6, 0.4])) < psi(
        np.array([0.5, 0.5]), np.array([0.9, 0.1])
    )


def test_in_distribution_traffic_stays_low_and_a_shift_crosses_the_thresholds() -> None:
    rng = np.random.default_rng(0)
    ref = _reference(rng)
    same = DriftWindow(ref, size=500, min_rows=100)
    same.add([{"age": float(a), "sex": s} for a, s in zip(
        rng.normal(40, 10, 800), rng.choice(["Female", "Male"], 800, p=[0.33, 0.67]), strict=True)])  # fmt: skip
    rep = same.report()
    assert rep["window"] == 500 and rep["seen"] == 800 and rep["drifted"] == []
    assert rep["features"]["age"]["psi"] < 0.1 and rep["features"]["age"]["ks"] < 0.1
    assert rep["features"]["sex"]["psi"] < 0.05

    shifted = DriftWindow(ref, size=500, min_rows=100)
    shifted.add([{"age": float(a), "sex": s} for a, s in zip(
        rng.normal(55, 10, 500), rng.choice(["Female", "Male"], 500, p=[0.33, 0.67]), strict=True)])  # fmt: skip
    rep = shifted.report()
    assert rep["drifted"] == ["age"]
    assert rep["features"]["age"]["psi"] > 0.25 and rep["features"]["age"]["ks"] > 0.4


def test_unseen_categories_and_small_windows() -> None:
    d = categorical_drift({"a": 0.5, "b": 0.5}, ["c"] * 50 + ["a"] * 50)
    assert d["unseen_share"] == 0.5 and d["psi"] > 0.25
    w = DriftWindow({"numeric": {}, "categorical": {"x": {"a": 1.0}}}, min_rows=100)
    w.add([{"x": "zzz"}] * 10)
    rep = w.report()
    assert not rep["enough_rows"] and rep["drifted"] == []  # too few rows to judge
    assert numeric_drift({"sample": []}, np.array([1.0]))["psi"] is None


def test_reference_sample_is_weighted_by_block_size() -> None:
    # Block A: 9,000 rows of ~0; block B: 1,000 rows of ~100; both sampled at 256 per block.
    blocks = [(9000, [0.0] * 256), (1000, [100.0] * 256)]
    merged = np.array(merge_samples(blocks, size=500))
    assert len(merged) == 500 and (merged == 100.0).mean() == pytest.approx(0.1, abs=0.04)


def test_partial_stats_carry_a_sample_of_each_numeric_train_column() -> None:
    raw = pd.DataFrame({"x": [str(float(i)) for i in range(2000)], "y": ["a", "b"] * 1000})
    rules = {
        "x": {"dtype": "float"},
        "y": {"dtype": "category", "strict": True, "categories": ["a", "b"]},
    }
    checked = check_batch(raw, rules, False, ["x", "y"], (1.0, 0.0, 0.0), seed=0)
    parts = [partial_stats(checked.iloc[i : i + 500], ["x"], [], "y", "classification")["stats"][0]
             for i in range(0, 2000, 500)]  # fmt: skip
    stats = merge_stats(parts)
    sample = np.array(stats["sample"]["x"])
    assert len(sample) == 1000 and sample.min() >= 0 and sample.max() <= 1999
    assert sample.mean() == pytest.approx(999.5, rel=0.05)  # spans the column, not one block


def test_the_predicted_class_is_judged_against_the_training_label_shares() -> None:
    from raylight.serve.drift import PREDICTION

    rng = np.random.default_rng(1)
    ref = {**_reference(rng), "target": {"<=50K": 0.76, ">50K": 0.24}}
    w = DriftWindow(ref, size=400, min_rows=100)
    labels = rng.choice(["<=50K", ">50K"], 400, p=[0.76, 0.24])
    w.add([{"age": 40.0, "sex": "Male", PREDICTION: str(y)} for y in labels])
    assert w.report()["features"][PREDICTION]["psi"] < 0.05
    w.add([{"age": 40.0, "sex": "Male", PREDICTION: ">50K"} for _ in range(400)])
    rep = w.report()
    assert PREDICTION in rep["drifted"] and rep["features"][PREDICTION]["psi"] > 1.0
    assert PREDICTION not in DriftWindow(_reference(rng)).report()["features"]  # no target ref


def test_monitor_cli_reports_an_unreachable_endpoint_clearly() -> None:
    import socket

    from typer.testing import CliRunner

    from raylight.cli import app

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(app, ["monitor", "--url", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 1
    assert "cannot reach" in res.output
    res = CliRunner().invoke(app, ["monitor", "--api-key-env", "RAYLIGHT_NO_SUCH_VAR"])
    assert res.exit_code == 2 and "RAYLIGHT_NO_SUCH_VAR" in res.output
