"""The data stage on a real local Ray: user files, quarantine with counts, bad-row policy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raylight.config import load_train_config
from raylight.data.pipeline import BadDataError, prepare

pytestmark = pytest.mark.integration

CONTRACT = "+data.contract.columns={id: {dtype: string}, x: {dtype: float, min: 0}, c: {dtype: category, categories: [a, b]}, y: {dtype: category}}"


def _user_csv(path: Path, n: int = 400) -> Path:
    rows = []
    for i in range(n):
        rows.append(
            {"id": f"r{i}", "x": str(i % 50), "c": "ab"[i % 2], "y": "yes" if i % 3 else "no"}
        )
    rows[5]["x"] = "not-a-number"
    rows[6]["x"] = "-3"
    rows[7]["c"] = "zzz"
    rows[8]["x"] = ""
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _cfg(csv: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_train_config(["data=file", f"data.path={csv}", "data.target=y", "data.id_column=id",
                              "data.contract.strict_categories=true", CONTRACT, *extra])  # fmt: skip


def test_user_csv_bad_rows_are_quarantined_with_reasons(ray_session, tmp_path: Path) -> None:
    csv = _user_csv(tmp_path / "mine.csv")
    cfg = _cfg(csv)
    data = prepare(cfg.data, cfg.seed, quarantine_dir=str(tmp_path / "q"))
    s = data.summary
    assert (s.rows, s.bad, s.good) == (400, 4, 396)
    assert s.bad_by_column == {"x": 3, "c": 1}
    assert sum(s.split_rows.values()) == 396
    q = pd.read_parquet(s.quarantine_path)
    assert len(q) == 4
    reasons = " | ".join(q["reason"])
    for text in ("not a number", "below min", "unknown category: zzz", "missing value not allowed"):
        assert text in reasons
    assert any('"id": "r5"' in r for r in q["raw"])  # the raw row is kept, nothing lost
    assert data.train.count() == s.split_rows["train"]
    batch = data.train.take_batch(8)
    assert batch["features"].shape[1] == data.preprocessor.num_features


def test_on_bad_rows_fail_stops_the_run(ray_session, tmp_path: Path) -> None:
    csv = _user_csv(tmp_path / "mine.csv")
    cfg = _cfg(csv, "data.on_bad_rows=fail")
    with pytest.raises(BadDataError, match="4 of 400 rows break the data contract"):
        prepare(cfg.data, cfg.seed, quarantine_dir=str(tmp_path / "q"))
    assert list((tmp_path / "q").rglob("*.parquet")), "bad rows are written even when the run stops"


def test_max_bad_fraction(ray_session, tmp_path: Path) -> None:
    csv = _user_csv(tmp_path / "mine.csv", n=40)
    cfg = _cfg(csv, "data.max_bad_fraction=0.05")
    with pytest.raises(BadDataError, match=r"above data\.max_bad_fraction"):
        prepare(cfg.data, cfg.seed, quarantine_dir=str(tmp_path / "q"))


def test_parquet_directory_and_same_split_as_csv(ray_session, tmp_path: Path) -> None:
    csv = _user_csv(tmp_path / "mine.csv")
    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    df = pd.read_csv(csv, dtype=str)
    df.iloc[:200].to_parquet(pq_dir / "part-0.parquet")
    df.iloc[200:].to_parquet(pq_dir / "part-1.parquet")
    a = prepare(_cfg(csv).data, 42, quarantine_dir=str(tmp_path / "qa")).summary
    b = prepare(_cfg(pq_dir).data, 42, quarantine_dir=str(tmp_path / "qb")).summary
    assert a.split_rows == b.split_rows and a.bad == b.bad


def test_adult_builtin_reads_all_rows(ray_session, tmp_path: Path) -> None:
    cfg = load_train_config(["data=adult"])
    data = prepare(cfg.data, cfg.seed, quarantine_dir=str(tmp_path / "q"))
    assert data.summary.rows == 48842
    assert data.summary.bad == 0
    assert data.preprocessor.classes == ["<=50K", ">50K"]
    assert data.summary.fingerprint.startswith("sha256:")
    # Adult's " ?" is a missing value (the nullable columns), not a category called "?"
    assert "?" not in data.preprocessor.categorical["workclass"]
    assert "__missing__" in data.preprocessor.categorical["workclass"]
    assert 0.05 < data.reference["categorical"]["workclass"]["__missing__"] < 0.07


def test_mnist_builtin_packs_pixels_into_one_image_column(ray_session, tmp_path: Path) -> None:
    cfg = load_train_config(["experiment=mnist_cnn"])
    data = prepare(cfg.data, cfg.seed, quarantine_dir=str(tmp_path / "q"))
    assert data.summary.rows == 5000 and data.summary.bad == 0
    assert data.preprocessor.images["image"]["shape"] == [1, 28, 28]
    assert data.preprocessor.classes == [str(i) for i in range(10)]
    # pixel bytes up to 255 (not UTF-8) split and standardise: mean of MNIST pixels ≈ 33
    assert 25 < data.preprocessor.images["image"]["mean"] < 40
    batch = data.train.take_batch(8)
    assert batch["features"].shape == (8, 784)


def test_cli_train_stops_on_bad_rows_with_exit_1(ray_session, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from raylight.cli import app

    csv = _user_csv(tmp_path / "mine.csv")
    args = ["train", "data=file", f"data.path={csv}", "data.target=y", "data.id_column=id", CONTRACT,
            "data.on_bad_rows=fail", f"output_dir={tmp_path / 'out'}"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "3 of 400 rows break the data contract" in res.output  # not strict: "zzz" maps to other
    assert "quarantine" in res.output


def test_image_augmentation_adds_reproducible_train_copies(ray_session, tmp_path: Path) -> None:
    """data.augment: K transformed copies of each train row, made in Ray Data after the fit;
    val/test untouched, the preprocessor fitted on the originals, the same set twice."""
    import numpy as np

    base = load_train_config(["data=digits"])
    cfg = load_train_config(["data=digits", "data.augment.copies=2", "data.augment.max_shift=1",
                             "data.augment.noise_std=0.02"])  # fmt: skip
    plain = prepare(base.data, base.seed, quarantine_dir=str(tmp_path / "q0"))
    aug = prepare(cfg.data, cfg.seed, quarantine_dir=str(tmp_path / "q1"))
    n = plain.summary.split_rows["train"]
    assert aug.summary.augmented_rows == 2 * n
    assert aug.train.count() == 3 * n
    assert aug.val.count() == plain.val.count() and aug.test.count() == plain.test.count()
    assert aug.preprocessor.images == plain.preprocessor.images

    def rows(ds):
        return np.concatenate([b["features"] for b in ds.iter_batches(batch_format="numpy")])

    a, b = rows(aug.train), rows(plain.train)
    # Every original is there, and the copies are new images (not duplicates of any original).
    orig = {r.tobytes() for r in b}
    assert sum(r.tobytes() in orig for r in a) == n
    again = prepare(cfg.data, cfg.seed, quarantine_dir=str(tmp_path / "q2"))
    assert sorted(r.tobytes() for r in rows(again.train)) == sorted(r.tobytes() for r in a)
