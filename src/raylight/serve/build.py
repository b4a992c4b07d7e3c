"""Deploy artifacts: a Serve config file for ``serve deploy`` and a KubeRay ``RayService``.

Both embed the same application entry (``import_path: raylight.serve.app:build_app`` plus
``args``), and ``args`` is exactly :class:`~raylight.config.ServeAppArgs`, which Serve validates
when it builds the app, so a typo in the file fails the deploy with the key that is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from raylight.config import ServeConfig

IMPORT_PATH = "raylight.serve.app:build_app"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the RayService's embedded Serve config) as readable blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


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
    return {"proxy_location": "EveryNode", "http_options": http, "applications": [application(cfg)]}


def rayservice(cfg: ServeConfig, image: str, ray_version: str) -> dict[str, Any]:
    """A KubeRay ``RayService``: the same app on a Ray cluster with an autoscaled worker group.

    The bundle path must be readable from the pods (an object-store URI or a mounted volume).
    """
    app = application(cfg)
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    worker_resources: dict[str, Any] = {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    if cfg.num_gpus:
        worker_resources["limits"]["nvidia.com/gpu"] = "1"
        worker_resources["requests"]["nvidia.com/gpu"] = "1"
    max_workers = cfg.autoscaling.max_replicas if cfg.autoscaling else cfg.num_replicas
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": cfg.name.replace("_", "-").lower()},
        "spec": {
            # KubeRay deploys this through the Ray dashboard's REST API on the head pod.
            "serveConfigV2": yaml.safe_dump(
                {"http_options": {"host": "0.0.0.0", "port": cfg.port}, "applications": [app]},
                sort_keys=False,
            ),
            "rayClusterConfig": {
                "rayVersion": ray_version,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    # Inside the pod network the operator must reach the dashboard; expose it
                    # only through the cluster's Service, never a public load balancer.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    "image": image,
                                    "resources": resources,
                                    "ports": [
                                        {"containerPort": 6379, "name": "gcs"},
                                        {"containerPort": 8265, "name": "dashboard"},
                                        {"containerPort": cfg.port, "name": "serve"},
                                    ],
                                }
                            ]
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu" if cfg.num_gpus else "cpu",
                        "replicas": 1,
                        "minReplicas": 0 if cfg.num_gpus else 1,
                        "maxReplicas": max(1, max_workers),
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "ray-worker",
                                        "image": image,
                                        "resources": worker_resources,
                                    }
                                ]
                            }
                        },
                    }
                ],
            },
        },
    }


def write(cfg: ServeConfig, out_dir: str, image: str) -> dict[str, str]:
    """Write ``serve_config.yaml`` and ``rayservice.yaml`` under ``out_dir``; return their paths."""
    from importlib.metadata import version

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "serve_config": out / "serve_config.yaml",
        "rayservice": out / "rayservice.yaml",
    }
    files["serve_config"].write_text(yaml.dump(serve_config(cfg), Dumper=_Dumper, sort_keys=False))
    svc = rayservice(cfg, image=image, ray_version=version("ray"))
    files["rayservice"].write_text(yaml.dump(svc, Dumper=_Dumper, sort_keys=False))
    return {k: str(v) for k, v in files.items()}
