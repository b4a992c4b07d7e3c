"""The preprocessor fits from merged partial stats and transforms without Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raylight.data.contract import check_batch
from raylight.data.preprocess import OTHER, Preprocessor, merge_stats, partial_stats

RULES = {
    "x": {"dtype": "float"},
    "n": {"dtype": "int", "nullable": True},
    "c": {"dtype": "category", "nullable": True},
    "y": {"dtype": "category", "categories": ["no", "yes"], "strict": True},
}


def _checked(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    raw = pd.DataFrame(
        {
            "x": rng.normal(5, 2, n).astype(str),
            "n": [None if i % 10 == 0 else str(i % 7) for i in range(n)],
            "c": rng.choice(["a", "b", "c", None], n),
            "y": rng.choice(["no", "yes"], n),
        }
    )
    return check_batch(raw, RULES, False, list(raw.columns), (1.0, 0.0, 0.0), seed=0)


def _fit(df: pd.DataFrame) -> Preprocessor:
    halves = [df.iloc[:150], df.iloc[150:]]
    parts = [partial_stats(h, ["x", "n"], ["c"], "y", "classification")["stats"][0] for h in halves]
    stats = merge_stats(parts)
    return Preprocessor.fit(stats, RULES, ["x", "n", "c"], "y", "classification", max_categories=8)


def test_fit_from_partials_matches_whole_data_statistics() -> None:
    df = _checked()
    pre = _fit(df)
    x = df["x"].astype(float)
    assert pre.numeric["x"]["mean"] == pytest.approx(x.mean())
    assert pre.numeric["x"]["std"] == pytest.approx(x.std(ddof=0))
    assert pre.categorical["c"][:3] == ["a", "b", "c"] and OTHER in pre.categorical["c"]
    assert pre.classes == ["no", "yes"]


def test_transform_handles_unseen_and_missing_and_round_trips_as_json() -> None:
    pre = _fit(_checked())
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    new = pd.DataFrame({"x": [5.0, 7.0], "n": [np.nan, 3.0], "c": ["zzz", None]})
    feats = again.transform_features(new)
    assert feats.shape == (2, pre.num_features) and feats.dtype == np.float32
    names = pre.output_names
    assert feats[0, names.index(f"c={OTHER}")] == 1.0  # unseen category → other
    assert feats[1, names.index("c=__missing__")] == 1.0
    assert feats[0, names.index("n__missing__")] == 1.0
    assert len(pre.output_source) == len(names)


def test_unknown_label_is_an_error() -> None:
    pre = _fit(_checked())
    with pytest.raises(ValueError, match="unknown label"):
        pre.encode_target(pd.Series(["maybe"]))


def test_from_dict_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError):
        Preprocessor.from_dict({"bogus": 1})


def test_missing_is_the_same_slot_for_none_nan_and_pandas_na() -> None:
    """Training sees Ray Data's pyarrow-backed strings (nulls are pd.NA), serving sees None:
    both must encode a missing category the same way (a training/serving skew otherwise)."""
    pre = _fit(_checked())
    base = {"x": [5.0] * 3, "n": [1.0] * 3}
    as_none = pre.transform_features(pd.DataFrame({**base, "c": ["a", None, np.nan]}))
    arrow = pd.Series(["a", None, None], dtype="string[pyarrow]")
    as_na = pre.transform_features(pd.DataFrame({**base, "c": arrow}))
    np.testing.assert_array_equal(as_none, as_na)
    assert as_na[1, pre.output_names.index("c=__missing__")] == 1.0
