"""Write a generated tabular classification set, as large as asked, as many Parquet files.

The set behind ``conf/data/scale.yaml`` and ``benchmarks/data_scale.py``: data larger than Ray's
object store (or this machine's memory) that still has a learnable signal and a known share of
contract-breaking rows, so the quarantine counts of a run can be checked exactly.

Columns (one row per ``id``):

- ``id`` (int64, 0..rows-1): the split key (``data.id_column``), never a feature;
- ``x0``..``x5`` (float64, standard normal), ``age`` (int64, 18..90), ``visits`` (int64,
  Poisson(3)): the eight numeric features;
- ``region`` (8 values), ``plan`` (40 values, Zipf-like), ``device`` (4 values, ~2% missing,
  which the contract allows): the categorical features, as strings;
- ``label`` (int8, 0/1): 1 where ``1.5 x0 - x1 + 0.8 x2 x3 + 0.04 (age - 50) + region and plan
  effects + logistic noise > 0`` (the default MLP reaches ~0.79 accuracy in one epoch on
  1M rows; the majority class is ~51%).

Bad rows: row ``i`` breaks exactly one contract rule when ``i % 1000 < 10`` (1.0% of rows):
``i % 1000`` in 0..3 → ``x0`` missing (not nullable), 4..6 → ``age`` = 150 (above max 100),
7..8 → ``visits`` = -1 (below min 0), 9 → ``label`` = 2 (not a known class).
:func:`expected_bad` gives the exact counts for any row count.

Rows are generated in groups of :data:`GROUP_ROWS`, each from its own seeded generator, so the
content depends only on ``--seed`` and the row index: a smaller set is a prefix of a larger one,
and the files' layout (``--rows-per-file``) does not change any value. Peak memory is one group
and one file's writer (~170 MB measured, at 1M and at 4M rows).

Usage::

    .venv/bin/python scripts/make_scale_data.py [--rows 20000000] [--out .scale-data] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GROUP_ROWS = 50_000  # rows per generator seed and per Parquet row group
DEFAULT_ROWS = 20_000_000
DEFAULT_ROWS_PER_FILE = 200_000
META_NAME = "_scale_data.json"  # leading "_": raylight's file listing skips it
PART_GLOB = "part-*.parquet"

NUMERIC = ["x0", "x1", "x2", "x3", "x4", "x5", "age", "visits"]
REGIONS = [f"region_{i}" for i in range(8)]
PLANS = [f"plan_{i:02d}" for i in range(40)]
DEVICES = ["mobile", "desktop", "tablet", "tv"]
CATEGORICAL = ["region", "plan", "device"]
DEVICE_MISSING = 0.02
# (first, last) value of i % 1000 that makes row i bad, per kind; 10 in 1000 rows = 1.0%.
BAD_KINDS: dict[str, tuple[int, int]] = {
    "x0": (0, 3),  # missing value in a non-nullable column
    "age": (4, 6),  # 150: above max 100
    "visits": (7, 8),  # -1: below min 0
    "label": (9, 9),  # 2: not a known class
}
BAD_PERIOD = 1000
BAD_FRACTION = sum(hi - lo + 1 for lo, hi in BAD_KINDS.values()) / BAD_PERIOD


def expected_bad(rows: int) -> dict[str, int]:
    """Exact number of bad rows per broken column in a set of ``rows`` rows."""
    full, rest = divmod(rows, BAD_PERIOD)
    return {
        col: full * (hi - lo + 1) + max(0, min(rest, hi + 1) - lo)
        for col, (lo, hi) in BAD_KINDS.items()
    }


def _effects(n: int, seed: int) -> np.ndarray:
    # Fixed per-category effects on the logit, from the seed alone (not the group).
    return np.random.default_rng([seed, 1_000_003, n]).normal(0.0, 0.6, n)


def make_group(seed: int, group: int, rows: int) -> pa.Table:
    """Rows ``group * GROUP_ROWS`` .. ``+ rows`` of the set, as an Arrow table.

    Args:
        seed: The data set's seed.
        group: Index of the group of :data:`GROUP_ROWS` rows.
        rows: Rows in this group (``GROUP_ROWS`` except for a final partial group).
    """
    # Always a whole group, cut to ``rows``: a final partial group holds the same values as
    # the same rows of a larger set, so any smaller set is a prefix of a larger one.
    n, rows = rows, GROUP_ROWS
    rng = np.random.default_rng([seed, group])
    start = group * GROUP_ROWS
    ids = np.arange(start, start + rows, dtype=np.int64)
    x = rng.standard_normal((6, rows))
    age = rng.integers(18, 91, rows)
    visits = rng.poisson(3.0, rows)
    region = rng.integers(0, len(REGIONS), rows)
    # Zipf-like: a few plans are common, most are rare (a realistic one-hot).
    plan_p = 1.0 / np.arange(1, len(PLANS) + 1)
    plan = rng.choice(len(PLANS), rows, p=plan_p / plan_p.sum())
    device = rng.integers(0, len(DEVICES), rows)
    device_missing = rng.random(rows) < DEVICE_MISSING
    logit = (
        1.5 * x[0]
        - 1.0 * x[1]
        + 0.8 * x[2] * x[3]
        + 0.04 * (age - 50)
        + _effects(len(REGIONS), seed)[region]
        + _effects(len(PLANS), seed)[plan]
        + 0.3
    )
    u = rng.random(rows).clip(1e-12, 1 - 1e-12)
    label = (logit + np.log(u / (1 - u)) > 0).astype(np.int8)

    # Contract-breaking rows, by row index (see BAD_KINDS): exactly one broken rule each.
    phase = ids % BAD_PERIOD

    def kind(col: str) -> np.ndarray:
        lo, hi = BAD_KINDS[col]
        return (phase >= lo) & (phase <= hi)

    age[kind("age")] = 150
    visits[kind("visits")] = -1
    label[kind("label")] = 2

    def strings(codes: np.ndarray, values: list[str], mask: np.ndarray | None = None) -> pa.Array:
        # Dictionary → plain strings: one vectorized cast instead of a Python str per row.
        idx = pa.array(codes.astype(np.int32), mask=mask)
        return pa.DictionaryArray.from_arrays(idx, pa.array(values)).cast(pa.string())

    cols: dict[str, pa.Array] = {"id": pa.array(ids)}
    cols["x0"] = pa.array(x[0], mask=kind("x0"))
    for i in range(1, 6):
        cols[f"x{i}"] = pa.array(x[i])
    cols["age"] = pa.array(age.astype(np.int64))
    cols["visits"] = pa.array(visits.astype(np.int64))
    cols["region"] = strings(region, REGIONS)
    cols["plan"] = strings(plan, PLANS)
    cols["device"] = strings(device, DEVICES, device_missing)
    cols["label"] = pa.array(label)
    return pa.table(cols).slice(0, n)


def write(
    out: Path, rows: int, seed: int = 0, rows_per_file: int = DEFAULT_ROWS_PER_FILE
) -> dict[str, Any]:
    """Write the set under ``out`` (its earlier ``part-*.parquet`` files are replaced).

    Returns:
        What was written: rows, files, bytes on disk, Arrow in-memory bytes, expected bad rows
        (also saved as ``out/_scale_data.json``, written last: its presence means complete).
    """
    if rows < 1 or rows_per_file < 1:
        raise ValueError("rows and rows_per_file must be >= 1")
    # Whole row groups per file, so every file's row groups line up with the generator's.
    groups_per_file = max(1, rows_per_file // GROUP_ROWS)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_NAME).unlink(missing_ok=True)
    for old in out.glob(PART_GLOB):
        old.unlink()
    n_groups = -(-rows // GROUP_ROWS)
    arrow_bytes = disk_bytes = files = 0
    writer: pq.ParquetWriter | None = None
    for g in range(n_groups):
        table = make_group(seed, g, min(GROUP_ROWS, rows - g * GROUP_ROWS))
        arrow_bytes += table.nbytes
        if g % groups_per_file == 0:
            if writer is not None:
                writer.close()
            writer = pq.ParquetWriter(out / f"part-{files:05d}.parquet", table.schema)
            files += 1
        assert writer is not None
        writer.write_table(table, row_group_size=GROUP_ROWS)
    if writer is not None:
        writer.close()
    disk_bytes = sum(p.stat().st_size for p in out.glob(PART_GLOB))
    meta = {
        "rows": rows,
        "seed": seed,
        "files": files,
        "rows_per_file": groups_per_file * GROUP_ROWS,
        "row_group_rows": GROUP_ROWS,
        "disk_bytes": disk_bytes,
        "arrow_bytes": arrow_bytes,
        "bad_rows": sum(expected_bad(rows).values()),
        "bad_by_column": expected_bad(rows),
        "bad_fraction": BAD_FRACTION,
    }
    (out / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_meta(out: Path) -> dict[str, Any] | None:
    """The metadata of a complete set under ``out``, or None (missing or interrupted)."""
    try:
        return json.loads((out / META_NAME).read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows (default 20,000,000)")
    p.add_argument("--out", type=Path, default=Path(".scale-data"), help="output directory")
    p.add_argument("--seed", type=int, default=0, help="data seed (same seed, same bytes)")
    p.add_argument(
        "--rows-per-file",
        type=int,
        default=DEFAULT_ROWS_PER_FILE,
        help=f"rows per Parquet file, a multiple of {GROUP_ROWS:,} (default 200,000)",
    )
    p.add_argument("--force", action="store_true", help="rewrite even if the same set exists")
    args = p.parse_args(argv)
    have = read_meta(args.out)
    if have and not args.force and (have["rows"], have["seed"]) == (args.rows, args.seed):
        print(f"{args.out}: already holds {args.rows:,} rows (seed {args.seed}); --force rewrites")
        meta = have
    else:
        if args.out.exists() and not args.out.is_dir():
            p.error(f"{args.out} exists and is not a directory")
        free = shutil.disk_usage(args.out if args.out.exists() else args.out.parent or ".").free
        # ~69 bytes per row on disk (snappy); refuse early rather than fail half-way.
        if free < args.rows * 80:
            p.error(f"{free / 1e9:.1f} GB free; ~{args.rows * 80 / 1e9:.1f} GB needed")
        t = time.time()
        meta = write(args.out, args.rows, args.seed, args.rows_per_file)
        print(f"wrote {args.out} in {time.time() - t:.1f} s")
    print(
        f"rows {meta['rows']:,}, files {meta['files']}, on disk {meta['disk_bytes'] / 2**20:,.1f} MiB, "
        f"in memory (Arrow) {meta['arrow_bytes'] / 2**20:,.1f} MiB, bad rows {meta['bad_rows']:,} "
        f"({meta['bad_fraction']:.1%}; by column {meta['bad_by_column']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
