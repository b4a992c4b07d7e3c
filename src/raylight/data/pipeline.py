"""The data stage: read → contract check → quarantine → fit preprocessor → transform → split.

All of it is Ray Data; the driver only merges small per-block statistics. With
``data.cache=true`` (small data) the checked rows and the encoded splits are materialized in the
object store; with ``false`` every pass streams from the source, so data larger than memory works
the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raylight.data import sources
from raylight.data.contract import ERROR_COL, RAW_COL, SPLIT_COL, SPLITS, check_batch
from raylight.data.preprocess import Preprocessor, TransformBatch, merge_stats, partial_stats

if TYPE_CHECKING:
    import ray.data

    from raylight.config import DataConfig


# Rows per quarantine file: bounds what one write task holds (tens of MB of raw rows).
QUARANTINE_ROWS_PER_FILE = 50_000
# Rows per pandas frame in the row-wise steps (contract check, transform). Ray Data's blocks
# grow to 128 MiB of Arrow (~1.3M narrow rows), and pandas needs several times a block's size:
# on 2M rows of conf/data/scale.yaml's set the largest task peaked at 2.3 GB with whole blocks,
# 1.3 GB in slices (the block itself plus one slice's temporaries), and ran no slower.
ROWS_PER_BATCH = 16_384


class BadDataError(RuntimeError):
    """Too many rows broke the data contract (or on_bad_rows=fail and any did)."""


@dataclass
class DataSummary:
    """What happened to the rows: counts a user (and the run summary) can check."""

    rows: int
    good: int
    bad: int
    bad_by_column: dict[str, int]
    split_rows: dict[str, int]
    quarantine_path: str | None
    fingerprint: str
    source_paths: list[str] = field(default_factory=list)
    # Augmented copies of training rows made in the data stage (data.augment.copies per row).
    augmented_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreparedData:
    train: ray.data.Dataset
    val: ray.data.Dataset
    test: ray.data.Dataset
    preprocessor: Preprocessor
    summary: DataSummary
    reference: dict[str, Any]
    # train/val in the object store for the workers (data.handoff; see raylight.data.handoff).
    resident: dict[str, Any] | None = None


def contract_rules(data: DataConfig) -> dict[str, dict[str, Any]]:
    rules = {name: c.model_dump() for name, c in data.contract.columns.items()}
    # An unknown label can never be learned or scored: the target is always strict.
    if data.target in rules:
        rules[data.target]["strict"] = True
    return rules


def split_key(data: DataConfig) -> list[str]:
    """The columns whose raw values decide a row's split: the id column, else every contract
    column, sorted — a row's split must not depend on the order the contract lists its columns
    in (a config read back from a bundle's manifest has its keys sorted)."""
    return [data.id_column] if data.id_column else sorted(contract_rules(data))


def _checked(
    data: DataConfig, seed: int, spec: sources.SourceSpec, pii: str | None = None
) -> ray.data.Dataset:
    """Read and contract-check every row (see ``check_batch``).

    Args:
        pii: Treatment of pii columns overriding ``data.privacy.pii`` (``"drop"`` where the
            pseudonyms are not needed, e.g. evaluation).
    """
    raw = sources.read(data, spec)
    rules = contract_rules(data)
    key = split_key(data)
    extra = [data.id_column] if data.id_column and data.id_column not in rules else []
    split_seed = data.split.seed if data.split.seed is not None else seed
    return raw.map_batches(
        _check_slices,
        # The block as it is: sliced before pandas sees it (see _pandas_slices).
        batch_format=None,
        fn_kwargs={
            "columns": rules,
            "strict_categories": data.contract.strict_categories,
            "split_key": key,
            "split_fractions": (data.split.train, data.split.val, data.split.test),
            "seed": split_seed,
            "extra_columns": extra,
            # Treated in the same task that reads the rows: nothing downstream (quarantine,
            # statistics, the object store) ever holds a raw personal value.
            "pii": data.pii_spec(pii),
        },
    )


def _bad_rows(batch: pd.DataFrame) -> pd.DataFrame:
    bad = batch[batch[ERROR_COL].notna()]
    return pd.DataFrame({"reason": bad[ERROR_COL].astype(str), "raw": bad[RAW_COL].astype(str)})


def _reference(stats: dict[str, Any], pre: Preprocessor) -> dict[str, Any]:
    """Reference statistics of the training split, kept in the bundle for drift checks."""
    ref: dict[str, Any] = {"numeric": {}, "categorical": {}, "rows": stats["split_rows"][0]}
    for c, st in pre.numeric.items():
        n, _, _, nulls = stats["num"][c]
        ref["numeric"][c] = {"mean": st["mean"], "std": st["std"], "count": n, "nulls": nulls}
        sample = stats.get("sample", {}).get(c) or []
        if sample:
            # Deciles for PSI bins, and the sample itself (6 significant digits) for KS.
            ref["numeric"][c]["quantiles"] = [
                float(q) for q in np.quantile(np.asarray(sample), np.linspace(0.0, 1.0, 11))
            ]
            ref["numeric"][c]["sample"] = [float(f"{x:.6g}") for x in sample]
    for c in pre.categorical:
        counts = dict(stats["cat"].get(c, {}))
        total = sum(counts.values()) or 1
        ref["categorical"][c] = {k: v / total for k, v in sorted(counts.items())}
    if isinstance(stats["target"], dict):
        total = sum(stats["target"].values()) or 1
        ref["target"] = {k: v / total for k, v in sorted(stats["target"].items())}
    return ref


def prepare(data: DataConfig, seed: int, quarantine_dir: str) -> PreparedData:
    """Run the data stage. Raises BadDataError when the bad-row policy says stop.

    Args:
        data: Validated data config.
        seed: Global seed (the split seed unless ``data.split.seed`` is set).
        quarantine_dir: Where bad rows are written (Parquet, one reason per row).
    """
    spec = sources.resolve(data)
    fp = sources.fingerprint(data, spec)
    checked = _checked(data, seed, spec)
    if data.cache:
        checked = checked.materialize()
    rules = contract_rules(data)
    features = data.feature_columns()
    numeric = [c for c in features if rules[c]["dtype"] in ("int", "float", "bool")]
    images = [c for c in features if rules[c]["dtype"] == "image"]
    # Text columns need no statistics: the pretrained base's tokenizer is their whole transform.
    texts = [c for c in features if rules[c]["dtype"] == "text"]
    categorical = [c for c in features if c not in numeric and c not in images + texts]
    parts = checked.map_batches(
        partial_stats,
        batch_format="pandas",
        batch_size=None,
        fn_kwargs={
            "numeric": numeric,
            "categorical": categorical,
            "target": data.target,
            "task": data.task,
            "images": images,
        },
    ).take_all()
    stats = merge_stats([p["stats"] for p in parts])

    qpath = None
    if stats["bad"]:
        qpath = quarantine_dir.rstrip("/") + "/rows"
        # Not repartition(1): that gathers every bad row into one block, in one process, and
        # grows with the data; min_rows_per_file streams and still writes few files.
        checked.map_batches(_bad_rows, batch_format="pandas").write_parquet(
            qpath, min_rows_per_file=QUARANTINE_ROWS_PER_FILE
        )
        fs, p = sources.filesystem_and_path(quarantine_dir)
        with fs.open_output_stream(p.rstrip("/") + "/summary.json") as f:
            f.write(
                json.dumps(
                    {
                        "rows": stats["rows"],
                        "bad": stats["bad"],
                        "bad_by_column": stats["bad_by_column"],
                    },
                    indent=2,
                ).encode()
            )
    summary = DataSummary(
        rows=stats["rows"],
        good=stats["rows"] - stats["bad"],
        bad=stats["bad"],
        bad_by_column=stats["bad_by_column"],
        split_rows=dict(zip(SPLITS, stats["split_rows"], strict=True)),
        quarantine_path=qpath,
        fingerprint=fp,
        source_paths=spec.paths,
        augmented_rows=stats["split_rows"][0] * data.augment.copies if images else 0,
    )
    if stats["rows"] == 0:
        raise BadDataError(f"the data source {spec.paths[:3]} has no rows")
    frac = stats["bad"] / stats["rows"]
    where = f" (quarantined rows with reasons: {qpath})" if qpath else ""
    if stats["bad"] and data.on_bad_rows == "fail":
        raise BadDataError(
            f"{stats['bad']} of {stats['rows']} rows break the data contract{where}; by column: {stats['bad_by_column']} (data.on_bad_rows=fail)"
        )
    if frac > data.max_bad_fraction:
        raise BadDataError(
            f"{stats['bad']} of {stats['rows']} rows ({frac:.1%}) break the data contract, above data.max_bad_fraction={data.max_bad_fraction}{where}; by column: {stats['bad_by_column']}"
        )
    for i, name in enumerate(SPLITS):
        if stats["split_rows"][i] == 0 and (name == "train" or getattr(data.split, name) > 0):
            raise BadDataError(
                f"the {name} split is empty ({stats['split_rows']} good rows per split); use more data or change data.split"
            )

    pre = Preprocessor.fit(
        stats,
        rules,
        features,
        data.target,
        data.task,
        data.max_categories,
        text=data.text.model_dump() if texts else None,
    )
    splits = {}
    for i, name in enumerate(SPLITS):
        source = checked
        if i == 0 and images and data.augment.copies:
            # After the fit: statistics describe real images, not their augmented copies.
            from raylight.data.augment import augment_batch
            from raylight.data.images import image_geometry, pixel_range

            geo = {
                c: {"shape": list(image_geometry(rules[c])),
                    **dict(zip(("min", "max"), pixel_range(rules[c]), strict=True))}
                for c in images
            }  # fmt: skip
            source = checked.map_batches(
                augment_batch,
                batch_format="pandas",
                fn_kwargs={"images": geo, "settings": data.augment.model_dump(), "seed": seed},
            )
        ds = source.map_batches(
            _transform, batch_format=None, fn_kwargs={"pre": pre.to_dict(), "split": i}
        )
        splits[name] = ds.materialize() if data.cache else ds
    return PreparedData(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        preprocessor=pre,
        summary=summary,
        reference=_reference(stats, pre),
    )


def _pandas_slices(block: Any) -> Iterator[pd.DataFrame]:
    """A Ray Data block (Arrow or pandas) as pandas frames of at most ROWS_PER_BATCH rows.

    Slicing inside the function, not ``map_batches(batch_size=...)``: a batch size stops Ray
    fusing the step into the read task, so every 128 MiB block read would go through the
    object store (and spill when that is small) before being checked.
    """
    from ray.data.block import BlockAccessor

    acc = BlockAccessor.for_block(block)
    for start in range(0, acc.num_rows(), ROWS_PER_BATCH):
        yield BlockAccessor.for_block(acc.slice(start, start + ROWS_PER_BATCH)).to_pandas()


def _check_slices(block: Any, **kwargs: Any) -> Iterator[pd.DataFrame]:
    """``check_batch`` over a block, a slice at a time (Ray joins the outputs into blocks)."""
    for frame in _pandas_slices(block):
        yield check_batch(frame, **kwargs)


def _transform(block: Any, pre: dict[str, Any], split: int) -> Iterator[dict[str, Any]]:
    transform = TransformBatch(pre, split)
    for frame in _pandas_slices(block):
        yield transform(frame)


__all__ = ["SPLIT_COL", "BadDataError", "DataSummary", "PreparedData", "prepare"]
