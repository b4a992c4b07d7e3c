"""Benchmark: what ``raylight train`` (1 worker) costs over a hand-written torch loop.

Three paths train the same TabularMLP (``conf/model/mlp.yaml`` via ``experiment=adult_mlp``) on
the same encoded Adult income train split, with the same batch size and AdamW settings:

(a) ``torch``: a plain loop over pre-built batch tensors;
(b) ``lightning``: ``pl.Trainer`` on one CPU over a ``DataLoader`` of a ``TensorDataset``;
(c) ``raylight``: :func:`raylight.train.run_training` with ``scaling.num_workers=1``, the full
    product path (data stage, Ray Train, Ray Data ingest, DDP strategy, checkpoints, bundle).

Every step is timed by the same code (``_timing.StepLog``; in (b) and (c) through the Lightning
callback ``_timing.StepTimer``, which (c) gets through ``trainer.callbacks`` like any user
callback). Steady-state throughput leaves out the first epoch; start-up (call → first step) is
reported separately. (a) and (b) run no validation, so the headline throughput of (c) counts only
time inside its training epochs; the ``span`` columns add what happens between epochs
(validation, checkpoint, report). Ray starts each worker with ``OMP_NUM_THREADS`` = its CPUs, so
(a) and (b) also run with the worker's torch thread count and ratios compare equal thread counts.

An Adult epoch is only ~34 steps (~0.2 s in (a)), so the default is 10 epochs: ~300 steady steps
per path keep the medians stable on a busy machine while (c)'s runs stay well under a minute.

Usage::

    .venv/bin/python benchmarks/train_overhead.py [--repeats 3] [--epochs 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The script's directory is on sys.path when run as a script; these are the sibling helpers.
from _results import (
    machine_info,
    machine_line,
    save_result,
)
from _timing import StepLog, StepTimer, summarize, timer_overrides

from raylight.config import TrainConfig, load_train_config

BENCH_DIR = Path(__file__).resolve().parent
NAME = "train_overhead"
CLAIM = "train_overhead: raylight train 1 worker vs hand-written torch loop (samples/s)"
GOAL = 0.95
BASE_OVERRIDES = [
    "scaling.num_workers=1",
    # No token file for a throwaway embedded cluster.
    "cluster.auth_mode=disabled",
]


# ----------------------------------------------------------------------------- helpers


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run a block with ``n`` intra-op torch threads (``None``: leave as is); restore after."""
    import torch

    prev = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(prev)


def quiet_lightning() -> None:
    """Lightning's hints ("GPU available", "few dataloader workers") are noise in the table."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    # Lightning 2.6 on torch 2.13 warns about a pytree API on every fit; not ours to fix.
    warnings.filterwarnings("ignore", message=r".*treespec.*")


def autocast(precision: str, device: str) -> Any:
    """The autocast context Lightning uses for ``trainer.precision`` (none for *-true)."""
    import torch

    if precision.startswith("bf16") and precision.endswith("mixed"):
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    if precision.startswith("16") and precision.endswith("mixed"):
        return torch.autocast(device_type=device, dtype=torch.float16)
    return torch.autocast(device_type=device, enabled=False)


# Dense bf16/fp16 tensor-core peak (no sparsity), FLOP/s, by GPU name.
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def gpu_peak(name: str | None) -> float | None:
    for key, peak in GPU_PEAK_BF16.items():
        if name and key in name:
            return peak
    return None


def train_flops_per_sample(model: Any, args: dict[str, Any]) -> float:
    """Model FLOPs of one training sample (forward + backward), the usual MFU count:
    6 x non-embedding parameters x tokens, plus attention's 12 x layers x L^2 x hidden
    (Chowdhery et al. 2022, appendix B). Tabular models: 6 x parameters."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "embeddings"):
        return 6.0 * sum(p.numel() for p in model.parameters())
    length = int(args["text_length"])
    emb = sum(p.numel() for p in encoder.embeddings.parameters())
    dense = sum(p.numel() for p in model.parameters()) - emb
    layers = len(encoder.encoder.layer)
    return 6.0 * dense * length + 12.0 * layers * length**2 * encoder.hidden_size


def materialize(ds: Any) -> tuple[Any, Any]:
    """The encoded Ray Dataset as (float32 features [N, D], int64 labels [N]) tensors, once:
    the arrays ``data.handoff`` gives the workers."""
    import torch

    from raylight.data.handoff import split_arrays

    x, y = split_arrays(ds, "classification")
    return torch.from_numpy(x), torch.from_numpy(y)


# ----------------------------------------------------------------------------- the three paths


def run_torch(
    cfg: TrainConfig, args: dict[str, Any], x: Any, y: Any, epochs: int, device: str = "cpu"
) -> dict[str, Any]:
    """(a) Hand-written loop over pre-built batches: the floor for this model and batch size."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F

    from raylight.bundle import build_model

    call = time.time()
    pl.seed_everything(cfg.seed, verbose=False)
    bs = cfg.data.batch_size
    dev = torch.device(device)
    # Data already resident on the device, slices of contiguous tensors: the floor.
    x, y = x.to(dev), y.to(dev)
    batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]
    model = build_model(cfg.model["_target_"], args).to(dev)
    model.train()
    # The model's own optimizer (raylight's fused AdamW where torch supports it), as in (b) and
    # (c); a warm-up scheduler, if any, is not stepped here: throughput does not depend on it.
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    log = StepLog(sync_cuda=dev.type == "cuda")
    for epoch in range(epochs):
        for xb, yb in batches:
            log.start(len(yb))
            opt.zero_grad()
            with autocast(cfg.trainer.precision, dev.type):
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            log.end(epoch)
    return summarize(log.to_dict(), call, time.time())


def run_lightning(
    cfg: TrainConfig,
    args: dict[str, Any],
    x: Any,
    y: Any,
    epochs: int,
    workdir: Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """(b) Plain Lightning on one CPU, no validation: what Lightning itself adds over (a)."""
    import lightning.pytorch as pl
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

    from raylight.bundle import build_model

    call = time.time()
    pl.seed_everything(cfg.seed, verbose=False)
    ds = TensorDataset(x, y)
    # A batch sampler with batch_size=None hands whole index lists to the dataset: one gather
    # per batch instead of collating 1024 single rows, which would measure collation instead.
    loader = DataLoader(
        ds,
        sampler=BatchSampler(SequentialSampler(ds), cfg.data.batch_size, drop_last=False),
        batch_size=None,
        collate_fn=lambda b: {"features": b[0], "label": b[1]},  # TabularMLP takes dict batches
    )
    model = build_model(cfg.model["_target_"], args)
    out = workdir / "lightning_steps.json"
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=cfg.trainer.precision,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[StepTimer(str(out))],
    )
    trainer.fit(model, train_dataloaders=loader)
    return summarize(json.loads(out.read_text()), call, time.time())


def run_raylight(
    epochs: int, rep: int, workdir: Path, overrides: list[str], tag: str = ""
) -> dict[str, Any]:
    """(c) The product path; the step timer goes in as a user callback through the config.

    ``tag`` names a variant's files and run (``--variant``)."""
    from raylight.train import run_training

    rep_tag = f"{tag}{rep}"
    out = workdir / f"raylight_steps_{rep_tag}.json"
    cfg = load_train_config(
        [
            *overrides,
            f"trainer.max_epochs={epochs}",
            # One directory per repeat: MLflow caches its SQLite engine per URI in-process, and
            # a database deleted under that engine reads as "readonly" on the next repeat.
            f"output_dir='{workdir / f'outputs-{rep_tag}'}'",
            f"run_name=bench-{NAME}-{rep_tag}",
            *timer_overrides(str(out), overrides),
        ]
    )
    call = time.time()
    res = run_training(cfg)
    done = time.time()
    summary = summarize(json.loads(out.read_text()), call, done)
    summary["run_training_timings_s"] = res.timings
    summary["data_stage_s"] = res.timings["data_s"]
    summary["test_accuracy"] = res.test_metrics.get("accuracy")
    shutil.rmtree(workdir / f"outputs-{rep_tag}", ignore_errors=True)
    return summary


# ----------------------------------------------------------------------------- reporting


RATE_KEYS = ("train_samples_per_s", "p50_samples_per_s", "span_samples_per_s")
SCALAR_KEYS = (
    *RATE_KEYS,
    "startup_s",
    "teardown_s",
    "step_ms_median",
    "gap_ms_median",
    "data_stage_s",
)
NESTED_KEYS = ("epoch_boundary_s", "startup_events_s")


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def build_report(raw: dict[str, list[dict[str, Any]]], worker_threads: int) -> dict[str, Any]:
    """Medians over repeats per path, and ratios to the torch loop at the same thread count."""
    medians: dict[str, dict[str, Any]] = {}
    for p, runs in raw.items():
        m: dict[str, Any] = {k: _median([r.get(k) for r in runs]) for k in SCALAR_KEYS}
        for k in NESTED_KEYS:
            names = dict.fromkeys(n for r in runs for n in r[k])
            m[k] = {n: _median([r[k].get(n) for r in runs]) for n in names}
        m["torch_threads"] = runs[0]["torch_threads"]
        medians[p] = m

    def ratio(p: str, base: str) -> dict[str, Any]:
        return {"vs": base, **{k: medians[p][k] / medians[base][k] for k in RATE_KEYS}}

    ratios = {
        p: ratio(p, f"torch@{m['torch_threads']}")
        for p, m in medians.items()
        if not p.startswith("torch@") and f"torch@{m['torch_threads']}" in medians
    }
    # Also against the baseline at its default threads: what a user would naively compare to.
    default = next(p for p in raw if p.startswith("torch@"))
    ratios["raylight_vs_default_torch"] = ratio("raylight", default)
    ratios["raylight"]["per_repeat_train_samples_per_s"] = [
        c["train_samples_per_s"] / a["train_samples_per_s"]
        for c, a in zip(raw["raylight"], raw[f"torch@{worker_threads}"], strict=True)
    ]
    return {"medians": medians, "ratios": ratios}


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_tables(report: dict[str, Any], info: dict[str, Any], args: argparse.Namespace) -> None:
    """The comparison table, then where (c)'s extra time goes."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))  # piped output defaults to 80 columns
    labels = {"torch": "(a) torch loop", "lightning": "(b) Lightning", "raylight": "(c) raylight"}
    labels.update({f"raylight:{v}": f"(c) raylight [{v}]" for v, _ in args.variants})
    t = Table(
        title=f"train_overhead: median of {args.repeats} repeat(s), {args.epochs} epochs, "
        "steady state = epochs 2+",
        caption="ratio: ÷ (a) at the same torch thread count.  samples/s: time inside training "
        "epochs;  p50: batch ÷ median step-to-step time;  span: incl. work between epochs.",
    )
    cols = ["path", "threads", "samples/s", "ratio", "p50 samples/s", "ratio"]
    cols += ["span samples/s", "ratio", "startup s", "step ms", "gap ms", "epoch gap s"]
    for col in cols:
        t.add_column(col, justify="left" if col == "path" else "right")
    for p, m in report["medians"].items():
        r = report["ratios"].get(p, dict.fromkeys(RATE_KEYS, 1.0))
        row = [labels[p.split("@")[0]], str(m["torch_threads"])]
        for k in RATE_KEYS:
            row += [_fmt(m[k], ",.0f"), _fmt(r[k], ".2f")]
        row += [f"{m['startup_s']:.2f}", f"{m['step_ms_median']:.2f}", f"{m['gap_ms_median']:.2f}"]
        row.append(_fmt(m["epoch_boundary_s"].get("total"), ".3f"))
        t.add_row(*row)
    console.print(t)

    c = report["medians"]["raylight"]
    b = c["epoch_boundary_s"]
    ev = c["startup_events_s"]
    console.print(
        f"(c) start-up, s after run_training() was called: data stage done {_fmt(c['data_stage_s'], '.2f')}, "
        + ", ".join(
            f"{n} {_fmt(ev.get(n), '.2f')}"
            for n in ("process_start", "constructed", "fit_start", "train_start", "first_step")
        )
        + "  (process_start: the worker process exists; constructed: in the worker, model "
        "and data iterators built)"
    )
    console.print(
        "(c) between epochs, seconds: "
        + ", ".join(
            f"{n} {_fmt(b.get(n), '.3f')}"
            for n in (
                "to_val",
                "val",
                "val_to_epoch_end",
                "epoch_end_to_start",
                "epoch_start_to_first_step",
            )
        )
        + "  (epoch_end_to_start = checkpoint + report to Ray Train)"
    )
    console.print(f"(c) after the last step until run_training() returned: {c['teardown_s']:.2f} s")
    vd = report["ratios"]["raylight_vs_default_torch"]
    console.print(
        f"raylight vs {vd['vs']} (driver's default threads): samples/s {vd['train_samples_per_s']:.2f}, "
        f"p50 {vd['p50_samples_per_s']:.2f}.  Machine: {machine_line(info)}, "
        f"load avg {[round(x, 1) for x in info['loadavg_1_5_15']]} (before the run)"
    )


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--repeats", type=int, default=None, help="runs per path; median reported (default 3)"
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per run, the first is warm-up (default 10)"
    )
    p.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat: a smoke run")
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cuda: one GPU for every path"
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override for every path, e.g. data.batch_size=4096 (repeatable)",
    )
    p.add_argument(
        "--experiment",
        default="adult_mlp",
        help="experiment config to train (adult_mlp; rt_minilm: the MiniLM fine-tune, with MFU)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=OVERRIDE[;OVERRIDE...]",
        help="another (c) path with extra overrides, run in the same repeats right after (c): "
        "an A/B within one run, e.g. trainer_loop=trainer.loop=trainer (repeatable)",
    )
    p.add_argument("--out", default=None, help="results file stem (default train_overhead[_cuda])")
    args = p.parse_args(argv)
    args.variants = []
    for v in args.variant:
        label, sep, rest = v.partition("=")
        if not sep or not rest:
            p.error(f"--variant {v!r}: expected LABEL=OVERRIDE[;OVERRIDE...]")
        args.variants.append((label, [o for o in rest.split(";") if o]))
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.epochs = args.epochs or (2 if args.quick else 10)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is warm-up)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from raylight import cluster

    overrides = [f"experiment={args.experiment}", *BASE_OVERRIDES, *args.override]
    if args.device == "cuda":
        overrides.append("scaling.use_gpu=true")
    name = args.out or (NAME if args.device == "cpu" else f"{NAME}_cuda")
    base = load_train_config([*overrides, f"trainer.max_epochs={args.epochs}"])
    if base.data.task != "classification":
        raise SystemExit(
            "this benchmark's torch loop uses cross-entropy: needs a classification task"
        )
    # Ray workers must import _timing to instantiate the callback; keep whatever the driver had.
    pythonpath = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    started = cluster.init(base.cluster, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    from raylight.data.pipeline import prepare

    quiet_lightning()
    info = machine_info()
    raw: dict[str, list[dict[str, Any]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix=f"raylight-bench-{NAME}-"))
    try:
        data = prepare(base.data, base.seed, quarantine_dir=str(workdir / "quarantine"))
        x, y = materialize(data.train)
        pre = data.preprocessor
        from raylight.train import model_args_for

        margs = model_args_for(base, pre)
        print(f"train split: {len(y):,} rows, {x.shape[1]} features, batch {base.data.batch_size}")
        default_threads = torch.get_num_threads()
        worker_threads = default_threads
        for rep in range(args.repeats):
            # (c) first: its worker's thread count decides the thread-matched baselines.
            print(f"repeat {rep + 1}/{args.repeats}: raylight …", flush=True)
            c = run_raylight(args.epochs, rep, workdir, overrides)
            raw.setdefault("raylight", []).append(c)
            worker_threads = c["torch_threads"]
            for label, extra in args.variants:
                print(f"repeat {rep + 1}/{args.repeats}: raylight [{label}] …", flush=True)
                raw.setdefault(f"raylight:{label}", []).append(
                    run_raylight(args.epochs, rep, workdir, [*overrides, *extra], tag=label)
                )
            # Interleaved per repeat, so drift in a shared machine's load hits every path alike.
            for threads in dict.fromkeys([default_threads, worker_threads]):
                with torch_threads(threads):
                    print(
                        f"repeat {rep + 1}/{args.repeats}: torch, lightning @ {threads} thread(s) …",
                        flush=True,
                    )
                    raw.setdefault(f"torch@{threads}", []).append(
                        run_torch(base, margs, x, y, args.epochs, args.device)
                    )
                    raw.setdefault(f"lightning@{threads}", []).append(
                        run_lightning(base, margs, x, y, args.epochs, workdir, args.device)
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if started:
            import ray

            ray.shutdown()

    # Rows in reading order: baselines at default threads, thread-matched ones, then raylight.
    threads = dict.fromkeys([default_threads, worker_threads])
    order = [f"{p}@{t}" for t in threads for p in ("torch", "lightning")] + ["raylight"]
    order += [f"raylight:{v}" for v, _ in args.variants]
    raw = {p: raw[p] for p in order}
    report = build_report(raw, worker_threads)
    print_tables(report, info, args)

    ratio = report["ratios"]["raylight"]["train_samples_per_s"]
    span_ratio = report["ratios"]["raylight"]["span_samples_per_s"]
    claim = CLAIM if args.device == "cpu" else CLAIM.replace("(samples/s)", "on 1 GPU (samples/s)")
    if args.experiment != "adult_mlp":
        claim = claim.replace("raylight train", f"raylight train experiment={args.experiment}")
    # Model FLOPs utilisation (GPU): samples/s x training FLOPs per sample / the card's peak.
    from raylight.bundle import build_model

    flops = train_flops_per_sample(build_model(base.model["_target_"], margs), margs)
    gpu_name = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    peak = gpu_peak(gpu_name)
    mfu = {
        p: (m["train_samples_per_s"] * flops / peak if peak and m["train_samples_per_s"] else None)
        for p, m in report["medians"].items()
    }
    if peak:
        shown = ", ".join(f"{p} {v:.1%}" for p, v in mfu.items() if v)
        print(f"MFU (bf16 peak {peak / 1e12:.0f} TFLOP/s, {flops / 1e9:.2f} GFLOP/sample): {shown}")
    if args.override:
        claim += f" [{' '.join(args.override)}]"
    if args.variants:
        claim += " vs " + ", ".join(f"[{v}: {' '.join(o)}]" for v, o in args.variants)
    a = report["medians"][f"torch@{worker_threads}"]
    c = report["medians"]["raylight"]
    result = {
        "benchmark": NAME,
        "claim": claim,
        "command": " ".join(
            [".venv/bin/python", "benchmarks/train_overhead.py", *(argv or sys.argv[1:])]
        ),
        "settings": {
            "repeats": args.repeats,
            "epochs": args.epochs,
            "warmup_epochs": 1,
            "quick": args.quick,
            "overrides": overrides,
            "device": args.device,
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "batch_size": base.data.batch_size,
            "train_rows": len(y),
            "num_features": int(x.shape[1]),
            "model": margs,
            "experiment": args.experiment,
            "variants": {v: o for v, o in args.variants},
        },
        "machine": info,
        "threads": {"driver_default": default_threads, "raylight_worker": worker_threads},
        "raw": raw,
        "train_flops_per_sample": flops,
        "gpu_peak_flops": peak,
        "mfu": mfu,
        **report,
        "results_md_row": {
            "claim": claim,
            "baseline": f"{a['train_samples_per_s']:,.0f} samples/s (torch loop, {worker_threads} thread(s))",
            "raylight": f"{c['train_samples_per_s']:,.0f} samples/s (startup {c['startup_s']:.1f} s)"
            + "".join(
                f"; [{v}] {report['medians'][f'raylight:{v}']['train_samples_per_s']:,.0f} "
                f"({report['ratios'][f'raylight:{v}']['train_samples_per_s']:.2f})"
                for v, _ in args.variants
            )
            + (
                f", MFU {mfu['raylight']:.1%} (loop {mfu[f'torch@{worker_threads}']:.1%})"
                if mfu.get("raylight") and mfu.get(f"torch@{worker_threads}")
                else ""
            ),
            # Span: the work between epochs too (validation, checkpoint, report).
            "ratio": f"{ratio:.2f} (span {span_ratio:.2f})"
            + (" (quick run)" if args.quick else ""),
            "goal": f"≥ {GOAL}",
            "machine": machine_line(info)
            + (f", {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ""),
        },
    }
    save_result(result, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
