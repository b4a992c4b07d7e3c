"""Benchmark: Ray Data ingest into the training loop vs a loader that costs nothing.

The training step is train_overhead's torch loop (TabularMLP forward, cross-entropy, backward,
AdamW step on the encoded Adult train split, ``data.batch_size`` rows per step), fed by:

(a) ``mock``: one pre-built batch yielded over and over (pinned host memory on a GPU), the same
    number of steps and samples per epoch as the real split: the upper bound, a loader that
    costs nothing;
(b) ``ray``: raylight's own :class:`raylight.train._TorchBatches` over the shard a one-worker
    raylight run gets (``DataConfig(datasets_to_split=[])``, as ``train.torch_trainer`` sets
    for one worker: a plain ``ds.iterator()``, no split-coordinator actor),
    with the local shuffle buffer as configured (``data.shuffle_buffer``) and without (``ray0``);
(c) ``data``: the same iteration with no model (``data`` / ``data0``): the raw ingest rate.

On the cached data, (b) also runs with one change at a time (``--lever``, rows ``ray|KEY=VALUE``;
default ``prefetch_batches`` 1 and 4 instead of train.py's 2, and ``split=true``: Ray Train's
default ``streaming_split(1)`` shard behind a split-coordinator actor, what raylight used before
and still uses with several workers), to see which of them would help.

Each runs for both data-stage variants, because they differ: ``data.cache=true`` (the default:
the encoded split is materialized in the object store) and ``data.cache=false`` (streaming:
every epoch re-runs read → contract check → transform). Steady-state samples/s counts epochs 2+,
each from the call that creates the epoch's iterator to its last step, so the time to the first
batch of each epoch is included; that time is also reported on its own, for epoch 1 (a fresh
shard; the split-coordinator actor's start is timed apart, as it overlaps the worker's set-up
in a real run) and later epochs. Every step's wall and CPU time is recorded, so the time a path
loses to (a) splits into epoch start, waits for batches and slower steps. The ratio is
(b)/(a), the median over repeats of per-repeat ratios, with the paths interleaved per repeat so
drift in a shared machine's load hits them alike.

Like a one-CPU Ray Train worker, the loop runs with one torch thread (Ray sets
``OMP_NUM_THREADS`` to the worker's CPUs), and an idle actor holds one Ray CPU for the whole run
so that Ray Data's tasks get the CPUs a training run leaves them, not the worker's.

Usage::

    .venv/bin/python benchmarks/ingest.py [--repeats 3] [--epochs 5] [--quick] \
        [--lever prefetch_batches=8] [--variants cached streaming] [--override KEY=VALUE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# The script's directory is on sys.path when run as a script; these are the sibling helpers.
from _results import machine_info, machine_line, save_result
from train_overhead import autocast, quiet_lightning, torch_threads

from raylight.config import TrainConfig, load_train_config

NAME = "ingest"
CLAIM = (
    "ingest: raylight's training feed (Ray Data iter_torch_batches, resident after the first "
    "pass when cached) vs a mock loader reusing one batch (samples/s; time to first batch)"
)
GOAL_RATIO = 0.9
GOAL_TTFB_S = 2.0
BASE_OVERRIDES = ["experiment=adult_mlp", "cluster.auth_mode=disabled"]
# What train.py passes to iter_torch_batches today; ``--lever prefetch_batches=N`` tries others.
DEFAULT_PREFETCH = 2
DEFAULT_LEVERS = ("prefetch_batches=1", "prefetch_batches=4", "split=true")
# On a GPU kernels run asynchronously: synchronize every few steps (and at each epoch's end) so
# spans are exact without serializing the host's work with the device's (as in _timing).
SYNC_EVERY = 8

Batch = dict[str, Any]
Step = Callable[[Batch], None]

# Row labels, in table order.
LABELS = {
    "mock": "(a) mock + step",
    "ray": "(b) raylight + step",
    "ray0": "(b) no shuffle + step",
    "data": "(c) data only",
    "data0": "(c) no shuffle, data only",
}


# ----------------------------------------------------------------------------- loaders


class MockLoader:
    """Re-iterable loader that yields one pre-built batch for every step of an epoch.

    The batch is built (and, on a GPU, pinned) once; the last step of an epoch gets a view of
    its first rows when the split does not divide evenly, so every epoch has the real split's
    steps and samples at no loading cost.

    Args:
        batch: ``{"features", "label"}`` tensors of one full batch.
        sizes: Rows of each step of an epoch.
    """

    def __init__(self, batch: Batch, sizes: list[int]) -> None:
        full = max(sizes)
        self.sizes = sizes
        self.batches = {
            n: batch if n == full else {k: v[:n] for k, v in batch.items()} for n in sizes
        }

    def __iter__(self) -> Iterator[Batch]:
        for n in self.sizes:
            yield self.batches[n]


class ShardProxy:
    """A dataset shard whose ``iter_torch_batches`` gets some keyword arguments replaced.

    Lets the benchmark run raylight's unmodified ``_TorchBatches`` with another
    ``prefetch_batches`` (the lever under test) or with ``device`` pinned to the GPU, which is
    what ``device="auto"`` resolves to inside a GPU Ray Train worker but not in this driver.

    Args:
        shard: The ``DataIterator`` to wrap.
        overrides: Keyword arguments that replace the caller's.
    """

    def __init__(self, shard: Any, **overrides: Any) -> None:
        self.shard = shard
        self.overrides = overrides

    def iter_torch_batches(self, **kwargs: Any) -> Iterable[Batch]:
        return self.shard.iter_torch_batches(**{**kwargs, **self.overrides})


def train_shard(ds: Any, split: bool = False) -> Any:
    """The shard a one-worker Ray Train run hands its worker, made by Ray Train's own code.

    Args:
        ds: The training split.
        split: False, as raylight runs one worker: ``DataConfig(datasets_to_split=[])``, a
            plain ``ds.iterator()`` in the worker. True: Ray Train's default (every dataset
            split), a ``streaming_split(1)`` iterator fed through a split-coordinator actor.
    """
    import ray
    from ray.train import DataConfig

    node = ray.get_runtime_context().get_node_id()
    splits = DataConfig(datasets_to_split="all" if split else []).configure(
        datasets={"train": ds}, world_size=1, worker_handles=None, worker_node_ids=[node]
    )
    return splits[0]["train"]


def coordinator_ready(shard: Any) -> None:
    """Wait until the shard's split coordinator actor is up (no-op for other iterators)."""
    import ray

    actor = getattr(shard, "_coord_actor", None)  # private: StreamSplitDataIterator's actor
    if actor is not None:
        ray.get(actor.__ray_ready__.remote())


def iterator_stats(text: str) -> str:
    """The iterator part of Ray Data's stats (the data stage's operators are the same each run)."""
    mark = "Dataset iterator time breakdown:"
    return text[text.rfind(mark) :] if mark in text else text


def release_shard(shard: Any) -> None:
    """Stop the shard's split coordinator actor (Ray Train does this when a run ends)."""
    import ray

    actor = getattr(shard, "_coord_actor", None)  # private: StreamSplitDataIterator's actor
    if actor is not None:
        ray.kill(actor)


# ----------------------------------------------------------------------------- the loop


def make_step(cfg: TrainConfig, margs: dict[str, Any], device: str) -> Step:
    """train_overhead's torch step on a fresh, seeded TabularMLP (the model sees no loader)."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F

    from raylight.bundle import build_model

    pl.seed_everything(cfg.seed, verbose=False)
    dev = torch.device(device)
    model = build_model(cfg.model["_target_"], margs).to(dev)
    model.train()
    # The model's own optimizer (raylight's fused AdamW where torch supports it).
    opt = model.configure_optimizers()

    def step(batch: Batch) -> None:
        opt.zero_grad()
        with autocast(cfg.trainer.precision, dev.type):
            loss = F.cross_entropy(model(batch["features"]), batch["label"])
        loss.backward()
        opt.step()

    return step


def run_epochs(
    loader: Iterable[Batch], epochs: int, step: Step | None, device: str
) -> list[dict[str, Any]]:
    """Iterate ``epochs`` passes of ``loader``, training on every batch unless ``step`` is None.

    Each epoch is timed from the call that creates its iterator (what Lightning does at an
    epoch's start) to the end of its last step; every ``next()`` is timed too, so an epoch
    splits into time waiting for batches and time in the step.

    Returns:
        Per epoch: ``samples``, ``steps``, ``wall_s``, ``iter_s`` (creating the iterator),
        ``ttfb_s`` (iterator creation to the first batch in hand), ``wait_s`` (all time in
        ``next()``, the first batch's included), ``step_s``, the per-step medians
        ``wait_ms_p50`` / ``step_ms_p50`` (first batch excluded), and CPU time: ``cpu_s`` of
        the whole process (Ray Data's prefetch threads included), ``loop_cpu_s`` of this
        thread, ``step_cpu_s`` of this thread inside steps.
    """
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    out = []
    for epoch in range(epochs):
        waits: list[float] = []
        steps: list[float] = []
        step_cpu = 0.0
        samples = 0
        cpu0, loop_cpu0 = time.process_time(), time.thread_time()
        t0 = time.perf_counter()
        it = iter(loader)
        t_iter = time.perf_counter()
        while True:
            tw = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            got = time.perf_counter()
            c0 = time.thread_time()
            waits.append(got - tw)
            samples += int(batch["label"].shape[0])
            if step is not None:
                # A no-op for batches Ray Data already put on the device.
                step({k: v.to(dev, non_blocking=True) for k, v in batch.items()})
                if cuda and len(steps) % SYNC_EVERY == SYNC_EVERY - 1:
                    torch.cuda.synchronize()
            steps.append(time.perf_counter() - got)
            step_cpu += time.thread_time() - c0
        if cuda:
            torch.cuda.synchronize()
        end = time.perf_counter()
        cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop_cpu0
        out.append(
            {
                "epoch": epoch,
                "samples": samples,
                "steps": len(waits),
                "wall_s": end - t0,
                "iter_s": t_iter - t0,
                "ttfb_s": (t_iter - t0) + waits[0],
                "wait_s": sum(waits),
                "step_s": sum(steps),
                "wait_ms_p50": 1e3 * statistics.median(waits[1:] or waits),
                "step_ms_p50": 1e3 * statistics.median(steps[1:] or steps),
                "cpu_s": cpu,
                "loop_cpu_s": loop_cpu,
                "step_cpu_s": step_cpu,
            }
        )
    return out


def summarize(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """Steady state (epochs 2+) and time to first batch of one path's run."""
    steady = epochs[1:]
    wall = sum(e["wall_s"] for e in steady)
    samples = sum(e["samples"] for e in steady)
    steps = sum(e["steps"] for e in steady)
    return {
        "samples_per_s": samples / wall,
        "ttfb_first_s": epochs[0]["ttfb_s"],
        "ttfb_later_s": statistics.median(e["ttfb_s"] for e in steady),
        "epoch_s": wall / len(steady),
        # Per step, over the steady epochs: where the time goes.
        # Waits after the first batch of each epoch (that one is in ttfb_later_s).
        "wait_ms": 1e3
        * sum(e["wait_s"] - e["ttfb_s"] + e["iter_s"] for e in steady)
        / (steps - len(steady)),
        "step_ms": 1e3 * sum(e["step_s"] for e in steady) / steps,
        # This thread's CPU time per step inside steps: a step that takes longer in wall time
        # but not in CPU time waited for a core (or the GIL) rather than computing more.
        "step_cpu_ms": 1e3 * sum(e["step_cpu_s"] for e in steady) / steps,
        # Whole-process CPU seconds per wall second: ~1 means nothing ran in parallel.
        "cpu_util": sum(e["cpu_s"] for e in steady) / wall,
        "cpu_s_per_epoch": sum(e["cpu_s"] for e in steady) / len(steady),
        "wait_ms_p50": statistics.median(e["wait_ms_p50"] for e in steady),
        "step_ms_p50": statistics.median(e["step_ms_p50"] for e in steady),
        "steps_per_epoch": steady[0]["steps"],
        "samples_per_epoch": steady[0]["samples"],
        "epochs": epochs,
    }


# ----------------------------------------------------------------------------- one variant


def parse_lever(spec: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of one lever (see ``--lever``), the value converted to its type."""
    key, sep, value = spec.partition("=")
    if not sep or key not in LEVERS:
        raise ValueError(f"lever {spec!r}: expected one of {', '.join(LEVERS)} as KEY=VALUE")
    return key, LEVERS[key](value)


def _bool(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


# What a lever changes, each about (b) only: prefetch_batches is the argument train.py passes
# to iter_torch_batches; data.shuffle_buffer the existing config key; split=true iterates
# the streaming_split shard behind a split-coordinator actor (Ray Train's default DataConfig,
# what several workers get) instead of ds.iterator(); switchinterval is the
# interpreter's GIL switch interval (default 5 ms), sys.setswitchinterval for the run.
LEVERS: dict[str, Callable[[str], Any]] = {
    "prefetch_batches": int,
    "data.shuffle_buffer": int,
    "split": _bool,
    "switchinterval": float,
}


def run_path(
    cfg: TrainConfig,
    margs: dict[str, Any],
    ds: Any,
    mock: MockLoader,
    path: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One run of one path: ``mock``, ``ray``/``ray0``/``data``/``data0``, or ``ray|KEY=VALUE``."""
    from raylight.train import _TorchBatches

    base, _, lever = path.partition("|")
    key, value = parse_lever(lever) if lever else ("", None)
    step = make_step(cfg, margs, args.device) if not base.startswith("data") else None
    if base == "mock":
        return summarize(run_epochs(mock, args.epochs, step, args.device))
    plain = cfg.to_plain()
    if key == "data.shuffle_buffer":
        plain["data"]["shuffle_buffer"] = value
    t0 = time.perf_counter()
    # raylight's one-worker default (train.torch_trainer) is no split; split=true is the lever.
    shard = train_shard(ds, split=bool(value) if key == "split" else False)
    t1 = time.perf_counter()
    # The split coordinator is a new actor; its process start is timed on its own because in
    # a training run it overlaps the worker's set-up (get_dataset_shard comes before the model
    # and the Lightning trainer are built), while here nothing else is going on.
    coordinator_ready(shard)
    t2 = time.perf_counter()
    overrides: dict[str, Any] = {}
    if key == "prefetch_batches":
        overrides["prefetch_batches"] = value
    if args.device == "cuda":
        overrides["device"] = "cuda:0"
    # Exactly the worker's iterable: shuffle=True uses the configured buffer; ray0/data0 are
    # the same class with shuffle=False (file order, as the worker iterates the val split).
    shuffle = not base.endswith("0")
    loader = _TorchBatches(ShardProxy(shard, **overrides) if overrides else shard, plain, shuffle)
    interval = sys.getswitchinterval()
    if key == "switchinterval":
        sys.setswitchinterval(value)
    try:
        res = summarize(run_epochs(loader, args.epochs, step, args.device))
        res.update(shard_s=t1 - t0, coordinator_start_s=t2 - t1)
        res["ttfb_cold_s"] = res["shard_s"] + res["coordinator_start_s"] + res["ttfb_first_s"]
        # Ray Data's own breakdown, summed over all epochs (blocked, ray.get, batching, collate).
        res["ray_data_stats"] = iterator_stats(shard.stats())
    finally:
        sys.setswitchinterval(interval)
        release_shard(shard)
    return res


def first_batch(ds: Any, cfg: TrainConfig, device: str) -> tuple[Batch, list[int]]:
    """One full batch of the real split (the mock's) and the row count of every step."""
    import torch

    rows = ds.count()
    bs = cfg.data.batch_size
    sizes = [min(bs, rows - i) for i in range(0, rows, bs)]
    it = ds.iter_torch_batches(
        batch_size=bs, dtypes={"features": torch.float32, "label": torch.long}
    )
    batch = {k: v.contiguous() for k, v in next(iter(it)).items()}
    if device == "cuda":
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return batch, sizes


# ----------------------------------------------------------------------------- reporting


def quiet_ray_data() -> None:
    """Warnings that are noise here, not findings."""
    import logging
    import warnings

    # Ray Train's DataConfig still sets the deprecated ExecutionOptions.exclude_resources.
    warnings.filterwarnings("ignore", message=r".*exclude_resources.*")
    # "no available CPUs": true for a moment while one task runs next to the reserved CPU.
    logging.getLogger("ray.data.dataset").setLevel(logging.ERROR)


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


SCALARS = (
    "samples_per_s",
    "ttfb_first_s",
    "ttfb_later_s",
    "epoch_s",
    "wait_ms",
    "step_ms",
    "wait_ms_p50",
    "step_ms_p50",
    "shard_s",
    "coordinator_start_s",
    "ttfb_cold_s",
    "step_cpu_ms",
    "cpu_util",
    "cpu_s_per_epoch",
)


def build_report(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians over repeats per (variant, path); ratios to the same repeat's mock loader."""
    medians: dict[str, dict[str, dict[str, Any]]] = {}
    for variant, paths in raw.items():
        mocks = paths["mock"]
        medians[variant] = {}
        for path, runs in paths.items():
            m: dict[str, Any] = {k: _median([r.get(k) for r in runs]) for k in SCALARS}
            per_rep = [
                r["samples_per_s"] / a["samples_per_s"] for r, a in zip(runs, mocks, strict=True)
            ]
            m["ratio"] = statistics.median(per_rep)
            m["ratio_per_repeat"] = per_rep
            m["steps_per_epoch"] = runs[0]["steps_per_epoch"]
            medians[variant][path] = m
    losses = {
        v: {p: loss_breakdown(m, ps["mock"]) for p, m in ps.items() if p.startswith("ray")}
        for v, ps in medians.items()
    }
    return {"medians": medians, "loss_per_epoch_s": losses}


def loss_breakdown(m: dict[str, Any], mock: dict[str, Any]) -> dict[str, float]:
    """Where a path's epoch is longer than the mock's, in seconds per steady epoch.

    ``epoch_start``: the epoch's iterator created → its first batch; ``waits``: later batches
    not ready when the loop asked; ``slower_steps``: the same steps taking longer next to the
    ingest work (``of_which_cpu``: the part that is this thread's own CPU time, the rest is
    waiting for a core or the GIL). They add up to ``total`` up to rounding of the medians.
    """
    n = m["steps_per_epoch"]
    return {
        "total": m["epoch_s"] - mock["epoch_s"],
        "epoch_start": m["ttfb_later_s"],
        "waits": m["wait_ms"] * (n - 1) / 1e3,
        "slower_steps": (m["step_ms"] - mock["step_ms"]) * n / 1e3,
        "of_which_cpu": (m["step_cpu_ms"] - mock["step_cpu_ms"]) * n / 1e3,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def label(path: str) -> str:
    base, _, lever = path.partition("|")
    # Lever rows are (b) with one change: name the change, not (b) again.
    return f"(b) · {lever}" if lever else LABELS[base]


def print_table(
    report: dict[str, Any], info: dict[str, Any], args: argparse.Namespace, threads: int
) -> None:
    """One row per (data variant, path)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))  # piped output defaults to 80 columns
    t = Table(
        title=f"ingest: median of {args.repeats} repeat(s), {args.epochs} epochs, steady state = "
        f"epochs 2+, {threads} torch thread(s), {args.device}",
        caption="samples/s: epochs' wall time incl. each iterator's start;  ratio: ÷ (a), same "
        "repeat;  1st: time to first batch, iterator created → batch in hand, in epoch 1 and "
        "later ones; 'cold' adds making the shard and starting its split-coordinator actor "
        "(coord.);  wait / step: ms per step;  CPU util: process CPU s per wall s.",
    )
    cols = ["data", "path", "samples/s", "ratio", "1st cold s", "coord. s", "1st ep1 s"]
    cols += ["1st later s"]
    cols += ["epoch s", "wait ms", "step ms", "step CPU ms", "CPU util"]
    for col in cols:
        left = col in ("data", "path")
        t.add_column(col, justify="left" if left else "right", no_wrap=left)
    for variant, paths in report["medians"].items():
        for path, m in paths.items():
            t.add_row(
                variant,
                label(path),
                _fmt(m["samples_per_s"], ",.0f"),
                _fmt(m["ratio"], ".2f"),
                _fmt(m["ttfb_cold_s"], ".2f"),
                _fmt(m["coordinator_start_s"], ".2f"),
                _fmt(m["ttfb_first_s"], ".3f"),
                _fmt(m["ttfb_later_s"], ".3f"),
                _fmt(m["epoch_s"], ".3f"),
                _fmt(m["wait_ms"], ".2f"),
                _fmt(m["step_ms"], ".2f"),
                _fmt(m["step_cpu_ms"], ".2f"),
                _fmt(m["cpu_util"], ".2f"),
            )
    console.print(t)
    for variant, paths in report["loss_per_epoch_s"].items():
        for path, lb in paths.items():
            console.print(
                f"{variant} {label(path)}: {lb['total']:.3f} s per epoch more than (a) = "
                f"epoch start {lb['epoch_start']:.3f} + waits {lb['waits']:.3f} + slower steps "
                f"{lb['slower_steps']:.3f} (own CPU {lb['of_which_cpu']:+.3f})"
            )
    console.print(
        f"Machine: {machine_line(info)}, load avg {[round(x, 1) for x in info['loadavg_1_5_15']]} "
        "(before the run)"
    )


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="runs per path; median (default 3)")
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per run, first = warm-up (default 5)"
    )
    p.add_argument(
        "--quick", action="store_true", help="2 epochs, 1 repeat, fewer paths: a smoke run"
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cuda: train on one GPU"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: a one-CPU Ray Train worker's)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=("cached", "streaming"),
        default=["cached", "streaming"],
        help="data-stage variants: data.cache=true / false (default both)",
    )
    p.add_argument(
        "--lever",
        action="append",
        default=None,
        help="also run (b) on cached data with one change, KEY=VALUE (repeatable): "
        f"prefetch_batches (train.py: {DEFAULT_PREFETCH}), data.shuffle_buffer, split=false, "
        f"switchinterval (s); default: {' '.join(DEFAULT_LEVERS)}; 'none': no levers",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override, e.g. data.batch_size=256 (repeatable)",
    )
    p.add_argument("--out", default=None, help="results file stem (default ingest[_cuda])")
    args = p.parse_args(argv)
    if args.lever is None:
        args.lever = [] if args.quick else list(DEFAULT_LEVERS)
    args.lever = [lv for lv in args.lever if lv != "none"]
    for lv in args.lever:
        try:
            parse_lever(lv)
        except ValueError as e:
            p.error(str(e))
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.epochs = args.epochs or (2 if args.quick else 5)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is warm-up)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from raylight import cluster

    overrides = [*BASE_OVERRIDES, *args.override]
    if args.device == "cuda":
        overrides.append("scaling.use_gpu=true")
    name = args.out or (NAME if args.device == "cpu" else f"{NAME}_cuda")
    cfgs = {
        v: load_train_config([*overrides, f"++data.cache={str(v == 'cached').lower()}"])
        for v in args.variants
    }
    base = next(iter(cfgs.values()))
    if base.data.task != "classification":
        raise SystemExit("this benchmark's step uses cross-entropy: needs a classification task")
    started = cluster.init(base.cluster)
    quiet_lightning()
    quiet_ray_data()
    info = machine_info()
    # Streaming epochs are ~10x longer (the data stage re-runs), so that variant runs the
    # headline paths only; levers are tried on the cached data, where ingest is all there is.
    full = ["mock", "ray", *(f"ray|{lv}" for lv in args.lever), "ray0", "data", "data0"]
    short = ["mock", "ray", "data"]
    paths = {v: short if args.quick or v == "streaming" else full for v in args.variants}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {v: {} for v in args.variants}
    stage_s: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix=f"raylight-bench-{NAME}-"))
    # Holds the Ray CPU a one-worker training run's worker holds: Ray Data gets what is left.
    reserve = ray.remote(num_cpus=1)(_Reserve).remote()
    try:
        ray.get(reserve.ready.remote())
        from raylight.data.pipeline import prepare
        from raylight.train import model_args_for

        data = {}
        for v, cfg in cfgs.items():
            t0 = time.perf_counter()
            data[v] = prepare(cfg.data, cfg.seed, quarantine_dir=str(workdir / f"quarantine-{v}"))
            stage_s[v] = time.perf_counter() - t0
        margs = model_args_for(base, data[args.variants[0]].preprocessor)
        # One real batch for the mock; the cached split gives it without another read.
        batch, sizes = first_batch(data[args.variants[0]].train, base, args.device)
        mock = MockLoader(batch, sizes)
        print(
            f"train split: {sum(sizes):,} rows, {batch['features'].shape[1]} features, "
            f"batch {base.data.batch_size}, {len(sizes)} steps/epoch, "
            f"shuffle buffer {base.data.shuffle_buffer:,} rows; data stage "
            + ", ".join(f"{v} {s:.1f} s" for v, s in stage_s.items()),
            flush=True,
        )
        with torch_threads(args.threads) as threads:
            for rep in range(args.repeats):
                for v, cfg in cfgs.items():
                    print(f"repeat {rep + 1}/{args.repeats}: {v} …", flush=True)
                    for path in paths[v]:
                        r = run_path(cfg, margs, data[v].train, mock, path, args)
                        raw[v].setdefault(path, []).append(r)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        ray.kill(reserve)
        if started:
            ray.shutdown()

    report = build_report(raw)
    print_table(report, info, args, threads)
    return save(
        report, raw, info, args, argv, name, overrides, threads, stage_s, base, sizes, margs
    )


class _Reserve:
    """An idle actor; created with ``num_cpus=1`` it holds one Ray CPU."""

    def ready(self) -> bool:
        return True


def save(
    report: dict[str, Any],
    raw: dict[str, dict[str, list[dict[str, Any]]]],
    info: dict[str, Any],
    args: argparse.Namespace,
    argv: list[str] | None,
    name: str,
    overrides: list[str],
    threads: int,
    stage_s: dict[str, float],
    base: TrainConfig,
    sizes: list[int],
    margs: dict[str, Any],
) -> int:
    """Write ``results/<name>.json`` with the RESULTS.md row (the default, cached variant)."""
    import torch

    med = report["medians"]
    head = "cached" if "cached" in med else next(iter(med))
    a, b = med[head]["mock"], med[head]["ray"]
    stream = med.get("streaming", {}).get("ray") if head == "cached" else None
    claim = CLAIM if args.device == "cpu" else CLAIM.replace("(samples/s", "on 1 GPU (samples/s")
    if args.override:
        claim += f" [{' '.join(args.override)}]"
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    raylight = (
        f"{b['samples_per_s']:,.0f} samples/s {head} "
        + (f"({stream['samples_per_s']:,.0f} streaming) " if stream else "")
        + f"first batch {b['ttfb_first_s']:.2f} s epoch 1, {b['ttfb_later_s']:.2f} s later"
        + (
            f" (streaming {stream['ttfb_first_s']:.2f} / {stream['ttfb_later_s']:.2f} s)"
            if stream
            else ""
        )
    )
    ratio = f"{b['ratio']:.2f}" + (f" (streaming {stream['ratio']:.2f})" if stream else "")
    result = {
        "benchmark": NAME,
        "claim": claim,
        "command": " ".join([".venv/bin/python", "benchmarks/ingest.py", *(argv or sys.argv[1:])]),
        "settings": {
            "repeats": args.repeats,
            "epochs": args.epochs,
            "warmup_epochs": 1,
            "quick": args.quick,
            "overrides": overrides,
            "variants": args.variants,
            "device": args.device,
            "gpu": gpu,
            "torch_threads": threads,
            "reserved_ray_cpus": 1,
            "batch_size": base.data.batch_size,
            "shuffle_buffer": base.data.shuffle_buffer,
            "prefetch_batches": DEFAULT_PREFETCH,
            "train_rows": sum(sizes),
            "steps_per_epoch": len(sizes),
            "model": margs,
        },
        "machine": info,
        "data_stage_s": stage_s,
        **report,
        "raw": raw,
        "results_md_row": {
            "claim": claim,
            "baseline": f"{a['samples_per_s']:,.0f} samples/s (mock loader, {threads} thread(s))",
            "raylight": raylight,
            "ratio": ratio + (" (quick run)" if args.quick else ""),
            "goal": f"≥ {GOAL_RATIO}; first batch < {GOAL_TTFB_S:g} s",
            "machine": machine_line(info) + (f", {gpu}" if gpu else ""),
        },
    }
    save_result(result, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
