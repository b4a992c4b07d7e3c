"""`raylight evaluate` end to end on a real local Ray and MLflow store: the test split's
metrics equal what training measured, every report section renders, the report is tracked,
and a model trained where one group's label is noise shows that group as the worst slice."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import penguins_overrides
from helpers import mlflow_runs
from typer.testing import CliRunner

from raylight.cli import app
from raylight.config import load_train_config
from raylight.evaluate.report import SECTIONS
from raylight.train import run_training

pytestmark = pytest.mark.integration


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "img" and str(a.get("src", "")).startswith("data:image/png;base64,"):
            self.images += 1


def test_evaluate_reproduces_test_metrics_and_renders_every_section(
    ray_session, outdir: Path
) -> None:
    res = run_training(load_train_config(penguins_overrides(
        outdir, "trainer.max_epochs=4", "scaling.num_workers=1", "run_name=ev",
        "register=penguins-ev",
    )))  # fmt: skip
    out = CliRunner().invoke(app, [
        "evaluate", "model=models:/penguins-ev/1", f"output_dir={outdir}", "cluster.auth_mode=disabled",
        "slices=[island,sex,bill_length_mm]", "sensitive=[sex]", "bootstrap=50", "explain.rows=64",
    ])  # fmt: skip
    assert out.exit_code == 0, out.output
    (report_dir,) = (outdir / "evaluations").iterdir()
    rep = json.loads((report_dir / "report.json").read_text())
    # The bundle's own test split, re-read through its contract: the same rows, the same numbers.
    assert rep["metrics"]["n"] == res.test_metrics["n"]
    assert rep["metrics"]["accuracy"] == pytest.approx(res.test_metrics["accuracy"], abs=1e-9)
    assert rep["metrics"]["log_loss"] == pytest.approx(res.test_metrics["log_loss"], rel=1e-5)
    assert {"precision_macro", "recall_macro", "roc_auc", "pr_auc", "ece"} <= set(rep["metrics"])
    assert set(rep["metrics"]["per_class"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert set(rep["slices"]["columns"]) == {"island", "sex", "bill_length_mm"}
    assert len(rep["slices"]["columns"]["bill_length_mm"]) == 4  # quartiles
    assert rep["slices"]["worst"]
    # multi-class: fairness needs a positive class, which penguins does not name
    assert rep["fairness"] == {}
    imp = rep["explanations"]["importance"]
    assert set(imp) == {
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
    }
    assert rep["model"]["registry"]["version"] == "1"

    page = _Sections()
    page.feed((report_dir / "report.html").read_text())
    assert page.ids == list(SECTIONS)
    assert page.images >= 5  # confusion, ROC/PR, calibration, slices, importance
    # tracked on the model's own training run
    (run,) = mlflow_runs.runs(outdir, name="ev")
    assert run.data.metrics["eval_test_accuracy"] == pytest.approx(rep["metrics"]["accuracy"])
    arts = mlflow_runs.client(outdir).list_artifacts(run.info.run_id, "evaluation")
    assert [a.path for a in arts] == [f"evaluation/{report_dir.name}"]

    # The promotion gate reuses this fresh report: an unmet threshold refuses the promotion and
    # says which; --force needs a reason, which the version records; a met gate promotes.
    runner, store = CliRunner(), ["--output-dir", str(outdir)]
    promote = ["registry", "promote", "penguins-ev", "1", "--alias", "production", *store]
    strict = ["gate.min.accuracy=1.01", "gate.max.ece=0.5"]
    res = runner.invoke(app, [*promote, *strict])
    assert res.exit_code == 1, res.output
    assert (
        "reusing the report" in res.output
        and "accuracy" in res.output
        and "not promoted" in res.output
    )
    c = mlflow_runs.client(outdir)
    assert "production" not in c.get_registered_model("penguins-ev").aliases
    assert runner.invoke(app, [*promote, "--force", *strict]).exit_code == 2  # no reason
    res = runner.invoke(app, [*promote, "--force", "--reason", "hotfix for a demo", *strict])
    assert res.exit_code == 0, res.output
    tags = c.get_model_version("penguins-ev", "1").tags
    assert json.loads(tags["raylight.gate_override"])["reason"] == "hotfix for a demo"
    assert c.get_registered_model("penguins-ev").aliases["production"] in (1, "1")
    res = runner.invoke(app, [*promote[:-4], "--alias", "staging", *store, "gate.min.accuracy=0.5"])
    assert res.exit_code == 0, res.output
    assert json.loads(c.get_model_version("penguins-ev", "1").tags["raylight.gate"])["passed"]


def _biased_csv(path: Path, n: int = 4000, seed: int = 0) -> None:
    """Binary label = (x > 0) for group A; for group B the label is a coin flip."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["A", "B"], n, p=[0.5, 0.5])
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    signal = x > 0
    label = np.where(group == "A", signal, rng.uniform(size=n) < 0.5)
    pd.DataFrame({
        "id": np.arange(n), "x": x, "z": z, "group": group,
        "y": np.where(label, "yes", "no"),
    }).to_csv(path, index=False)  # fmt: skip


def test_a_group_with_noisy_labels_is_the_worst_slice_with_a_fairness_gap(
    ray_session, outdir: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "biased.csv"
    _biased_csv(csv)
    cfg = load_train_config([
        "data=file", f"data.path={csv}", "data.name=biased", "data.target=y", "data.id_column=id",
        "data.positive_label=yes", f"output_dir={outdir}", "cluster.auth_mode=disabled",
        "scaling.num_workers=1", "trainer.max_epochs=6", "run_name=biased", "model.hidden_dims=[16]",
        "data.batch_size=64", "model.lr=0.01",
        "+data.contract.columns={x: {dtype: float}, z: {dtype: float}, group: {dtype: category, categories: [A, B]}, y: {dtype: category, categories: ['no', 'yes']}, id: {dtype: int}}",
        "data.sensitive=[group]", "data.slices=[group]",
    ])  # fmt: skip
    res = run_training(cfg)
    out = CliRunner().invoke(app, ["evaluate", f"model={res.run_dir}", f"output_dir={outdir}",
                                   "cluster.auth_mode=disabled", "explain.rows=0", "bootstrap=50"])  # fmt: skip
    assert out.exit_code == 0, out.output
    (report_dir,) = (outdir / "evaluations").iterdir()
    rep = json.loads((report_dir / "report.json").read_text())
    rows = {r["value"]: r for r in rep["slices"]["columns"]["group"]}
    assert rows["A"]["metrics"]["accuracy"] > 0.9
    assert rows["B"]["metrics"]["accuracy"] < 0.65
    assert rep["slices"]["worst"][0]["value"] == "B"
    f = rep["fairness"]["attributes"]["group"]
    # Where the label is noise, TPR and FPR are both ~the model's positive rate: far from A's.
    assert f["equalized_odds_difference"] > 0.3
    assert f["groups"]["A"]["tpr"] > 0.9 and f["groups"]["A"]["fpr"] < 0.1
