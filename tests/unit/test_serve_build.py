"""Deploy artifacts: the Serve config validates with Serve's own schema and builder-args path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raylight.config import ConfigError, load_serve_config
from raylight.serve.build import IMPORT_PATH, write


@pytest.fixture
def bundle_dir(tmp_path: Path) -> str:
    from helpers.bundles import write_tiny

    write_tiny(tmp_path / "b")
    return str(tmp_path / "b")


def test_build_writes_a_serve_config_serve_accepts(bundle_dir: str, tmp_path: Path) -> None:
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from raylight.serve.app import build_app

    cfg = load_serve_config([
        f"bundle={bundle_dir}", "port=8123", "autoscaling={min_replicas: 1, max_replicas: 3}",
        "batch.max_batch_size=16", "auth.api_key_env=MY_KEY",
    ])  # fmt: skip
    files = write(cfg, str(tmp_path / "deploy"), image="example/raylight:1")
    doc = yaml.safe_load(Path(files["serve_config"]).read_text())
    schema = ServeDeploySchema.model_validate(doc)
    app = schema.applications[0]
    assert app.import_path == IMPORT_PATH and doc["http_options"]["port"] == 8123
    assert "MY_KEY" in str(doc) and "s3cret" not in str(doc)  # the env var's name, never a key
    # Serve validates `args` against build_app's pydantic annotation; so do we, the same way
    built = call_user_app_builder_with_args_if_necessary(build_app, app.args)
    dep = built._bound_deployment
    assert dep.name == "model"
    assert dep._deployment_config.autoscaling_config.max_replicas == 3
    assert dep._deployment_config.user_config["stable"] == bundle_dir
    with pytest.raises(Exception, match="batch"):
        call_user_app_builder_with_args_if_necessary(
            build_app, {**app.args, "batch": {"max_batch_size": 0}}
        )
    svc = yaml.safe_load(Path(files["rayservice"]).read_text())
    assert svc["kind"] == "RayService" and svc["apiVersion"] == "ray.io/v1"
    inner = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert inner["applications"][0]["args"] == app.args
    head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "example/raylight:1"
    # Proxies on every node by default (Serve's own default); HeadOnly when configured.
    assert doc["proxy_location"] == "EveryNode"
    one = load_serve_config([f"bundle={bundle_dir}", "proxy_location=HeadOnly"])
    head_only = write(one, str(tmp_path / "deploy2"), image="example/raylight:1")
    assert (
        yaml.safe_load(Path(head_only["serve_config"]).read_text())["proxy_location"] == "HeadOnly"
    )


def test_bad_serve_config_lists_every_problem(bundle_dir: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_serve_config([
            "bundle=/nope", "port=0", "canary.weight=2", "batch.max_batch_size=0",
            "autoscaling={min_replicas: 3, max_replicas: 1}", "colour=red",
        ])  # fmt: skip
    keys = {k for k, _ in err.value.problems}
    assert {
        "bundle",
        "port",
        "canary.weight",
        "batch.max_batch_size",
        "autoscaling",
        "colour",
    } <= keys
    with pytest.raises(ConfigError) as err:
        load_serve_config([])
    assert err.value.problems == [  # once, not twice
        ("bundle", "required: the bundle directory to serve (or model=models:/NAME@ALIAS)")
    ]
    with pytest.raises(ConfigError, match=r"canary\.bundle"):
        load_serve_config([f"bundle={bundle_dir}", "canary.weight=0.2"])
