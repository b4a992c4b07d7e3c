"""A `pii: true` column end to end: train → quarantine → register/track → evaluate → serve with
a request log. The raw values must never appear in any file raylight writes; the request log
holds the salted pseudonym, so labels can still be joined by whoever holds the salt."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests

from raylight import bundle as bundle_io
from raylight.config import load_evaluate_config, load_serve_config, load_train_config
from raylight.data.contract import pii_token
from raylight.data.sources import _package_file
from raylight.evaluate.run import run_evaluation
from raylight.net import free_port
from raylight.serve import deploy as sd
from raylight.train import run_training

pytestmark = pytest.mark.integration

MARK = "@pii.example.com"  # every e-mail ends so: a leak anywhere is one substring search
NUM = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CONTRACT = (
    "+data.contract.columns={"
    "species: {dtype: category, categories: [Adelie, Chinstrap, Gentoo]},"
    "island: {dtype: category}, sex: {dtype: category, nullable: true},"
    "bill_length_mm: {dtype: float}, bill_depth_mm: {dtype: float},"
    "flipper_length_mm: {dtype: float}, body_mass_g: {dtype: float, min: 2000},"
    "email: {dtype: string, pii: true}}"
)


def _data(path: Path) -> pd.DataFrame:
    df = pd.read_csv(_package_file("palmerpenguins", "palmerpenguins/data/penguins.csv"))
    df = df.dropna(subset=NUM).reset_index(drop=True).drop(columns=["year"])
    df["email"] = [f"penguin.{i}{MARK}" for i in range(len(df))]
    df.loc[:2, "body_mass_g"] = 5.0  # three bad rows: quarantined with their (treated) raw values
    df.to_csv(path, index=False)
    return df


def _leaks(root: Path) -> list[str]:
    """Files under root holding a raw e-mail (Parquet read as a table: it is compressed)."""
    found = []
    for f in root.rglob("*"):
        if not f.is_file():
            continue
        if f.suffix == ".parquet":
            text = pq.read_table(f).to_pandas().astype(str).to_csv()
        else:
            text = f.read_bytes().decode("latin-1")
        if MARK in text:
            found.append(str(f.relative_to(root)))
    return found


def test_a_pii_column_never_reaches_a_file_raylight_writes(
    ray_session: Any, tmp_path: Path
) -> None:
    salt = os.environ["RAYLIGHT_PII_SALT"]
    src = tmp_path / "penguins_with_email.csv"
    df = _data(src)
    out = tmp_path / "outputs"
    cfg = load_train_config([
        "data=file", f"data.path={src}", "data.target=species", CONTRACT,
        "data.privacy.pii=hash", "data.slices=[island]", f"output_dir={out}",
        "cluster.auth_mode=disabled", "scaling=single", "trainer.max_epochs=2",
        "model.hidden_dims=[16]", "register=penguins-pii",
    ])  # fmt: skip
    assert cfg.data.feature_columns() == [c for c in cfg.data.contract.columns
                                          if c not in ("species", "email")]  # fmt: skip
    res = run_training(cfg)
    assert res.data_summary["bad"] == 3
    quarantined = pd.read_parquet(res.data_summary["quarantine_path"])
    raw_emails = {json.loads(r)["email"] for r in quarantined["raw"]}
    assert raw_emails == {pii_token(e, salt) for e in df["email"][:3]}
    schema = bundle_io.read_manifest(res.bundle_path)["input_schema"]
    assert "email" not in [f["name"] for f in schema["features"]]
    assert schema["pii"]["columns"] == [{"name": "email", "dtype": "string"}]
    assert schema["pii"]["treatment"] == "hash" and "salt" not in schema["pii"]

    ev = run_evaluation(load_evaluate_config([
        "model=models:/penguins-pii/1", f"output_dir={out}", "explain.rows=32",
        "bootstrap=20", "cluster.auth_mode=disabled",
    ]))  # fmt: skip
    assert ev.report["privacy"]["pii_columns"] == ["email"]
    assert "email" in Path(ev.report_path).read_text()  # the report says it was treated...

    port = free_port()
    logs = tmp_path / "reqlog"
    scfg = load_serve_config([
        f"bundle={res.bundle_path}", f"port={port}", "cluster.auth_mode=disabled",
        "num_cpus=0.5", "name=pii", "request_log.sample_rate=1.0", f"request_log.path={logs}",
    ])  # fmt: skip
    sd.preflight(scfg.app_args())
    url = sd.deploy(scfg).url
    rows = df.iloc[3:23]
    records = [
        {**{k: (None if pd.isna(v) else v) for k, v in r.items() if k != "species"}}
        for r in rows.to_dict(orient="records")
    ]
    try:
        r = requests.post(url + "/predict", json=records, timeout=10)
        assert r.status_code == 200, r.text
        without = [{k: v for k, v in rec.items() if k != "email"} for rec in records]
        r2 = requests.post(url + "/predict", json=without, timeout=10)
        assert r2.json()["predictions"] == r.json()["predictions"]  # never used by the model
        rep = requests.get(url + "/drift", timeout=10).json()
        assert "email" not in rep["versions"][0]["drift"]["features"]
    finally:
        sd.shutdown("pii")  # a graceful shutdown writes what the log still holds
    logged = pd.concat(pd.read_parquet(p) for p in logs.glob("*.parquet"))
    assert len(logged) == 40
    tokens = set(logged["email"].dropna())
    assert tokens == {pii_token(e, salt) for e in rows["email"]}  # joinable by the salt holder

    leaks = _leaks(out) + _leaks(logs)
    assert leaks == [], leaks
    # ...and the check can fail: the source itself is full of them.
    assert _leaks(tmp_path) == [src.name]
