"""Deploy artifacts: a Serve config file for ``serve deploy`` and a KubeRay ``RayService``.

Both embed the same application entry (``import_path: raylight.serve.app:build_app`` plus
``args``), and ``args`` is exactly :class:`~raylight.config.ServeAppArgs`, which Serve validates
when it builds the app, so a typo in the file fails the deploy with the key that is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylight import kuberay

if TYPE_CHECKING:
    from raylight.config import ServeConfig

IMPORT_PATH = "raylight.serve.app:build_app"


def application(cfg: ServeConfig) -> dict[str, Any]:
    """One entry of a Serve config's ``applications``."""
    args = cfg.app_args().model_dump(mode="json", exclude_defaults=True)
    return {
        "name": cfg.name,
        "route_prefix": cfg.route_prefix,
        "import_path": IMPORT_PATH,
        "args": args,
    }


def serve_config(cfg: ServeConfig) -> dict[str, Any]:
    """A Serve config file (``serve deploy FILE`` / ``serve run FILE``)."""
    http: dict[str, Any] = {"host": cfg.host, "port": cfg.port}
    if cfg.proxy_timeout_s:
        http["request_timeout_s"] = cfg.proxy_timeout_s
    return {
        "proxy_location": cfg.proxy_location,
        "http_options": http,
        "applications": [application(cfg)],
    }


def rayservice(cfg: ServeConfig, image: str = kuberay.IMAGE) -> dict[str, Any]:
    """A KubeRay ``RayService``: the same app on a Ray cluster with an autoscaled worker group.

    The bundle path must be readable from the pods (an object-store URI or a mounted volume).
    """
    app = application(cfg)
    max_workers = cfg.autoscaling.max_replicas if cfg.autoscaling else cfg.num_replicas
    return {
        "apiVersion": kuberay.API_VERSION,
        "kind": "RayService",
        "metadata": {"name": cfg.name.replace("_", "-").lower()},
        "spec": {
            # KubeRay deploys this through the Ray dashboard's REST API on the head pod.
            "serveConfigV2": kuberay.dump(
                {"http_options": {"host": "0.0.0.0", "port": cfg.port}, "applications": [app]}
            ),
            "rayClusterConfig": kuberay.cluster_spec(
                image=image,
                gpus_per_worker=1 if cfg.num_gpus else 0,
                max_workers=max_workers,
                serve_port=cfg.port,
            ),
        },
    }


def write(cfg: ServeConfig, out_dir: str, image: str) -> dict[str, str]:
    """Write ``serve_config.yaml`` and ``rayservice.yaml`` under ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "serve_config": out / "serve_config.yaml",
        "rayservice": out / "rayservice.yaml",
    }
    files["serve_config"].write_text(kuberay.dump(serve_config(cfg)))
    files["rayservice"].write_text(kuberay.dump(rayservice(cfg, image=image)))
    return {k: str(v) for k, v in files.items()}
