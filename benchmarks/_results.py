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
import re
import textwrap
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


# A goal cell that starts with a bound ('≥ 0.95 ...'); others (prose goals) are not plotted.
_GOAL = re.compile(r"^\s*([≥≤])\s*([0-9.]+)")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _ratio_and_goal(row: dict[str, Any]) -> tuple[float, str, float] | None:
    """(ratio, direction, goal) of a row whose cells hold them as numbers, else None."""
    ratio = _NUMBER.search(str(row.get("ratio", "")))
    goal = _GOAL.match(str(row.get("goal", "")))
    if not ratio or not goal:
        return None
    return float(ratio.group()), goal.group(1), float(goal.group(2))


def write_summary_plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """A bar per claim: measured ratio against its goal (green when met). False if none."""
    points = [(r, rg) for r in rows if (rg := _ratio_and_goal(r))]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [textwrap.shorten(str(r["claim"]), 90, placeholder=" …") for r, _ in points]
    labels = [textwrap.fill(label, 48) for label in labels]
    fig, ax = plt.subplots(figsize=(13, 0.62 * len(points) + 1.2))
    for i, (_, (ratio, way, goal)) in enumerate(points):
        met = ratio >= goal if way == "≥" else ratio <= goal
        ax.barh(i, ratio, color="#2e7d32" if met else "#c62828")
        ax.plot([goal, goal], [i - 0.4, i + 0.4], color="black", lw=2)
        ax.text(ratio, i, f" {ratio:.2f} (goal {way} {goal:g})", va="center", fontsize=8)
    ax.set_yticks(range(len(points)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (raylight / baseline); black tick: goal")
    ax.set_title("raylight benchmarks: measured ratio vs goal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _chaos_lines(results_dir: Path) -> list[str]:
    """The fault-scenario table from ``results/chaos.json`` (``make chaos``), if present."""
    path = results_dir / "chaos.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return []
    where = machine_line(data["machine"]) if "machine" in data else ""
    lines = [
        "## Fault scenarios (`make chaos`)",
        "",
        f"Local two-node cluster on 127.0.0.1 ({where}); see `scripts/chaos.py`.",
        "",
        "| scenario | result | outcome | recovery | data lost |",
        "|---|---|---|---|---|",
    ]
    for sc in data.get("scenarios", []):
        rec = f"{sc['recovery_s']:.1f} s" if sc.get("recovery_s") is not None else "-"
        outcome = str(sc["outcome"]).replace("|", "\\|")
        lines.append(
            f"| {sc['scenario']} | {'ok' if sc['ok'] else 'FAILED'} | {outcome} | {rec} | {sc['data_lost']} |"
        )
    return [*lines, ""]


def write_results_md(results_dir: Path = RESULTS_DIR, md_path: Path = RESULTS_MD) -> int:
    """Regenerate ``RESULTS.md`` (and ``results/summary.png``) from ``results/*.json``.

    Every file with a ``results_md_row`` gives a row; ``chaos.json`` gives the fault table.

    Returns:
        The number of rows written.
    """
    rows: list[dict[str, Any]] = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            row = json.loads(path.read_text()).get("results_md_row")
        except (OSError, ValueError):
            continue
        if isinstance(row, dict):
            rows.append(row)
    plotted = write_summary_plot(rows, results_dir / "summary.png")
    cells = [[str(r.get(c, "")).replace("|", "\\|") for c in COLUMNS] for r in rows]
    lines = [
        "# Benchmark results",
        "",
        "Generated from `benchmarks/results/*.json` by the benchmark scripts (`make bench`,",
        "`make chaos`); do not edit by hand. See `benchmarks/README.md` for what each measures.",
        "",
        *(["![ratio vs goal per claim](results/summary.png)", ""] if plotted else []),
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
        *("| " + " | ".join(r) + " |" for r in cells),
        "",
        *_chaos_lines(results_dir),
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
