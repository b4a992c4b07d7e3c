"""A preprocessor whose whole state is plain JSON, so it travels inside the model bundle.

Fitting is one streaming pass: every block returns small partial statistics (counts, sums,
sums of squares, category counts) that are merged on the driver. That is one Ray Data pass in
total, not one shuffle-aggregate per statistic. ``transform`` is pure numpy/pandas and is the
same function in training (Ray Data ``map_batches``), batch prediction and serving.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raylight.data.contract import ERROR_COL, SPLIT_COL

OTHER = "__other__"
# Reference sample of each numeric training column (drift checks): per block, then merged.
SAMPLE_PER_BLOCK = 256
SAMPLE_SIZE = 1000
MISSING = "__missing__"


# ----------------------------------------------------------------------------- partial stats


def partial_stats(
    batch: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    target: str,
    task: str,
    images: list[str] | None = None,
) -> pd.DataFrame:
    """Per-block statistics: fit stats over good *train* rows, counts over all rows.

    Image columns contribute pixel count, sum and sum of squares (one mean/std per column: the
    usual normalisation of a small CNN's input), under ``num`` like a numeric column.
    """
    good = batch[ERROR_COL].isna().to_numpy()
    split = batch[SPLIT_COL].to_numpy()
    train = batch[good & (split == 0)]
    bad_cols: Counter[str] = Counter()
    for reason in batch.loc[~good, ERROR_COL]:
        for part in str(reason).split("; "):
            bad_cols[part.split(":", 1)[0]] += 1
    stats: dict[str, Any] = {
        "rows": len(batch),
        "bad": int((~good).sum()),
        "bad_by_column": dict(bad_cols),
        "split_rows": [int(((split == s) & good).sum()) for s in range(3)],
        "num": {},
        "cat": {},
    }
    for c in numeric:
        v = train[c].to_numpy(dtype=np.float64)
        ok = ~np.isnan(v)
        stats["num"][c] = [
            int(ok.sum()),
            float(v[ok].sum()),
            float((v[ok] ** 2).sum()),
            int((~ok).sum()),
        ]
    for c in images or []:
        from raylight.data.images import matrix

        px = matrix(train[c]).astype(np.float64)
        stats["num"][c] = [int(px.size), float(px.sum()), float((px**2).sum()), 0]
    # A systematic sample of each numeric train column (evenly spaced rows, no RNG: the same
    # blocks give the same sample), weighted by the block's size when merged: the reference
    # distribution drift checks compare serving traffic with.
    stats["sample"] = {}
    for c in numeric:
        v = train[c].to_numpy(dtype=np.float64)
        v = v[~np.isnan(v)]
        if len(v) > SAMPLE_PER_BLOCK:
            v = v[np.linspace(0, len(v) - 1, SAMPLE_PER_BLOCK).astype(np.int64)]
        stats["sample"][c] = [int(ok_count(train[c])), [float(x) for x in v]]
    for c in categorical:
        stats["cat"][c] = {
            str(k): int(n) for k, n in train[c].fillna(MISSING).value_counts().items()
        }
    if task == "classification":
        stats["target"] = {str(k): int(n) for k, n in train[target].value_counts().items()}
    else:
        v = train[target].to_numpy(dtype=np.float64)
        stats["target"] = [len(v), float(v.sum()), float((v**2).sum())]
    return pd.DataFrame({"stats": [json.dumps(stats)]})


def ok_count(col: pd.Series) -> int:
    return int(pd.to_numeric(col, errors="coerce").notna().sum())


def merge_samples(blocks: list[tuple[int, list[float]]], size: int = SAMPLE_SIZE) -> list[float]:
    """One sample from per-block samples, each value weighted by the rows it stands for."""
    values = np.array([x for _, v in blocks for x in v], dtype=np.float64)
    if len(values) == 0:
        return []
    weights = np.array([n / len(v) for n, v in blocks if v for _ in v], dtype=np.float64)
    weights /= weights.sum()
    if len(values) <= size and np.allclose(weights, weights[0]):
        return sorted(values.tolist())  # every row stands for as many rows: keep them all
    # With replacement: a value of a large block may stand for more than one draw.
    pick = np.random.default_rng(0).choice(len(values), size=size, replace=True, p=weights)
    return sorted(values[pick].tolist())


def merge_stats(parts: list[str]) -> dict[str, Any]:
    """Combine per-block partials (JSON strings) into totals."""
    total: dict[str, Any] = {
        "rows": 0,
        "bad": 0,
        "bad_by_column": Counter(),
        "split_rows": [0, 0, 0],
        "num": {},
        "cat": {},
    }
    target: Any = None
    samples: dict[str, list[tuple[int, list[float]]]] = {}
    for raw in parts:
        p = json.loads(raw)
        total["rows"] += p["rows"]
        total["bad"] += p["bad"]
        total["bad_by_column"].update(p["bad_by_column"])
        total["split_rows"] = [
            a + b for a, b in zip(total["split_rows"], p["split_rows"], strict=True)
        ]
        for c, v in p["num"].items():
            cur = total["num"].setdefault(c, [0, 0.0, 0.0, 0])
            total["num"][c] = [a + b for a, b in zip(cur, v, strict=True)]
        for c, counts in p["cat"].items():
            total["cat"].setdefault(c, Counter()).update(counts)
        for c, block in p.get("sample", {}).items():
            samples.setdefault(c, []).append((block[0], block[1]))
        if isinstance(p["target"], dict):
            target = (target or Counter()) + Counter(p["target"])
        else:
            target = [a + b for a, b in zip(target or [0, 0.0, 0.0], p["target"], strict=True)]
    total["target"] = target
    total["bad_by_column"] = dict(total["bad_by_column"])
    total["sample"] = {c: merge_samples(b) for c, b in samples.items()}
    return total


# ----------------------------------------------------------------------------- preprocessor


@dataclass
class Preprocessor:
    """Fitted feature transform: standardize numerics, one-hot categoricals, encode the label."""

    numeric: dict[str, dict[str, float]] = field(default_factory=dict)  # col -> mean, std
    categorical: dict[str, list[str]] = field(
        default_factory=dict
    )  # col -> slots (incl. other/missing)
    target: str = ""
    task: str = "classification"
    classes: list[str] = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0
    feature_order: list[str] = field(default_factory=list)  # original feature columns, in order
    # col -> mean, std, shape [C, H, W] of an image column (pixels standardized, then flattened)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    # col -> text spec (base, max_length, tokenizer/weights sha256, vocab_size, pad_id): the
    # tokenizer's token ids, padded/truncated to max_length (see raylight.data.text)
    texts: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- fit ---------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        stats: dict[str, Any],
        contract: dict[str, dict[str, Any]],
        features: list[str],
        target: str,
        task: str,
        max_categories: int,
        text: dict[str, Any] | None = None,
    ) -> Preprocessor:
        """Fit from merged statistics.

        Args:
            text: ``data.text`` (base, max_length) when there are text features.
        """
        pre = cls(target=target, task=task, feature_order=list(features))
        for c in features:
            rule = contract[c]
            if rule["dtype"] == "text":
                from raylight.data.text import text_spec

                if text is None:
                    raise ValueError(f"text column {c!r} needs text settings (data.text)")
                pre.texts[c] = text_spec(text["base"], int(text["max_length"]))
            elif rule["dtype"] == "image":
                from raylight.data.images import image_geometry

                n, s, ss, _ = stats["num"][c]
                mean = s / n if n else 0.0
                var = max(ss / n - mean * mean, 0.0) if n else 0.0
                pre.images[c] = {
                    "mean": mean,
                    "std": math.sqrt(var) if var > 1e-12 else 1.0,
                    "shape": list(image_geometry(rule)),
                }
            elif rule["dtype"] in ("int", "float", "bool"):
                n, s, ss, _ = stats["num"][c]
                mean = s / n if n else 0.0
                var = max(ss / n - mean * mean, 0.0) if n else 0.0
                std = math.sqrt(var) if var > 1e-12 else 1.0
                pre.numeric[c] = {"mean": mean, "std": std, "nullable": bool(rule.get("nullable"))}
            else:
                counts: Counter[str] = Counter(stats["cat"].get(c, {}))
                counts.pop(MISSING, None)
                top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
                slots = [*sorted(k for k, _ in top), OTHER]
                if rule.get("nullable"):
                    slots.append(MISSING)
                pre.categorical[c] = slots
        if task == "classification":
            observed = set(stats["target"] or {})
            declared = contract[target].get("categories")
            pre.classes = list(declared) if declared else sorted(observed)
            if len(pre.classes) < 2:
                raise ValueError(
                    f"target {target!r} has {len(pre.classes)} class(es) in train; need ≥ 2"
                )
        else:
            n, s, ss = stats["target"]
            pre.target_mean = s / n if n else 0.0
            var = max(ss / n - pre.target_mean**2, 0.0) if n else 0.0
            pre.target_std = math.sqrt(var) if var > 1e-12 else 1.0
        return pre

    # -- shape -------------------------------------------------------------------------------

    @property
    def output_names(self) -> list[str]:
        """Encoded feature names, e.g. ``age``, ``age__missing``, ``workclass=Private``."""
        names: list[str] = []
        for c in self.feature_order:
            if c in self.numeric:
                names.append(c)
                if self.numeric[c].get("nullable"):
                    names.append(f"{c}{MISSING}")
            elif c in self.images:
                names += [f"{c}[{i}]" for i in range(math.prod(self.images[c]["shape"]))]
            elif c in self.texts:
                names += [f"{c}[token {i}]" for i in range(self.texts[c]["max_length"])]
            else:
                names += [f"{c}={v}" for v in self.categorical[c]]
        return names

    @property
    def output_source(self) -> list[str]:
        """For each encoded feature, the original column it came from (for attributions)."""
        out: list[str] = []
        for c in self.feature_order:
            if c in self.numeric:
                out += [c] * (2 if self.numeric[c].get("nullable") else 1)
            elif c in self.images:
                out += [c] * math.prod(self.images[c]["shape"])
            elif c in self.texts:
                out += [c] * self.texts[c]["max_length"]
            else:
                out += [c] * len(self.categorical[c])
        return out

    @property
    def num_features(self) -> int:
        return len(self.output_names)

    @property
    def num_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    # -- transform ---------------------------------------------------------------------------

    def transform_features(self, df: pd.DataFrame) -> np.ndarray:
        """Encode parsed feature columns into a float32 matrix (unseen categories → other)."""
        n = len(df)
        blocks: list[np.ndarray] = []
        for c in self.feature_order:
            if c in self.numeric:
                st = self.numeric[c]
                v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
                miss = np.isnan(v)
                z = np.where(miss, 0.0, (v - st["mean"]) / st["std"])
                blocks.append(z[:, None])
                if st.get("nullable"):
                    blocks.append(miss.astype(np.float64)[:, None])
            elif c in self.texts:
                from raylight.data.text import tokenize

                texts = ["" if _missing(v) else str(v) for v in df[c].to_numpy(dtype=object)]
                blocks.append(tokenize(texts, self.texts[c]).astype(np.float32))
            elif c in self.images:
                from raylight.data.images import matrix

                st = self.images[c]
                px = matrix(df[c], math.prod(st["shape"]))
                blocks.append((px - np.float32(st["mean"])) / np.float32(st["std"]))
            else:
                slots = self.categorical[c]
                index = {v: i for i, v in enumerate(slots)}
                other = index[OTHER]
                miss_slot = index.get(MISSING, other)
                col = df[c].to_numpy(dtype=object)
                idx = np.fromiter(
                    (miss_slot if _missing(v) else index.get(str(v).strip(), other) for v in col),
                    dtype=np.int64,
                    count=n,
                )
                onehot = np.zeros((n, len(slots)), dtype=np.float64)
                onehot[np.arange(n), idx] = 1.0
                blocks.append(onehot)
        return (
            np.concatenate(blocks, axis=1).astype(np.float32)
            if blocks
            else np.zeros((n, 0), np.float32)
        )

    def encode_target(self, values: pd.Series) -> np.ndarray:
        if self.task == "classification":
            index = {v: i for i, v in enumerate(self.classes)}
            out = np.fromiter(
                (index.get(str(v), -1) for v in values), dtype=np.int64, count=len(values)
            )
            if (out < 0).any():
                unknown = sorted({str(v) for v, i in zip(values, out, strict=True) if i < 0})
                raise ValueError(f"unknown label(s) {unknown[:5]} for target {self.target!r}")
            return out
        v = pd.to_numeric(values).to_numpy(dtype=np.float64)
        return ((v - self.target_mean) / self.target_std).astype(np.float32)

    def decode_regression(self, z: np.ndarray) -> np.ndarray:
        return z * self.target_std + self.target_mean

    # -- (de)serialization -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessor fields {sorted(unknown)}")
        return cls(**d)


def _missing(v: Any) -> bool:
    # pd.NA too: Ray Data hands the training path pyarrow-backed strings whose nulls are pd.NA,
    # while serving sees None; both must land in the same (missing) slot.
    if v is None or v is pd.NA:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


class TransformBatch:
    """``map_batches`` callable: keep good rows of one split, encode features and label."""

    def __init__(self, pre: dict[str, Any], split: int | None, with_label: bool = True):
        self.pre = Preprocessor.from_dict(pre)
        self.split = split
        self.with_label = with_label

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        keep = batch[ERROR_COL].isna().to_numpy()
        if self.split is not None:
            keep = keep & (batch[SPLIT_COL].to_numpy() == self.split)
        rows = batch[keep]
        out = {"features": self.pre.transform_features(rows)}
        if self.with_label:
            out["label"] = self.pre.encode_target(rows[self.pre.target])
        return out
