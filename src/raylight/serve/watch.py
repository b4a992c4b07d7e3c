"""``raylight monitor``: read a running endpoint's ``/drift`` and show drift and traffic."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rich.markup import escape
from rich.table import Table


class MonitorError(RuntimeError):
    """The endpoint could not be read (down, wrong URL, auth, monitoring off)."""


def fetch(url: str, api_key: str | None = None, header: str = "x-api-key") -> dict[str, Any]:
    """GET ``<url>/drift`` (with the API key when given); errors say what the server said."""
    req = urllib.request.Request(url.rstrip("/") + "/drift")
    if api_key:
        req.add_header(header, api_key)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return json.loads(resp.read().decode())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read().decode()).get("error")
        except (ValueError, AttributeError):
            detail = exc.reason
        raise MonitorError(f"{url}/drift answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MonitorError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def _num(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def tables(report: dict[str, Any]) -> list[Table]:
    """One traffic table, one drift table per served version, and recent alerts."""
    out = []
    traffic = Table(title="traffic (rates over the last minute)")
    for col in ("model", "version", "route", "requests", "records", "req/s", "rec/s"):
        traffic.add_column(col, justify="right" if col not in ("model", "version") else "left")
    for v in report["versions"]:
        t = v["traffic"]
        traffic.add_row(
            escape(str(v.get("name"))), str(v.get("version")), str(v.get("route")),
            f"{t['requests']:,}", f"{t['records']:,}",
            _num(t["requests_per_s"], 1), _num(t["records_per_s"], 1),
        )  # fmt: skip
    out.append(traffic)
    th = report.get("thresholds") or {}
    for v in report["versions"]:
        d = v.get("drift")
        if not d:
            continue
        verdict = (
            f"{len(d['drifted'])} drifted"
            if d["enough_rows"]
            else f"< {d['min_rows']} rows: no verdict"
        )
        t = Table(
            title=f"drift of {escape(str(v.get('name')))}:{v.get('version')} — window "
            f"{d['window']:,} records, {verdict} (psi > {th.get('psi')} or ks > {th.get('ks')})"
        )
        for col in ("feature", "type", "n", "psi", "ks", "drifted"):
            t.add_column(col, justify="left" if col in ("feature", "type") else "right")
        rows = sorted(
            d["features"].items(),
            key=lambda kv: -max(kv[1].get("psi") or 0, kv[1].get("ks") or 0),
        )
        for name, f in rows:
            flag = "[bold red]yes[/]" if f.get("drifted") else ("no" if "drifted" in f else "-")
            t.add_row(
                escape(name), f["type"], f"{f['n']:,}", _num(f.get("psi")), _num(f.get("ks")), flag
            )
        out.append(t)
    alerts = report.get("alerts") or []
    if alerts:
        t = Table(title="recent alerts")
        for col in ("time", "kind", "feature", "version", "psi", "ks"):
            t.add_column(col)
        for a in alerts[-10:]:
            t.add_row(
                a["time"], a["kind"], escape(a["feature"]), str(a["model_version"]),
                _num(a.get("psi")), _num(a.get("ks")),
            )  # fmt: skip
        out.append(t)
    return out
