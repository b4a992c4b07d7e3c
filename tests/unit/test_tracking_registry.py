"""The model registry on a real embedded MLflow store (SQLite in a temp dir), and tracking's
plain helpers. No Ray: bundles come from tests/helpers/bundles.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.bundles import write_tiny
from typer.testing import CliRunner

from raylight import registry, tracking
from raylight.cli import app
from raylight.config import ConfigError, TrackingConfig, load_train_config


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, Path]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "outputs"
    return registry.open_store(None, str(out)), out


def _bundle(tmp_path: Path, name: str = "b1") -> str:
    path = tmp_path / name
    write_tiny(path)
    return str(path)


# ----------------------------------------------------------------------------- helpers


def test_flatten_gives_dotted_keys_and_json_values() -> None:
    flat = tracking.flatten({"model": {"lr": 0.01, "hidden_dims": [8, 4]}, "a": None, "s": "x"})
    assert flat == {"model.lr": "0.01", "model.hidden_dims": "[8, 4]", "a": "null", "s": "x"}
    assert len(tracking.flatten({"k": "x" * 10_000})["k"]) == 6000


def test_numeric_metrics_drop_bookkeeping_and_non_finite() -> None:
    m = tracking.numeric_metrics(
        {"val_loss": 0.5, "epoch": 3, "flag": True, "name": "x", "nan": float("nan"), "n": 7}
    )
    assert m == {"val_loss": 0.5, "n": 7.0}


def test_store_resolution_explicit_env_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = TrackingConfig()
    assert tracking.mlflow_uri(t, str(tmp_path)) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    # A remote output root keeps the database local (a SQLite file cannot live on S3).
    assert tracking.mlflow_uri(t, "s3://b/x").endswith("/outputs/mlflow.db")
    assert tracking.artifact_location(t, "s3://b/x") == "s3://b/x/mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert tracking.mlflow_uri(t, str(tmp_path)) == "http://127.0.0.1:5001"
    explicit = TrackingConfig.model_validate({"mlflow": {"tracking_uri": "sqlite:////x.db"}})
    assert tracking.mlflow_uri(explicit, str(tmp_path)) == "sqlite:////x.db"


def test_unreachable_tracking_server_fails_fast_and_clearly() -> None:
    import time

    t0 = time.time()
    with pytest.raises(tracking.TrackingError, match="cannot be reached"):
        tracking.client("http://127.0.0.1:9")
    assert time.time() - t0 < 5


def test_online_wandb_that_cannot_reach_its_server_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a key, but no server at the address
    t = TrackingConfig.model_validate({"backends": ["wandb"], "wandb": {
        "mode": "online", "base_url": "http://127.0.0.1:9", "init_timeout_s": 5,
    }})  # fmt: skip
    t0 = time.time()
    with pytest.raises(tracking.TrackingError, match=r"W&B \(online\) could not start a run"):
        tracking.open_runs(t, str(tmp_path), "exp", "run")
    assert time.time() - t0 < 30


def test_tracking_config_problems_are_reported_before_any_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ConfigError) as exc:
        load_train_config([
            "data=penguins", "tracking.backends=[wandb,neptune]",
            "tracking.wandb.mode=online", "register=bad/name",
        ])  # fmt: skip
    text = str(exc.value)
    assert "tracking.backends" in text and "neptune" in text
    assert "tracking.wandb.mode" in text and "WANDB_API_KEY" in text
    assert "register" in text


def test_combined_backends_compose() -> None:
    cfg = load_train_config(["data=penguins", "tracking=mlflow_wandb"])
    assert cfg.tracking.backends == ["mlflow", "wandb", "csv"]
    assert cfg.tracking.wandb.mode == "offline"


# ----------------------------------------------------------------------------- registry


def test_parse_ref() -> None:
    assert registry.parse_ref("m") == ("m", None, None)
    assert registry.parse_ref("models:/m/3") == ("m", "3", None)
    assert registry.parse_ref("m@production") == ("m", None, "production")
    with pytest.raises(registry.RegistryError):
        registry.parse_ref("models:/a/b/c")


def test_register_promote_rollback_and_lineage(store, tmp_path: Path) -> None:
    c, out = store
    b1, b2 = _bundle(tmp_path, "b1"), _bundle(tmp_path, "b2")
    v1 = registry.register(c, b1, "tiny", description="first", output_dir=str(out))
    v2 = registry.register(c, b2, "tiny", output_dir=str(out))
    assert (v1["version"], v2["version"]) == ("1", "2")
    # A bundle trained without tracking gets a run of its own: version → run → bundle.
    assert v1["run_id"] and v1["run_id"] != v2["run_id"]
    assert registry.runs_versions(c, v1["run_id"])[0]["version"] == "1"
    shown = registry.show(c, "tiny/1")
    assert shown["lineage"]["data_fingerprint"] == "sha256:x"
    assert shown["description"] == "first" and shown["registered_by"]
    assert shown["run"]["status"] == "FINISHED"

    assert registry.promote(c, "tiny", "1", "production")["previous"] is None
    assert registry.promote(c, "tiny", "latest", "production")["previous"] == "1"
    assert registry.get_version(c, "models:/tiny@production").version in (2, "2")
    back = registry.rollback(c, "tiny", "production")
    assert back["version"] == "1" and back["previous"] == "2"
    with pytest.raises(registry.RegistryError, match="no earlier version"):
        registry.rollback(c, "tiny", "production")

    path, info = registry.resolve_bundle(c, "models:/tiny@production")
    assert Path(path, "bundle.json").is_file() and info["version"] == "1"
    from raylight import bundle as bundle_io

    assert bundle_io.load(path).manifest["lineage"]["data_fingerprint"] == "sha256:x"


def test_registry_errors_name_what_exists(store, tmp_path: Path) -> None:
    c, out = store
    registry.register(c, _bundle(tmp_path), "tiny", output_dir=str(out))
    registry.promote(c, "tiny", "1", "production")
    with pytest.raises(registry.RegistryError, match=r"no version 7 \(versions: 1\)"):
        registry.promote(c, "tiny", "7", "production")
    with pytest.raises(registry.RegistryError, match="did you mean 'production'"):
        registry.get_version(c, "tiny@prodution")
    with pytest.raises(registry.RegistryError, match="did you mean tiny"):
        registry.get_version(c, "tinyy/1")
    with pytest.raises(registry.RegistryError, match="not an alias name"):
        registry.promote(c, "tiny", "1", "latest")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bundle.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(registry.RegistryError, match="fails validation"):
        registry.register(c, str(bad), "tiny", output_dir=str(out))
    with pytest.raises(registry.RegistryError, match="neither a bundle"):
        registry.register(c, str(tmp_path / "nowhere"), "tiny", output_dir=str(out))
    # nothing half-registered
    assert [v["version"] for v in registry.list_models(c, "tiny")] == ["1"]


def test_registry_cli(store, tmp_path: Path) -> None:
    _c, out = store
    runner = CliRunner()
    common = ["--output-dir", str(out)]
    res = runner.invoke(
        app,
        [
            "registry",
            "register",
            _bundle(tmp_path),
            "--name",
            "tiny",
            "--alias",
            "staging",
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "models:/tiny/1" in res.output and "tiny@staging → v1" in res.output
    res = runner.invoke(app, ["registry", "show", "tiny@staging", "--json", *common])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["lineage"]["data_fingerprint"] == "sha256:x"
    res = runner.invoke(app, ["registry", "list", *common])
    assert res.exit_code == 0 and "tiny" in res.output and "staging → v1" in res.output
    res = runner.invoke(app, ["registry", "promote", "tiny", "3", "--alias", "production", *common])
    assert res.exit_code == 2 and "no version 3" in res.output
    res = runner.invoke(app, ["registry", "rollback", "tiny", "--alias", "production", *common])
    assert res.exit_code == 2 and "no alias 'production'" in res.output


def test_a_vanished_working_directory_is_replaced_before_mlflow_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray job's working dir can be replaced under its driver (two nodes sharing one temp
    dir); MLflow resolves paths against os.getcwd(), which then fails."""
    import os

    gone, replacement = tmp_path / "gone", tmp_path / "replacement"
    gone.mkdir()
    replacement.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(FileNotFoundError):
        os.getcwd()
    monkeypatch.setenv("RAYLIGHT_JOB_CWD", str(replacement))
    c = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    assert os.getcwd() == str(replacement) and c.search_experiments()
