"""Job submission pieces that need no cluster: profiles, security defaults, entrypoints."""

from __future__ import annotations

import shlex
import socket
import time

import pytest

from raylight import jobs
from raylight.config import ConfigError, load_submit_config


def test_profiles_compose_and_bad_ones_are_refused() -> None:
    remote = load_submit_config(["cluster=remote"]).cluster
    assert remote.mode == "job" and remote.auth_mode == "token"
    local = load_submit_config(["cluster=local_cluster"]).cluster
    assert local.address == "http://127.0.0.1:8266" and local.token_path
    with pytest.raises(ConfigError) as err:
        load_submit_config(["cluster=nowhere"])
    assert err.value.problems[0][0] == "cluster"
    with pytest.raises(ConfigError, match="mode=local"):
        load_submit_config(["cluster=local"])


def test_no_auth_beyond_loopback_is_refused_unless_overridden() -> None:
    bad = ["cluster.address=http://10.0.0.5:8265", "cluster.auth_mode=disabled"]
    with pytest.raises(ConfigError, match=r"CVE|token"):
        load_submit_config(bad)
    assert load_submit_config([*bad, "cluster.allow_insecure=true"]).cluster.allow_insecure
    # on 127.0.0.1 no token is the developer's call
    load_submit_config(["cluster.address=http://127.0.0.1:8265", "cluster.auth_mode=disabled"])


def test_entrypoint_ships_the_command_not_the_submit_profile(tmp_path) -> None:
    ep = jobs.entrypoint(
        "train",
        ["experiment=adult_mlp", "cluster=remote", "cluster.address=http://h:8265", "seed=3"],
        storage_path="s3://bucket/runs",
    )
    argv = shlex.split(ep)
    assert argv[:3] == ["python", "jobs/run.py", "train"]
    assert argv[3:] == ["experiment=adult_mlp", "seed=3", "output_dir=s3://bucket/runs"]
    with pytest.raises(jobs.JobError, match="cannot submit"):
        jobs.entrypoint("rm", [], None)


def test_runtime_env_ships_code_without_data_and_merges_the_profile() -> None:
    cluster = load_submit_config([
        "cluster=remote", "cluster.runtime_env={env_vars: {A: '1'}, excludes: [big/]}",
    ]).cluster  # fmt: skip
    env = jobs.runtime_env(cluster)
    assert env["working_dir"] == str(jobs.PROJECT_ROOT)
    assert {"/.venv", "/.git", "/outputs", "/data", "big/"} <= set(env["excludes"])
    assert env["env_vars"]["PYTHONPATH"] == "src" and env["env_vars"]["A"] == "1"


def test_unreachable_address_fails_fast_with_a_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = load_submit_config([f"cluster.address=http://127.0.0.1:{port}"]).cluster
    t0 = time.monotonic()
    with pytest.raises(jobs.JobError, match="cannot reach"):
        jobs.list_jobs(cluster)
    assert time.monotonic() - t0 < 5
