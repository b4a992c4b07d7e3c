"""The promotion gate: thresholds on a report's numbers; a version that fails one is not
promoted unless forced, and a forced promotion records why on the version.

Thresholds name a metric of ``report.json``: an overall metric (``accuracy``, ``roc_auc``,
``ece``, ``rmse`` ...) or a fairness gap, which must hold for every sensitive attribute
(``demographic_parity_difference``, ``demographic_parity_ratio``,
``equalized_odds_difference``).
"""

from __future__ import annotations

from typing import Any

FAIRNESS_KEYS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
)


def values_of(report: dict[str, Any], key: str) -> list[tuple[str, float]]:
    """Every (where, value) a threshold on ``key`` applies to; empty when the report lacks it."""
    if key in FAIRNESS_KEYS:
        attrs = (report.get("fairness") or {}).get("attributes") or {}
        return [(f"{key}[{col}]", float(f[key])) for col, f in attrs.items()]
    v = (report.get("metrics") or {}).get(key)
    return [(key, float(v))] if isinstance(v, int | float) else []


def check(
    report: dict[str, Any], minimum: dict[str, float], maximum: dict[str, float]
) -> dict[str, Any]:
    """Compare a report with the thresholds.

    Returns:
        ``{"passed": bool, "checks": [{"name", "value", "op", "threshold", "ok"}], "missing": [...]}``
        — a threshold whose metric the report lacks fails (``missing``): a gate must never pass
        by not looking.
    """
    checks, missing = [], []
    for op, limits in ((">=", minimum), ("<=", maximum)):
        for key, threshold in limits.items():
            found = values_of(report, key)
            if not found:
                missing.append(key)
                continue
            for name, value in found:
                ok = value >= threshold if op == ">=" else value <= threshold
                checks.append(
                    {
                        "name": name,
                        "value": value,
                        "op": op,
                        "threshold": float(threshold),
                        "ok": ok,
                    }
                )
    return {
        "passed": not missing and all(c["ok"] for c in checks),
        "checks": checks,
        "missing": missing,
    }


def describe(result: dict[str, Any]) -> list[str]:
    """One line per failed threshold (or missing metric)."""
    lines = [
        f"{c['name']} = {c['value']:.4f}, needs {c['op']} {c['threshold']:g}"
        for c in result["checks"]
        if not c["ok"]
    ]
    lines += [
        f"{k}: not in the report (no such metric, or no sensitive attribute)"
        for k in result["missing"]
    ]
    return lines
