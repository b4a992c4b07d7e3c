"""Shared output of the benchmarks: machine description and ``RESULTS.md``.

Every benchmark writes ``results/<name>.json``; one with a ``results_md_row`` dict (the keys of
:data:`COLUMNS`) gets a row in ``RESULTS.md``, which is regenerated from all of them so that no
benchmark overwrites another's row.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
COLUMNS = ("claim", "baseline", "raylight", "ratio", "goal", "machine")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """Where and with what a benchmark ran; the load average hints at a busy (shared) machine."""
    versions = {}
    for pkg in ("raylight", "torch", "lightning", "ray", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        from raylight.train import git_info

        git = git_info()
    except ImportError:
        git = {}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
        **git,
    }


def machine_line(info: dict[str, Any]) -> str:
    """Short machine description for a table cell."""
    cpu = info.get("cpu_model") or info.get("machine")
    return f"{info['cpu_count']} CPU {cpu}, {platform.system()}, {info['date'][:10]}"


def write_results_md(results_dir: Path = RESULTS_DIR, md_path: Path = RESULTS_MD) -> int:
    """Regenerate ``RESULTS.md`` from every ``results/*.json`` with a ``results_md_row``.

    Returns:
        The number of rows written.
    """
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            row = json.loads(path.read_text()).get("results_md_row")
        except (OSError, ValueError):
            continue
        if isinstance(row, dict):
            rows.append([str(row.get(c, "")).replace("|", "\\|") for c in COLUMNS])
    lines = [
        "# Benchmark results",
        "",
        "Generated from `benchmarks/results/*.json` by the benchmark scripts; do not edit by hand.",
        "See `benchmarks/README.md` for what each benchmark measures.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    md_path.write_text("\n".join(lines))
    return len(rows)


def save_result(result: dict[str, Any], name: str) -> Path:
    """Write ``results/<name>.json``, regenerate ``RESULTS.md`` and say where both are."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_results_md()
    root = RESULTS_DIR.parent.parent
    print(f"wrote {out.relative_to(root)} and {RESULTS_MD.relative_to(root)}")
    return out
