"""scripts/make_scale_data.py: the schema conf/data/scale.yaml expects, the same bytes for a
seed, and exactly the documented contract-breaking rows (checked by the real contract)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq
import pytest

from raylight.config import load_train_config
from raylight.data.contract import ERROR_COL, check_batch
from raylight.data.pipeline import contract_rules, split_key

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_scale_data.py"
ROWS = 10_000


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_scale_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schema_determinism_and_layout(gen: ModuleType, tmp_path: Path) -> None:
    a = gen.write(tmp_path / "a", ROWS, seed=3)
    b = gen.write(tmp_path / "b", ROWS, seed=3)
    c = gen.write(tmp_path / "c", ROWS, seed=4)
    ta, tb, tc = (pq.read_table(tmp_path / d) for d in "abc")
    assert ta.num_rows == a["rows"] == ROWS
    assert ta.column_names == ["id", *gen.NUMERIC, *gen.CATEGORICAL, "label"]
    assert ta.equals(tb) and a["arrow_bytes"] == b["arrow_bytes"]
    assert not ta.equals(tc) and c["seed"] == 4
    assert gen.read_meta(tmp_path / "a") == a
    # A smaller set is a prefix of a larger one, whatever the file layout.
    big = gen.write(tmp_path / "big", 3 * gen.GROUP_ROWS + 7, seed=3, rows_per_file=50_000)
    assert big["files"] == 4
    head = pq.read_table(tmp_path / "big").slice(0, ROWS)
    assert head.equals(ta)


def test_bad_rows_are_the_documented_ones(gen: ModuleType, tmp_path: Path) -> None:
    gen.write(tmp_path / "s", ROWS, seed=0)
    cfg = load_train_config(["data=scale", f"data.path={tmp_path / 's'}", "tracking=none"])
    df = pq.read_table(tmp_path / "s").to_pandas()
    out = check_batch(
        df,
        contract_rules(cfg.data),
        cfg.data.contract.strict_categories,
        split_key(cfg.data),
        (0.7, 0.15, 0.15),
        seed=0,
        extra_columns=["id"],
    )
    reasons = out[ERROR_COL].dropna()
    by_column = reasons.str.split(":").str[0].value_counts().to_dict()
    assert by_column == gen.expected_bad(ROWS) == {"x0": 40, "age": 30, "visits": 20, "label": 10}
    assert len(reasons) / ROWS == gen.BAD_FRACTION == 0.01
    assert out.loc[reasons.index, "id"].mod(1000).lt(10).all()  # rows i with i % 1000 < 10
    # device's missing values are allowed; the label is learnable, not constant.
    assert df["device"].isna().mean() == pytest.approx(gen.DEVICE_MISSING, abs=0.01)
    assert 0.4 < (df["label"] == 1).mean() < 0.6
    # A partial last period counts only the phases it reaches.
    assert gen.expected_bad(1_005) == {"x0": 8, "age": 4, "visits": 2, "label": 1}
    assert gen.expected_bad(1_234) == {"x0": 8, "age": 6, "visits": 4, "label": 2}
