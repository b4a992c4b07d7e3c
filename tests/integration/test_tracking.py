"""Tracking on a real local Ray and real stores: W&B offline next to MLflow, a tracking store
that dies mid-run (the training result survives), and the MLflow UI on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import penguins_overrides
from helpers import mlflow_runs, wandb_records
from typer.testing import CliRunner

from raylight import bundle
from raylight.cli import app
from raylight.net import free_port

pytestmark = pytest.mark.integration


def test_mlflow_and_wandb_offline_track_the_same_run(ray_session, outdir: Path) -> None:
    res = CliRunner().invoke(app, ["train", *penguins_overrides(
        outdir, "tracking=mlflow_wandb", "trainer.max_epochs=2", "scaling.num_workers=1",
        "run_name=both",
    )])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads((outdir / "runs" / "both" / "result.json").read_text())
    (run,) = mlflow_runs.runs(outdir, name="both")
    assert result["tracking"]["mlflow"]["run_id"] == run.info.run_id

    wid = result["tracking"]["wandb"]["run_id"]
    (run_file,) = (outdir / "wandb").glob(f"offline-run-*-{wid}/run-{wid}.wandb")
    w = wandb_records.summary(run_file)
    assert w["run"]["name"] == "both" and w["exit_code"] == 0
    assert w["config"]["model.hidden_dims"] == "[32, 32]"
    assert w["config"]["tags.raylight.data_fingerprint"].startswith("sha256:")
    val = [(h["_step"], h["val_loss"]) for h in w["history"] if "val_loss" in h]
    ml = mlflow_runs.history(outdir, run.info.run_id, "val_loss")
    assert [s for s, _ in val[:2]] == [0, 1]
    assert [v for _, v in val[:2]] == pytest.approx([v for _, v in ml])
    b = bundle.read_manifest(result["bundle_path"])
    assert b["lineage"]["tracking"] == {"mlflow": run.info.run_id, "wandb": wid}


def test_a_tracking_store_failing_mid_run_loses_no_training_result(
    ray_session, outdir: Path
) -> None:
    db = outdir.resolve() / "mlflow.db"
    cb = f"trainer.callbacks=[{{_target_:helpers.callbacks.CorruptFile,path:'{db}',epoch:0}}]"
    res = CliRunner().invoke(app, ["train", *penguins_overrides(
        outdir, "trainer.max_epochs=3", "scaling.num_workers=1", "run_name=broken", cb,
    )])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "tracking (mlflow) failed" in res.output
    run_dir = outdir / "runs" / "broken"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["epochs"] == 3 and result["metrics"]["epoch"] == 2
    assert "mlflow" in result["tracking"]["errors"]
    b = bundle.load(result["bundle_path"])
    assert (
        b.manifest["metrics"]["test"]["accuracy"]
        > b.manifest["metrics"]["test"]["baseline_accuracy"]
    )
    assert (run_dir / "logs" / "metrics.csv").is_file()  # the CSV backend kept logging


def test_unreachable_tracking_server_fails_before_training(ray_session, outdir: Path) -> None:
    t0 = time.time()
    res = CliRunner().invoke(app, ["train", *penguins_overrides(
        outdir, "tracking.mlflow.tracking_uri=http://127.0.0.1:9", "run_name=nowhere",
    )])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "cannot be reached" in res.output and time.time() - t0 < 30
    assert not (outdir / "runs" / "nowhere" / "train").exists()  # no training started


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


@pytest.mark.slow  # the MLflow server takes ~1 min to start on 2 cores
def test_ui_serves_the_embedded_store_on_loopback_only(tmp_path: Path) -> None:
    from helpers.bundles import write_tiny

    from raylight import registry

    out = tmp_path / "outputs"
    write_tiny(tmp_path / "b")
    registry.register(
        registry.open_store(None, str(out)), str(tmp_path / "b"), "tiny", output_dir=str(out)
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "raylight.cli", "ui", "--port", str(port), "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass  # not listening yet, or still starting its workers
            assert time.time() < deadline, "the MLflow UI did not come up"
            time.sleep(0.5)
        r = requests.get(
            base + "/api/2.0/mlflow/registered-models/get", params={"name": "tiny"}, timeout=10
        )
        assert r.status_code == 200 and r.json()["registered_model"]["name"] == "tiny"
        ip = _non_loopback_ip()
        if ip:
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://{ip}:{port}/health", timeout=2)
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
