"""Serving over real HTTP on 127.0.0.1: a real Serve app on the session's local Ray.

A penguins bundle is trained once for the module; a second version of it (same schema,
perturbed weights) stands in for "the next model" in the switch/canary/rollback tests.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import torch
from helpers.serving import PENGUIN_ROWS

from raylight import bundle as bundle_io
from raylight.config import (
    ConfigError,
    load_predict_config,
    load_serve_config,
    load_train_config,
)
from raylight.net import free_port
from raylight.serve import deploy as sd

pytestmark = pytest.mark.integration
ROWS = PENGUIN_ROWS


@pytest.fixture(scope="module")
def bundles(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """v1: trained on penguins (1 worker, 4 epochs); v2: v1's weights perturbed."""
    from raylight.train import run_training

    out = tmp_path_factory.mktemp("serve-outputs")
    cfg = load_train_config([
        "data=penguins", f"output_dir={out}", "cluster.auth_mode=disabled", "scaling=single",
        "model.hidden_dims=[32,32]", "model.lr=0.01", "trainer.max_epochs=4",
    ])  # fmt: skip
    v1 = run_training(cfg).bundle_path
    b = bundle_io.load(v1)
    torch.manual_seed(1)
    state = {k: v + 0.3 * torch.randn_like(v) for k, v in b.model.state_dict().items()}
    v2 = str(out / "bundle-v2")
    manifest = {k: v for k, v in b.manifest.items() if k not in ("checksums", "format_version")}
    bundle_io.write(v2, state, manifest)
    return {"v1": v1, "v2": v2}


@pytest.fixture(scope="module")
def serve_port(ray_session: Any) -> Any:
    """One Serve instance (HTTP on 127.0.0.1:<free port>) for the module; torn down after."""
    from ray import serve

    port = free_port()
    yield port
    serve.shutdown()


def _cfg(bundle: str, port: int, *extra: str) -> Any:
    return load_serve_config([
        f"bundle={bundle}", f"port={port}", "cluster.auth_mode=disabled", "num_cpus=0.5", *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def app(bundles: dict[str, str], serve_port: int) -> str:
    """The default app serving v1; returns its base URL."""
    res = sd.deploy(_cfg(bundles["v1"], serve_port))
    return res.url


def _post(url: str, body: Any, timeout: float = 10, **kw: Any) -> requests.Response:
    return requests.post(url + "/predict", json=body, timeout=timeout, **kw)


def test_predictions_over_http_equal_batch_predict(
    app: str, bundles: dict[str, str], tmp_path: Path
) -> None:
    from raylight.predict import run_predict

    src = tmp_path / "rows.csv"
    pd.DataFrame(ROWS).to_csv(src, index=False)
    out = tmp_path / "preds.csv"
    run_predict(load_predict_config([
        f"bundle={bundles['v1']}", f"input={src}", f"output={out}", "num_actors=1",
        "cpus_per_actor=0.5", "cluster.auth_mode=disabled",
    ]))  # fmt: skip
    batch = pd.read_csv(out)
    r = _post(app, ROWS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["prediction"] for p in body["predictions"]] == list(batch["prediction"])
    for p, (_, row) in zip(body["predictions"], batch.iterrows(), strict=True):
        for cls, prob in p["probabilities"].items():
            assert prob == pytest.approx(row[f"proba_{cls}"], abs=1e-6)
    assert body["model"]["version"] == sd_version(bundles["v1"])
    # one record (not a list) answers with one prediction
    one = _post(app, ROWS[0]).json()["predictions"]
    assert len(one) == 1 and one[0]["prediction"] == body["predictions"][0]["prediction"]
    # float32 sums differ in the last bits with the batch's shape
    assert one[0]["probabilities"] == pytest.approx(
        body["predictions"][0]["probabilities"], abs=1e-6
    )


def sd_version(path: str) -> str:
    from raylight.serve.app import bundle_version

    return bundle_version(bundle_io.read_manifest(path))


def test_health_metadata_and_openapi_show_the_bundle(app: str, bundles: dict[str, str]) -> None:
    h = requests.get(app + "/health", timeout=5)
    assert h.status_code == 200 and h.json()["status"] == "ready"
    meta = requests.get(app + "/metadata", timeout=5).json()
    stable = meta["versions"]["stable"]
    assert stable["version"] == sd_version(bundles["v1"])
    assert stable["lineage"]["data_fingerprint"].startswith("sha256:")
    assert [f["name"] for f in meta["input_schema"]["features"]][:2] == ["island", "bill_length_mm"]
    spec = requests.get(app + "/openapi.json", timeout=5).json()
    record = spec["components"]["schemas"]["Record"]
    assert set(record["properties"]) == {f["name"] for f in meta["input_schema"]["features"]}
    island = record["properties"]["island"]
    assert island["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert record["additionalProperties"] is False


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ('{"island": "Biscoe",', 400, None),  # malformed JSON
        ({**ROWS[0], "bill_length_mm": "long"}, 422, "bill_length_mm"),  # wrong type
        ({k: v for k, v in ROWS[0].items() if k != "island"}, 422, "island"),  # missing
        ({**ROWS[0], "beak_colour": "red"}, 422, "beak_colour"),  # extra
        ({**ROWS[0], "island": "Atlantis"}, 422, "island"),  # unknown category
        (
            '{"island": "Biscoe", "bill_length_mm": NaN, "bill_depth_mm": 14.8, '
            '"flipper_length_mm": 212.0, "body_mass_g": 5200.0, "sex": "male"}',
            422,
            "bill_length_mm",
        ),
        ({**ROWS[0], "body_mass_g": float("inf")}, 422, "body_mass_g"),  # Infinity
        ({**ROWS[0], "flipper_length_mm": 999.0}, 422, "flipper_length_mm"),  # outside the contract
        ([], 422, "body"),  # empty list
        ([ROWS[0], {**ROWS[1], "sex": 3}], 422, "[1].sex"),  # the bad one in a list is named
        (42, 422, "body"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(
    app: str, body: Any, status: int, field: str | None
) -> None:
    if isinstance(body, str):
        r = requests.post(app + "/predict", data=body, timeout=10,
                          headers={"content-type": "application/json"})  # fmt: skip
    else:
        # json.dumps writes inf as Infinity, as a careless client would
        r = requests.post(app + "/predict", data=json.dumps(body), timeout=10,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == status, r.text
    err = r.json()
    assert err["error"]
    if field is not None:
        assert field in [p["field"] for p in err["problems"]], err


def test_size_limits_and_unknown_routes(app: str) -> None:
    big = [ROWS[0]] * 5000  # > max_records (1024) and > 1 MiB? no: ~0.7 MB; records limit hits
    r = _post(app, big)
    assert r.status_code == 422 and "at most 1024" in r.text
    huge = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = requests.post(app + "/predict", data=huge, timeout=10,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413, r.text

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(40):
            yield b"x" * 65536

    r = requests.post(app + "/predict", data=chunks(), timeout=10,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413, r.text
    assert requests.get(app + "/predict", timeout=5).status_code == 405
    assert requests.get(app + "/nope", timeout=5).status_code == 404


def test_concurrent_requests_are_batched(app: str) -> None:
    before = requests.get(app + "/metadata", timeout=5).json()["batches"]["count"]
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda i: _post(app, ROWS[i % 4]).status_code, range(96)))
    assert codes == [200] * 96
    meta = requests.get(app + "/metadata", timeout=5).json()["batches"]
    assert meta["count"] > before
    assert meta["max_requests"] > 1, meta  # batches formed: fewer forward passes than requests


def test_metrics_endpoint_exports_request_counts(app: str) -> None:
    for _ in range(3):
        assert _post(app, ROWS[:2]).status_code == 200
    deadline = time.monotonic() + 40  # Ray's metrics agent scrapes workers every few seconds
    text = ""
    while time.monotonic() < deadline:
        r = requests.get(app + "/metrics", timeout=10)
        text = r.text
        if r.status_code == 200 and "raylight_serve_requests" in text and "batch_requests" in text:
            break
        time.sleep(2)
    assert "raylight_serve_requests" in text, text[:2000]
    assert "raylight_serve_latency_ms" in text


def test_api_key_auth(bundles: dict[str, str], serve_port: int, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    cfg = _cfg(bundles["v1"], serve_port, "name=authed", "route_prefix=/authed",
               f"auth.api_key_file={key_file}")  # fmt: skip
    url = sd.deploy(cfg).url
    try:
        assert _post(url, ROWS[0]).status_code == 401
        assert _post(url, ROWS[0], headers={"x-api-key": "wrong"}).status_code == 401
        assert _post(url, ROWS[0], headers={"x-api-key": "s3cret-key"}).status_code == 200
        bearer = {"authorization": "Bearer s3cret-key"}
        assert _post(url, ROWS[0], headers=bearer).status_code == 200
        assert requests.get(url + "/metadata", timeout=5).status_code == 401
        assert requests.get(url + "/health", timeout=5).status_code == 200
        meta = requests.get(url + "/metadata", headers=bearer, timeout=5).text
        assert "s3cret" not in meta
    finally:
        sd.shutdown("authed")


def test_overload_is_refused_fast(bundles: dict[str, str], serve_port: int) -> None:
    # One request in flight, one queued; each waits ~1 s for its batch to fill: the rest must
    # be refused at once, not queued.
    cfg = _cfg(bundles["v1"], serve_port, "name=tight", "route_prefix=/tight",
               "max_ongoing_requests=1", "max_queued_requests=1", "batch.wait_timeout_s=1.0",
               "batch.max_batch_size=64")  # fmt: skip
    url = sd.deploy(cfg).url
    try:

        def one(_: int) -> tuple[int, float]:
            t0 = time.monotonic()
            r = _post(url, ROWS[0])
            return r.status_code, time.monotonic() - t0

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
        refused = [t for code, t in results if code == 503]
        assert {code for code, _ in results} <= {200, 503}
        assert len(refused) >= 8, results
        assert max(refused) < 1.0, results  # refused without waiting for a slot
    finally:
        sd.shutdown("tight")


def _load(url: str, stop: threading.Event, out: list[tuple[int, str | None]]) -> None:
    """Steady closed-loop load, bounded in time by the caller's stop event (and 60 s)."""
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            # A generous read timeout: on a loaded 2-core CI box a request can queue for seconds
            # during a switch; slow is not failed, an error status or a dropped request is.
            r = _post(url, ROWS[:2], timeout=30)
            out.append((r.status_code, r.json()["model"]["version"] if r.ok else r.text))
        except requests.RequestException as exc:
            out.append((-1, str(exc)))


@contextlib.contextmanager
def _steady_load(url: str, clients: int) -> Iterator[list[tuple[int, str | None]]]:
    """``clients`` closed-loop clients for the block; yields the (status, version) list."""
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(url, stop, seen)) for _ in range(clients)]
    for w in workers:
        w.start()
    try:
        yield seen
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)


def test_switch_canary_and_rollback_without_failed_requests(
    bundles: dict[str, str], serve_port: int
) -> None:
    v1, v2 = sd_version(bundles["v1"]), sd_version(bundles["v2"])
    assert v1 != v2
    name = ["name=rollout", "route_prefix=/rollout"]
    url = sd.deploy(_cfg(bundles["v1"], serve_port, *name)).url
    deployed_at = time.monotonic()
    try:
        with _steady_load(url, clients=4) as seen:
            time.sleep(1.0)
            res = sd.deploy(_cfg(bundles["v2"], serve_port, *name))  # switch to v2
            assert res.versions["stable"]["version"] == v2
            assert res.previous == bundles["v1"]
            time.sleep(1.0)
            # canary: v1 gets half of the traffic
            sd.deploy(_cfg(bundles["v2"], serve_port, *name, f"canary.bundle={bundles['v1']}",
                           "canary.weight=0.5", f"previous={bundles['v1']}"))  # fmt: skip
            n_before = len(seen)
            time.sleep(2.0)
            canary_phase = [v for _, v in seen[n_before:]]
            cfg = _cfg(bundles["v2"], serve_port, *name)
            res = sd.rollback(cfg)  # drops the canary
            assert set(res.versions) == {"stable"} and res.versions["stable"]["version"] == v2
            res = sd.rollback(cfg)  # back to v1
            assert res.versions["stable"]["version"] == v1
            time.sleep(1.0)
        # Every switch reconfigured the running replica in place (no restart, no new process):
        # it has been up since the first deploy.
        uptime = requests.get(url + "/metadata", timeout=10).json()["uptime_s"]
        assert uptime >= time.monotonic() - deployed_at - 0.5
    finally:
        sd.shutdown("rollout")
    codes = [c for c, _ in seen]
    assert len(codes) > 50
    assert set(codes) == {200}, [s for s in seen if s[0] != 200][:5]
    assert {v1, v2} <= {v for _, v in seen}
    assert canary_phase.count(v1) > 0 and canary_phase.count(v2) > 0
    assert seen[-1][1] == v1


def test_serving_a_registry_alias_follows_promotion_and_rollback(
    bundles: dict[str, str], serve_port: int
) -> None:
    """`raylight serve model=models:/NAME@production`: the alias picks the version; after a
    promotion (or a registry rollback) deploying the same reference again switches in place."""
    from raylight import registry

    out = Path(bundles["v1"]).parents[2]  # <output_dir>/runs/<run>/bundle
    c = registry.open_store(None, str(out))
    r1 = registry.register(c, str(Path(bundles["v1"]).parent), "penguins-clf", output_dir=str(out))
    r2 = registry.register(c, bundles["v2"], "penguins-clf", output_dir=str(out))
    assert r1["run_id"] != r2["run_id"]  # v1 → its training run; v2 got a run of its own
    registry.promote(c, "penguins-clf", r1["version"], "production")

    def deploy() -> Any:
        cfg = load_serve_config([
            "model=models:/penguins-clf@production", f"output_dir={out}", f"port={serve_port}",
            "cluster.auth_mode=disabled", "num_cpus=0.5", "name=by-alias", "route_prefix=/alias",
        ])  # fmt: skip
        return sd.deploy(cfg)

    try:
        url = deploy().url
        body = _post(url, ROWS[0]).json()
        assert body["model"]["name"] == "penguins-clf"
        assert body["model"]["version"] == sd_version(bundles["v1"])
        meta = requests.get(url + "/metadata", timeout=5).json()
        assert meta["registry"]["version"] == r1["version"]
        assert meta["registry"]["alias"] == "production"

        registry.promote(c, "penguins-clf", r2["version"], "production")
        deploy()
        assert _post(url, ROWS[0]).json()["model"]["version"] == sd_version(bundles["v2"])
        meta = requests.get(url + "/metadata", timeout=5).json()
        assert meta["registry"]["version"] == r2["version"]
        registry.rollback(c, "penguins-clf", "production")
        deploy()
        assert _post(url, ROWS[0]).json()["model"]["version"] == sd_version(bundles["v1"])
    finally:
        sd.shutdown("by-alias")
    with pytest.raises(ConfigError, match="no alias 'prod'"):
        load_serve_config(["model=models:/penguins-clf@prod", f"output_dir={out}"])


def test_fuzzing_the_openapi_spec_never_gives_a_5xx(app: str) -> None:
    """1,000+ schemathesis cases (valid and invalid bodies) against POST /predict: no 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = schemathesis.openapi.from_url(app + "/openapi.json")
    op = schema["/predict"]["POST"]
    cases = st.one_of(
        op.as_strategy(schemathesis.GenerationMode.POSITIVE),
        op.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )
    seen: dict[int, int] = {}

    @given(case=cases)
    @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def call(case: Any) -> None:
        r = case.call(timeout=10)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (case.body, r.text)

    call()
    assert sum(seen.values()) >= 1000, seen
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0, seen  # both kinds were exercised


def _raylight(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("raylight")), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_cli_foreground_serve_status_and_shutdown(bundles: dict[str, str], tmp_path: Path) -> None:
    """`raylight serve` as a user runs it: its own embedded Ray, then status and shutdown."""
    port = free_port()
    common = [f"output_dir={tmp_path}", "name=cli", "cluster.auth_mode=disabled"]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("raylight")), "serve", f"bundle={bundles['v1']}",
         f"port={port}", "num_cpus=0.5", *common],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = lambda: (tmp_path / "server.log").read_text()  # noqa: E731
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still starting up
                pass
            assert server.poll() is None, output()
            time.sleep(1)
        assert _post(url, ROWS).status_code == 200
        st = _raylight("serve", "status", *common)
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["status"] == "ready"
        down = _raylight("serve", "shutdown", *common)
        assert down.returncode == 0, (down.stderr, output())
        assert server.wait(timeout=60) == 0, output()
        assert f"serving {url}/predict" in output()
        assert not (tmp_path / "serve" / "cli.json").exists()
        gone = _raylight("serve", "status", *common)
        assert gone.returncode == 2 and "no foreground" in gone.stderr
    finally:
        if server.poll() is None:
            server.kill()


def test_a_broken_bundle_stops_start_up_with_a_clear_error(
    bundles: dict[str, str], tmp_path: Path
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundles["v1"], bad)
    (bad / "weights.safetensors").write_bytes(b"not weights")
    t0 = time.monotonic()
    r = _raylight("serve", f"bundle={bad}", f"port={free_port()}", "cluster.auth_mode=disabled")
    assert r.returncode == 2
    assert "checksum mismatch" in r.stderr
    assert time.monotonic() - t0 < 30  # refused before any Ray work


def test_killing_a_replica_under_load_loses_at_most_in_flight_requests(
    bundles: dict[str, str], serve_port: int
) -> None:
    import ray
    from ray import serve

    cfg = _cfg(bundles["v1"], serve_port, "name=chaos", "route_prefix=/chaos", "num_replicas=2",
               "num_cpus=0.25")  # fmt: skip
    url = sd.deploy(cfg).url
    clients = 4  # each keeps one request in flight: at most 4 can be lost with the replica
    try:
        with _steady_load(url, clients) as seen:
            time.sleep(1.5)
            replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                        if a["namespace"] == "serve" and "chaos#model" in a["name"]]  # fmt: skip
            assert len(replicas) == 2, replicas
            n_at_kill = len(seen)
            ray.kill(ray.get_actor(replicas[0]["name"], namespace="serve"), no_restart=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # Serve replaces the dead replica
                app = serve.status().applications["chaos"]
                states = app.deployments["model"].replica_states
                if states.get("RUNNING", 0) == 2 and len(seen) > n_at_kill + 50:
                    break
                time.sleep(0.5)
            n_recovered = len(seen)
            time.sleep(2.0)
    finally:
        sd.shutdown("chaos")
    assert states.get("RUNNING", 0) == 2, states
    failed = [s for s in seen if s[0] != 200]
    assert len(failed) <= clients, failed
    assert all(code == 200 for code, _ in seen[n_recovered:])  # recovered: nothing fails after
    assert len(seen) - n_recovered > 10


def test_a_prediction_over_the_timeout_gets_504(bundles: dict[str, str], serve_port: int) -> None:
    cfg = _cfg(bundles["v1"], serve_port, "name=slowpoke", "route_prefix=/slowpoke",
               "request_timeout_s=0.05", "batch.wait_timeout_s=1.0", "batch.max_batch_size=64")  # fmt: skip
    url = sd.deploy(cfg).url
    try:
        t0 = time.monotonic()
        r = _post(url, ROWS[0])
        assert r.status_code == 504, r.text
        assert "longer than 0.05 s" in r.json()["error"]
        assert time.monotonic() - t0 < 1.0  # answered at the timeout, not after the batch
    finally:
        sd.shutdown("slowpoke")


@pytest.mark.slow
def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(
    bundles: dict[str, str], serve_port: int
) -> None:
    from ray import serve

    cfg = _cfg(bundles["v1"], serve_port, "name=elastic", "route_prefix=/elastic", "num_cpus=0.25",
               "autoscaling={min_replicas: 1, max_replicas: 2, target_ongoing_requests: 1, "
               "upscale_delay_s: 1, downscale_delay_s: 3}")  # fmt: skip
    url = sd.deploy(cfg).url

    def running() -> int:
        d = serve.status().applications["elastic"].deployments["model"]
        return d.replica_states.get("RUNNING", 0)

    try:
        assert running() == 1
        with _steady_load(url, clients=8) as seen:
            deadline = time.monotonic() + 90
            while running() < 2 and time.monotonic() < deadline:
                time.sleep(1)
            assert running() == 2
        deadline = time.monotonic() + 90
        while running() > 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert running() == 1
    finally:
        sd.shutdown("elastic")
    assert {c for c, _ in seen} == {200}


def _penguin_rows(seed: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """Every penguin with measurements, shuffled: (request records, species labels)."""
    from raylight.data.sources import _package_file

    df = pd.read_csv(_package_file("palmerpenguins", "palmerpenguins/data/penguins.csv"))
    num = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    df = df.dropna(subset=num).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df = df.astype(object).where(df.notna(), None)
    records = df[["island", *num, "sex"]].to_dict(orient="records")
    return records, list(df["species"])


def _send(url: str, records: list[dict[str, Any]], per_request: int = 4) -> None:
    for i in range(0, len(records), per_request):
        r = _post(url, records[i : i + per_request])
        assert r.status_code == 200, r.text


def test_drift_stays_low_in_distribution_and_flags_a_shifted_feature(
    bundles: dict[str, str], serve_port: int, tmp_path: Path
) -> None:
    """Drift over real HTTP: /drift, Prometheus gauges, alerts, `raylight monitor`, and the
    sampled request log that `raylight evaluate` then judges once labels are joined."""
    from raylight.config import load_evaluate_config
    from raylight.evaluate.run import run_evaluation

    logs = tmp_path / "reqlog"
    cfg = _cfg(bundles["v1"], serve_port, "name=drifty", "route_prefix=/drifty",
               "drift.window=300", "drift.min_rows=150", "drift.check_every_s=0.5",
               "request_log.sample_rate=1.0", "request_log.flush_s=0.5", f"request_log.path={logs}")  # fmt: skip
    url = sd.deploy(cfg).url
    records, species = _penguin_rows()
    try:
        _send(url, records[:300])
        rep = requests.get(url + "/drift", timeout=10).json()
        (v,) = rep["versions"]
        assert v["version"] == sd_version(bundles["v1"])
        assert v["traffic"]["records"] == 300 and v["traffic"]["requests"] == 75
        d = v["drift"]
        assert d["enough_rows"] and d["window"] == 300
        assert d["drifted"] == [], d["features"]
        assert d["features"]["(prediction)"]["psi"] < 0.25  # predictions follow the label mix
        assert all(f["psi"] < 0.25 for f in d["features"].values()), d["features"]
        assert all(f["ks"] < 0.15 for f in d["features"].values() if f["type"] == "numeric")
        assert rep["alerts"] == []

        shifted = [
            {**r, "flipper_length_mm": min(250.0, r["flipper_length_mm"] + 20)}
            for r in records[:300]
        ]
        _send(url, shifted)
        rep = requests.get(url + "/drift", timeout=10).json()
        d = rep["versions"][0]["drift"]
        # the shifted input; the predicted class may follow it (bigger flippers: more Gentoo)
        assert "flipper_length_mm" in d["drifted"], d["features"]
        assert set(d["drifted"]) <= {"flipper_length_mm", "(prediction)"}, d["features"]
        f = d["features"]["flipper_length_mm"]
        assert f["psi"] > 1.0 and f["ks"] > 0.5
        deadline = time.monotonic() + 10  # the monitor's periodic check raises the alert
        while time.monotonic() < deadline and not rep["alerts"]:
            time.sleep(0.5)
            rep = requests.get(url + "/drift", timeout=10).json()
        alerts = {(a["kind"], a["feature"]) for a in rep["alerts"]}
        assert ("drifted", "flipper_length_mm") in alerts
        assert alerts <= {("drifted", f) for f in d["drifted"]}

        cli = _raylight("monitor", "--url", url)
        assert cli.returncode == 3, cli.stderr  # 3: a feature is over a threshold
        assert "flipper_length_mm" in cli.stdout and "yes" in cli.stdout

        def psi_gauge() -> float | None:
            text = requests.get(url + "/metrics", timeout=10).text
            lines = [
                line for line in text.splitlines()  # Ray may prefix the name with `ray_`
                if "raylight_serve_drift{" in line and 'feature="flipper_length_mm"' in line
                and 'stat="psi"' in line
            ]  # fmt: skip
            return float(lines[-1].rsplit(" ", 1)[1]) if lines else None

        # The gauge first shows the in-distribution value; the metrics agent picks up the
        # shifted one within a few export intervals.
        deadline = time.monotonic() + 60
        value = psi_gauge()
        while time.monotonic() < deadline and not (value and value > 1.0):
            time.sleep(2)
            value = psi_gauge()
        assert value is not None and value > 1.0, value

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            log = requests.get(url + "/drift", timeout=10).json()["request_log"]
            if log["rows_written"] == 600:
                break
            time.sleep(0.5)
        assert log["rows_written"] == 600 and log["rows_dropped"] == 0, log
    finally:
        sd.shutdown("drifty")

    logged = pd.concat(pd.read_parquet(p) for p in sorted(logs.glob("*.parquet")))
    assert len(logged) == 600
    assert {"request_time", "request_id", "model_version", "prediction", "proba_Adelie"} <= set(
        logged.columns
    )
    assert logged["request_id"].nunique() == 150
    # Join labels to the in-distribution rows and judge the model on what it served.
    key = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    labels = pd.DataFrame([{**{k: r[k] for k in key}, "species": s}
                           for r, s in zip(records, species, strict=True)]).drop_duplicates(key)  # fmt: skip
    joined = logged.merge(labels, on=key, how="inner")
    assert len(joined) >= 300  # every unshifted row (+ a few shifted ones that match a real one)
    labelled = tmp_path / "labelled.parquet"
    joined.to_parquet(labelled)
    res = run_evaluation(load_evaluate_config([
        f"model={bundles['v1']}", f"input={labelled}", "explain.rows=0", "bootstrap=0",
        f"output_dir={tmp_path / 'eval'}", "tracking.backends=[]", "cluster.auth_mode=disabled",
    ]))  # fmt: skip
    assert res.report["data"]["used"] == len(joined)
    served = (joined["prediction"] == joined["species"]).mean()
    assert res.report["metrics"]["accuracy"] == pytest.approx(served, abs=1e-9)
