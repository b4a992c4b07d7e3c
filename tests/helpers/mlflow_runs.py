"""Reading what a run logged to the embedded MLflow store under a test's output dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def client(outdir: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{Path(outdir).resolve()}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs(outdir: Path, experiment: str = "penguins", name: str | None = None) -> list[Any]:
    """Every run of the experiment (optionally with this run name), oldest first."""
    c = client(outdir)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {outdir}/mlflow.db"
    found = c.search_runs([exp.experiment_id], max_results=1000, order_by=["start_time ASC"])
    return [r for r in found if name is None or r.info.run_name == name]


def history(outdir: Path, run_id: str, metric: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(outdir).get_metric_history(run_id, metric)]


def artifacts(outdir: Path, run_id: str) -> set[str]:
    return {f.path for f in client(outdir).list_artifacts(run_id)}
