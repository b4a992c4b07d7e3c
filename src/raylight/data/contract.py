"""The data contract: parse every column to its declared type and flag each bad row with a reason.

Pure pandas, batch in → batch out, so Ray Data runs it in ``map_batches`` and serving runs the
very same function on a request. Nothing is dropped here: a bad row keeps its raw values
(as JSON) and gets a human-readable reason; the pipeline routes it to quarantine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import numpy as np
import pandas as pd

ERROR_COL = "__error__"
RAW_COL = "__raw__"
SPLIT_COL = "__split__"
SPLITS = ("train", "val", "test")

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _is_missing(s: pd.Series) -> np.ndarray:
    if s.dtype == object and len(s) and not isinstance(s.iloc[0], str | type(None) | float):
        return np.array([v is None for v in s], dtype=bool)  # arrays/bytes: only None is missing
    missing = s.isna().to_numpy()
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        stripped = s.astype("string").str.strip()
        missing = missing | (stripped == "").fillna(True).to_numpy(dtype=bool)
    return missing


def check_column(
    name: str, values: pd.Series, rule: dict[str, Any], strict_categories: bool
) -> tuple[pd.Series, list[tuple[np.ndarray, str | pd.Series]]]:
    """Parse one column by its rule.

    Returns:
        The parsed column (float64 for numerics, object strings for categories, bool for
        bools; bad values become missing) and a list of ``(bad_mask, reason)`` where reason is
        a string or a per-row Series of strings.
    """
    dtype = rule["dtype"]
    # Images and texts judge their own missing values (bytes are not strings to strip).
    missing = (
        np.zeros(len(values), dtype=bool) if dtype in ("image", "text") else _is_missing(values)
    )
    raw_values = values
    if rule.get("pii"):
        # A reason names the column and the rule, never a personal value.
        values = pd.Series("<pii>", index=values.index, dtype=object).where(values.notna(), None)
    issues: list[tuple[np.ndarray, str | pd.Series]] = []
    if dtype == "image":
        return _check_image(name, raw_values, rule, issues)
    if dtype == "text":
        return _check_text(name, raw_values, rule, issues)
    if not rule.get("nullable", False) and missing.any():
        issues.append((missing, f"{name}: missing value not allowed"))
    present = ~missing
    if dtype in ("int", "float"):
        parsed = pd.to_numeric(raw_values, errors="coerce").astype("float64")
        nan = parsed.isna().to_numpy()
        not_number = present & nan
        if not_number.any():
            issues.append((not_number, f"{name}: not a number: " + values.astype(str)))
        finite = present & ~nan
        if dtype == "int":
            frac = finite & (np.floor(parsed.fillna(0).to_numpy()) != parsed.fillna(0).to_numpy())
            if frac.any():
                issues.append((frac, f"{name}: not an integer: " + values.astype(str)))
        lo, hi = rule.get("min"), rule.get("max")
        arr = parsed.to_numpy()
        if lo is not None:
            low = finite & (arr < lo)
            if low.any():
                issues.append((low, f"{name}: below min {lo:g}: " + values.astype(str)))
        if hi is not None:
            high = finite & (arr > hi)
            if high.any():
                issues.append((high, f"{name}: above max {hi:g}: " + values.astype(str)))
        out = parsed.where(~(not_number), np.nan)
        return out, issues
    if dtype == "bool":
        low = raw_values.astype("string").str.strip().str.lower()
        is_true = low.isin(_TRUE).fillna(False).to_numpy(dtype=bool)
        is_false = low.isin(_FALSE).fillna(False).to_numpy(dtype=bool)
        bad = present & ~is_true & ~is_false
        if bad.any():
            issues.append((bad, f"{name}: not a boolean: " + values.astype(str)))
        out = pd.Series(
            np.where(is_true, 1.0, np.where(is_false, 0.0, np.nan)), index=raw_values.index
        )
        return out, issues
    # category / string: keep as stripped strings, missing → None
    as_str = raw_values.astype("string").str.strip()
    out = as_str.astype(object).where(present, None)
    cats = rule.get("categories")
    if dtype == "category" and cats is not None and rule.get("strict", strict_categories):
        unknown = present & ~as_str.isin(cats).fillna(False).to_numpy(dtype=bool)
        if unknown.any():
            issues.append((unknown, f"{name}: unknown category: " + values.astype(str)))
    return out, issues


def _check_image(
    name: str, values: pd.Series, rule: dict[str, Any], issues: list
) -> tuple[pd.Series, list]:
    """Parse an image column (see ``raylight.data.images``); bad rows hold zeros."""
    from raylight.data.images import image_geometry, parse_image

    c, h, w = image_geometry(rule)
    blank = np.zeros(c * h * w, np.float32).tobytes()
    out = np.empty(len(values), dtype=object)
    reasons = np.empty(len(values), dtype=object)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[i], bad[i], reasons[i] = blank, True, f"{name}: missing value not allowed"
            continue
        try:
            out[i] = parse_image(v, rule).tobytes()
        except ValueError as exc:
            out[i], bad[i], reasons[i] = blank, True, f"{name}: {exc}"
    if bad.any():
        issues.append((bad, pd.Series(reasons, index=values.index)))
    return pd.Series(out, index=values.index), issues


def _check_text(
    name: str, values: pd.Series, rule: dict[str, Any], issues: list
) -> tuple[pd.Series, list]:
    """Text: UTF-8, non-empty after stripping, at most ``max_chars``; bad rows hold ""."""
    from raylight.data.text import check_text

    nullable = bool(rule.get("nullable"))
    out = np.empty(len(values), dtype=object)
    reasons = np.empty(len(values), dtype=object)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or _na(v) or (isinstance(v, str) and not v.strip()):
            # A missing text of a nullable column is an empty one: the tokenizer gives [CLS][SEP].
            out[i] = ""
            if not nullable:
                blank = isinstance(v, str)
                bad[i] = True
                reasons[i] = f"{name}: " + ("empty text" if blank else "missing value not allowed")
            continue
        text, reason = check_text(v, rule.get("max_chars"))
        out[i] = text if text is not None else ""
        if reason is not None:
            bad[i], reasons[i] = True, f"{name}: {reason}"
    if bad.any():
        issues.append((bad, pd.Series(reasons, index=values.index)))
    return pd.Series(out, index=values.index), issues


def check_batch(
    batch: pd.DataFrame,
    columns: dict[str, dict[str, Any]],
    strict_categories: bool,
    split_key: list[str],
    split_fractions: tuple[float, float, float],
    seed: int,
    extra_columns: list[str] | None = None,
    pii: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Apply the contract to one batch and assign each row to a split.

    Args:
        batch: Raw rows.
        columns: Contract rules by column (plain dicts of ColumnContract).
        strict_categories: Unknown categories are bad rows.
        split_key: Columns whose raw values decide the split (the id column, or all columns).
        split_fractions: (train, val, test), summing to 1.
        seed: Split seed.
        extra_columns: Columns passed through untouched (e.g. an id column not in the contract).
        pii: ``DataConfig.pii_spec()``: pii columns are dropped or replaced by salted hashes in
            the output and in ``__raw__``, so no later stage ever holds a personal value.

    Returns:
        Parsed columns plus ``__error__`` (None for good rows), ``__raw__`` (JSON of the raw row,
        bad rows only) and ``__split__`` (0 train, 1 val, 2 test).
    """
    n = len(batch)
    reasons = np.empty(n, dtype=object)
    reasons[:] = None
    out: dict[str, Any] = {}
    for name, rule in columns.items():
        parsed, issues = check_column(name, batch[name], rule, strict_categories)
        out[name] = parsed.to_numpy()
        for mask, reason in issues:
            idx = np.flatnonzero(mask)
            texts = reason.to_numpy()[idx] if isinstance(reason, pd.Series) else [reason] * len(idx)
            for i, text in zip(idx, texts, strict=True):
                reasons[i] = text if reasons[i] is None else f"{reasons[i]}; {text}"
    for name in extra_columns or []:
        out[name] = batch[name].to_numpy()
    bad = pd.notna(reasons)
    raw = np.empty(n, dtype=object)
    raw[:] = None
    treat = pii_treatment(pii)
    if bad.any():
        raw_rows = batch.iloc[np.flatnonzero(bad)]
        for i, (_, row) in zip(np.flatnonzero(bad), raw_rows.iterrows(), strict=True):
            raw[i] = json.dumps(treat({k: _raw_text(v) for k, v in row.items()}))
    if pii:
        for name in pii["columns"]:
            if pii["treatment"] == "drop":
                out.pop(name, None)
            else:
                out[name] = np.array([pii_token(v, pii["salt"]) for v in out[name]], dtype=object)
    out[ERROR_COL] = reasons
    out[RAW_COL] = raw
    out[SPLIT_COL] = assign_split(batch[split_key], split_fractions, seed)
    return pd.DataFrame(out, index=batch.index)


def _raw_text(v: Any) -> Any:
    """A raw value as JSON-safe text for quarantine: bytes as base64, arrays as lists."""
    if isinstance(v, bytes | bytearray | memoryview):
        import base64

        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, np.ndarray | list | tuple):
        return np.asarray(v).tolist()
    return None if _na(v) else str(v)


def pii_token(value: Any, salt: str) -> str | None:
    """A stable pseudonym of a personal value: HMAC-SHA256 keyed with a secret salt (16 hex).

    Keyed, so nobody without the salt can test a guess (a plain hash of an e-mail address is
    reversed by hashing candidate addresses). Missing stays missing.
    """
    if value is None or _na(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 42.0 and "42" are the same person
    msg = str(value).strip().encode()
    return hmac.new(salt.encode(), msg, hashlib.sha256).hexdigest()[:16]


def pii_treatment(pii: dict[str, Any] | None) -> Any:
    """A function applying ``pii`` (a pii spec) to one record dict; identity when None."""
    if not pii:
        return lambda record: record
    cols = set(pii["columns"])
    if pii["treatment"] == "drop":
        return lambda record: {k: v for k, v in record.items() if k not in cols}
    salt = pii["salt"]
    return lambda record: {k: (pii_token(v, salt) if k in cols else v) for k, v in record.items()}


def _na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _bytes_as_hex(col: pd.Series) -> pd.Series:
    # Binary values (images) are not text: hash their hex form, not a UTF-8 decoding. A column
    # holds one type (Arrow), so its first value decides; text columns pay nothing per value.
    if "binary" not in str(col.dtype):
        if col.dtype != object:
            return col
        first = col.dropna().head(1).tolist()
        if not first or not isinstance(first[0], bytes | bytearray | memoryview):
            return col
    return col.astype(object).map(
        lambda v: bytes(v).hex() if isinstance(v, bytes | bytearray | memoryview) else v
    )


def _all_bytes_as_hex(col: pd.Series) -> pd.Series:
    return col.astype(object).map(
        lambda v: bytes(v).hex() if isinstance(v, bytes | bytearray | memoryview) else v
    )


def assign_split(
    keys: pd.DataFrame, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Deterministic split from a keyed hash of each row's raw values.

    The same row lands in the same split whatever the block layout, worker count or file
    order, and identical rows share a split (no train/test leakage through duplicates).
    Needs no shuffle and no materialization, so it streams over data of any size.
    """
    hash_key = f"{seed & 0xFFFFFFFFFFFFFFFF:016x}"[:16]
    keys = keys.apply(_bytes_as_hex)
    try:
        as_text = keys.astype("string").fillna("\x00")
    except UnicodeDecodeError:
        # bytes among strings in an object column (only a hand-built frame mixes them)
        as_text = keys.apply(_all_bytes_as_hex).astype("string").fillna("\x00")
    h = pd.util.hash_pandas_object(as_text, index=False, hash_key=hash_key).to_numpy()
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    train, val, _ = fractions
    return np.where(u < train, 0, np.where(u < train + val, 1, 2)).astype(np.int8)
