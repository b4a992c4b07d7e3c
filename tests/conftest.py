"""Shared fixtures: one real local Ray per test session (ray.init costs seconds here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BYO_EXAMPLE = ROOT / "examples" / "byo_model"  # importable like a user's own package

# Before anything imports ray: the embedded test cluster runs without token auth, quietly.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "30")
# raylight's default Serve ingress on Linux (cluster.serve_ingress=auto): Ray's HAProxy, set up
# as an embedded cluster has it (the fixture below starts Ray itself).
from raylight.cluster import HAPROXY_PORT_ENV, embedded_haproxy_env  # noqa: E402 (imports no ray)

for _key, _value in embedded_haproxy_env().items():
    if _key not in HAPROXY_PORT_ENV:  # those only for the session's Ray (see ray_session)
        os.environ.setdefault(_key, _value)
# Every test's runs go to the embedded store under its own output dir, never a user's server.
os.environ.pop("MLFLOW_TRACKING_URI", None)
# The pii salt must be in the environment Ray's workers (and Serve replicas) inherit.
os.environ["RAYLIGHT_PII_SALT"] = "raylight-test-salt"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory):
    """A real local Ray with 2 CPUs; workers can import tests/helpers."""
    import ray

    from raylight.cluster import _configure_data

    temp = tmp_path_factory.mktemp("ray")
    # HAProxy's free stats/metrics ports reach this Ray's processes only: a `raylight serve` a
    # test starts inherits os.environ, and must pick its own ports.
    ports = {k: v for k, v in embedded_haproxy_env().items() if k in HAPROXY_PORT_ENV}
    os.environ.update(ports)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 1024 * 1024,
        logging_level="ERROR",
        log_to_driver=False,
        _temp_dir=str(temp),
        runtime_env={
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(
                    [str(TESTS), str(BYO_EXAMPLE), os.environ.get("PYTHONPATH", "")]
                )
            }
        },
    )
    for key in ports:
        os.environ.pop(key)
    _configure_data()
    yield ray
    ray.shutdown()


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def penguins_overrides(outdir: Path, *extra: str) -> list[str]:
    """Tiny, fast penguins config for integration tests."""
    return [
        "data=penguins",
        f"output_dir={outdir}",
        "cluster.auth_mode=disabled",
        "model.hidden_dims=[32,32]",
        "model.lr=0.01",
        "trainer.num_checkpoints=2",
        *extra,
    ]
