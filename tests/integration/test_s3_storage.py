"""Outputs on an S3-compatible store: a training run writes its checkpoints and bundle to an
s3:// URI (moto's S3 server on 127.0.0.1), resumes from there, and the bundle loads back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
BUCKET = "raylight-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))},
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "RAY_USAGE_STATS_ENABLED": "0",
    }  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.3)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=BUCKET)  # fmt: skip
        yield {"endpoint": endpoint, "env": env}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow  # two CLI runs, each with its own Ray (~90 s): make test-all
def test_train_writes_and_resumes_from_s3(s3: dict[str, Any], tmp_path: Path) -> None:
    # The tracking database is a local SQLite file; its artifacts (the bundle) go to S3.
    db = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["data=penguins", "scaling=single", "model.hidden_dims=[16]",
              "cluster.auth_mode=disabled", f"cluster.storage_endpoint={s3['endpoint']}",
              f"output_dir=s3://{BUCKET}/outputs", "run_name=s3run",
              f"tracking.mlflow.tracking_uri={db}"]  # fmt: skip
    run = lambda *extra: subprocess.run(  # noqa: E731
        [str(BIN / "raylight"), "train", *common, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=s3["env"],
    )
    first = run("trainer.max_epochs=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"s3://{BUCKET}/outputs/runs/s3run/bundle" in first.stdout
    assert "tracking (mlflow) failed" not in first.stdout + first.stderr
    resumed = run("trainer.max_epochs=3", f"resume=s3://{BUCKET}/outputs/runs/s3run")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "epoch   3/3" in resumed.stdout and "epoch   1/3" not in resumed.stdout

    os.environ["AWS_ENDPOINT_URL_S3"] = s3["endpoint"]
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        os.environ[k] = s3["env"][k]
    try:
        from raylight import bundle

        b = bundle.load(f"s3://{BUCKET}/outputs/runs/s3run/bundle")
        assert b.classes == ["Adelie", "Chinstrap", "Gentoo"]

        # One tracking run across the resume; its bundle artifact lives in S3, and a version
        # registered from it resolves to that S3 copy, which loads.
        from raylight import registry

        c = registry.open_store(db)
        (run,) = c.search_runs([c.get_experiment_by_name("penguins").experiment_id])
        assert run.info.artifact_uri.startswith(f"s3://{BUCKET}/outputs/mlartifacts/")
        assert [m.step for m in c.get_metric_history(run.info.run_id, "val_loss")] == [0, 1, 2]
        v = registry.register(c, f"s3://{BUCKET}/outputs/runs/s3run", "pen-s3")
        assert v["run_id"] == run.info.run_id and v["source"].startswith("s3://")
        path, _ = registry.resolve_bundle(c, "models:/pen-s3/1")
        assert path == v["source"] and bundle.load(path).classes == b.classes
    finally:
        for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                  "AWS_DEFAULT_REGION"):  # fmt: skip
            os.environ.pop(k, None)
