"""KubeRay manifests (``ray.io/v1``): RayCluster, RayJob (a raylight job) and, via
:mod:`raylight.serve.build`, RayService — one cluster spec for all three.

Security in the pod network: every container gets ``RAY_AUTH_MODE=token`` and the token from
a Kubernetes Secret (``raylight-ray-token``, key ``token``), never from the manifest itself.
The dashboard listens on the pod IP because the KubeRay operator talks to it; expose it only
through the cluster's own Service, never a public load balancer.
"""

from __future__ import annotations

import shlex
from importlib.metadata import version
from typing import Any

import yaml

from raylight.cluster import HAPROXY_ENV

API_VERSION = "ray.io/v1"
IMAGE = "ghcr.io/raylight-dev/raylight:0.1.0-ray2.60.0-torch2.13.0-cu128"
TOKEN_SECRET = "raylight-ray-token"
CODE_DIR = "/home/ray/raylight"  # where the Dockerfile puts the project


def _env() -> list[dict[str, Any]]:
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}},
        },
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        # Serve's HTTP ingress: Ray's HAProxy (bundled by ray[serve] on Linux) straight to the
        # replicas, raylight's default (cluster.serve_ingress); what a pod runs is set here.
        *({"name": k, "value": v} for k, v in HAPROXY_ENV.items()),
    ]


def cluster_spec(
    image: str = IMAGE,
    gpus_per_worker: int = 1,
    max_workers: int = 4,
    serve_port: int | None = None,
) -> dict[str, Any]:
    """``rayClusterSpec``: a CPU head (no work scheduled on it) and an autoscaled worker group."""
    head_ports = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
    ]
    if serve_port:
        head_ports.append({"containerPort": serve_port, "name": "serve"})
    worker_limits: dict[str, Any] = {"cpu": "8", "memory": "32Gi"}
    if gpus_per_worker:
        worker_limits["nvidia.com/gpu"] = str(gpus_per_worker)
    return {
        "rayVersion": version("ray"),
        "enableInTreeAutoscaling": True,
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "ray-head",
                            "image": image,
                            "env": _env(),
                            "ports": head_ports,
                            "resources": {
                                "requests": {"cpu": "2", "memory": "8Gi"},
                                "limits": {"cpu": "2", "memory": "8Gi"},
                            },
                        }
                    ]
                }
            },
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu" if gpus_per_worker else "cpu",
                "replicas": 0,
                "minReplicas": 0,
                "maxReplicas": max(1, max_workers),
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "ray-worker",
                                "image": image,
                                "env": _env(),
                                "resources": {"requests": worker_limits, "limits": worker_limits},
                            }
                        ]
                    }
                },
            }
        ],
    }


def raycluster(name: str = "raylight", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": cluster_spec(**spec),
    }


def rayjob(
    command: str, args: list[str], name: str = "raylight-job", image: str = IMAGE, **spec: Any
) -> dict[str, Any]:
    """A RayJob whose entrypoint is the raylight job entrypoint with ``command`` and ``args``.

    The code is in the image (``CODE_DIR``), so no working_dir is uploaded; outputs should go
    to object storage (``output_dir=s3://...``), as the cluster is deleted after the job.
    """
    entry = shlex.join(["python", f"{CODE_DIR}/jobs/run.py", command, *args])
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": entry,
            "runtimeEnvYAML": yaml.safe_dump(
                {"env_vars": {"PYTHONPATH": f"{CODE_DIR}/src"}}, sort_keys=False
            ),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "backoffLimit": 0,
            "rayClusterSpec": cluster_spec(image=image, **spec),
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (embedded YAML) as readable blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


def shipped_manifests() -> dict[str, dict[str, Any]]:
    """The manifests in ``cluster/kuberay/``: regenerate with
    ``python -c "from raylight.kuberay import write_shipped; write_shipped()"`` (a test checks
    the files match, so pins never drift from pyproject's)."""
    from raylight.config import ServeConfig
    from raylight.serve.build import rayservice

    bucket = "s3://YOUR-BUCKET/raylight"
    serve_cfg = ServeConfig(
        bundle=f"{bucket}/runs/YOUR-RUN/bundle",
        autoscaling={"min_replicas": 1, "max_replicas": 4},
        num_cpus=1,
    )
    return {
        "raycluster.yaml": raycluster(),
        "rayjob.yaml": rayjob(
            "train", ["experiment=adult_mlp", f"output_dir={bucket}"], name="raylight-train"
        ),
        "rayservice.yaml": rayservice(serve_cfg),
    }


def write_shipped(root: str = "cluster/kuberay") -> None:
    from pathlib import Path

    for name, doc in shipped_manifests().items():
        header = (
            "# Generated by raylight.kuberay.write_shipped(); edit the code, not this file.\n"
            f"# Token: kubectl create secret generic {TOKEN_SECRET} --from-literal=token=$(openssl rand -hex 32)\n"
        )
        (Path(root) / name).write_text(header + dump(doc))
