"""Batch inference: Ray Data ``map_batches`` over an actor pool, each actor holding the bundle.

Every actor applies the bundle's own contract + preprocessor, so batch predictions compute
exactly what training computed. Rows that break the contract are kept, with an ``error``
column saying why and no prediction: the output has one row per input row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from raylight import bundle as bundle_io
from raylight.data import sources

if TYPE_CHECKING:
    from raylight.config import PredictConfig


class _Predictor:
    """One model replica per actor; loaded once, used for many batches."""

    def __init__(self, bundle_path: str, keep: list[str]) -> None:
        self.bundle = bundle_io.load(bundle_path)
        self.keep = keep

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        preds = self.bundle.predict(batch)
        kept = batch[[c for c in self.keep if c in batch.columns]].reset_index(drop=True)
        return pd.concat([kept, preds.reset_index(drop=True)], axis=1)


@dataclass
class PredictResult:
    output: str
    rows: int
    errors: int


def _format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.lower().rstrip("/")
    return "csv" if name.endswith((".csv", ".csv.gz")) else "parquet"


def run_predict(cfg: PredictConfig) -> PredictResult:
    """Predict every row of ``cfg.input`` into ``cfg.output`` on the current Ray cluster."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    manifest = bundle_io.read_manifest(cfg.bundle)  # fail fast, before any Ray work
    schema = manifest["input_schema"]
    features = [c["name"] for c in schema["features"]]
    fs, root = sources.filesystem_and_path(cfg.input)
    files = sources._list_files(fs, root)
    paths = [sources._with_scheme(cfg.input, f) for f in files]
    fmt = _format(files[0], cfg.format)
    if fmt == "csv":
        # Strings in, so the contract (not the CSV reader) judges malformed values.
        convert = pacsv.ConvertOptions(
            strings_can_be_null=True, column_types={f: pa.string() for f in features}
        )
        ds = ray.data.read_csv(paths, convert_options=convert)
    else:
        ds = ray.data.read_parquet(paths)
    columns = ds.columns() or []
    missing = [f for f in features if f not in columns]
    if missing:
        raise ValueError(
            f"input {cfg.input} lacks feature column(s) {missing} that the bundle needs"
        )
    id_col = cfg.id_column or schema.get("id_column")
    if cfg.id_column and cfg.id_column not in columns:
        raise ValueError(f"id_column {cfg.id_column!r} is not in the input (has {columns})")
    keep = [id_col] if id_col and id_col in columns else list(columns)
    out = ds.map_batches(
        _Predictor,
        fn_constructor_kwargs={"bundle_path": cfg.bundle, "keep": keep},
        batch_format="pandas",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.num_actors),
        num_cpus=cfg.cpus_per_actor,
    )
    out_fmt = _format(cfg.output, cfg.output_format)
    out = out.materialize()
    rows = out.count()
    errors = sum(
        int(b["error"].notna().sum())
        for b in out.select_columns(["error"]).iter_batches(batch_format="pandas")
    )
    _write(out, cfg.output, out_fmt)
    return PredictResult(output=cfg.output, rows=rows, errors=errors)


def _write(ds: Any, output: str, fmt: str) -> None:
    """Write a dataset to a directory, or to one file when ``output`` names a .csv/.parquet file."""
    single = output.lower().rstrip("/").endswith((".csv", ".parquet", ".pq"))
    target = output + ".parts" if single else output
    ds = ds.repartition(1) if single else ds
    if fmt == "csv":
        ds.write_csv(target)
    else:
        ds.write_parquet(target)
    if single:
        fs, parts = sources.filesystem_and_path(target)
        _, dest = sources.filesystem_and_path(output)
        written = sources._list_files(fs, parts)
        if fs.get_file_info(dest).type.name != "NotFound":
            fs.delete_file(dest)
        fs.move(written[0], dest)
        fs.delete_dir(parts)
