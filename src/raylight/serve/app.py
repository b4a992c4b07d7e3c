"""The Ray Serve application: a model bundle behind a typed, batched FastAPI ingress.

One deployment, ``ModelServer``: each replica holds the stable bundle (and optionally a canary
bundle), builds its FastAPI app from the bundle's input schema (so ``/docs`` shows the real
fields), and runs ``@serve.batch`` over concurrent requests. Keeping the ingress and the model in
one replica saves a Ray hop per request, which matters on small CPU machines.

Which bundles are served is the deployment's ``user_config``; changing it (a new version, a
canary, a rollback) reconfigures the running replicas in place: the new bundle loads in a thread
while the old one keeps answering, then the reference swaps, so no request fails during the
switch. Changing anything else (the input schema, resources, batching) is a normal Serve rolling
update.

This module deliberately does not use ``from __future__ import annotations``: FastAPI resolves
endpoint annotations at runtime, and the request model is generated per replica.
"""

import asyncio
import logging
import os
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ray import serve

from raylight.config import ServeAppArgs, ServeSettings
from raylight.serve.drift import PREDICTION

logger = logging.getLogger("ray.serve")

USER_CONFIG_KEYS = ("stable", "canary", "canary_weight", "previous", "registry")
FLUSH_S = 1.0  # how often a replica sends what it served to the monitor
MAX_LOG_BACKLOG = 10  # request-log rows held while the monitor is unreachable, times flush_rows
# Run the app on the replica's own event loop instead of a second thread: a request no longer
# crosses threads twice (~1.2-1.3x requests/s here). Safe because nothing here blocks that loop
# for long: bundles load in a thread, and slow batches move to a thread (INLINE_PREDICT_S).
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
INLINE_PREDICT_S = 0.005  # batches averaging longer than this are predicted in a thread


class InlineOrThread:
    """Run a call on the event loop while it is fast, in a thread while it is slow.

    Inline while calls average at most ``limit_s`` (a small model's batch is well under a
    millisecond, less than a thread hop costs); in a thread while they average more, so a large
    model never stalls the event loop that accepts requests and answers health checks. The
    average is a moving one, so one slow call (the first warms torch up) decides nothing.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.mean_s = 0.0

    @property
    def threaded(self) -> bool:
        return self.mean_s > self.limit_s

    async def run(self, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        if self.threaded:
            out = await asyncio.to_thread(fn, *args)
        else:
            out = fn(*args)
        self.mean_s = 0.8 * self.mean_s + 0.2 * (time.perf_counter() - t0)
        return out


@dataclass
class LoadedVersion:
    """One bundle in memory, ready to predict."""

    uri: str
    name: str
    version: str
    bundle: Any  # raylight.bundle.Bundle

    def info(self, route: str) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "route": route}


def bundle_version(manifest: dict[str, Any]) -> str:
    """A bundle's version: the first 12 hex digits of its weights' sha256.

    Content-derived, so the same weights always report the same version, wherever they live.
    """
    digest = str(manifest.get("checksums", {}).get("weights.safetensors", ""))
    return digest.split(":")[-1][:12] or "unknown"


def bundle_name(manifest: dict[str, Any], override: str | None = None) -> str:
    return override or str(manifest.get("lineage", {}).get("run_name") or "model")


def pii_spec(input_schema: dict[str, Any], logging_requests: bool) -> dict[str, Any] | None:
    """How the request log treats the bundle's pii columns (None: it has none).

    Raises:
        RuntimeError: the bundle says hash, requests are logged, and the salt is not set.
    """
    pii = input_schema.get("pii") or {}
    cols = [c["name"] for c in pii.get("columns") or []]
    if not cols:
        return None
    treatment = pii.get("treatment", "drop")
    salt = None
    if treatment == "hash" and logging_requests:
        salt = os.environ.get(pii.get("salt_env") or "RAYLIGHT_PII_SALT")
        if not salt:
            raise RuntimeError(
                f"the request log must hash pii columns {cols} but ${pii.get('salt_env')} is "
                "not set where the replicas run (or set request_log.sample_rate=0)"
            )
    return {"columns": cols, "treatment": treatment, "salt": salt}


def _read_api_key(auth: Any) -> str | None:
    """The API key from the configured env var or file; None when auth is off."""
    if not auth.enabled:
        return None
    key = None
    if auth.api_key_env:
        key = os.environ.get(auth.api_key_env)
    if not key and auth.api_key_file:
        with open(os.path.expanduser(auth.api_key_file)) as f:
            key = f.readline().strip()
    if not key:
        # Refuse to start open when auth was asked for: say where the key was looked for only.
        raise RuntimeError(
            "serve auth is enabled but no API key was found "
            f"(env {auth.api_key_env!r}, file {auth.api_key_file!r})"
        )
    return key


class _Metrics:
    """Prometheus metrics through Ray's metrics agent (exported with Ray's own)."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self.requests = Counter(
            "raylight_serve_requests",
            description="Requests answered, by route, model version and HTTP status.",
            tag_keys=("route", "model_version", "status"),
        )
        self.errors = Counter(
            "raylight_serve_errors",
            description="Refused or failed requests by kind.",
            tag_keys=("kind",),
        )
        self.latency = Histogram(
            "raylight_serve_latency_ms",
            description="Time in the replica from request to response (ms).",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
            tag_keys=("route",),
        )
        self.batch_requests = Histogram(
            "raylight_serve_batch_requests",
            description="Requests per model batch.",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
        )
        self.batch_records = Histogram(
            "raylight_serve_batch_records",
            description="Records per model batch.",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096],
        )


@serve.deployment(name="model")
@serve.ingress()
class ModelServer:
    """A model bundle (and an optional canary) behind ``/predict``, ``/health``, ``/metadata``."""

    def __init__(
        self, args: dict[str, Any], input_schema: dict[str, Any], monitor: Any = None
    ) -> None:
        """Set up the replica; the bundles load in :meth:`reconfigure` (Serve calls it next).

        Args:
            args: :class:`~raylight.config.ServeSettings` as a plain dict (which bundles are
                served lives in the user_config).
            input_schema: The served bundles' input schema; the request model is built from it.
            monitor: Handle of the app's :class:`~raylight.serve.monitor.Monitor` (drift,
                traffic, request log), or None when both drift and the request log are off.
        """
        import torch

        from raylight.data.contract import pii_treatment

        self.args = ServeSettings.model_validate(args)
        self.input_schema = input_schema
        self.versions: dict[str, LoadedVersion] = {}
        self.canary_weight = 0.0
        self.previous: str | None = None
        self.registry: dict[str, Any] | None = None
        self.api_key = _read_api_key(self.args.auth)
        self.metrics = _Metrics()
        self.started = time.time()
        self.batch_log: deque[int] = deque(maxlen=1000)  # recent batch sizes, for /metadata
        self.monitor = monitor
        pii = pii_spec(input_schema, self.args.request_log.enabled)
        self.pii_columns = set(pii["columns"]) if pii else set()
        self.image_rules = {
            f["name"]: f for f in input_schema["features"] if f.get("dtype") == "image"
        }
        # Columns drift never looks at: pii (never leaves the replica), images and texts (no
        # reference distribution; the predicted class still is tracked).
        self.not_for_drift = (
            self.pii_columns
            | set(self.image_rules)
            | {f["name"] for f in input_schema["features"] if f.get("dtype") == "text"}
        )
        self.treat_pii = pii_treatment(pii)
        self._pending: dict[str, dict[str, Any]] = {}
        self._flusher: asyncio.Task | None = None
        self._monitor_failed_at = 0.0
        self._predictor = InlineOrThread(INLINE_PREDICT_S)
        self._request_counts: dict[tuple[str, str], int] = {}
        self._counts_flusher: asyncio.Task | None = None
        # One intra-op thread per CPU the replica was given: more only contends with the proxy.
        torch.set_num_threads(max(1, int(self.args.num_cpus or 1)))
        self._predict_batch.set_max_batch_size(self.args.batch.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(self.args.batch.wait_timeout_s)

    # ------------------------------------------------------------------ versions

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the bundles named in ``user_config`` and swap them in atomically.

        Bundles already loaded (same URI) are reused, so promoting a canary or rolling back to
        a version still in memory costs nothing. A bundle whose input schema differs from the
        one this replica's API was built for is refused: that change needs a redeploy.
        """
        from raylight import bundle as bundle_io

        unknown = set(user_config) - set(USER_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown user_config keys {sorted(unknown)}")
        wanted = {"stable": user_config["stable"]}
        if user_config.get("canary") and float(user_config.get("canary_weight") or 0) > 0:
            wanted["canary"] = user_config["canary"]
        loaded = {v.uri: v for v in self.versions.values()}

        def load(uri: str) -> LoadedVersion:
            b = bundle_io.load(uri)
            if b.input_schema.get("features") != self.input_schema.get("features"):
                raise ValueError(
                    f"bundle {uri} has a different input schema from the served API; "
                    "deploy it as a new application (or redeploy) instead of switching in place"
                )
            return LoadedVersion(
                uri=uri,
                name=bundle_name(b.manifest, self.args.model_name),
                version=bundle_version(b.manifest),
                bundle=b,
            )

        new: dict[str, LoadedVersion] = {}
        for route, uri in wanted.items():
            # Loading reads files and builds the model: off the event loop, so the old version
            # keeps answering meanwhile.
            new[route] = loaded[uri] if uri in loaded else await asyncio.to_thread(load, uri)
        self.versions = new  # one assignment: a request sees the old set or the new one
        self.canary_weight = float(user_config.get("canary_weight") or 0) if "canary" in new else 0
        self.previous = user_config.get("previous")
        self.registry = user_config.get("registry")
        logger.info(
            "serving %s",
            {r: f"{v.name}:{v.version}" for r, v in new.items()},
        )

    def routing(self) -> dict[str, Any]:
        """The user_config now served (what rollback and status read through a handle)."""
        return {
            "stable": self.versions["stable"].uri if "stable" in self.versions else None,
            "canary": self.versions["canary"].uri if "canary" in self.versions else None,
            "canary_weight": self.canary_weight,
            "previous": self.previous,
            "registry": self.registry,
            "args": self.args.model_dump(mode="json"),
            "versions": {r: v.info(r) for r, v in self.versions.items()},
        }

    def check_health(self) -> None:
        """Serve's health probe: a replica without a loaded model is unhealthy."""
        if "stable" not in self.versions:
            raise RuntimeError("model not loaded")

    # ------------------------------------------------------------------ prediction

    def _choose_route(self) -> str:
        if "canary" in self.versions and random.random() < self.canary_weight:
            return "canary"
        return "stable"

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _predict_batch(self, items: list[tuple[str, list[dict[str, Any]]]]) -> list[Any]:
        """Predict many requests' records in one forward pass per route.

        Args:
            items: (route, records) per request.

        Returns:
            Per request: (model info, predictions) or an error string when a record breaks the
            bundle's contract (a rule the request schema cannot express).
        """
        self.metrics.batch_requests.observe(len(items))
        self.batch_log.append(len(items))
        versions = self.versions  # one snapshot for the whole batch
        out: list[Any] = [None] * len(items)
        for route in {r for r, _ in items}:
            idx = [i for i, (r, _) in enumerate(items) if r == route]
            v = versions.get(route) or versions["stable"]
            rows = [rec for i in idx for rec in items[i][1]]
            self.metrics.batch_records.observe(len(rows))
            preds = await self._predictor.run(_predict_rows, v.bundle, rows)
            start = 0
            for i in idx:
                n = len(items[i][1])
                out[i] = (
                    v.info(route if route in versions else "stable"),
                    preds[start : start + n],
                )
                start += n
                if self.monitor is not None:
                    self._observe(v, out[i][0], items[i][1], out[i][1])
        return out

    # ------------------------------------------------------------------ monitoring

    def _observe(
        self, v: LoadedVersion, info: dict[str, str], records: list[dict], preds: list[dict]
    ) -> None:
        """Queue what one answered request means for drift and the request log."""
        if any("error" in p for p in preds):
            return  # refused with 422: not served, not traffic the model saw
        p = self._pending.get(v.uri)
        if p is None:
            p = self._pending[v.uri] = {
                "info": info, "requests": 0, "records": 0, "drift": [], "log": [], "dropped": 0,
            }  # fmt: skip
        p["requests"] += 1
        p["records"] += len(records)
        drift = self.args.drift
        if drift.enabled:
            skip = self.not_for_drift
            keep = [
                {**{k: x for k, x in r.items() if k not in skip}, PREDICTION: pred["prediction"]}
                for r, pred in zip(records, preds, strict=True)
                if drift.sample_rate >= 1 or random.random() < drift.sample_rate
            ]
            p["drift"].extend(keep)
            if len(p["drift"]) > drift.window:
                del p["drift"][: len(p["drift"]) - drift.window]
        log = self.args.request_log
        if log.enabled and random.random() < log.sample_rate:
            base = {
                "request_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "request_id": uuid.uuid4().hex,
                "model_name": v.name,
                "model_version": v.version,
                "route": info["route"],
            }
            for record, pred in zip(records, preds, strict=True):
                probs = {f"proba_{c}": x for c, x in (pred.get("probabilities") or {}).items()}
                p["log"].append(
                    {
                        **base,
                        **self.treat_pii(self._loggable(record)),
                        "prediction": pred["prediction"],
                        **probs,
                    }
                )
            backlog = MAX_LOG_BACKLOG * log.flush_rows
            if len(p["log"]) > backlog:
                p["dropped"] += len(p["log"]) - backlog
                del p["log"][: len(p["log"]) - backlog]
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _loggable(self, record: dict[str, Any]) -> dict[str, Any]:
        """Images as base64 PNG text: one column type however they were sent, and what
        ``raylight evaluate input=`` reads back."""
        if not self.image_rules:
            return record
        import base64

        from raylight.data.images import parse_image, to_png

        out = dict(record)
        for c, rule in self.image_rules.items():
            if out.get(c) is not None:
                png = to_png(parse_image(out[c], rule), rule)
                out[c] = base64.b64encode(png).decode()
        return out

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush_pending()

    async def flush_pending(self) -> None:
        """Send what this replica served since the last call to the monitor."""
        pending, self._pending = self._pending, {}
        for uri, p in pending.items():
            try:
                await self.monitor.record.remote(
                    uri, p["info"], p["requests"], p["records"], p["drift"], p["log"], p["dropped"]
                )
            except Exception as exc:  # never fail predictions for the monitor's sake
                if time.monotonic() - self._monitor_failed_at > 60:
                    self._monitor_failed_at = time.monotonic()
                    logger.warning("raylight: the monitor did not take a report: %s", exc)

    def count_request(self, route: str, version: str) -> None:
        """Count an answered request; the counter is sent in sums every ``FLUSH_S``.

        One metric update per request measurably costs a small model's replica; Prometheus
        scrapes every few seconds anyway. Counts of the last second are lost if the replica dies.
        """
        key = (route, version)
        self._request_counts[key] = self._request_counts.get(key, 0) + 1
        if self._counts_flusher is None or self._counts_flusher.done():
            self._counts_flusher = asyncio.get_running_loop().create_task(self._flush_counts())

    async def _flush_counts(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            counts, self._request_counts = self._request_counts, {}
            for (route, version), n in counts.items():
                self.metrics.requests.inc(
                    n, tags={"route": route, "model_version": version, "status": "200"}
                )

    async def predict_records(self, records: list[dict[str, Any]]) -> tuple[dict, list]:
        """Predict validated records (also callable through a deployment handle)."""
        return await self._predict_batch((self._choose_route(), records))

    # ------------------------------------------------------------------ HTTP

    async def drift_report(self) -> dict[str, Any] | None:
        """The monitor's report (``GET /drift``), after sending what this replica holds."""
        if self.monitor is None:
            return None
        await self.flush_pending()
        return await self.monitor.report.remote()

    def __serve_build_asgi_app__(self) -> Any:
        from raylight.serve.http import build_fastapi

        return build_fastapi(self)


def encode_validated(bundle: Any, records: list[dict[str, Any]]) -> tuple[Any, list[Any]]:
    """Encode records the request model already validated, without pandas.

    The request model enforces types, ranges, required fields and (by default) categories, so
    what is left of the bundle's contract is checked here row by row: blank strings are missing
    values, and an unknown category is a bad row where the contract is strict about categories.
    The result equals ``bundle.encode`` on the same rows (a unit test holds the two together);
    it costs microseconds per row instead of the data path's ~8 ms per call of pandas set-up,
    which would otherwise dominate a one-record request.

    Returns:
        (features [n, d] float32, per-row error or None)
    """
    import numpy as np

    from raylight.data.preprocess import MISSING, OTHER

    pre = bundle.preprocessor
    rules = {f["name"]: f for f in bundle.input_schema["features"]}
    strict = bool(bundle.input_schema.get("strict_categories", False))
    n = len(records)
    x = np.zeros((n, pre.num_features), dtype=np.float32)
    errors: list[Any] = [None] * n
    j = 0
    for c in pre.feature_order:
        rule = rules[c]
        if c in pre.images:
            from raylight.data.images import parse_image

            st = pre.images[c]
            size = int(np.prod(st["shape"]))
            for i, r in enumerate(records):
                try:
                    px = parse_image(r.get(c), rule) if r.get(c) is not None else None
                except ValueError as exc:
                    px, errors[i] = None, errors[i] or f"{c}: {exc}"
                if px is None:
                    errors[i] = errors[i] or f"{c}: missing value not allowed"
                    continue
                x[i, j : j + size] = (px - st["mean"]) / st["std"]
            j += size
            continue
        if c in pre.texts:
            from raylight.data.text import check_text, tokenize

            texts = []
            for i, r in enumerate(records):
                raw = r.get(c)
                text, reason = ("", None) if raw is None else check_text(raw, rule.get("max_chars"))
                if raw is None and not rule.get("nullable"):
                    reason = "missing value not allowed"
                if reason is not None:
                    errors[i] = errors[i] or f"{c}: {reason}"
                texts.append(text or "")
            width = pre.texts[c]["max_length"]
            x[:, j : j + width] = tokenize(texts, pre.texts[c])
            j += width
            continue
        if c in pre.numeric:
            st = pre.numeric[c]
            v = np.array(
                [np.nan if r.get(c) is None else float(r[c]) for r in records], dtype=np.float64
            )
            miss = np.isnan(v)
            x[:, j] = np.where(miss, 0.0, (v - st["mean"]) / st["std"])
            j += 1
            if st.get("nullable"):
                x[:, j] = miss
                j += 1
            continue
        slots = pre.categorical[c]
        index = {v: i for i, v in enumerate(slots)}
        other = index[OTHER]
        missing_slot = index.get(MISSING, other)
        cats = rule.get("categories")
        check_unknown = (
            rule["dtype"] == "category" and cats is not None and rule.get("strict", strict)
        )
        for i, r in enumerate(records):
            raw = r.get(c)
            value = None if raw is None else str(raw).strip()
            if not value:
                if not rule.get("nullable") and errors[i] is None:
                    errors[i] = f"{c}: missing value not allowed"
                k = missing_slot
            else:
                if check_unknown and value not in cats and errors[i] is None:
                    errors[i] = f"{c}: unknown category: {raw}"
                k = index.get(value, other)
            x[i, j + k] = 1.0
        j += len(slots)
    return x, errors


def _predict_rows(bundle: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bundle predictions for validated records: label + probabilities, or a value."""
    feats, errors = encode_validated(bundle, rows)
    res = bundle.predict_encoded(feats)
    out: list[dict[str, Any]] = []
    for i in range(len(rows)):
        if errors[i] is not None:
            out.append({"error": str(errors[i])})
        elif bundle.task == "classification":
            proba = res["proba"][i]
            out.append({
                "prediction": bundle.classes[int(res["class_id"][i])],
                "probabilities": {c: float(p) for c, p in zip(bundle.classes, proba, strict=True)},
            })  # fmt: skip
        else:
            out.append({"prediction": float(res["value"][i])})
    return out


def user_config(args: ServeAppArgs) -> dict[str, Any]:
    """The deployment's user_config: which bundles serve which share of traffic."""
    return {
        "stable": args.bundle,
        "canary": args.canary.bundle,
        "canary_weight": args.canary.weight if args.canary.bundle else 0.0,
        "previous": args.previous,
        # The registry version the stable bundle was resolved from (models:/NAME@ALIAS).
        "registry": args.registry,
    }


def build_app(args: ServeAppArgs) -> Any:
    """Serve application builder (``import_path: raylight.serve.app:build_app``).

    Reads the stable bundle's manifest on the caller (a missing or malformed bundle fails the
    deploy here, with the bundle's own error), checks a canary has the same input schema, and
    binds the deployment with the resources, batching and overload limits from ``args``.
    """
    from raylight import bundle as bundle_io

    if isinstance(args, dict):  # Serve passes a validated model; Python callers may not
        args = ServeAppArgs.model_validate(args)
    manifest = bundle_io.read_manifest(args.bundle)
    schema = manifest["input_schema"]
    if args.canary.bundle:
        canary = bundle_io.read_manifest(args.canary.bundle)
        if canary["input_schema"].get("features") != schema.get("features"):
            raise bundle_io.BundleError(
                f"canary bundle {args.canary.bundle} has a different input schema from "
                f"{args.bundle}: a canary must accept the same requests"
            )
    options: dict[str, Any] = {
        "name": args.deployment,
        "ray_actor_options": {
            "num_cpus": args.num_cpus,
            "num_gpus": args.num_gpus,
            "runtime_env": {"env_vars": REPLICA_ENV},
        },
        "max_ongoing_requests": args.max_ongoing_requests,
        "max_queued_requests": args.max_queued_requests,
        "user_config": user_config(args),
        "health_check_period_s": 5,
        # Per-request access log lines cost the replica measurable CPU on small machines;
        # request counts, latency and errors are in the Prometheus metrics instead.
        "logging_config": {"enable_access_log": args.access_log, "log_level": "WARNING"},
        "graceful_shutdown_timeout_s": max(5.0, args.request_timeout_s),
    }
    if args.autoscaling:
        a = args.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": a.min_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        }
    else:
        options["num_replicas"] = args.num_replicas
    # The settings travel without the bundle URIs: switching bundles must not change the
    # deployment's init args, or Serve would restart replicas instead of reconfiguring them.
    settings = ServeSettings.model_validate(
        args.model_dump(include=set(ServeSettings.model_fields))
    ).model_dump(mode="json")
    monitor = None
    if args.drift.enabled or args.request_log.enabled:
        from raylight.serve.monitor import Monitor

        name = "monitor" if args.deployment != "monitor" else "model-monitor"
        monitor_args = (
            args.drift.model_dump(mode="json"),
            args.request_log.model_dump(mode="json"),
        )
        monitor = Monitor.options(
            name=name, version=code_version(*monitor_args), _internal=True
        ).bind(*monitor_args)
    # A fixed version for the same code and init args: Serve then applies a new user_config (a
    # switch, canary or rollback) to the running replicas instead of replacing them. Without
    # one, serve.run gives every deploy a random version, i.e. a full rolling restart.
    version = code_version(settings, schema, monitor is not None)
    return ModelServer.options(**options, version=version, _internal=True).bind(
        settings, schema, monitor
    )


def code_version(*init_args: Any) -> str:
    """A deployment's code version: raylight's code plus the replica's init args.

    Equal versions let Serve reconfigure running replicas in place; anything that changes what
    a replica runs (raylight's code: the app, bundle loading, preprocessing; the settings; the
    input schema) must change it, or replicas would keep serving with the old ones. Hashing the
    package's sources (~100 files) costs milliseconds, once per deploy.
    """
    import hashlib
    import json
    from pathlib import Path

    import raylight

    h = hashlib.sha256()
    for src in sorted(Path(raylight.__file__).parent.rglob("*.py")):
        h.update(src.read_bytes())
    h.update(json.dumps(init_args, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
