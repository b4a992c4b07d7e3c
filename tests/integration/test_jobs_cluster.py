"""Jobs on a real two-node Ray cluster on 127.0.0.1 (head + worker node, token auth on).

The cluster is what `scripts/local-cluster.sh up` starts, on free ports and a private state
directory; `down` stops only its processes. Everything goes through the `raylight` CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from raylight.net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    # The test session's own embedded Ray runs without auth; these commands must not inherit it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **extra}


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("cluster")
    gcs, dash = free_port(), free_port()
    env = _env(RAYLIGHT_CLUSTER_DIR=str(state), RAYLIGHT_GCS_PORT=str(gcs),
               RAYLIGHT_DASHBOARD_PORT=str(dash), RAYLIGHT_CLIENT_PORT=str(free_port()), BIN=str(BIN))  # fmt: skip
    script = str(ROOT / "scripts" / "local-cluster.sh")
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    info = {
        "address": f"http://127.0.0.1:{dash}",
        "token": state / "token",
        "env": env,
        "args": [
            "cluster=local_cluster",
            f"cluster.address=http://127.0.0.1:{dash}",
            f"cluster.token_path={state / 'token'}",
        ],
    }
    try:
        yield info
    finally:
        down = subprocess.run(
            [script, "down"], env=env, capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stdout + down.stderr


def _raylight(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> Any:
    return subprocess.run([str(BIN / "raylight"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env or _env(), cwd=ROOT)  # fmt: skip


def _ray_cli(cluster: dict[str, Any], *args: str) -> Any:
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster["token"]))
    return subprocess.run([str(BIN / "ray"), *args, "--address", cluster["address"]],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip


def _job_id(stdout: str) -> str:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("submitted "))
    return line.split()[1]


def test_submitted_training_runs_on_both_nodes_and_ray_sees_the_job(
    local_cluster: dict[str, Any], tmp_path: Path
) -> None:
    r = _raylight("submit", "--follow", *local_cluster["args"], "--", "train", "data=penguins",
                  "trainer.max_epochs=2", "model.hidden_dims=[16]", "scaling.num_workers=2",
                  f"output_dir={tmp_path}")  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = _job_id(r.stdout)
    assert "epoch   2/2" in r.stdout  # the logs streamed back
    assert "SUCCEEDED" in r.stderr
    assert list(tmp_path.glob("runs/*/bundle/bundle.json"))  # outputs where we asked
    # the two Train workers ran one on each node
    actors = _ray_cli(local_cluster, "list", "actors", "--detail", "--format", "json",
                      "--filter", "class_name=RayTrainWorker", "--limit", "100")  # fmt: skip
    assert actors.returncode == 0, actors.stderr
    nodes = {a["node_id"] for a in json.loads(actors.stdout)}
    assert len(nodes) == 2, nodes
    # Ray's own CLI lists the job; raylight's list and logs agree
    listed = _ray_cli(local_cluster, "job", "list")
    assert job_id in listed.stdout, listed.stdout + listed.stderr
    ours = _raylight("jobs", "list", *local_cluster["args"])
    assert ours.returncode == 0 and job_id in ours.stdout
    logs = _raylight("jobs", "logs", job_id, *local_cluster["args"])
    assert logs.returncode == 0 and "epoch   1/2" in logs.stdout


def test_stop_stops_a_running_job(local_cluster: dict[str, Any], tmp_path: Path) -> None:
    r = _raylight("submit", *local_cluster["args"], "--", "train", "data=penguins",
                  "trainer.max_epochs=500", "scaling=single", f"output_dir={tmp_path}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    job_id = _job_id(r.stdout)
    deadline = time.monotonic() + 120
    status = ""
    while time.monotonic() < deadline:
        st = _raylight("jobs", "status", job_id, *local_cluster["args"])
        status = json.loads(st.stdout)["status"]
        if status == "RUNNING":
            break
        time.sleep(2)
    assert status == "RUNNING"
    assert _raylight("jobs", "stop", job_id, *local_cluster["args"]).returncode == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = json.loads(_raylight("jobs", "status", job_id, *local_cluster["args"]).stdout)[
            "status"
        ]
        if status in ("STOPPED", "FAILED", "SUCCEEDED"):
            break
        time.sleep(2)
    assert status == "STOPPED"


def test_missing_or_wrong_token_and_unknown_job_are_refused(
    local_cluster: dict[str, Any], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("0" * 64 + "\n")
    args = [a for a in local_cluster["args"] if not a.startswith("cluster.token_path")]
    r = _raylight("jobs", "list", *args, f"cluster.token_path={wrong}")
    assert r.returncode == 2 and "token" in r.stderr, r.stderr
    assert "0000" not in r.stderr + r.stdout  # the token is never echoed
    # no token source at all (HOME without ~/.ray/auth_token)
    r = _raylight("jobs", "list", *args, env=_env(HOME=str(tmp_path)))
    assert r.returncode == 2 and "token" in r.stderr, r.stderr
    r = _raylight("jobs", "status", "raysubmit_doesnotexist", *local_cluster["args"])
    assert r.returncode == 2 and "no job" in r.stderr, r.stderr


def test_the_unchanged_train_command_runs_as_a_job_and_its_failure_is_the_exit_code(
    local_cluster: dict[str, Any], tmp_path: Path
) -> None:
    # penguins has 2 rows that break the contract: with on_bad_rows=fail the run must fail,
    # on the cluster, and `raylight train ... cluster=local_cluster` must exit 1 saying so.
    r = _raylight("train", "data=penguins", "data.on_bad_rows=fail", "scaling=single",
                  f"output_dir={tmp_path}", *local_cluster["args"])  # fmt: skip
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "bad data" in r.stdout + r.stderr and "FAILED" in r.stderr
