"""Deploy, update, inspect, roll back and stop a served model.

Two ways to run, chosen by the cluster profile:

- ``cluster=local`` (the default): an embedded Ray in this process; ``raylight serve`` stays in
  the foreground (like ``serve run``) and writes ``<output_dir>/serve/<name>.json`` (URL, pid),
  so ``raylight serve status|shutdown`` from another terminal find it over HTTP.
- ``cluster=address``: the app is deployed onto a running cluster and the command returns;
  deploying the same ``name`` again switches the served bundle in place (no failed requests),
  and ``status``, ``rollback`` and ``shutdown`` talk to the cluster.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylight import bundle as bundle_io

if TYPE_CHECKING:
    from raylight.config import ServeAppArgs, ServeConfig


class ServeError(RuntimeError):
    """A serve command cannot do what was asked (nothing deployed, nothing to roll back to)."""


@dataclass
class Deployed:
    url: str
    name: str
    versions: dict[str, dict[str, str]]
    previous: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def url_of(cfg: ServeConfig) -> str:
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"


def state_path(cfg: ServeConfig) -> Path:
    return Path(cfg.output_dir) / "serve" / f"{cfg.name}.json"


def preflight(args: ServeAppArgs) -> None:
    """Load every bundle once here, so a broken one stops start-up with its own error."""
    from raylight.serve.app import pii_spec

    for path in filter(None, (args.bundle, args.canary.bundle)):
        b = bundle_io.load(path)
        try:
            pii_spec(b.input_schema, args.request_log.enabled)
        except RuntimeError as exc:
            raise ServeError(str(exc)) from None


def current_routing(name: str) -> dict[str, Any] | None:
    """The routing a running app serves (via its deployment handle), or None if not deployed."""
    from ray import serve

    if name not in serve.status().applications:
        return None
    handle = serve.get_app_handle(name)
    return handle.routing.remote().result(timeout_s=30)


def deploy(cfg: ServeConfig) -> Deployed:
    """Start Serve's HTTP proxy (host/port from the config) and deploy or update the app.

    Needs Ray initialized (:func:`raylight.cluster.init`). Deploying over a running app of the
    same name keeps its current stable bundle as ``previous`` for rollback.
    """
    from ray import serve

    from raylight.serve.app import build_app

    t0 = time.perf_counter()
    args = cfg.app_args()
    serve.start(
        proxy_location=cfg.proxy_location,
        http_options={
            "host": cfg.host,
            "port": cfg.port,
            **({"request_timeout_s": cfg.proxy_timeout_s} if cfg.proxy_timeout_s else {}),
        },
        logging_config={"enable_access_log": cfg.access_log, "log_level": "WARNING"},
    )
    started = time.perf_counter()
    routing = current_routing(cfg.name)
    if routing and args.previous is None and routing["stable"] != args.bundle:
        args = args.model_copy(update={"previous": routing["stable"]})
    serve.run(build_app(args), name=cfg.name, route_prefix=cfg.route_prefix, blocking=False)
    routing = current_routing(cfg.name) or {}
    return Deployed(
        url=url_of(cfg),
        name=cfg.name,
        versions=routing.get("versions", {}),
        previous=routing.get("previous"),
        timings={"serve_start_s": started - t0, "deploy_s": time.perf_counter() - started},
    )


def rollback(cfg: ServeConfig) -> Deployed:
    """Drop the canary if one is live; otherwise return to the previous stable bundle."""
    from raylight.config import ServeAppArgs, ServeConfig

    routing = current_routing(cfg.name)
    if routing is None:
        raise ServeError(f"no Serve application named {cfg.name!r} is running")
    base = {**routing["args"], "bundle": routing["stable"]}
    if routing.get("canary"):
        args = {**base, "previous": routing.get("previous")}
    elif routing.get("previous"):
        args = {**base, "bundle": routing["previous"], "previous": routing["stable"]}
    else:
        raise ServeError(f"{cfg.name!r} has no canary and no previous version to roll back to")
    ServeAppArgs.model_validate(args)
    merged = ServeConfig.model_validate({
        **cfg.model_dump(exclude=set(ServeAppArgs.model_fields)), **args,
    })  # fmt: skip
    return deploy(merged)


def status(name: str) -> dict[str, Any]:
    """Serve's status of the app and its deployments, plus what each route serves."""
    from ray import serve

    apps = serve.status().applications
    if name not in apps:
        raise ServeError(f"no Serve application named {name!r} is running")
    app = apps[name]
    return {
        "name": name,
        "status": str(app.status.value if hasattr(app.status, "value") else app.status),
        "message": app.message,
        "deployments": {
            d: {
                "status": str(s.status.value if hasattr(s.status, "value") else s.status),
                "replicas": {str(k): v for k, v in s.replica_states.items()},
            }
            for d, s in app.deployments.items()
        },
        "routing": current_routing(name),
    }


def shutdown(name: str) -> None:
    """Delete the app; stop Serve when no other app is left."""
    from ray import serve

    if name not in serve.status().applications:
        raise ServeError(f"no Serve application named {name!r} is running")
    serve.delete(name)
    if not serve.status().applications:
        serve.shutdown()


# ----------------------------------------------------------------------------- foreground


def write_state(cfg: ServeConfig) -> Path:
    """Record this foreground server (URL, pid) for ``status`` and ``shutdown``."""
    path = state_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url_of(cfg), "pid": os.getpid(), "name": cfg.name}))
    return path


def read_state(cfg: ServeConfig) -> dict[str, Any]:
    path = state_path(cfg)
    if not path.exists():
        raise ServeError(
            f"no foreground `raylight serve` recorded at {path}; for a cluster pass cluster=address"
        )
    return json.loads(path.read_text())


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def local_status(cfg: ServeConfig) -> dict[str, Any]:
    """Status of the foreground server recorded for ``cfg.name``: asks its /health."""
    state = read_state(cfg)
    try:
        health = http_json(state["url"] + "/health")
    except (OSError, urllib.error.URLError) as exc:
        return {**state, "status": f"not answering ({exc})"}
    return {**state, "status": health.get("status"), "versions": health.get("versions")}


def local_shutdown(cfg: ServeConfig, timeout_s: float = 30.0) -> None:
    """Stop the foreground server recorded for ``cfg.name`` (SIGTERM: it shuts down cleanly)."""
    state = read_state(cfg)
    pid = int(state["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        state_path(cfg).unlink(missing_ok=True)
        raise ServeError(
            f"the server recorded for {cfg.name!r} (pid {pid}) is not running"
        ) from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    raise ServeError(f"pid {pid} did not stop within {timeout_s:.0f} s")


def _alive(pid: int) -> bool:
    """The process runs (an exited one its parent has not reaped yet counts as stopped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class StopSignal:
    """SIGINT/SIGTERM set a flag instead of raising; installed before start-up begins.

    Installed early so a stop that arrives while the app is still deploying is not lost (a
    background job of a non-interactive shell even starts with SIGINT ignored).
    """

    def __init__(self) -> None:
        self.stopped = False
        self.install()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def wait(self) -> None:
        while not self.stopped:
            time.sleep(0.2)
