"""The contract flags every kind of bad row with a reason, and splits deterministically."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from raylight.data.contract import ERROR_COL, RAW_COL, SPLIT_COL, assign_split, check_batch

RULES = {
    "age": {"dtype": "int", "min": 0, "max": 120},
    "score": {"dtype": "float", "nullable": True},
    "color": {"dtype": "category", "categories": ["red", "blue"]},
    "flag": {"dtype": "bool"},
}


def _check(df: pd.DataFrame, strict: bool = True) -> pd.DataFrame:
    return check_batch(df, RULES, strict, list(df.columns), (0.7, 0.15, 0.15), seed=1)


def test_each_kind_of_bad_row_gets_a_reason_and_keeps_its_raw_values() -> None:
    df = pd.DataFrame(
        {
            "age": ["30", None, "abc", "3.5", "200", "40"],
            "score": ["1.5", "2", "", "x", "0", None],
            "color": ["red", "blue", "red", "red", "green", "blue"],
            "flag": ["true", "0", "yes", "no", "maybe", "1"],
        }
    )
    out = _check(df)
    errors = out[ERROR_COL].tolist()
    assert pd.isna(errors[0]) and pd.isna(errors[5])  # good rows (score may be null)
    assert "age: missing value not allowed" in errors[1]
    assert "age: not a number: abc" in errors[2]
    assert "age: not an integer: 3.5" in errors[3] and "score: not a number: x" in errors[3]
    assert "age: above max 120: 200" in errors[4]
    assert (
        "color: unknown category: green" in errors[4] and "flag: not a boolean: maybe" in errors[4]
    )
    raw = json.loads(out[RAW_COL][4])
    assert raw == {"age": "200", "score": "0", "color": "green", "flag": "maybe"}
    assert pd.isna(out[RAW_COL][0])
    # parsed values are typed
    assert out["age"][0] == 30.0 and out["flag"][1] == 0.0 and np.isnan(out["score"][5])


def test_unknown_category_is_allowed_when_not_strict() -> None:
    df = pd.DataFrame({"age": ["5"], "score": ["1"], "color": ["green"], "flag": ["t"]})
    assert pd.isna(_check(df, strict=False)[ERROR_COL][0])


def test_split_is_deterministic_and_independent_of_batching() -> None:
    keys = pd.DataFrame({"id": [str(i) for i in range(5000)]})
    whole = assign_split(keys, (0.7, 0.15, 0.15), seed=7)
    parts = np.concatenate(
        [
            assign_split(keys.iloc[i : i + 333], (0.7, 0.15, 0.15), seed=7)
            for i in range(0, 5000, 333)
        ]
    )
    assert (whole == parts).all()
    shares = np.bincount(whole, minlength=3) / len(whole)
    assert abs(shares[0] - 0.7) < 0.03 and abs(shares[1] - 0.15) < 0.03
    other_seed = assign_split(keys, (0.7, 0.15, 0.15), seed=8)
    assert (whole != other_seed).mean() > 0.2


def test_split_column_present() -> None:
    df = pd.DataFrame({"age": ["5"], "score": ["1"], "color": ["red"], "flag": ["t"]})
    assert _check(df)[SPLIT_COL].tolist()[0] in (0, 1, 2)


def test_split_does_not_depend_on_the_order_of_contract_columns() -> None:
    import pandas as pd

    from raylight.config import load_train_config
    from raylight.data.contract import assign_split
    from raylight.data.pipeline import split_key

    cfg = load_train_config(["data=penguins"])
    cols = cfg.data.contract.columns
    reordered = cfg.data.model_copy(
        update={
            "contract": cfg.data.contract.model_copy(
                update={"columns": dict(reversed(list(cols.items())))}
            )
        }
    )
    assert split_key(cfg.data) == split_key(reordered)
    rows = pd.DataFrame({c: [f"{c}{i}" for i in range(50)] for c in cols})
    a = assign_split(rows[split_key(cfg.data)], (0.6, 0.2, 0.2), 42)
    b = assign_split(rows[split_key(reordered)], (0.6, 0.2, 0.2), 42)
    assert (a == b).all()


PII_RULES = {
    "email": {"dtype": "string", "pii": True},
    "ssn": {"dtype": "int", "pii": True},
    "age": {"dtype": "int", "min": 0, "max": 120},
}
PII_ROWS = pd.DataFrame(
    {
        "email": ["ann@example.com", "bob@example.com", None],
        "ssn": ["123456789", "not-a-number-987", "5"],
        "age": ["30", "200", "41"],
    }
)


def _check_pii(treatment: str) -> pd.DataFrame:
    spec = {"columns": ["email", "ssn"], "treatment": treatment, "salt": "s3cret"}
    return check_batch(PII_ROWS, PII_RULES, True, ["age"], (0.7, 0.15, 0.15), seed=1, pii=spec)


def test_pii_values_never_leave_the_contract_check_raw() -> None:
    from raylight.data.contract import pii_token

    for treatment in ("drop", "hash"):
        out = _check_pii(treatment)
        text = out.astype(str).to_csv()
        for value in ("ann@example.com", "bob@example.com", "123456789", "987"):
            assert value not in text, (treatment, value)
        reasons = out[ERROR_COL].tolist()
        assert "ssn: not a number: <pii>" in reasons[1] and "age: above max 120: 200" in reasons[1]
        assert "ssn: missing value not allowed" not in str(reasons)
        assert "email: missing value not allowed" in reasons[2]
        raw = json.loads(out[RAW_COL][1])
        if treatment == "drop":
            assert "email" not in out and "email" not in raw and "ssn" not in raw
        else:
            token = pii_token("ann@example.com", "s3cret")
            assert out["email"][0] == token and len(token) == 16
            assert raw["email"] == pii_token("bob@example.com", "s3cret")
            assert out["ssn"][0] == pii_token(123456789, "s3cret")  # parsed 1.23e8 == "123456789"
            assert pii_token("ann@example.com", "other salt") != token  # keyed
            assert pd.isna(out["email"][2])  # missing stays missing
