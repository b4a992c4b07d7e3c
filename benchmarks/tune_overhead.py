"""Benchmark: Ray Tune's per-trial scheduling overhead, and the settings that cut it.

N trials (default 200) of a no-op function trainable that sleeps 0.5 s and reports once run with
``ray.tune.Tuner`` on the local machine, one CPU per trial, so as many at once as there are CPUs
(2 here). A scheduler with no overhead would finish in the ideal floor
``N x 0.5 s / concurrency``; the ratio wall time ÷ floor is the overhead (goal ≤ 1.2x).

The same workload runs under several Tuner settings, in one process on one Ray instance:

- ``ray_defaults``: ``Tuner(trainable, param_space, TuneConfig(num_samples=N))`` and a
  ``RunConfig`` naming only the (temporary) storage path;
- ``no_reuse``: the settings :func:`raylight.tune.run_tuning` used before this benchmark
  (metric/mode, a FIFO scheduler, ``max_concurrent_trials`` = what the CPUs hold, a
  ``CheckpointConfig`` keeping 2, ``verbose=1``);
- ``raylight``: what ``run_tuning`` uses now for one-worker trials: ``no_reuse`` +
  ``TuneConfig(reuse_actors=True)`` (a finished trial's actor process runs the next trial
  instead of a new process being started for every trial);
- ``reuse+<setting>``: ``raylight`` plus one more candidate each, so every setting's effect
  is measured alone: ``verbose0`` (``RunConfig(verbose=0)``), ``no_tbx`` (only the JSON and CSV
  loggers raylight reads, no TensorBoard event files), ``ckpt_300s`` (experiment state saved
  every 300 s instead of Tune's adaptive ≥ 10 s), ``old_output`` (``RAY_AIR_NEW_OUTPUT=0``,
  Tune's legacy progress reporter). They are stacked on ``reuse_actors`` because without it
  every trial pays seconds for a new process, which buries small effects in noise and makes each
  row take minutes; the same four on top of ``raylight`` (``verbose0``, ``no_tbx``,
  ``ckpt_300s``, ``old_output``) can be asked for with ``--variants``;
- ``tuned``: ``no_reuse`` with every candidate that is safe for raylight's own sweeps
  (``reuse_actors``, ``verbose0``, ``no_tbx``).

``TUNE_RESULT_BUFFER_LENGTH`` is not a variant: it is already 1 by default in this Ray, a trial
here reports once (nothing to buffer), and raylight's trials attach a checkpoint to every report,
which ends a result buffer anyway.

Timing: wall time from ``Tuner(...)`` construction to ``fit()`` returning, and ``fit()`` alone.
Each trial reports when its sleep started and ended, which gives the latency to the first trial
start, the tail from the last trial's end to ``fit()`` returning, and the utilization of the
trial slots (busy trial-seconds ÷ (concurrency x fit seconds)). Ray is started once, and a short
untimed warm-up run goes first so that the first variant does not pay one-off costs (Tune's
imports, the first worker processes). With ``--repeats`` > 1 the variants are interleaved per
repeat, so drift in a shared machine's load hits every variant alike; medians are reported.

Usage::

    .venv/bin/python benchmarks/tune_overhead.py [--trials 200] [--repeats 1] [--quick]
        [--variants ray_defaults,raylight,tuned]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The script's directory is on sys.path when run as a script; this is the sibling helper.
from _results import (
    machine_info,
    machine_line,
    save_result,
)

BENCH_DIR = Path(__file__).resolve().parent
NAME = "tune_overhead"
GOAL = 1.2
SLEEP_S = 0.5


# ----------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One way of configuring the same Tuner run.

    Attributes:
        name: Row label.
        description: What the row adds to its ``ref`` row (or what the row is).
        ref: The row this one differs from by ``description``; its saving is shown against it.
        raylight: Start from run_tuning's settings (else: Ray Tune's defaults).
        reuse_actors: ``TuneConfig(reuse_actors=...)``.
        verbose: ``RunConfig(verbose=...)``; None leaves Tune's default.
        no_tbx: Log with the JSON and CSV loggers only (no TensorBoard files).
        env: Environment variables set while the Tuner is built and run.
    """

    name: str
    description: str
    ref: str | None = "no_reuse"
    raylight: bool = True
    reuse_actors: bool = False
    verbose: int | None = 1
    no_tbx: bool = False
    env: dict[str, str] = field(default_factory=dict)
    tracking: bool = False


CKPT_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "300"}
OLD_OUTPUT_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("ray_defaults", "Tuner with Tune's defaults only", None, raylight=False, verbose=None),
        Variant("no_reuse", "run_tuning's settings before reuse_actors", None),
        Variant("raylight", "run_tuning today: + TuneConfig(reuse_actors=True)", "no_reuse", reuse_actors=True),
        # The other candidates on top of reuse_actors: without it every trial pays a new
        # process (seconds), which buries their effect in noise and makes each row take minutes.
        Variant("reuse+verbose0", "+ RunConfig(verbose=0)", "raylight", reuse_actors=True, verbose=0),
        Variant("reuse+no_tbx", "+ JSON/CSV loggers only (no TensorBoard)", "raylight", reuse_actors=True, no_tbx=True),
        Variant("reuse+ckpt_300s", "+ TUNE_GLOBAL_CHECKPOINT_S=300", "raylight", reuse_actors=True, env=CKPT_ENV),
        Variant("reuse+old_output", "+ RAY_AIR_NEW_OUTPUT=0", "raylight", reuse_actors=True, env=OLD_OUTPUT_ENV),
        Variant("tuned", "+ reuse_actors, verbose=0, no TensorBoard", reuse_actors=True, verbose=0, no_tbx=True),
        # run_tuning's default tracking: an MLflow child run per trial on the embedded SQLite store.
        Variant("raylight+mlflow", "+ an MLflow child run per trial (embedded store)", "raylight", reuse_actors=True, tracking=True),
        # Not run by default (minutes each at 200 trials): the same candidates without reuse.
        Variant("verbose0", "+ RunConfig(verbose=0)", verbose=0),
        Variant("no_tbx", "+ JSON/CSV loggers only (no TensorBoard)", no_tbx=True),
        Variant("ckpt_300s", "+ TUNE_GLOBAL_CHECKPOINT_S=300", env=CKPT_ENV),
        Variant("old_output", "+ RAY_AIR_NEW_OUTPUT=0", env=OLD_OUTPUT_ENV),
    )
}  # fmt: skip
DEFAULT_VARIANTS = list(VARIANTS)[:9]


# ----------------------------------------------------------------------------- the trial


def noop_trial(config: dict[str, Any]) -> None:
    """The trainable: sleep, then report once, with when the sleep started and ended.

    Defined in ``__main__``, so cloudpickle ships it by value: Ray workers need no PYTHONPATH.
    """
    from ray import tune

    start = time.time()
    time.sleep(config["sleep_s"])
    end = time.time()
    tune.report({"score": config["x"], "t_start": start, "t_end": end, "pid": os.getpid()})


@contextmanager
def env_vars(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block (Tune reads these when fit() builds its
    controller, in this process), then restore the previous values."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_variant(
    v: Variant, trials: int, concurrency: int, storage: Path, run_name: str
) -> dict[str, Any]:
    """Build and fit one Tuner; wall times plus what the trials' own timestamps tell.

    Args:
        v: The settings to run with.
        trials: Number of trials (``num_samples``).
        concurrency: Trials at once (CPUs ÷ 1 CPU per trial).
        storage: ``RunConfig.storage_path``; the experiment directory is removed afterwards.
        run_name: ``RunConfig.name``.

    Returns:
        Times in seconds (``total_s``: construction to fit() return; ``fit_s``: fit() alone),
        the floor and ratios, latency to the first trial start, tail after the last trial end,
        slot utilization, mean overhead per trial, and the number of errored trials.
    """
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    env = dict(v.env)
    if v.no_tbx:
        # Tune adds CSV, JSON and (tensorboardX being installed) TensorBoard loggers unless told
        # not to; raylight reads result.json (metrics_dataframe) and keeps progress.csv.
        env["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    trainable = tune.with_resources(noop_trial, {"CPU": 1})
    space = {"x": tune.uniform(0.0, 1.0), "sleep_s": SLEEP_S}
    with env_vars(env):
        t0 = time.time()
        callbacks = [JsonLoggerCallback(), CSVLoggerCallback()] if v.no_tbx else []
        if v.tracking:
            callbacks.append(_tracking_callback(storage, run_name, trials))
        if v.raylight:
            # Mirrors run_tuning (src/raylight/tune.py) for one-worker trials and random search.
            tune_config = tune.TuneConfig(
                metric="score",
                mode="min",
                search_alg=BasicVariantGenerator(random_state=0),
                scheduler=FIFOScheduler(),
                num_samples=trials,
                max_concurrent_trials=concurrency,
                reuse_actors=v.reuse_actors,
            )
            run_config = tune.RunConfig(
                name=run_name,
                storage_path=str(storage),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=2, checkpoint_score_attribute="score", checkpoint_score_order="min"
                ),
                verbose=v.verbose,
                callbacks=callbacks or None,
            )
        else:
            tune_config = tune.TuneConfig(num_samples=trials, reuse_actors=v.reuse_actors)
            run_config = tune.RunConfig(name=run_name, storage_path=str(storage))
        tuner = tune.Tuner(
            trainable, param_space=space, tune_config=tune_config, run_config=run_config
        )
        t1 = time.time()
        grid = tuner.fit()
        t2 = time.time()
    starts, ends, pids, errors = [], [], set(), 0
    for r in grid:
        if r.error or not r.metrics or "t_start" not in r.metrics:
            errors += 1
            continue
        starts.append(r.metrics["t_start"])
        ends.append(r.metrics["t_end"])
        pids.add(r.metrics["pid"])
    shutil.rmtree(storage / run_name, ignore_errors=True)
    floor = trials * SLEEP_S / concurrency
    fit_s, total_s = t2 - t1, t2 - t0
    busy = sum(e - s for s, e in zip(starts, ends, strict=True))
    return {
        "total_s": total_s,
        "fit_s": fit_s,
        "construct_s": t1 - t0,
        "floor_s": floor,
        "ratio_total": total_s / floor,
        "ratio_fit": fit_s / floor,
        "first_start_s": min(starts) - t1 if starts else None,
        "tail_s": t2 - max(ends) if ends else None,
        "utilization": busy / (concurrency * fit_s),
        # The slack every trial adds to its slot: what start/stop/bookkeeping cost per trial.
        "overhead_per_trial_s": (fit_s - floor) * concurrency / trials,
        # The same between the first start and the last end: without the one-off start-up and
        # tail, what each further trial costs (what dominates as N grows).
        "steady_overhead_per_trial_s": (
            (concurrency * (max(ends) - min(starts)) - busy) / len(starts) if starts else None
        ),
        # Distinct trial processes: N without actor reuse, about the concurrency with it.
        "actor_processes": len(pids),
        "completed": len(starts),
        "errors": errors,
    }


def _tracking_callback(storage: Path, run_name: str, trials: int) -> Any:
    """What run_tuning adds for tracking=mlflow: a parent run, and a child run per trial."""
    from raylight import tracking
    from raylight.config import TrackingConfig
    from raylight.sweep_tracking import TrialTracking

    out = storage / f"{run_name}-tracking"
    t = TrackingConfig.model_validate({"backends": ["mlflow"]})
    parent = tracking.open_runs(t, str(out), "bench", run_name)
    sweep_dir = out / "sweep"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return TrialTracking(
        t.model_dump(mode="json"), str(out), "bench", run_name, str(sweep_dir), parent.ids, 1,
        {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
    )  # fmt: skip


# ----------------------------------------------------------------------------- reporting

SCALARS = (
    "total_s",
    "fit_s",
    "construct_s",
    "ratio_total",
    "ratio_fit",
    "first_start_s",
    "tail_s",
    "utilization",
    "overhead_per_trial_s",
    "steady_overhead_per_trial_s",
    "actor_processes",
)


def _median(values: list[Any]) -> float | None:
    vals = [x for x in values if x is not None]
    return statistics.median(vals) if vals else None


def medians(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Median of each number over the repeats of each variant."""
    out = {}
    for name, runs in raw.items():
        m = {k: _median([r[k] for r in runs]) for k in SCALARS}
        m["errors"] = sum(r["errors"] for r in runs)
        m["floor_s"] = runs[0]["floor_s"]
        out[name] = m
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(
    med: dict[str, dict[str, Any]], args: argparse.Namespace, concurrency: int, info: dict[str, Any]
) -> None:
    """One row per variant, plus each setting's saving against the ``raylight`` row."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))  # piped output defaults to 80 columns
    floor = next(iter(med.values()))["floor_s"]
    t = Table(
        title=f"tune_overhead: {args.trials} trials x {SLEEP_S} s sleep, {concurrency} at once, "
        f"ideal floor {floor:.1f} s, median of {args.repeats} repeat(s)",
        caption="total: Tuner() construction → fit() returns; ratio: ÷ floor (goal ≤ "
        f"{GOAL}); first start: fit() → first trial's sleep; tail: last trial's end → fit() "
        "returns; util: busy trial-s ÷ (concurrency x fit s); overhead/trial: (fit - floor) x "
        "concurrency ÷ N; steady: the same from first start to last end; procs: trial processes; "
        "Δ vs ref: fit s saved against the row named after 'vs' below.",
    )
    cols = ["variant", "total s", "fit s", "ratio", "fit ratio", "first start s"]
    cols += ["tail s", "util", "overhead/trial s", "steady s", "procs", "Δ vs ref s"]
    cols += ["errors"]
    for col in cols:
        t.add_column(col, justify="left" if col == "variant" else "right")
    for name, m in med.items():
        ref = med.get(VARIANTS[name].ref or "")
        delta = ref["fit_s"] - m["fit_s"] if ref else None
        t.add_row(
            name,
            f"{m['total_s']:.1f}",
            f"{m['fit_s']:.1f}",
            f"{m['ratio_total']:.2f}",
            f"{m['ratio_fit']:.2f}",
            _fmt(m["first_start_s"], ".2f"),
            _fmt(m["tail_s"], ".2f"),
            f"{m['utilization']:.0%}",
            f"{m['overhead_per_trial_s']:.3f}",
            _fmt(m["steady_overhead_per_trial_s"], ".3f"),
            _fmt(m["actor_processes"], ".0f"),
            _fmt(delta, "+.1f"),
            str(m["errors"]),
        )
    console.print(t)
    for name in med:
        v = VARIANTS[name]
        console.print(f"  {name:<17} {v.description}" + (f"  (vs {v.ref})" if v.ref else ""))
    console.print(
        f"Machine: {machine_line(info)}, load avg "
        f"{[round(x, 1) for x in info['loadavg_1_5_15']]} (before the run)"
    )


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=None, help="trials per variant (default 200)")
    p.add_argument(
        "--repeats", type=int, default=1, help="runs per variant, interleaved; median reported"
    )
    p.add_argument("--quick", action="store_true", help="20 trials: a smoke run")
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {','.join(VARIANTS)} (default: {','.join(DEFAULT_VARIANTS)})",
    )
    p.add_argument("--out", default=NAME, help=f"results file stem (default {NAME})")
    args = p.parse_args(argv)
    args.trials = args.trials or (20 if args.quick else 200)
    args.variants = [s.strip() for s in args.variants.split(",") if s.strip()]
    unknown = [s for s in args.variants if s not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from raylight import cluster
    from raylight.config import ClusterConfig

    info = machine_info()
    started = cluster.init(ClusterConfig(auth_mode="disabled"))
    import ray

    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in args.variants}
    storage = Path(tempfile.mkdtemp(prefix=f"raylight-bench-{NAME}-"))
    try:
        concurrency = max(1, math.floor(ray.cluster_resources().get("CPU", 1)))
        print(f"warm-up: {2 * concurrency} trials (not timed) …", flush=True)
        run_variant(VARIANTS["raylight"], 2 * concurrency, concurrency, storage, "warmup")
        for rep in range(args.repeats):
            for name in args.variants:
                print(f"repeat {rep + 1}/{args.repeats}: {name} …", flush=True)
                r = run_variant(VARIANTS[name], args.trials, concurrency, storage, f"{name}-{rep}")
                print(
                    f"  total {r['total_s']:.1f} s, fit {r['fit_s']:.1f} s "
                    f"(floor {r['floor_s']:.1f} s), errors {r['errors']}",
                    flush=True,
                )
                raw[name].append(r)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            ray.shutdown()

    med = medians(raw)
    print_table(med, args, concurrency, info)

    floor = args.trials * SLEEP_S / concurrency
    quick = " (quick run)" if args.quick else ""
    claim = (
        f"tune_overhead: Ray Tune wall time for {args.trials} no-op {SLEEP_S} s trials, "
        f"{concurrency} at once, vs ideal floor"
    )
    cell = []
    for name, label in (
        ("tuned", "tuned"),
        ("raylight", "today"),
        ("raylight+mlflow", "today + MLflow child runs"),
        ("ray_defaults", "Ray defaults"),
    ):
        if name in med:
            cell.append(f"{label} {med[name]['total_s']:.1f} s ({med[name]['ratio_total']:.2f}x)")
    head = "tuned" if "tuned" in med else ("raylight" if "raylight" in med else args.variants[0])
    ratio = f"{med[head]['ratio_total']:.2f}" + ("" if head == "tuned" else f" ({head})")
    if head == "tuned" and "raylight" in med:
        ratio += f" (today {med['raylight']['ratio_total']:.2f})"
    result = {
        "benchmark": NAME,
        "claim": claim,
        "command": " ".join(
            [".venv/bin/python", "benchmarks/tune_overhead.py", *(argv or sys.argv[1:])]
        ),
        "settings": {
            "trials": args.trials,
            "sleep_s": SLEEP_S,
            "cpus_per_trial": 1,
            "concurrency": concurrency,
            "repeats": args.repeats,
            "quick": args.quick,
            "variants": {n: asdict(VARIANTS[n]) for n in args.variants},
            "floor_s": floor,
        },
        "machine": info,
        "raw": raw,
        "medians": med,
        "results_md_row": {
            "claim": claim,
            "baseline": f"ideal floor {floor:.1f} s ({args.trials} x {SLEEP_S} s ÷ {concurrency})",
            "raylight": "; ".join(cell) or "-",
            "ratio": ratio + quick,
            "goal": f"≤ {GOAL}",
            "machine": machine_line(info),
        },
    }
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
