"""Ray Jobs API client: submit raylight commands as Ray jobs, and list/inspect/stop them.

A job's entrypoint is ``python jobs/run.py <command> <overrides>`` run in this project's code,
shipped as the job's ``working_dir`` (data, outputs, virtualenvs and VCS metadata excluded), so
the cluster runs exactly the code that was submitted. Inside the job the command connects to
the cluster it runs on (``cluster=address cluster.address=auto``). Jobs are ordinary Ray jobs:
``ray job list`` and the dashboard show them.

Authentication: with token auth (the default) the Jobs SDK sends the token Ray finds in
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` (set from ``cluster.token_path``) or
``~/.ray/auth_token``; the token is never printed or put in the job's metadata.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylight.config import ClusterConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = "jobs/run.py"
COMMANDS = ("train", "tune", "predict", "serve", "evaluate")
# Never uploaded: data, run outputs, environments, caches, VCS, local cluster state. Patterns are
# gitignore-style: a leading "/" anchors to the project root (so "/data" is not conf/data/).
EXCLUDES = [
    "/.git", "/.venv", "/venv", "/outputs", "/mlruns", "/data", "/.local-cluster", "/.gpu",
    "/deploy", "/benchmarks/results", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
    ".hypothesis", "*.parquet", "*.csv",
]  # fmt: skip


class JobError(RuntimeError):
    """The Jobs API refused or cannot be reached; the message says which and why."""


@dataclass
class Submitted:
    job_id: str
    address: str
    entrypoint: str


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not after the SDK's retries, when nothing listens at ``address``."""
    from raylight.net import unreachable

    exc = unreachable(address, 8265, timeout_s)
    if exc is not None:
        raise JobError(f"cannot reach the Ray Jobs API at {address}: {exc}")


def client(cluster: ClusterConfig) -> Any:
    """A ``JobSubmissionClient`` for the profile's address, with its auth settings applied."""
    from raylight.cluster import _quiet_env

    if not cluster.address:
        raise JobError("no cluster address: use a job profile (cluster=remote) or --address URL")
    if "ray" not in sys.modules:
        # The profile decides, not a stray RAY_AUTH_MODE in the shell: Ray reads it on import.
        os.environ["RAY_AUTH_MODE"] = cluster.auth_mode
    _quiet_env(cluster)  # token path and quiet defaults, before Ray is imported
    _check_reachable(cluster.address)
    import logging

    from ray.job_submission import JobSubmissionClient

    # Per-file packaging chatter ("Ignoring upload ...", default excludes) is not for users.
    for name in ("ray._private.runtime_env", "ray.dashboard.modules.dashboard_sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)

    try:
        return JobSubmissionClient(cluster.address)
    except Exception as exc:  # the SDK raises plain exceptions for HTTP 401/403 and others
        raise JobError(_explain(exc, cluster.address)) from None


def _explain(exc: Exception, address: str) -> str:
    text = str(exc)
    if "401" in text or "Authentication required" in text:
        return f"the cluster at {address} requires a token and none was sent (cluster.token_path)"
    if "403" in text or "Authentication failed" in text:
        return f"the cluster at {address} refused the token (wrong token)"
    return f"Jobs API at {address}: {text.splitlines()[0] if text else type(exc).__name__}"


def strip_cluster_overrides(args: list[str]) -> list[str]:
    """Drop ``cluster=`` / ``cluster.*=`` overrides: they say where to submit, not how to run."""
    return [a for a in args if a.lstrip("+~").split("=", 1)[0].split(".")[0] != "cluster"]


def runtime_env(cluster: ClusterConfig, env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """Ship this project's code; the profile's own runtime_env keys are merged over it."""
    base: dict[str, Any] = {
        "working_dir": str(PROJECT_ROOT),
        "excludes": list(EXCLUDES),
        # The shipped src/ wins over whatever raylight the cluster has installed.
        "env_vars": {"PYTHONPATH": "src", "RAYLIGHT_JOB": "1", **(env_vars or {})},
    }
    if cluster.storage_endpoint:
        base["env_vars"]["AWS_ENDPOINT_URL_S3"] = cluster.storage_endpoint
    extra = dict(cluster.runtime_env or {})
    if "env_vars" in extra:
        base["env_vars"].update(extra.pop("env_vars"))
    if "excludes" in extra:
        base["excludes"] += list(extra.pop("excludes"))
    base.update(extra)
    return base


def entrypoint(command: str, args: list[str], storage_path: str | None) -> str:
    """The job's shell entrypoint: the command, its overrides, and where outputs go."""
    import shlex

    if command not in COMMANDS:
        raise JobError(f"cannot submit {command!r}; one of {', '.join(COMMANDS)}")
    args = strip_cluster_overrides(args)
    if storage_path and not any(a.startswith("output_dir=") for a in args):
        args.append(f"output_dir={storage_path}")
    return shlex.join(["python", ENTRYPOINT, command, *args])


def default_storage(cluster: ClusterConfig, output_dir: str = "outputs") -> str:
    if cluster.storage_path:
        return cluster.storage_path
    return output_dir if "://" in output_dir else str(Path(output_dir).expanduser().resolve())


def submit(
    cluster: ClusterConfig, command: str, args: list[str], submission_id: str | None = None
) -> Submitted:
    """Submit ``raylight <command> <args>`` as a Ray job; return its id."""
    jc = client(cluster)
    ep = entrypoint(command, args, default_storage(cluster))
    env = runtime_env(cluster)
    deadline = time.monotonic() + 60
    while True:
        try:
            job_id = jc.submit_job(
                entrypoint=ep,
                runtime_env=env,
                submission_id=submission_id,
                metadata={"raylight_command": command},
            )
            break
        except Exception as exc:
            # A cluster that just started has no job agent ready for a few seconds; Ray says
            # to try again later. Anything else is final.
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(2)
                continue
            raise JobError(_explain(exc, str(cluster.address))) from None
    return Submitted(job_id=job_id, address=str(cluster.address), entrypoint=ep)


def _call(cluster: ClusterConfig, fn: str, *args: Any) -> Any:
    jc = client(cluster)
    try:
        return getattr(jc, fn)(*args)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise JobError(f"no job {args[0]!r} on {cluster.address}") from None
        raise JobError(_explain(exc, str(cluster.address))) from None


def list_jobs(cluster: ClusterConfig) -> list[dict[str, Any]]:
    jobs = _call(cluster, "list_jobs")
    return [
        {
            "job_id": j.submission_id or j.job_id,
            "status": str(j.status.value if hasattr(j.status, "value") else j.status),
            "entrypoint": j.entrypoint,
            "start_time": j.start_time,
            "end_time": j.end_time,
            "message": j.message,
        }
        for j in jobs
    ]


def status(cluster: ClusterConfig, job_id: str) -> dict[str, Any]:
    info = _call(cluster, "get_job_info", job_id)
    return {
        "job_id": job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "entrypoint": info.entrypoint,
        "message": info.message,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "driver_node_id": getattr(info, "driver_node_id", None),
    }


def logs(cluster: ClusterConfig, job_id: str) -> str:
    return _call(cluster, "get_job_logs", job_id)


def follow(cluster: ClusterConfig, job_id: str) -> Iterator[str]:
    """Stream a job's logs until it ends (the SDK's websocket tail)."""
    import asyncio

    jc = client(cluster)
    status(cluster, job_id)  # a clear error for an unknown id before streaming
    queue: list[str] = []

    async def tail() -> None:
        async for chunk in jc.tail_job_logs(job_id):
            queue.append(chunk)

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(tail())
        while not task.done():
            loop.run_until_complete(asyncio.wait([task], timeout=0.5))
            while queue:
                yield queue.pop(0)
        while queue:
            yield queue.pop(0)
        task.result()
    finally:
        loop.close()


def stop(cluster: ClusterConfig, job_id: str) -> bool:
    return bool(_call(cluster, "stop_job", job_id))


TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def wait(cluster: ClusterConfig, job_id: str, timeout_s: float | None = None) -> str:
    """Poll until the job ends; its final status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        st = status(cluster, job_id)["status"]
        if st in TERMINAL:
            return st
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {st} after {timeout_s:.0f} s")
        time.sleep(1.0)
