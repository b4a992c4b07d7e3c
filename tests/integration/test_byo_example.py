"""examples/byo_model: a LightningModule raylight does not know is validated, trained,
registered and served through the example's README commands (in-process here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from conftest import BYO_EXAMPLE
from helpers.serving import PENGUIN_ROWS
from typer.testing import CliRunner

from raylight import bundle as bundle_io
from raylight.cli import app
from raylight.config import load_serve_config, load_train_config, load_tune_config
from raylight.net import free_port
from raylight.serve import deploy as sd
from raylight.train import run_training
from raylight.tune import run_tuning

pytestmark = pytest.mark.integration

ROWS = PENGUIN_ROWS[:3]
SEARCH = f"hydra.searchpath=[file://{BYO_EXAMPLE / 'conf'}]"


def _importable() -> None:
    if str(BYO_EXAMPLE) not in sys.path:
        sys.path.insert(0, str(BYO_EXAMPLE))  # the driver imports it too (PYTHONPATH for users)


def test_the_example_model_validates_and_bad_arguments_name_their_keys() -> None:
    _importable()
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "data=penguins", SEARCH, "model=residual"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["validate", "data=penguins", SEARCH, "model=residual",
                              "+model.widht=3", "model.blocks=two", "+model.input_dim=5"])  # fmt: skip
    assert bad.exit_code == 2
    for key in ("model.widht", "model.blocks", "model.input_dim"):
        assert key in bad.output, bad.output


# Slow (~85 s on 2 CPUs): a user's module on the Trainer loop is also trained by test_train's
# two-worker and regression tests; this one adds serving it by registry name. make test-all.
@pytest.mark.slow
def test_the_example_model_trains_registers_and_serves(ray_session: Any, outdir: Path) -> None:
    _importable()
    res = run_training(load_train_config([
        "data=penguins", f"output_dir={outdir}", "cluster.auth_mode=disabled", SEARCH,
        "model=residual", "model.blocks=3", "scaling=single", "trainer.max_epochs=4",
        "register=penguins-residual",
    ]))  # fmt: skip
    assert res.registered and res.registered["version"] == "1"
    metrics = pd.read_csv(Path(res.run_dir) / "logs" / "metrics.csv")
    losses = metrics["train_loss"].dropna().tolist()
    assert losses[-1] < losses[0], losses
    assert res.test_metrics["accuracy"] > 0.8
    b = bundle_io.load(res.bundle_path)
    assert b.manifest["model"]["target"] == "my_models.ResidualMLP"
    assert b.manifest["model"]["init_args"]["blocks"] == 3
    expected = b.predict(pd.DataFrame(ROWS))

    port = free_port()
    cfg = load_serve_config(["model=models:/penguins-residual", f"output_dir={outdir}",
                             f"port={port}", "name=byo", "cluster.auth_mode=disabled",
                             "num_cpus=0.5"])  # fmt: skip
    url = sd.deploy(cfg).url
    try:
        r = requests.post(url + "/predict", json=ROWS, timeout=10)
        assert r.status_code == 200, r.text
        got = r.json()
        assert [p["prediction"] for p in got["predictions"]] == list(expected["prediction"])
        assert got["model"]["name"] == "penguins-residual"
        bad_row = requests.post(url + "/predict", json={**ROWS[0], "island": "Atlantis"},
                                timeout=10)  # fmt: skip
        assert bad_row.status_code == 422 and "island" in bad_row.text
    finally:
        sd.shutdown("byo")


@pytest.mark.slow  # keeps `make test` near 15 min; runs in `make test-all`
def test_the_example_model_tunes_over_its_own_arguments(ray_session: Any, outdir: Path) -> None:
    if str(BYO_EXAMPLE) not in sys.path:
        sys.path.insert(0, str(BYO_EXAMPLE))
    res = run_tuning(load_tune_config([
        "data=penguins", f"output_dir={outdir}", "cluster.auth_mode=disabled", SEARCH,
        "model=residual", "hparams_search=residual_optuna", "tune.name=byo",
        "tune.num_samples=3", "trainer.max_epochs=2",
    ]))  # fmt: skip
    t = res.trials
    assert len(t) == 3 and (t["status"] != "ERROR").all(), t
    assert set(t["param.model.blocks"]) <= {1, 2, 3}, t.columns
    best = bundle_io.load(res.bundle_path)
    assert best.manifest["model"]["target"] == "my_models.ResidualMLP"
    assert best.manifest["model"]["init_args"]["width"] in (32, 64)
