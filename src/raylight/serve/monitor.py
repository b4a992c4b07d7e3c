"""The app's monitor: drift of served inputs, traffic, and the sampled request log.

One small deployment (``monitor``, one replica, no CPU reserved) next to the model replicas.
Every model replica sends it what it served about once a second (sampled input records per
bundle, sampled request/response rows); the monitor keeps one bounded
:class:`~raylight.serve.drift.DriftWindow` per served bundle, so ``GET /drift`` describes all
of the app's traffic whichever replica answers, and it is the only writer of the request log.
Every ``drift.check_every_s`` it recomputes drift, sets the Prometheus gauges and logs a
warning when a feature crosses a threshold (and again when it recovers).

Why a deployment and not per-replica state: with autoscaling, each replica sees an arbitrary
share of the traffic, and a window per replica would both dilute the signal and answer
differently per request. Serve restarts it like any replica; its window is rebuilt from new
traffic (drift is about recent inputs, so nothing of value is lost with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any

from ray import serve

from raylight.config import DriftSettings, RequestLogSettings
from raylight.serve.drift import DriftWindow

logger = logging.getLogger("ray.serve")

MAX_VERSIONS = 4  # windows kept for bundles no longer served (a rollback may return to them)
TRAFFIC_WINDOW_S = 60.0


class _Gauges:
    def __init__(self) -> None:
        from ray.serve.metrics import Gauge

        self.drift = Gauge(
            "raylight_serve_drift",
            description="Drift of recent inputs against the training reference, per feature "
            "(stat: psi | ks).",
            tag_keys=("feature", "model_version", "stat"),
        )
        self.drifted = Gauge(
            "raylight_serve_drift_features_drifted",
            description="Features over a drift threshold.",
            tag_keys=("model_version",),
        )
        self.window = Gauge(
            "raylight_serve_drift_window_rows",
            description="Records in the drift window.",
            tag_keys=("model_version",),
        )


class _Version:
    """What the monitor knows about one served bundle."""

    def __init__(self, uri: str, info: dict[str, Any], window: DriftWindow | None) -> None:
        self.uri = uri
        self.info = dict(info)
        self.window = window
        self.records = 0
        self.requests = 0
        self.recent: deque[tuple[float, int, int]] = deque()  # (time, requests, records)
        self.first_seen = self.last_seen = time.time()
        self.drifted: set[str] = set()

    def count(self, requests: int, records: int) -> None:
        now = time.time()
        self.requests += requests
        self.records += records
        self.last_seen = now
        self.recent.append((now, requests, records))
        while self.recent and self.recent[0][0] < now - TRAFFIC_WINDOW_S:
            self.recent.popleft()

    def traffic(self) -> dict[str, Any]:
        now = time.time()
        recent = [r for r in self.recent if r[0] >= now - TRAFFIC_WINDOW_S]
        span = min(TRAFFIC_WINDOW_S, max(1e-9, now - self.first_seen)) if recent else 1.0
        return {
            "requests": self.requests,
            "records": self.records,
            "requests_per_s": sum(r[1] for r in recent) / span,
            "records_per_s": sum(r[2] for r in recent) / span,
            "last_seen_s_ago": round(now - self.last_seen, 3),
        }


@serve.deployment(name="monitor", num_replicas=1, ray_actor_options={"num_cpus": 0})
class Monitor:
    """Drift windows, traffic counts and the request log writer of one Serve app."""

    def __init__(self, drift: dict[str, Any], request_log: dict[str, Any]) -> None:
        self.drift = DriftSettings.model_validate(drift)
        self.log = RequestLogSettings.model_validate(request_log)
        self.versions: dict[str, _Version] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=100)
        self.pending: list[dict[str, Any]] = []
        self.pending_since: float | None = None
        self.log_stats = {"rows_written": 0, "files": 0, "rows_dropped": 0, "last_error": None}
        self.gauges = _Gauges()
        self._loop_task: asyncio.Task | None = None
        self._check_lock = asyncio.Lock()
        self.last_report: dict[str, Any] | None = None

    # ------------------------------------------------------------------ intake

    async def record(
        self,
        uri: str,
        info: dict[str, Any],
        requests: int,
        records: int,
        drift_rows: list[dict[str, Any]],
        log_rows: list[dict[str, Any]],
        log_dropped: int = 0,
    ) -> None:
        """What one model replica served since its last call, for one bundle."""
        self._ensure_loop()
        v = self.versions.get(uri)
        if v is None:
            new = await asyncio.to_thread(self._new_version, uri, info)
            v = self.versions.get(uri) or self._keep(new)  # another replica may have won
        v.info = dict(info)
        v.count(requests, records)
        if v.window is not None and drift_rows:
            v.window.add(drift_rows)
        self.log_stats["rows_dropped"] += log_dropped
        if log_rows and self.log.enabled:
            self.pending.extend(log_rows)
            self.pending_since = self.pending_since or time.monotonic()
            if len(self.pending) >= self.log.flush_rows:
                await asyncio.to_thread(self.flush)

    def _new_version(self, uri: str, info: dict[str, Any]) -> _Version:
        from raylight import bundle as bundle_io

        window = None
        if self.drift.enabled:
            reference = bundle_io.read_manifest(uri).get("reference") or {}
            window = DriftWindow(
                reference,
                size=self.drift.window,
                min_rows=self.drift.min_rows,
                psi_threshold=self.drift.psi_threshold,
                ks_threshold=self.drift.ks_threshold,
            )
        return _Version(uri, info, window)

    def _keep(self, v: _Version) -> _Version:
        if len(self.versions) >= MAX_VERSIONS:
            oldest = min(self.versions.values(), key=lambda x: x.last_seen)
            del self.versions[oldest.uri]
        self.versions[v.uri] = v
        return v

    # ------------------------------------------------------------------ drift

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        """Check drift (gauges, warnings) and flush the log on their schedules."""
        next_check = time.monotonic() + self.drift.check_every_s
        while True:
            await asyncio.sleep(min(1.0, self.drift.check_every_s))
            try:
                if self.drift.enabled and time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.drift.check_every_s
                    await self.check()
                if (
                    self.pending_since is not None
                    and time.monotonic() - self.pending_since >= self.log.flush_s
                ):
                    await asyncio.to_thread(self.flush)
            except Exception:  # the monitor must outlive a bad batch; say what broke
                logger.exception("raylight monitor: periodic check failed")

    async def check(self) -> dict[str, Any]:
        """Recompute drift of every window, update the gauges, warn on threshold crossings.

        The windows are copied here, on the event loop that also adds to them, and the
        numbers are computed in a thread on the copies: no deque changes while it is read.
        """
        async with self._check_lock:  # one check at a time: alerts fire once per crossing
            snaps = [
                (v, v.window.snapshot()) for v in self.versions.values() if v.window is not None
            ]
            return await asyncio.to_thread(self._check, snaps)

    def _check(self, snaps: list[tuple[_Version, dict[str, list[Any]]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for v, snap in snaps:
            assert v.window is not None
            rep = v.window.report(snap)
            version = str(v.info.get("version"))
            self.gauges.window.set(rep["window"], tags={"model_version": version})
            self.gauges.drifted.set(len(rep["drifted"]), tags={"model_version": version})
            for feature, f in rep["features"].items():
                for stat in ("psi", "ks"):
                    if f.get(stat) is not None:
                        tags = {"feature": feature, "model_version": version, "stat": stat}
                        self.gauges.drift.set(f[stat], tags=tags)
            if rep["enough_rows"]:
                now = set(rep["drifted"])
                for feature in sorted(now - v.drifted):
                    self._alert("drifted", v, feature, rep["features"][feature])
                for feature in sorted(v.drifted - now):
                    self._alert("recovered", v, feature, rep["features"][feature])
                v.drifted = now
            out[v.uri] = rep
        self.last_report = {"at": time.time(), "versions": out}
        return out

    def _alert(self, kind: str, v: _Version, feature: str, f: dict[str, Any]) -> None:
        psi, ks = f.get("psi"), f.get("ks")
        alert = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "kind": kind,
            "feature": feature,
            "model_version": v.info.get("version"),
            "psi": psi,
            "ks": ks,
        }
        self.alerts.append(alert)
        nums = ", ".join(f"{k} {x:.3f}" for k, x in (("psi", psi), ("ks", ks)) if x is not None)
        if kind == "drifted":
            logger.warning(
                "raylight drift: feature %r of model %s:%s crossed a threshold (%s; psi > %s "
                "or ks > %s)", feature, v.info.get("name"), v.info.get("version"), nums,
                self.drift.psi_threshold, self.drift.ks_threshold,
            )  # fmt: skip
        else:
            logger.warning(
                "raylight drift: feature %r of model %s:%s is back under the thresholds (%s)",
                feature, v.info.get("name"), v.info.get("version"), nums,
            )  # fmt: skip

    async def report(self) -> dict[str, Any]:
        """``GET /drift``: drift and traffic per served bundle, recent alerts, the request log."""
        self._ensure_loop()
        reports = await self.check() if self.drift.enabled else {}
        versions = []
        for v in sorted(self.versions.values(), key=lambda x: -x.last_seen):
            versions.append({
                **v.info,
                "bundle": v.uri,
                "traffic": v.traffic(),
                "drift": reports.get(v.uri),
            })  # fmt: skip
        return {
            "drift_enabled": self.drift.enabled,
            "thresholds": {"psi": self.drift.psi_threshold, "ks": self.drift.ks_threshold},
            "versions": versions,
            "alerts": list(self.alerts),
            "request_log": {
                "enabled": self.log.enabled,
                "sample_rate": self.log.sample_rate,
                "path": self.log.path,
                "pending_rows": len(self.pending),
                **self.log_stats,
            },
        }

    # ------------------------------------------------------------------ request log

    def flush(self) -> str | None:
        """Write the waiting request-log rows as one Parquet file; returns its path."""
        if not self.pending or not self.log.path:
            return None
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        from raylight.data.sources import filesystem_and_path

        rows, self.pending, self.pending_since = self.pending, [], None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        fs, root = filesystem_and_path(self.log.path)
        path = f"{root.rstrip('/')}/part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            fs.create_dir(root, recursive=True)
            table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
            pq.write_table(table, path, filesystem=fs)
        except Exception as exc:
            # Count, say why, keep serving: a full disk must not take predictions down.
            self.log_stats["rows_dropped"] += len(rows)
            self.log_stats["last_error"] = str(exc)
            logger.error("raylight request log: could not write %s: %s", path, exc)
            return None
        self.log_stats["rows_written"] += len(rows)
        self.log_stats["files"] += 1
        return path

    async def flush_now(self) -> str | None:
        """Write what waits now (``raylight serve shutdown`` and tests call this)."""
        return await asyncio.to_thread(self.flush)

    def __del__(self) -> None:
        # Serve calls __del__ on a graceful shutdown: the last rows reach the log.
        with contextlib.suppress(Exception):
            self.flush()
