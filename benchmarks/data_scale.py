"""Benchmark: data many times larger than Ray's object store trains with bounded peak memory.

``raylight train data=scale`` (``conf/data/scale.yaml``: Parquet, ``data.cache=false``) runs as
its own process, exactly as a user runs it, on an embedded Ray with a small object store
(``cluster.object_store_memory_mb``, default 80), one Ray Train worker, one epoch of the default
MLP. Every 0.5 s this script reads, from ``/proc``, the memory of every process of that run: the
CLI process (Ray's driver) and all its descendants (GCS, raylet, Ray's helper processes, task
workers, the Train controller and worker), plus any process whose command line names the run's
private Ray temp dir. Per process it keeps the largest resident set seen and the kernel's own
high-water mark (``VmHWM``, which also catches peaks between samples); per sample it sums the
proportional set size (``Pss``: a shared page, e.g. of the object store or a library, counted
once across processes), which is the run's total memory at that instant. It also tracks the
shared-memory use of ``/dev/shm`` (where Ray's object store lives) and the bytes Ray spilled to
disk.

The run is repeated on a quarter of the data (the first quarter of the files) at the same
settings: memory that stays flat while the data grows 4x is what "bounded" means, and is the
claim's proof; one size alone could not tell bounded from merely "fits today". (``--quick``
runs one small size: a smoke run of the whole path, not evidence.) Sampling costs the script
~0.08 s of CPU per second of run.

The baseline is what a user without a streaming pipeline does: one Python process that
``pd.read_parquet``s every file, drops the rows breaking the same contract, standardizes the
numeric columns and one-hot encodes the categorical ones into the float32 matrix a model would
train on. Its peak RSS (``ru_maxrss``) and rows/s are measured at both sizes too.

Usage::

    .venv/bin/python benchmarks/data_scale.py [--rows 20000000] [--data-dir .scale-data]
        [--object-store-mb 80] [--quick]

Data missing (or of another size) under ``--data-dir`` is generated first with
``scripts/make_scale_data.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The script's directory is on sys.path when run as a script; these are the sibling helpers.
from _results import machine_info, machine_line, save_result
from _timing import timer_overrides

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_scale_data as scale_data  # noqa: E402

NAME = "data_scale"
CLAIM = "data_scale: data ≥ 5x Ray's object store streamed through preprocessing into training"
GOAL = "data ≥ 5x object store; peak memory bounded (no process grows with data size)"
# A process "did not grow" when its peak at 4x the rows is within this factor of the smaller
# run's: allows for allocator noise and a few more blocks of metadata, not for data.
GROWTH_TOLERANCE = 1.25
# Below this much extra memory a process did not grow with the data: Ray's small helper
# processes (~50 MB) move by more than 25% with timing alone.
GROWTH_FLOOR_BYTES = 64 * 2**20
SAMPLE_S = 0.5


# ----------------------------------------------------------------------------- /proc sampling


def _status(pid: int) -> dict[str, int] | None:
    """``/proc/<pid>/status`` memory fields in bytes (None: the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def _pss(pid: int) -> int | None:
    """Proportional set size in bytes from ``smaps_rollup`` (None: unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    """Parent pid → child pids, for every process on the machine."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesized command name, which may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(root: int) -> set[int]:
    kids = _children()
    seen, todo = {root}, [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


# Ray names its worker processes after what they run ("ray::IDLE", "ray::RayTrainWorker...",
# "ray::ReadParquet->MapBatches(check_batch)"); actors keep their name, task workers change it.
ACTOR_KINDS = {
    "ray::RayTrainWorker": "train worker",
    "ray::TrainController": "train controller",
    "ray::SplitCoordinator": "data split coordinator",
    "ray::DashboardAgent": "ray services",
    "ray::RuntimeEnvAgent": "ray services",
}
KIND_ORDER = [
    "driver",
    "gcs_server",
    "raylet",
    "ray services",
    "train controller",
    "train worker",
    "data split coordinator",
    "task workers",
    "other",
]


KIND_RANK = {"other": 0, "gcs_server": 1, "raylet": 1, "task workers": 2, "ray services": 3}
KIND_RANK.update({k: 4 for k in ("train controller", "train worker", "data split coordinator")})
KIND_RANK["driver"] = 5


def classify(cmd: str, is_root: bool) -> str:
    """What a process of the run is, from its command line."""
    if is_root:
        return "driver"
    exe = os.path.basename(cmd.split(" ", 1)[0]) if cmd else ""
    if exe in ("gcs_server", "raylet"):
        return exe
    for prefix, kind in ACTOR_KINDS.items():
        if cmd.startswith(prefix):
            return kind
    if cmd.startswith("ray::"):
        return "task workers"
    if any(s in cmd for s in ("dashboard", "log_monitor.py", "monitor.py", "runtime_env")):
        return "ray services"
    return "other"


@dataclass
class ProcRecord:
    """One process of the run: what it was and the most memory it held."""

    pid: int
    kind: str
    titles: list[str] = field(default_factory=list)
    peak_rss: int = 0  # largest sampled VmRSS
    hwm: int = 0  # kernel's VmHWM at the last sample: the peak, also between samples
    peak_pss: int = 0
    peak_anon: int = 0
    first_s: float = 0.0
    last_s: float = 0.0


def _tree_bytes(path: Path, skip: str = "logs") -> int:
    """Bytes of the files under ``path`` (not under a ``skip`` directory): spilled objects."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != skip]
        for f in filenames:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _shm_used() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class RunSampler(threading.Thread):
    """Samples the memory of a process tree (and of processes naming ``marker``) until stopped.

    Args:
        root: The run's top process (Ray's driver).
        marker: A string only this run's processes have in their command line (its private
            Ray temp dir); catches any process that is not a descendant of ``root``.
        temp_dir: The run's Ray temp dir, whose non-log files are spilled objects.
    """

    def __init__(self, root: int, marker: str, temp_dir: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.marker = marker
        self.temp_dir = temp_dir
        self.procs: dict[int, ProcRecord] = {}
        # (seconds since start, Σ PSS, Σ RSS, /dev/shm used above the start, spilled bytes,
        # driver RSS, driver private (anonymous) RSS): the driver's own trace says in which
        # phase it grows.
        self.samples: list[tuple[float, int, int, int, int, int, int]] = []
        self.t0 = time.time()
        self.shm0 = _shm_used()
        self.cpu_s = 0.0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def _pids(self) -> set[int]:
        pids = _descendants(self.root)
        for entry in os.scandir("/proc"):
            # Only this run's temp dir: another Ray on the machine must not count.
            pid = int(entry.name) if entry.name.isdigit() else None
            if pid is not None and pid not in pids and self.marker in _cmdline(pid):
                pids.add(pid)
        return pids

    def sample(self) -> None:
        now = time.time() - self.t0
        total_pss = total_rss = root_rss = root_anon = 0
        for pid in self._pids():
            st = _status(pid)
            cmd = _cmdline(pid)
            if st is None or not cmd:  # gone, or a zombie
                continue
            pss = _pss(pid) or st["VmRSS"]
            rec = self.procs.get(pid)
            if rec is None:
                rec = self.procs[pid] = ProcRecord(pid, classify(cmd, pid == self.root))
                rec.first_s = now
            title = cmd[:80]
            if title not in rec.titles and len(rec.titles) < 20:
                rec.titles.append(title)
            # The most specific name a process had wins: the raylet forks workers (whose first
            # command line is the raylet's), and a task worker may become an actor.
            kind = classify(cmd, pid == self.root)
            if KIND_RANK.get(kind, 0) > KIND_RANK.get(rec.kind, 0):
                rec.kind = kind
            rec.peak_rss = max(rec.peak_rss, st["VmRSS"])
            rec.hwm = max(rec.hwm, st["VmHWM"])
            rec.peak_pss = max(rec.peak_pss, pss)
            rec.peak_anon = max(rec.peak_anon, st.get("RssAnon", 0))
            rec.last_s = now
            total_pss += pss
            total_rss += st["VmRSS"]
            if pid == self.root:
                root_rss, root_anon = st["VmRSS"], st.get("RssAnon", 0)
        spilled = _tree_bytes(self.temp_dir) if len(self.samples) % 4 == 0 else (
            self.samples[-1][4] if self.samples else 0
        )  # fmt: skip
        self.samples.append(
            (now, total_pss, total_rss, _shm_used() - self.shm0, spilled, root_rss, root_anon)
        )

    def run(self) -> None:
        while not self._halt.is_set():
            start = time.thread_time()
            self.sample()
            self.cpu_s += time.thread_time() - start
            self._halt.wait(SAMPLE_S)


# ----------------------------------------------------------------------------- raylight run


def subset_dir(data_dir: Path, files: int, into: Path) -> Path:
    """A directory of links to the first ``files`` Parquet files of ``data_dir``.

    The generator's smaller sets are prefixes of larger ones, so this is the same data set at a
    smaller size, with no second copy on disk.
    """
    into.mkdir(parents=True, exist_ok=True)
    for part in sorted(data_dir.glob(scale_data.PART_GLOB))[:files]:
        (into / part.name).symlink_to(part.resolve())
    return into


def run_raylight(
    data_path: Path, rows: int, store_mb: int, workdir: Path, extra: list[str]
) -> dict[str, Any]:
    """``raylight train data=scale`` as a subprocess, sampled until it exits."""
    tag = f"{rows}"
    steps = workdir / f"steps_{tag}.json"
    out_dir = workdir / "outputs"
    # Short: Ray's socket paths live under it and Unix sockets allow ~107 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rlds-", dir="/tmp"))
    cmd = [
        str(ROOT / ".venv" / "bin" / "raylight"),
        "train",
        "data=scale",
        f"data.path={data_path}",
        "trainer.max_epochs=1",
        "scaling.num_workers=1",
        f"cluster.object_store_memory_mb={store_mb}",
        # A throwaway embedded cluster needs no token file.
        "cluster.auth_mode=disabled",
        "tracking=none",
        f"output_dir={out_dir}",
        f"run_name=data-scale-{tag}",
        *extra,
    ]
    cmd += timer_overrides(str(steps), cmd[2:])
    env = dict(os.environ)
    env["RAY_TMPDIR"] = str(ray_tmp)
    # Ray's workers inherit the raylet's environment, the raylet the driver's: the Train
    # worker then imports the step timer from here.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH")) if p)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["COLUMNS"] = "160"
    print(f"  $ {' '.join(cmd[1:])}", flush=True)
    call = time.time()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = RunSampler(proc.pid, str(ray_tmp), ray_tmp)
    sampler.start()
    # The CLI announces each stage as it starts or ends: phase boundaries for the memory trace.
    marks: dict[str, float] = {}
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        stripped = line.strip()
        now = time.time() - sampler.t0
        for key, word in (("data_done", "data "), ("train_start", "train "), ("done", "test ")):
            if stripped.startswith(word) and key not in marks:
                marks[key] = now
        if stripped.startswith("epoch"):  # printed when an epoch (with its validation) ends
            marks["train_end"] = now
        if stripped.startswith(("data ", "epoch", "quarantine")):
            print(f"  {stripped[:150]}", flush=True)
    rc = proc.wait()
    done = time.time()
    sampler.sample()  # the last word on every process still alive
    sampler.stop()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if rc != 0:
        print("\n".join(lines[-40:]))
        raise RuntimeError(f"raylight train exited {rc}")
    run_dir = out_dir / "runs" / f"data-scale-{tag}"
    result = json.loads((run_dir / "result.json").read_text())
    out = summarize_run(sampler, marks, result, steps, call, done)
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def summarize_run(
    sampler: RunSampler,
    marks: dict[str, float],
    result: dict[str, Any],
    steps_path: Path,
    call: float,
    done: float,
) -> dict[str, Any]:
    """Throughput and memory of one run, per process kind and per phase."""
    from _timing import summarize

    timings = result["timings"]
    summary = result["data_summary"]
    train_rows = summary["split_rows"]["train"]
    train: dict[str, Any] = {}
    if steps_path.exists():
        # One epoch: measure it whole (warmup_epochs=0); start-up is reported on its own.
        s = summarize(json.loads(steps_path.read_text()), call, done, warmup_epochs=0)
        train = {
            "train_rows_per_s": s["train_samples_per_s"],
            "startup_s": s["startup_s"],
            "step_ms_median": s["step_ms_median"],
            "gap_ms_median": s["gap_ms_median"],
        }
        ev = s["startup_events_s"]
        if "val_start" in ev and "val_end" in ev:
            train["val_s"] = ev["val_end"] - ev["val_start"]
    kinds: dict[str, dict[str, Any]] = {}
    for rec in sampler.procs.values():
        k = kinds.setdefault(
            rec.kind, {"processes": 0, "peak_hwm": 0, "peak_pss": 0, "sum_hwm": 0, "pids": []}
        )
        k["processes"] += 1
        k["peak_hwm"] = max(k["peak_hwm"], rec.hwm)
        k["peak_pss"] = max(k["peak_pss"], rec.peak_pss)
        k["sum_hwm"] += rec.hwm
        k["pids"].append(rec.pid)
    kinds = {k: kinds[k] for k in KIND_ORDER if k in kinds}
    samples = sampler.samples
    # Ray start-up counts in the data stage; scoring the test split follows the last epoch.
    end = marks.get("done", math.inf)
    phases = {
        "data": (0.0, marks.get("data_done", end)),
        "train": (marks.get("train_start", end), marks.get("train_end", end)),
        "bundle+test": (marks.get("train_end", end), end),
    }

    def peak(i: int) -> dict[str, int | None]:
        return {
            name: max((s[i] for s in samples if lo <= s[0] <= hi), default=None)
            for name, (lo, hi) in phases.items()
        }

    return {
        "rows": summary["rows"],
        "good": summary["good"],
        "bad": summary["bad"],
        "bad_by_column": summary["bad_by_column"],
        "split_rows": summary["split_rows"],
        "test_metrics": result["test_metrics"],
        "timings_s": {**timings, "wall": done - call},
        "data_rows_per_s": summary["rows"] / timings["data_s"],
        "train_rows": train_rows,
        **train,
        "memory": {
            "peak_total_pss": max(s[1] for s in samples),
            "peak_total_rss": max(s[2] for s in samples),
            "sum_of_process_peaks": sum(r.hwm for r in sampler.procs.values()),
            # Private (anonymous) memory only: no library or object-store page counted twice.
            "sum_of_anon_peaks": sum(r.peak_anon for r in sampler.procs.values()),
            "peak_shm_used": max(s[3] for s in samples),
            "peak_spilled": max(s[4] for s in samples),
            "phase_peak_total_pss": peak(1),
            "phase_peak_driver_rss": peak(5),
            "phase_peak_driver_anon": peak(6),
            "by_kind": kinds,
        },
        "processes": [{k: v for k, v in rec.__dict__.items()} for rec in sampler.procs.values()],
        "trace": [list(s) for s in samples],
        "sampler": {"samples": len(samples), "interval_s": SAMPLE_S, "cpu_s": sampler.cpu_s},
    }


# ----------------------------------------------------------------------------- pandas baseline


def pandas_child(data_path: str) -> dict[str, Any]:
    """Load everything with pandas and preprocess it in memory; runs in its own process.

    Written to be frugal, not a straw man: one float32 matrix is allocated and filled column by
    column (no ``get_dummies`` frame, no float64 copies of the whole table), so the peak is
    about the table plus the matrix a model would train on.
    """
    import numpy as np
    import pandas as pd

    t0 = time.time()
    df = pd.read_parquet(data_path)
    loaded = time.time()
    rows = len(df)
    # The same contract as conf/data/scale.yaml: bad rows are dropped, not trained on.
    good = (
        df["x0"].notna()
        & df["age"].between(18, 100)
        & (df["visits"] >= 0)
        & df["label"].isin([0, 1])
    )
    df = df[good.to_numpy()]
    n = len(df)
    cats = {c: df[c].astype("category") for c in scale_data.CATEGORICAL}
    # One slot per category, plus a missing slot where there are missing values.
    widths = {c: len(v.cat.categories) + int(v.isna().any()) for c, v in cats.items()}
    x = np.zeros((n, len(scale_data.NUMERIC) + sum(widths.values())), dtype=np.float32)
    for j, c in enumerate(scale_data.NUMERIC):
        v = df[c].to_numpy(np.float64)
        x[:, j] = (v - v.mean()) / (v.std() or 1.0)
    offset = len(scale_data.NUMERIC)
    rows_idx = np.arange(n)
    for c, v in cats.items():
        codes = v.cat.codes.to_numpy().astype(np.int64)
        codes[codes < 0] = widths[c] - 1  # missing → the last slot
        x[rows_idx, offset + codes] = 1.0
        offset += widths[c]
    y = df["label"].to_numpy(np.int64)
    end = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "rows": rows,
        "good": n,
        "features": int(x.shape[1]),
        "matrix_bytes": int(x.nbytes + y.nbytes),
        "load_s": loaded - t0,
        "preprocess_s": end - loaded,
        "rows_per_s": rows / (end - t0),
        "peak_rss": usage.ru_maxrss * 1024,  # Linux: KiB
    }


def run_pandas(data_path: Path) -> dict[str, Any]:
    """The baseline in a fresh interpreter, so its peak is its own; a failure is a result."""
    avail = _mem_available()
    cmd = [sys.executable, __file__, "--pandas-child", str(data_path)]
    # Address-space cap below what is free: a set too large for this machine ends in a
    # MemoryError in the baseline instead of the kernel's OOM killer picking a victim.
    limit = int(avail * 0.9) + (2 << 30) if avail else None
    start = time.time()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        if limit
        else None,
    )
    if proc.returncode != 0:
        return {
            "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1],
            "wall_s": time.time() - start,
            "mem_available": avail,
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mem_available() -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


# ----------------------------------------------------------------------------- reporting


def _gb(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def verdict(sizes: list[dict[str, Any]], store_mb: int) -> dict[str, Any]:
    """Is the data ≥ 5x the object store, and did any process grow with the data?"""
    store = store_mb * 2**20
    small, large = sizes[0], sizes[-1]
    data_x = [s["arrow_bytes"] / store for s in sizes]
    growth: dict[str, float] = {}
    extra: dict[str, int] = {}
    if len(sizes) > 1:
        a, b = small["raylight"]["memory"], large["raylight"]["memory"]
        growth["total_pss"] = b["peak_total_pss"] / a["peak_total_pss"]
        extra["total_pss"] = b["peak_total_pss"] - a["peak_total_pss"]
        for kind, k in b["by_kind"].items():
            if kind in a["by_kind"]:
                growth[kind] = k["peak_hwm"] / a["by_kind"][kind]["peak_hwm"]
                extra[kind] = k["peak_hwm"] - a["by_kind"][kind]["peak_hwm"]
    grown = {
        k: v for k, v in growth.items() if v > GROWTH_TOLERANCE and extra[k] > GROWTH_FLOOR_BYTES
    }
    return {
        "object_store_bytes": store,
        "data_over_store": data_x,
        "rows_growth": large["rows"] / small["rows"] if len(sizes) > 1 else None,
        "memory_growth": growth,
        "memory_growth_bytes": extra,
        "grew": grown,
        "data_5x_store": min(data_x) >= 5,
        "bounded": bool(growth) and not grown,
        "met": min(data_x) >= 5 and bool(growth) and not grown,
    }


def print_tables(sizes: list[dict[str, Any]], v: dict[str, Any], store_mb: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 200))  # piped output defaults to 80 columns
    t = Table(
        title=f"data_scale: raylight train data=scale (1 worker, 1 epoch, object store "
        f"{store_mb} MB) vs pandas (load everything)",
        caption="dataxstore: the set's Arrow size ÷ Ray's object store.  Σ PSS: all of the "
        "run's processes at one instant (shared pages counted once); Σ peaks: each process's "
        "own VmHWM, summed (shared pages counted once per process); Σ anon: each process's "
        "peak private memory, summed.  pandas: the peak RSS of its one process.",
    )
    cols = ["rows", "Arrow MiB", "dataxstore", "path", "rows/s data", "rows/s train", "wall s"]
    cols += ["peak Σ PSS GiB", "Σ peaks GiB", "Σ anon GiB", "shm MiB", "spilled MiB"]
    cols += ["quarantined"]
    for col in cols:
        t.add_column(col, justify="left" if col == "path" else "right")
    for s in sizes:
        r, p = s["raylight"], s["pandas"]
        m = r["memory"]
        t.add_row(
            f"{s['rows']:,}",
            _mb(s["arrow_bytes"]),
            f"{s['arrow_bytes'] / (store_mb * 2**20):.1f}",
            "raylight",
            f"{r['data_rows_per_s']:,.0f}",
            f"{r['train_rows_per_s']:,.0f}" if r.get("train_rows_per_s") else "-",
            f"{r['timings_s']['wall']:.0f}",
            _gb(m["peak_total_pss"]),
            _gb(m["sum_of_process_peaks"]),
            _gb(m["sum_of_anon_peaks"]),
            _mb(m["peak_shm_used"]),
            _mb(m["peak_spilled"]),
            f"{r['bad']:,} (expected {s['expected_bad']:,})",
        )
        if "error" in p:
            row = ["", "", "", "pandas", "-", "-", f"{p['wall_s']:.0f}", "failed"]
            t.add_row(*row, "", "", "", "", p["error"][:40])
        else:
            row = ["", "", "", "pandas", f"{p['rows_per_s']:,.0f}", "-"]
            row += [f"{p['load_s'] + p['preprocess_s']:.0f}", _gb(p["peak_rss"])]
            t.add_row(*row, "", "", "", "", f"{p['rows'] - p['good']:,}")
    console.print(t)

    k = Table(title="raylight peak memory per process kind (MiB; max over the kind's processes)")
    k.add_column("kind")
    for s in sizes:
        k.add_column(f"{s['rows']:,} rows: n", justify="right")
        k.add_column("peak RSS (HWM)", justify="right")
        k.add_column("peak PSS", justify="right")
    if len(sizes) > 1:
        k.add_column("growth", justify="right")
    kinds = dict.fromkeys(kk for s in sizes for kk in s["raylight"]["memory"]["by_kind"])
    for kind in kinds:
        row = [kind]
        for s in sizes:
            kd = s["raylight"]["memory"]["by_kind"].get(kind)
            row += (
                [str(kd["processes"]), _mb(kd["peak_hwm"]), _mb(kd["peak_pss"])]
                if kd
                else ["-"] * 3
            )
        if len(sizes) > 1:
            g = v["memory_growth"].get(kind)
            row.append("-" if g is None else f"{g:.2f}x")
        k.add_row(*row)
    console.print(k)
    for s in sizes:
        ph = s["raylight"]["memory"]["phase_peak_total_pss"]
        console.print(
            f"{s['rows']:,} rows: peak Σ PSS by phase (GiB): "
            + ", ".join(f"{n} {_gb(b)}" for n, b in ph.items())
            + ";  timings s: "
            + ", ".join(f"{n} {t:.1f}" for n, t in s["raylight"]["timings_s"].items())
            + f";  test accuracy {s['raylight']['test_metrics'].get('accuracy', float('nan')):.3f}"
        )
    if v["rows_growth"]:
        console.print(
            f"rows x{v['rows_growth']:.1f} → peak Σ PSS x{v['memory_growth']['total_pss']:.2f}; "
            f"data ≥ 5x object store: {v['data_5x_store']}; no process grew by more than "
            f"{GROWTH_TOLERANCE}x and {GROWTH_FLOOR_BYTES >> 20} MiB: {v['bounded']}"
            + (f" (grew: {v['grew']})" if v["grew"] else "")
        )


# ----------------------------------------------------------------------------- main


def ensure_data(data_dir: Path, rows: int, seed: int, rows_per_file: int) -> dict[str, Any]:
    """The set's metadata, generating it first when it is missing or of another shape/seed."""
    meta = scale_data.read_meta(data_dir)
    if meta and (meta["rows"], meta["seed"], meta["rows_per_file"]) == (rows, seed, rows_per_file):
        return meta
    print(f"generating {rows:,} rows into {data_dir} …", flush=True)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_scale_data.py"), "--rows", str(rows),
         "--out", str(data_dir), "--seed", str(seed), "--rows-per-file", str(rows_per_file),
         "--force"],
        check=True,
    )  # fmt: skip
    meta = scale_data.read_meta(data_dir)
    assert meta is not None
    return meta


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=None, help="rows of the full set (default 20M)")
    p.add_argument("--data-dir", type=Path, default=None, help="the set (default .scale-data)")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument(
        "--rows-per-file",
        type=int,
        default=None,
        help="rows per Parquet file when generating (default 200,000; --quick 50,000)",
    )
    p.add_argument(
        "--object-store-mb", type=int, default=None, help="Ray object store, MB (default 80)"
    )
    p.add_argument(
        "--single-size", action="store_true", help="skip the quarter-size run (no growth check)"
    )
    p.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override for the raylight runs (repeatable)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one size, 400k rows, 78 MB object store: a smoke run (~2 min)",
    )
    p.add_argument("--out", default=None, help="results file stem (default data_scale)")
    p.add_argument("--pandas-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rows = args.rows or (400_000 if args.quick else scale_data.DEFAULT_ROWS)
    args.rows_per_file = args.rows_per_file or (
        scale_data.GROUP_ROWS if args.quick else scale_data.DEFAULT_ROWS_PER_FILE
    )
    args.object_store_mb = args.object_store_mb or (78 if args.quick else 80)
    default_dir = ".scale-data-quick" if args.quick else ".scale-data"
    args.data_dir = args.data_dir or ROOT / default_dir
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pandas_child:
        print(json.dumps(pandas_child(args.pandas_child)))
        return 0
    meta = ensure_data(args.data_dir, args.rows, args.seed, args.rows_per_file)
    print(
        f"data: {meta['rows']:,} rows in {meta['files']} files, {_mb(meta['disk_bytes'])} MiB "
        f"on disk, {_mb(meta['arrow_bytes'])} MiB in Arrow; object store {args.object_store_mb} MB",
        flush=True,
    )
    info = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix=f"raylight-bench-{NAME}-"))
    # Sizes in files (whole files: the subset is a prefix of the set): a quarter, then all.
    files = meta["files"]
    # --quick runs one size: below Ray Data's 128 MiB block cap, task memory follows the block
    # size (so the data size) and a growth check there would measure that, not boundedness.
    one = args.single_size or args.quick or files < 4
    counts = [files] if one else [max(1, files // 4), files]
    sizes: list[dict[str, Any]] = []
    try:
        for n in counts:
            path = (
                args.data_dir if n == files else subset_dir(args.data_dir, n, workdir / f"sub{n}")
            )
            rows = min(meta["rows"], n * meta["rows_per_file"])
            size = {
                "rows": rows,
                "files": n,
                "data_path": str(path),
                "arrow_bytes": meta["arrow_bytes"] * rows / meta["rows"],
                "expected_bad": sum(scale_data.expected_bad(rows).values()),
            }
            print(f"{rows:,} rows: raylight …", flush=True)
            size["raylight"] = run_raylight(
                path, rows, args.object_store_mb, workdir, args.override
            )
            if args.no_pandas:
                size["pandas"] = {"error": "skipped (--no-pandas)", "wall_s": 0.0}
            else:
                print(f"{rows:,} rows: pandas …", flush=True)
                size["pandas"] = run_pandas(path)
            sizes.append(size)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    v = verdict(sizes, args.object_store_mb)
    print_tables(sizes, v, args.object_store_mb)
    large = sizes[-1]
    r, p = large["raylight"], large["pandas"]
    mem_ratio = r["memory"]["peak_total_pss"] / p["peak_rss"] if "peak_rss" in p else None
    rate_ratio = r["data_rows_per_s"] / p["rows_per_s"] if "rows_per_s" in p else None
    quick = " (quick run)" if args.quick else ""
    growth = (
        f"; at {sizes[0]['rows']:,} rows {_gb(sizes[0]['raylight']['memory']['peak_total_pss'])} "
        f"GiB (rows x{v['rows_growth']:.0f} → memory x{v['memory_growth']['total_pss']:.2f})"
        if v["rows_growth"]
        else ""
    )
    result = {
        "benchmark": NAME,
        "claim": CLAIM,
        "command": " ".join(
            [".venv/bin/python", "benchmarks/data_scale.py", *(argv or sys.argv[1:])]
        ),
        "settings": {
            "rows": args.rows,
            "seed": args.seed,
            "object_store_mb": args.object_store_mb,
            "quick": args.quick,
            "overrides": args.override,
            "data": meta,
            "sample_interval_s": SAMPLE_S,
            "growth_tolerance": GROWTH_TOLERANCE,
        },
        "machine": info,
        "sizes": sizes,
        "verdict": v,
        "ratios": {"peak_memory": mem_ratio, "rows_per_s": rate_ratio},
        "results_md_row": {
            "claim": CLAIM,
            "baseline": (
                f"pandas, {large['rows']:,} rows: failed ({p['error'][:60]})"
                if "error" in p
                else f"pandas, {large['rows']:,} rows: peak RSS {_gb(p['peak_rss'])} GiB, "
                f"{p['rows_per_s']:,.0f} rows/s"
            ),
            "raylight": f"{large['rows']:,} rows ({_mb(large['arrow_bytes'])} MiB, "
            f"{large['arrow_bytes'] / (args.object_store_mb * 2**20):.1f}x a {args.object_store_mb} MB "
            f"store): peak Σ PSS {_gb(r['memory']['peak_total_pss'])} GiB{growth}; "
            f"{r['data_rows_per_s']:,.0f} rows/s data stage, "
            + (f"{r['train_rows_per_s']:,.0f} rows/s training" if r.get("train_rows_per_s") else "")
            + f"; {r['bad']:,} quarantined (expected {large['expected_bad']:,})",
            "ratio": (
                (f"memory {mem_ratio:.2f}, rows/s {rate_ratio:.2f}" if mem_ratio else "-")
                + ("; goal met" if v["met"] else "; goal not met")
                + quick
            ),
            "goal": GOAL,
            "machine": machine_line(info),
        },
    }
    save_result(result, args.out or NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
