"""Shipped cluster configs: launcher YAMLs validate against Ray's own schema, KubeRay manifests
have the RayCluster/RayJob/RayService structure and the project's pinned versions."""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = sorted((ROOT / "cluster" / "launcher").glob("*.yaml"))


def _pins() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    return {"ray": re.search(r"ray\[[^\]]*\]==([\d.]+)", text).group(1), "torch": "2.13.0"}


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_configs_validate_against_rays_schema(path: Path) -> None:
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load(path.read_text())
    jsonschema.validate(cfg, schema)
    pins = _pins()
    assert (
        f"ray{pins['ray']}" in cfg["docker"]["image"]
        and f"torch{pins['torch']}" in cfg["docker"]["image"]
    )
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    gpu = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert gpu and all(t["min_workers"] == 0 for t in gpu)
    start = " ".join(cfg["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in start and "--dashboard-host=127.0.0.1" in start


def test_launcher_set_covers_three_clouds() -> None:
    assert [p.name for p in LAUNCHERS] == ["aws-gpu.yaml", "azure-gpu.yaml", "gcp-gpu.yaml"]


def test_kuberay_manifests_are_generated_and_pinned() -> None:
    from raylight.kuberay import TOKEN_SECRET, dump, shipped_manifests

    for name, doc in shipped_manifests().items():
        shipped = (ROOT / "cluster" / "kuberay" / name).read_text()
        assert shipped.split("\n", 2)[2] == dump(doc), f"{name} is stale: run write_shipped()"
        spec = doc["spec"]
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
        assert cluster["rayVersion"] == version("ray") == _pins()["ray"]
        containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
            g["template"]["spec"]["containers"][0] for g in cluster["workerGroupSpecs"]
        ]
        for c in containers:
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == TOKEN_SECRET
    job = shipped_manifests()["rayjob.yaml"]
    assert job["kind"] == "RayJob" and "jobs/run.py train" in job["spec"]["entrypoint"]
    svc = shipped_manifests()["rayservice.yaml"]
    inner = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert inner["applications"][0]["import_path"] == "raylight.serve.app:build_app"


def test_dockerfile_uses_the_same_pins() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pins = _pins()
    assert (
        f"rayproject/ray:{pins['ray']}" in text
        and f"ray[data,train,tune,serve]=={pins['ray']}" in text
    )
    assert f"torch=={pins['torch']}" in text


def test_render_kuberay_job_from_a_config(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "job.yaml"
    r = subprocess.run(
        [str(Path(sys.executable).with_name("raylight")), "cluster", "render", "kuberay-job",
         "--out", str(out), "data=penguins", "trainer.max_epochs=3", "cluster=remote"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "RayJob"
    assert doc["spec"]["entrypoint"].endswith(
        "jobs/run.py train data=penguins trainer.max_epochs=3"
    )
    bad = subprocess.run(
        [str(Path(sys.executable).with_name("raylight")), "cluster", "render", "kuberay-job",
         "trainer.max_epochs=-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "trainer.max_epochs" in bad.stderr


def test_cluster_launchers_and_local_cluster_start_serve_with_haproxy() -> None:
    """The same ingress environment as raylight.cluster.HAPROXY_ENV (the manifests use it)."""
    from raylight.cluster import HAPROXY_ENV

    for path in LAUNCHERS:
        text = " ".join(path.read_text().split())
        assert text.count("RAY_SERVE_ENABLE_HA_PROXY=1") == 2, path.name  # head and workers
        retry = HAPROXY_ENV["RAY_SERVE_HAPROXY_RETRY_ON"]
        assert text.count(f"RAY_SERVE_HAPROXY_RETRY_ON='{retry}'") == 2, path.name
    script = (ROOT / "scripts" / "local-cluster.sh").read_text()
    for key, value in HAPROXY_ENV.items():
        assert f"{key}=${{{key}:-{value}}}" in script, key


@pytest.mark.parametrize(
    ("overrides", "env_before", "expected"),
    [
        ([], None, "0"),  # embedded: nothing drains its one node
        ([], "1", "1"),  # an operator's own setting wins over the default
        (["cluster.preemption_watcher=true"], "0", "1"),  # the config's explicit choice wins
        (["cluster=address"], None, None),  # a running cluster: Ray's default (on)
        (["cluster=address", "cluster.preemption_watcher=false"], None, "0"),
    ],
)
def test_preemption_watcher_env(
    overrides: list[str],
    env_before: str | None,
    expected: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from raylight.cluster import PREEMPTION_WATCHER_ENV, _quiet_env
    from raylight.config import load_train_config

    # _quiet_env sets other variables too: keep them out of this test process's environment.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr("raylight.cluster._SET_HERE", set())
    monkeypatch.delenv(PREEMPTION_WATCHER_ENV, raising=False)
    if env_before is not None:
        monkeypatch.setenv(PREEMPTION_WATCHER_ENV, env_before)
    _quiet_env(load_train_config(overrides).cluster)
    assert os.environ.get(PREEMPTION_WATCHER_ENV) == expected
    # A later run in the same process on a running cluster gets Ray's default back, unless
    # the value was the operator's own.
    _quiet_env(load_train_config(["cluster=address"]).cluster)
    assert os.environ.get(PREEMPTION_WATCHER_ENV) == (
        env_before if expected == env_before else None
    )
