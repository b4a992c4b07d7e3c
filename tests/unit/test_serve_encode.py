"""The serving fast path encodes exactly what the bundle's (pandas) data path encodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from helpers.bundles import write_tiny

from raylight import bundle
from raylight.serve import schemas
from raylight.serve.app import encode_validated


def test_fast_encode_equals_the_bundle_encode(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    b = bundle.load(str(tmp_path))
    records = [
        {"x": 1.0, "c": "a"},
        {"x": -3.25, "c": "b"},
        {"x": 0, "c": "zzz"},  # unknown category: the "other" slot (contract not strict)
        {"x": 2.5, "c": "  a "},  # padded: stripped like the data path does
        {"x": 7.0, "c": ""},  # blank: a missing value, not allowed here
    ]
    fast, fast_errors = encode_validated(b, records)
    slow, slow_errors = b.encode(pd.DataFrame.from_records(records, columns=["x", "c"]))
    assert fast.dtype == slow.dtype == np.float32
    good = [i for i, e in enumerate(slow_errors) if pd.isna(e)]
    assert np.array_equal(fast[good], slow[good])
    assert [e is None for e in fast_errors] == [pd.isna(e) for e in slow_errors]
    assert "missing value" in fast_errors[4]


def test_request_model_from_schema_names_fields_and_refuses_bad_values(tmp_path: Path) -> None:
    from pydantic import ValidationError

    write_tiny(tmp_path)
    b = bundle.load(str(tmp_path))
    body = schemas.request_model(schemas.record_model(b.input_schema), max_records=2)
    assert body.model_validate({"x": 1.5, "c": "a"}).root.model_dump(by_alias=True) == {
        "x": 1.5,
        "c": "a",
    }
    for bad, field in [
        ({"x": "1.5", "c": "a"}, "x"),  # strict: no string → number coercion
        ({"x": float("nan"), "c": "a"}, "x"),
        ({"x": 1.0, "c": "zzz"}, "c"),  # unknown categories refused by default
        ({"x": 1.0}, "c"),
        ({"x": 1.0, "c": "a", "y": 2}, "y"),
        ([{"x": 1.0, "c": "a"}] * 3, "body"),  # over max_records
    ]:
        try:
            body.model_validate(bad)
        except ValidationError as exc:
            fields = [p.field for p in schemas.problems_from_validation(exc.errors())]
            assert field in fields, (bad, fields)
        else:
            raise AssertionError(f"accepted {bad}")


def test_slow_calls_move_off_the_event_loop_and_fast_ones_come_back() -> None:
    import asyncio
    import threading
    import time

    from raylight.serve.app import InlineOrThread

    runner = InlineOrThread(limit_s=0.005)

    def where(sleep_s: float) -> int:
        time.sleep(sleep_s)
        return threading.get_ident()

    async def calls(sleep_s: float, n: int) -> list[bool]:
        loop_thread = threading.get_ident()
        return [await runner.run(where, sleep_s) != loop_thread for _ in range(n)]

    fast = asyncio.run(calls(0.0, 5))
    assert not any(fast) and not runner.threaded
    # One slow call (a warm-up) decides nothing; a run of them moves the calls to a thread.
    slow = asyncio.run(calls(0.03, 6))
    assert slow[0] is False and slow[-1] is True and runner.threaded
    back = asyncio.run(calls(0.0, 30))
    assert back[-1] is False and not runner.threaded
