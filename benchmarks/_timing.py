"""Per-step wall-clock timing shared by every path of the training benchmarks.

One recorder, :class:`StepLog`, is used three ways so that every path is measured by the same
code: called directly from a hand-written loop, wrapped in the Lightning callback
:class:`StepTimer` for plain Lightning, and the same callback instantiated inside a Ray Train
worker through ``trainer.callbacks`` (the worker imports this module through ``PYTHONPATH``).

A step is the interval from just before the model sees a batch (the batch already fetched) to
just after the optimizer step. The time between steps is data loading plus loop bookkeeping.
Lightning paths also record events (fit start, validation, epoch start/end) so the time between
epochs and before the first step can be broken down.

:class:`EpochClock` (``tune_efficiency.py``) only stamps the wall time of each validated epoch
of each Tune trial.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

SYNC_EVERY = 8


class StepLog:
    """Records ``(epoch, start, end, batch_size)`` per training step, plus named events.

    Times are ``time.perf_counter()`` values; one ``time.time()`` anchor taken at the first
    step converts them to wall time, which is what start-up is measured in: the call that
    starts training may be in another process (the Ray driver) than the steps (a Ray worker).
    """

    def __init__(self, sync_cuda: bool = False) -> None:
        # On a GPU, kernels run asynchronously. Synchronizing every step would serialize the
        # host's per-step Python work with the GPU's and understate what overlap buys, so sync
        # every SYNC_EVERY steps: the measured span is then exact to within that many steps.
        self.sync_cuda = sync_cuda
        self.steps: list[tuple[int, float, float, int]] = []
        self.events: list[tuple[str, int, float]] = []
        self._start = 0.0
        self._size = 0
        self._wall0: float | None = None
        self._perf0 = 0.0
        self.event("constructed", -1)

    def start(self, batch_size: int) -> None:
        """Mark the start of a step on a batch of ``batch_size`` samples."""
        self._start = time.perf_counter()
        self._size = batch_size
        if self._wall0 is None:
            self._wall0 = time.time()
            self._perf0 = self._start

    def end(self, epoch: int) -> None:
        """Mark the end of the step started last (after the optimizer step)."""
        if self.sync_cuda and len(self.steps) % SYNC_EVERY == SYNC_EVERY - 1:
            torch.cuda.synchronize()
        self.steps.append((epoch, self._start, time.perf_counter(), self._size))

    def event(self, name: str, epoch: int) -> None:
        """Mark a named point in time (e.g. ``val_start``) during ``epoch``."""
        self.events.append((name, epoch, time.perf_counter()))

    def to_dict(self) -> dict[str, Any]:
        """Plain data: steps, events and the thread settings this process trained with."""
        return {
            "pid": os.getpid(),
            # When this process was created (wall time): in a Ray worker, the time the worker
            # group spent before its processes existed vs. the time they spent importing.
            "process_start_wall": process_start_wall(),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "wall0": self._wall0,
            "perf0": self._perf0,
            "steps": self.steps,
            "events": self.events,
        }


def process_start_wall() -> float | None:
    """Wall time this process was started (Linux ``/proc``; None elsewhere)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, clock ticks
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _batch_size(batch: Any) -> int:
    """Samples in a batch: dict batches (TabularMLP) or tuple/list batches."""
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return int(first.shape[0])


class StepTimer(pl.Callback):
    """Lightning callback around :class:`StepLog`; writes the log as JSON at the end of fit.

    Its ``on_train_epoch_end`` runs after the module's and the plain callbacks' and before any
    ``Checkpoint`` callback's (Lightning orders them so): raylight's checkpoint and report to Ray
    Train fall after it, in the ``epoch_end_to_start`` segment.

    Args:
        out: JSON file to write (rank 0 only; every rank trains the same steps under DDP).
    """

    def __init__(self, out: str) -> None:
        self.out = out
        # Not `self.log`: Lightning sets every callback's `log` to the module's `log` method.
        self.recorder = StepLog()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.sync_cuda = pl_module.device.type == "cuda"
        self.recorder.event("fit_start", trainer.current_epoch)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.event("train_start", trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.event("train_epoch_start", trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.recorder.start(_batch_size(batch))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.recorder.end(trainer.current_epoch)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.event("val_start", trainer.current_epoch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.event("val_end", trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.event("train_epoch_end", trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            _write_json_atomic(Path(self.out), self.recorder.to_dict())


class FabricStepTimer:
    """:class:`StepTimer` for raylight's Fabric loop (``trainer.loop=fabric``): the same
    :class:`StepLog` and events at the same points (its epoch-end hook also runs before the
    checkpoint and report)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.recorder = StepLog()

    def on_fit_start(self, fabric: Any, module: Any) -> None:
        self.recorder.sync_cuda = module.device.type == "cuda"
        self.recorder.event("fit_start", 0)

    def on_train_start(self, fabric: Any, module: Any) -> None:
        self.recorder.event("train_start", 0)

    def on_train_epoch_start(self, fabric: Any, module: Any, epoch: int) -> None:
        self.recorder.event("train_epoch_start", epoch)

    def on_train_batch_start(
        self, fabric: Any, module: Any, batch: Any, batch_idx: int, epoch: int, step: int
    ) -> None:
        self.recorder.start(_batch_size(batch))

    def on_train_batch_end(
        self,
        fabric: Any,
        module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        epoch: int,
        step: int,
    ) -> None:
        self.recorder.end(epoch)

    def on_validation_epoch_start(self, fabric: Any, module: Any, epoch: int) -> None:
        self.recorder.event("val_start", epoch)

    def on_validation_epoch_end(self, fabric: Any, module: Any, epoch: int) -> None:
        self.recorder.event("val_end", epoch)

    def on_train_epoch_end(self, fabric: Any, module: Any, epoch: int, metrics: Any) -> None:
        self.recorder.event("train_epoch_end", epoch)

    def on_train_end(self, fabric: Any, module: Any) -> None:
        if fabric.global_rank == 0:
            _write_json_atomic(Path(self.out), self.recorder.to_dict())


def timer_overrides(out: str, overrides: list[str]) -> list[str]:
    """Config overrides that add the step timer to a ``raylight train`` run without changing
    its loop: the loop ``overrides`` resolve to (``trainer.loop=auto`` picks the Trainer once
    any callback is set), pinned, and the timer written for that loop."""
    from raylight.config import load_train_config

    loop = load_train_config(overrides).resolved_loop()
    timer = "FabricStepTimer" if loop == "fabric" else "StepTimer"
    return [f"trainer.loop={loop}", f"trainer.callbacks=[{{_target_:_timing.{timer},out:'{out}'}}]"]


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: the driver never reads a half-written file.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _boundaries(
    by_epoch: dict[int, list[tuple[Any, ...]]], events: list[tuple[Any, ...]], epochs: list[int]
) -> dict[str, float | None]:
    """Median time between epochs, split at the events recorded in between.

    Segments, from the last step of epoch e-1 to the first step of epoch e: ``to_val``,
    ``val`` (validation), ``val_to_epoch_end`` (the module's and plain callbacks' epoch-end
    work), ``epoch_end_to_start`` (Checkpoint callbacks, which Lightning runs after the others —
    raylight's checkpoint and report — and loop bookkeeping), ``epoch_start_to_first_step`` (a new pass over
    the data starting: iterator set-up and the first batch). Paths without validation
    report ``to_val``/``val``/``val_to_epoch_end`` as None.
    """
    ev = {(n, e): t for n, e, t in events}
    seg: dict[str, list[float]] = {
        k: []
        for k in (
            "total",
            "to_val",
            "val",
            "val_to_epoch_end",
            "epoch_end_to_start",
            "epoch_start_to_first_step",
        )
    }
    for e in epochs[1:]:
        last_end = max(s[2] for s in by_epoch[e - 1])
        first_start = min(s[1] for s in by_epoch[e])
        seg["total"].append(first_start - last_end)
        vs, ve, ee, es = (
            ev.get(k)
            for k in (
                ("val_start", e - 1),
                ("val_end", e - 1),
                ("train_epoch_end", e - 1),
                ("train_epoch_start", e),
            )
        )
        if vs is not None and ve is not None:
            seg["to_val"].append(vs - last_end)
            seg["val"].append(ve - vs)
            if ee is not None:
                seg["val_to_epoch_end"].append(ee - ve)
        if ee is not None and es is not None:
            seg["epoch_end_to_start"].append(es - ee)
        if es is not None:
            seg["epoch_start_to_first_step"].append(first_start - es)
    return {k: _median(v) for k, v in seg.items()}


def summarize(
    log: dict[str, Any], call_wall: float, return_wall: float, warmup_epochs: int = 1
) -> dict[str, Any]:
    """Throughput and start-up of one run from its :meth:`StepLog.to_dict` record.

    Args:
        log: The step record.
        call_wall: ``time.time()`` when the caller started the path (before any setup).
        return_wall: ``time.time()`` when the path returned (after any teardown).
        warmup_epochs: Leading epochs left out of the steady state.

    Returns:
        ``train_samples_per_s``: samples in the steady epochs over the time inside those epochs
        (first step start to last step end, per epoch): training-step throughput including data
        loading between steps but not the work between epochs.
        ``p50_samples_per_s``: full batch size over the median step-start-to-next-step-start
        time; robust to a few steps slowed by other load on a shared machine.
        ``span_samples_per_s``: the steady samples over first start to last end across all
        steady epochs, so what happens between epochs (validation, checkpoints) is included.
        ``startup_s``: call to the first step start; ``startup_events_s``: call to each event;
        ``teardown_s``: last step end to return; medians of step time, gap between steps and
        the time between epochs (``epoch_boundary_s``, split into segments).
    """
    steps = [tuple(s) for s in log["steps"]]
    if not steps:
        raise ValueError("no training steps were recorded")
    to_wall = log["wall0"] - log["perf0"]
    epochs = sorted({int(s[0]) for s in steps})
    steady = [e for e in epochs if e >= warmup_epochs]
    if not steady:
        raise ValueError(f"need more than {warmup_epochs} epoch(s) to measure a steady state")
    by_epoch = {e: [s for s in steps if s[0] == e] for e in epochs}
    per_epoch = []
    for e in steady:
        ss = by_epoch[e]
        window = max(s[2] for s in ss) - min(s[1] for s in ss)
        per_epoch.append(
            {"epoch": e, "steps": len(ss), "samples": sum(s[3] for s in ss), "window_s": window}
        )
    samples = sum(p["samples"] for p in per_epoch)
    steady_steps = [s for e in steady for s in by_epoch[e]]
    span = max(s[2] for s in steady_steps) - min(s[1] for s in steady_steps)
    pairs = [(a, b) for e in steady for a, b in zip(by_epoch[e], by_epoch[e][1:], strict=False)]
    full = max(s[3] for s in steps)
    cycles = [b[1] - a[1] for a, b in pairs if a[3] == full]
    events = [tuple(ev) for ev in log.get("events", [])]
    startup_events: dict[str, float] = {}
    for name, _, t in events:
        startup_events.setdefault(name, t + to_wall - call_wall)
    startup_events["first_step"] = log["wall0"] - call_wall
    if log.get("process_start_wall") is not None:
        startup_events["process_start"] = log["process_start_wall"] - call_wall
    return {
        "torch_threads": log["torch_threads"],
        "omp_num_threads_env": log["omp_num_threads_env"],
        "train_samples_per_s": samples / sum(p["window_s"] for p in per_epoch),
        "p50_samples_per_s": full / statistics.median(cycles) if cycles else None,
        "span_samples_per_s": samples / span,
        "startup_s": log["wall0"] - call_wall,
        "startup_events_s": startup_events,
        "teardown_s": return_wall - (max(s[2] for s in steps) + to_wall),
        "step_ms_median": 1e3 * statistics.median(s[2] - s[1] for s in steady_steps),
        "gap_ms_median": 1e3 * statistics.median(b[1] - a[2] for a, b in pairs) if pairs else 0.0,
        "epoch_boundary_s": _boundaries(by_epoch, events, epochs),
        "steady_samples": samples,
        "steady_epochs": per_epoch,
        "total_steps": len(steps),
    }


class EpochClock(pl.Callback):
    """Lightning callback: one JSON line per validated epoch with its wall-clock time.

    Ray Tune's own per-result ``timestamp`` has whole-second resolution, too coarse for
    "wall time until the first trial reaches a target"; this records ``time.time()`` when an
    epoch's validation ends, just before raylight's report callback checkpoints and reports it
    in ``on_train_epoch_end``. Recording before the report matters: when ASHA stops a trial at
    that report, the trial's thread never returns from it.

    Args:
        out_dir: Directory for the records; one ``<trial id>.jsonl`` per Tune trial (the
            process id outside Tune). Lines: ``{"trial_id", "epoch", "t"}``, epoch 0-based.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        _stamp_epoch(self.out_dir, trainer.current_epoch)


class FabricEpochClock:
    """:class:`EpochClock` for raylight's Fabric loop: the same record at the same point (its
    ``on_validation_epoch_end`` runs before the epoch's checkpoint and report)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_validation_epoch_end(self, fabric: Any, module: Any, epoch: int) -> None:
        if fabric.global_rank == 0:
            _stamp_epoch(self.out_dir, epoch)


def _stamp_epoch(out_dir: str, epoch: int) -> None:
    """Append ``{"trial_id", "epoch", "t"}`` (now) to the trial's (or process's) record."""
    t = time.time()
    trial_id = None
    try:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
    except Exception:  # not inside a Tune trial: fall back to the process id
        trial_id = None
    path = Path(out_dir) / f"{trial_id or os.getpid()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"trial_id": trial_id, "epoch": epoch, "t": t}) + "\n")


def clock_overrides(out_dir: str, loop: str) -> list[str]:
    """Config overrides that add the epoch clock for ``loop`` (the one a run or sweep resolves
    to without it) and pin that loop: ``trainer.loop=auto`` picks the Trainer once any
    callback is set (as :func:`timer_overrides` does for the step timer)."""
    clock = "FabricEpochClock" if loop == "fabric" else "EpochClock"
    return [
        f"trainer.loop={loop}",
        f"trainer.callbacks=[{{_target_:_timing.{clock},out_dir:'{out_dir}'}}]",
    ]
