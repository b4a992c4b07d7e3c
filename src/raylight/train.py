"""Training: Ray Data splits → Ray Train ``TorchTrainer`` running Lightning on each worker →
model bundle + test metrics.

Reads top to bottom like a recipe: :func:`run_training` sets up the run directory, prepares the
data, fits, then writes the bundle and scores the test split. The worker side is
:func:`train_loop_per_worker`, which receives only the plain config dict.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylight import bundle as bundle_io
from raylight.config import TrainConfig

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from raylight.data.pipeline import PreparedData

CKPT_NAME = "checkpoint.ckpt"
# train_loop_config key of the splits handed over through the object store.
RESIDENT_KEY = "_resident"
WEIGHTS_NAME = "model.safetensors"


# ============================================================================ worker side


class TrainSession:
    """Where a training loop reports to: Ray Train (here) or Ray Tune (``tune.TuneSession``).

    The Lightning loop below is the same in both; only reporting, restoring and the data
    iterators differ, so train and tune share one implementation.
    """

    def __init__(self, resident: dict[str, Any] | None = None) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        # The splits handed over through the object store (raylight.data.handoff), if any.
        self.resident = resident

    def report(
        self, metrics: dict[str, Any], checkpoint_dir: str | None, dir_name: str | None
    ) -> None:
        import ray.train
        from ray.train import Checkpoint

        if dir_name is None:  # an epoch without a checkpoint on any rank
            ray.train.report(metrics)
            return
        ckpt = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=dir_name)

    def get_checkpoint(self) -> Any:
        import ray.train

        return ray.train.get_checkpoint()

    def loaders(self, config: dict[str, Any]) -> tuple[Any, Any]:
        if self.resident:
            return resident_loaders(self.resident, config, self.rank, self.world_size)
        import ray.train

        return (
            _torch_batches(ray.train.get_dataset_shard("train"), config, shuffle=True),
            _torch_batches(ray.train.get_dataset_shard("val"), config),
        )


def resident_loaders(
    resident: dict[str, Any], config: dict[str, Any], rank: int, world_size: int
) -> tuple[Any, Any]:
    """Train and val batches from splits handed over through the object store: this rank's
    share, in memory from the first epoch (see :mod:`raylight.data.handoff`)."""
    from raylight.data.handoff import SPLITS, take_shard

    use_gpu = bool(config.get("scaling", {}).get("use_gpu"))
    loaders = []
    for name in SPLITS:
        shuffle = name == "train"
        tensors = take_shard(resident[name], rank, world_size, use_gpu)
        loaders.append(_TorchBatches(None, config, shuffle, resident=tensors))
    return loaders[0], loaders[1]


class _TorchBatches:
    """``{"features", "label"}`` tensor batches, a fresh pass per epoch.

    Training passes shuffle through a local buffer of ``data.shuffle_buffer`` rows, seeded by
    the global seed and the epoch: without it a file sorted by label (MNIST's, the penguins')
    feeds single-class batches and the model does not learn; with it a run stays reproducible.

    Resident data (``data.resident_max_mb``, with ``data.cache=true``): the first pass streams
    from Ray Data as above and keeps its tensors; once a whole pass fits the limit, later epochs
    index those tensors in memory (on the worker's GPU when it has one) with a seeded full
    permutation per epoch. Ray Data's per-batch work (slicing blocks, the shuffle buffer,
    collation) then leaves the step loop: on 2 CPUs it cost as much as the step itself.
    Splits handed over through the object store (``data.handoff``) come in as ``resident``
    and batch from memory from the first epoch (``ds`` is then None).
    """

    def __init__(
        self,
        ds: Any,
        config: dict[str, Any],
        shuffle: bool,
        resident: tuple[Any, Any] | None = None,
    ) -> None:
        self.ds = ds
        self.config = config
        self.buffer = int(config["data"].get("shuffle_buffer", 0)) if shuffle else 0
        self.shuffle = shuffle
        self.epoch = 0
        data = config["data"]
        self.resident_bytes = (
            int(data.get("resident_max_mb", 0)) * 2**20 if data.get("cache", True) else 0
        )
        # Given (a split handed over in memory), or kept after the first Ray Data pass.
        self.resident: tuple[Any, Any] | None = resident

    def __iter__(self) -> Any:
        epoch = self.epoch
        self.epoch += 1
        if self.resident is not None:
            return self._from_memory(epoch)
        batches = self._from_ray_data(epoch)
        return self._keeping(batches) if self.resident_bytes else batches

    def _from_ray_data(self, epoch: int) -> Any:
        import torch

        from raylight.data.handoff import label_dtype

        labels = getattr(torch, label_dtype(self.config["data"]["task"]))
        extra: dict[str, Any] = {}
        if self.buffer:
            extra = {
                "local_shuffle_buffer_size": self.buffer,
                "local_shuffle_seed": int(self.config.get("seed", 0)) * 1009 + epoch,
            }
        return iter(
            self.ds.iter_torch_batches(
                batch_size=self.config["data"]["batch_size"],
                dtypes={"features": torch.float32, "label": labels},
                prefetch_batches=2,
                **extra,
            )
        )

    def _keeping(self, batches: Any) -> Any:
        """Yield a Ray Data pass, keeping its tensors if the whole pass fits the limit."""
        import torch

        kept: list[tuple[Any, Any]] | None = []
        size = 0
        for batch in batches:
            if kept is not None:
                size += batch["features"].nbytes + batch["label"].nbytes
                if size > self.resident_bytes:
                    kept = None  # too big: stream every epoch
                else:
                    kept.append((batch["features"], batch["label"]))
            yield batch
        # Only a complete pass (the generator ran to its end) becomes resident.
        if kept:
            x = torch.cat([f for f, _ in kept])
            y = torch.cat([lab for _, lab in kept])
            from raylight.data.handoff import to_worker_device

            use_gpu = bool(self.config.get("scaling", {}).get("use_gpu"))
            self.resident = to_worker_device(x, y, use_gpu)

    def _from_memory(self, epoch: int) -> Any:
        import torch

        assert self.resident is not None
        x, y = self.resident
        n, bs = len(x), int(self.config["data"]["batch_size"])
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.config.get("seed", 0)) * 1009 + epoch)
            order = torch.randperm(n, generator=g).to(x.device)
            # One gather per epoch, then every batch is a contiguous view (no per-step copy);
            # index_select, not x[order]: 1.4 ms against 4.3 ms for Adult's split on one thread.
            x, y = torch.index_select(x, 0, order), torch.index_select(y, 0, order)
        for i in range(0, n, bs):
            yield {"features": x[i : i + bs], "label": y[i : i + bs]}


def _torch_batches(ds: Any, config: dict[str, Any], shuffle: bool = False) -> Any:
    """Re-iterable tensor batches of a dataset shard (see :class:`_TorchBatches`)."""
    return _TorchBatches(ds, config, shuffle)


def _report_callback(
    session: Any, run_name: str, plain_model: Any, checkpoint_every: int = 1
) -> Any:
    """Built lazily: Lightning must not be imported at raylight import time.

    Args:
        session: Where reports go (:class:`TrainSession` or ``tune.TuneSession``).
        run_name: Names the local temp dirs.
        plain_model: Builds a fresh, unwrapped model (for a partial bundle under FSDP).
        checkpoint_every: Attach a checkpoint to every Nth epoch's report and the last one
            (``trainer.checkpoint_every_n_epochs``); the others report metrics only.
    """
    from lightning.pytorch.callbacks import Checkpoint

    class ReportCheckpointCallback(Checkpoint):
        """Report epoch metrics; rank 0 attaches the checkpoint.

        A Lightning ``Checkpoint`` (not a plain ``Callback``): Lightning runs those after the
        module's own ``on_train_epoch_end`` and after the other callbacks, so the report sees
        metrics the module logs at the epoch's end (raylight's models log their epoch means
        there) and a stop an ``EarlyStopping`` decided.

        Unlike Ray's stock callback, only rank 0 writes and uploads a checkpoint (all ranks
        hold the same DDP weights; FSDP gathers them to rank 0), the weights also go out as
        safetensors for the bundle, and the local temp dir is unique per run and rank
        (Lightning ``rmtree``s reused ones).
        """

        def __init__(self) -> None:
            self.tmp_root = tempfile.mkdtemp(prefix=f"raylight-{run_name}-rank{session.rank}-")
            self.model_params = 0.0

        def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            # Counted before the strategy wraps the model: FSDP leaves each rank a shard only.
            self.model_params = float(sum(p.numel() for p in pl_module.parameters()))

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            metrics["epoch"] = trainer.current_epoch
            metrics["step"] = trainer.global_step
            # Model size: a cheap second objective for multi-objective sweeps.
            metrics["model_params"] = self.model_params
            epoch = trainer.current_epoch
            report_epoch(
                session, self.tmp_root, metrics, epoch,
                last=trainer.should_stop or epoch + 1 >= (trainer.max_epochs or 0),
                every=checkpoint_every,
                # Collectives under DDP/FSDP: every rank calls them, rank 0 writes.
                save_checkpoint=lambda path: trainer.save_checkpoint(path, weights_only=False),
                rank0_weights=lambda: _rank0_bundle_state(trainer, pl_module, plain_model),
            )  # fmt: skip

        def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            shutil.rmtree(self.tmp_root, ignore_errors=True)

    return ReportCheckpointCallback()


def report_epoch(
    session: Any,
    tmp_root: str,
    metrics: dict[str, Any],
    epoch: int,
    last: bool,
    every: int,
    save_checkpoint: Any,
    rank0_weights: Any,
) -> None:
    """Report one epoch's metrics; every ``every``-th epoch and the last also a checkpoint.

    Shared by the Trainer's callback and the Fabric loop, so Ray Train and Tune get the same
    reports and checkpoint directories from either: the loop's checkpoint file
    (:data:`CKPT_NAME`), the bundle's weights as safetensors and ``metrics.json``, from rank 0.

    Args:
        session: Where reports go (:class:`TrainSession` or ``tune.TuneSession``).
        tmp_root: This run and rank's local temp directory.
        metrics: The epoch's metrics (plain floats and ints).
        epoch: The epoch just finished (0-based).
        last: Whether it is the run's last epoch (always checkpointed).
        every: ``trainer.checkpoint_every_n_epochs``.
        save_checkpoint: Writes the loop's checkpoint to a path; called on every rank (a
            collective under DDP/FSDP), rank 0 writes.
        rank0_weights: The bundle's tensors on rank 0, None elsewhere; called on every rank.
    """
    from safetensors.torch import save_file

    if (epoch + 1) % every and not last:
        session.report(metrics, None, None)
        return
    tmp = os.path.join(tmp_root, f"epoch_{epoch}")
    os.makedirs(tmp, exist_ok=True)
    save_checkpoint(os.path.join(tmp, CKPT_NAME))
    weights = rank0_weights()
    ckpt_dir = None
    if session.rank == 0:
        assert weights is not None
        save_file(weights, os.path.join(tmp, WEIGHTS_NAME))
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump(metrics, f)
        ckpt_dir = tmp
    session.report(metrics, ckpt_dir, f"checkpoint_epoch={epoch:04d}")
    shutil.rmtree(tmp, ignore_errors=True)


def bundle_state(module: Any) -> dict[str, Any]:
    """The tensors that go into the bundle: ``module.bundle_state_dict()`` where the model
    defines it (e.g. LoRA: only the adapters and the head, the base is referenced), else the
    whole ``state_dict()``; detached, on the CPU, contiguous (what safetensors needs)."""
    fn = getattr(module, "bundle_state_dict", None)
    state = fn() if callable(fn) else module.state_dict()
    return _plain_tensors(state)


def _plain_tensors(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _is_sharded(strategy: Any) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)


def _rank0_bundle_state(
    trainer: pl.Trainer, pl_module: pl.LightningModule, plain_model: Any
) -> dict[str, Any] | None:
    """The bundle's tensors on rank 0 (None on the other ranks), whatever the strategy.

    Under FSDP each rank holds a shard, so ``pl_module.state_dict()`` is not the model: every
    rank takes part in gathering the full state dict (a collective), which arrives on rank 0
    only, on the CPU, keyed like the unwrapped model. A model with ``bundle_state_dict()`` picks
    its part from a plain copy holding those weights (strictly loaded: the keys must match).
    """
    if not _is_sharded(trainer.strategy):
        return bundle_state(pl_module) if trainer.global_rank == 0 else None
    full = trainer.strategy.lightning_module_state_dict()
    if trainer.global_rank != 0:
        return None
    if not callable(getattr(pl_module, "bundle_state_dict", None)):
        return _plain_tensors(full)
    model = plain_model()
    model.load_state_dict(full, strict=True)
    return bundle_state(model)


def _instantiate(spec: dict[str, Any]) -> Any:
    from hydra.utils import instantiate

    return instantiate(spec, _convert_="all")


def _parallel_strategy(t: dict[str, Any], world_size: int) -> str | None:
    """Which Ray strategy wraps the model: ``"ddp"``, ``"fsdp"``, or None (one plain process).

    ``auto`` is DDP with several workers; one worker needs no wrapper (its per-step hooks and
    gloo setup are pure overhead). An in-process sweep trial has no process group to shard
    over or reduce in, so it runs plain whatever the config asks (with a warning).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if t["strategy"] in ("ddp", "fsdp"):
            import warnings

            warnings.warn(
                f"trainer.strategy={t['strategy']} ignored: this one-worker process has no "
                "process group (an in-process sweep trial); it trains as a plain process",
                stacklevel=2,
            )
        return None
    if t["strategy"] == "auto":
        return "ddp" if world_size > 1 else None
    return str(t["strategy"])


def _lightning_trainer(config: dict[str, Any], callbacks: list[Any], world_size: int) -> pl.Trainer:
    import lightning.pytorch as pl
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    t = config["trainer"]
    loggers: list[Any] = []
    if "csv" in config["tracking"]["backends"]:
        from lightning.pytorch.loggers import CSVLogger

        loggers.append(CSVLogger(config["_run"]["logs_dir"], name="", version=""))
    parallel = _parallel_strategy(t, world_size)
    strategy: Any = "auto"
    if parallel == "ddp":
        strategy = RayDDPStrategy()
    elif parallel == "fsdp":
        from raylight.fsdp import fsdp_strategy

        strategy = fsdp_strategy(t["fsdp"])
    trainer = pl.Trainer(
        max_epochs=t["max_epochs"],
        accelerator="auto",
        devices="auto",
        strategy=strategy,
        plugins=[RayLightningEnvironment()] if parallel else None,
        precision=t["precision"],
        gradient_clip_val=t["gradient_clip_val"],
        gradient_clip_algorithm=t["gradient_clip_algorithm"],
        accumulate_grad_batches=t["accumulate_grad_batches"],
        limit_train_batches=t["limit_train_batches"],
        limit_val_batches=t["limit_val_batches"],
        deterministic=t["deterministic"],
        callbacks=callbacks,
        logger=loggers or False,
        # Ray Train owns checkpoints: True only because Lightning refuses a Checkpoint callback
        # (the report callback is one) otherwise; with one present it adds no ModelCheckpoint.
        enable_checkpointing=True,
        enable_progress_bar=False,  # progress is shown on the driver
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        profiler=_profiler(t.get("profiler"), config["_run"]["logs_dir"]),
    )
    if parallel:
        _skip_sigterm_broadcast(trainer)
    return prepare_trainer(trainer) if parallel else trainer


def _skip_sigterm_broadcast(trainer: pl.Trainer) -> None:
    """Drop Lightning's per-step SIGTERM broadcast where it can only ever send "no".

    Lightning (2.5.2+) broadcasts a "received SIGTERM" flag from rank 0 before every training
    step of a multi-process run: one extra collective per step, and a host-device sync on GPUs
    (Lightning issue #21487; a `broadcast_sigterm_every_n_steps` option is proposed upstream).
    Lightning sets its SIGTERM handler only from the main thread, and Ray Train runs the training
    function in another thread, so here the flag is never set; a worker that dies is handled by
    Ray Train (the group restarts from the last checkpoint). On 2 CPUs the broadcast cost
    ~3 ms per DDP step (benchmarks/train_scaling.py).
    """
    import threading

    loop = trainer.fit_loop.epoch_loop
    if threading.current_thread() is threading.main_thread():
        return  # Lightning's handler is live in the main thread: keep its broadcast
    if hasattr(loop, "_broadcast_sigterm_tensor"):
        loop._broadcast_sigterm_tensor = lambda: None  # type: ignore[method-assign]


def _profiler(kind: str | None, logs_dir: str) -> Any:
    """Lightning's profiler of that kind, writing ``logs_dir/profile-<rank>.txt``."""
    if not kind:
        return None
    from lightning.pytorch import profilers

    cls = {
        "simple": profilers.SimpleProfiler,
        "advanced": profilers.AdvancedProfiler,
        "pytorch": profilers.PyTorchProfiler,
    }[kind]
    return cls(dirpath=logs_dir, filename="profile")


def _maybe_compile(model: pl.LightningModule, t: dict[str, Any]) -> pl.LightningModule:
    """``torch.compile`` the model's forward in place when ``trainer.compile`` is set.

    ``nn.Module.compile`` compiles the module's call without a wrapper, so its ``state_dict``
    keys (checkpoints, the bundle) carry no ``_orig_mod.`` prefix and load into an uncompiled
    model for serving. Not ``torch.compile(model)``: Lightning then compiles ``training_step``
    too, and dynamo (torch 2.13) fails inside ``self.log`` with an internal error.
    """
    if t["compile"]:
        model.compile(mode=t["compile_mode"])
    return model


def fit_lightning(config: dict[str, Any], session: Any) -> None:
    """The training loop proper: seed, build the model, fit, report per epoch.

    The module runs in Lightning's Trainer or in raylight's Fabric loop
    (``trainer.loop``, :func:`raylight.config.resolve_loop`); both report through
    :func:`report_epoch`.

    Args:
        config: The plain resolved config plus ``_run`` (model target/args, run name, logs).
        session: A :class:`TrainSession` or ``tune.TuneSession``.
    """
    import lightning.pytorch as pl

    from raylight.config import resolve_loop

    pl.seed_everything(config["seed"], workers=True, verbose=False)
    run = config["_run"]

    def plain_model() -> pl.LightningModule:
        return bundle_io.build_model(run["model_target"], run["model_args"])

    model = _maybe_compile(plain_model(), config["trainer"])
    # A checkpoint from this run (worker-failure retry, `resume=` of the same run, a restored
    # Tune trial) wins; otherwise an explicit checkpoint file from another run.
    checkpoint = session.get_checkpoint()
    if resolve_loop(config["trainer"], run["model_target"]) == "fabric":
        from raylight.fabric_loop import fit_fabric

        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                fit_fabric(config, session, model, os.path.join(d, CKPT_NAME))
        else:
            fit_fabric(config, session, model, run.get("init_checkpoint"))
        return
    train_loader, val_loader = session.loaders(config)
    every = int(config["trainer"].get("checkpoint_every_n_epochs", 1))
    callbacks = [_report_callback(session, run["name"], plain_model, every)]
    callbacks += [_instantiate(cb) for cb in config["trainer"]["callbacks"]]
    trainer = _lightning_trainer(config, callbacks, world_size=session.world_size)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            path = _trainer_checkpoint(os.path.join(d, CKPT_NAME))
            trainer.fit(model, train_loader, val_loader, ckpt_path=path, weights_only=True)
    elif run.get("init_checkpoint"):
        path = _trainer_checkpoint(run["init_checkpoint"])
        trainer.fit(model, train_loader, val_loader, ckpt_path=path, weights_only=True)
    else:
        trainer.fit(model, train_loader, val_loader)


def _trainer_checkpoint(path: str) -> str:
    """``path``, unless the Fabric loop wrote it: the Trainer would restore its weights but
    restart the epoch count (it keeps its progress in loop state the Fabric loop has not)."""
    from raylight.fabric_loop import written_by_fabric

    if written_by_fabric(path):
        raise ValueError(
            f"{path} was written by trainer.loop=fabric; resume it with trainer.loop=fabric "
            "(or auto without callbacks, a profiler or fsdp)"
        )
    return path


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker. ``config`` is the plain resolved config, plus
    ``_resident`` when the splits came through the object store (:mod:`raylight.data.handoff`)."""
    config = dict(config)
    resident = config.pop(RESIDENT_KEY, None)
    fit_lightning(config, TrainSession(resident))


# ============================================================================ driver side


@dataclass
class TrainResult:
    run_name: str
    run_dir: str
    bundle_path: str
    checkpoint_path: str | None
    metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    data_summary: dict[str, Any]
    epochs: int
    timings: dict[str, float]
    tracking: dict[str, Any] = field(default_factory=dict)
    registered: dict[str, Any] | None = None


def _run_paths(cfg: TrainConfig) -> tuple[str, str]:
    """(run_name, run_dir). The run dir holds config, data summary, logs, Ray storage, bundle."""
    name = (
        cfg.run_name
        or f"{cfg.data.name}-{cfg.model.get('name') or cfg.model['_target_'].rsplit('.', 1)[-1].lower()}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    root = (
        cfg.output_dir
        if "://" in cfg.output_dir
        else str(Path(cfg.output_dir).expanduser().resolve())
    )
    return name, f"{root.rstrip('/')}/runs/{name}"


def resume_target(resume: str) -> tuple[str | None, str | None]:
    """Classify ``resume=``: (run_dir, None) for a run directory, (None, ckpt) for a checkpoint."""
    from raylight.data.sources import filesystem_and_path

    fs, path = filesystem_and_path(resume)
    if fs.get_file_info(path.rstrip("/") + "/" + CKPT_NAME).type.name == "File":
        return None, path.rstrip("/") + "/" + CKPT_NAME
    return resume.rstrip("/"), None


def git_info() -> dict[str, Any]:
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"git_commit": None, "git_dirty": None}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("raylight", "ray", "torch", "lightning"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


class EpochLog:
    """``logs/epochs.csv``: one row per reported epoch, written by the driver.

    The workers' own CSV log (Lightning's ``logs/metrics.csv``) belongs to one worker-group
    attempt: a group restarted after a node or worker loss rewrites it, and rows not yet
    flushed die with the worker. Reports reach the driver, which is never restarted, so this
    file holds every epoch a checkpoint was reported for, once (a re-reported epoch replaces
    its row), also across ``resume=`` of the same run directory.
    """

    def __init__(self, uri: str) -> None:
        import io

        import pandas as pd

        from raylight.data.sources import filesystem_and_path

        self.uri = uri
        self.rows: dict[int, dict[str, Any]] = {}
        fs, path = filesystem_and_path(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if fs.get_file_info(path).type.name == "File":
            with fs.open_input_stream(path) as f:
                old = pd.read_csv(io.BytesIO(f.read()))
            self.rows = {int(r["epoch"]): r for r in old.to_dict("records")}

    def add(self, metrics: dict[str, Any]) -> None:
        import pandas as pd

        if "epoch" not in metrics:
            return
        self.rows[int(metrics["epoch"])] = {k: v for k, v in metrics.items() if _scalar(v)}
        frame = pd.DataFrame([self.rows[e] for e in sorted(self.rows)])
        cols = ["epoch", *sorted(c for c in frame.columns if c != "epoch")]
        _write_text(self.uri, frame[cols].to_csv(index=False))


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool))


class _Progress:
    """Driver-side progress: the Ray Train controller pushes each report into a queue.

    Tried instead (2026-11-27): the reports in the GCS's key-value store, which saves the
    queue's actor process. ``benchmarks/startup.py`` measured no difference (cluster CPU per
    run 40.9 vs 41.7 CPU-s, first step 28.5 vs 29.1 s, medians of 3, within run-to-run noise),
    so the public queue stays.
    """

    def __init__(self, max_epochs: int, printer: Any, sinks: list[Any] | None = None) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's node, like Ray Train's controller: anywhere else, losing that node
        # would kill the queue, the controller's report callback with it, and so the run.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(maxsize=1000, actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.max_epochs = max_epochs
        self.printer = printer
        # Also called per epoch, e.g. the tracker's log_metrics: rank 0's report, on the driver.
        self.sinks = sinks or []
        self.start = time.time()
        self.epochs: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def callback(self) -> Any:
        from ray.train import UserCallback

        queue = self.queue

        class _Push(UserCallback):
            def after_report(
                self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
            ) -> None:
                queue.put_nowait(dict(metrics[0]))

        return _Push()

    def _loop(self) -> None:
        import queue as std_queue

        from ray.util.queue import Empty

        while not self._stop.is_set():
            try:
                m = self.queue.get(timeout=0.5)
            except (Empty, std_queue.Empty):
                continue
            except Exception:
                return
            self.epochs.append(m)
            for sink in self.sinks:
                sink(m)
            if self.printer:
                self.printer(m, self.max_epochs, time.time() - self.start)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        self._stop.set()  # the thread takes what is left, then ends (no fixed wait)
        self._thread.join(timeout=30)
        ray.kill(self.queue.actor)


def _scaling(cfg: TrainConfig) -> Any:
    from ray.train import ScalingConfig

    res: dict[str, float] = {"CPU": cfg.scaling.cpus_per_worker, **cfg.scaling.resources_per_worker}
    if cfg.scaling.use_gpu:
        res["GPU"] = cfg.scaling.gpus_per_worker or 1
    elastic = (
        cfg.scaling.min_workers is not None and cfg.scaling.min_workers < cfg.scaling.num_workers
    )
    return ScalingConfig(
        # A (min, max) tuple turns on Ray Train's elastic scaling policy: after a node loss the
        # group restarts from the last checkpoint with the workers the cluster can still hold.
        num_workers=(cfg.scaling.min_workers, cfg.scaling.num_workers)
        if elastic
        else cfg.scaling.num_workers,
        elastic_resize_monitor_interval_s=cfg.scaling.elastic_resize_interval_s,
        use_gpu=cfg.scaling.use_gpu,
        resources_per_worker=res,
    )


def _best_checkpoint(result: Any, monitor: str, mode: str) -> Any:
    try:
        best = result.get_best_checkpoint(metric=monitor, mode=mode)
    except (ValueError, KeyError, RuntimeError):
        best = None
    return best or result.checkpoint


class _Rows:
    """Per-batch arrays appended into one array that grows geometrically.

    Why not a list of per-batch arrays: thousands of small long-lived arrays interleaved with
    each batch's temporaries fragment glibc's heap, and the freed temporaries are never given
    back. Scoring a streamed test split of 1.19M rows that way left the driver 0.66 GB larger
    although the kept arrays held 18 MB (``benchmarks/data_scale.py``'s driver trace).
    """

    def __init__(self) -> None:
        self.buf: Any = None
        self.n = 0

    def add(self, a: Any) -> None:
        import numpy as np

        a = np.asarray(a)
        if self.buf is None:
            self.buf = np.empty((max(len(a), 1 << 16), *a.shape[1:]), dtype=a.dtype)
        elif self.n + len(a) > len(self.buf):
            grown = np.empty(
                (max(2 * len(self.buf), self.n + len(a)), *a.shape[1:]), self.buf.dtype
            )
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n : self.n + len(a)] = a
        self.n += len(a)

    def array(self) -> Any:
        return self.buf[: self.n]


def score(b: bundle_io.Bundle, ds: Any) -> dict[str, float]:
    """Metrics of a bundle's model on an encoded split, streamed batch by batch on the driver."""
    import numpy as np

    ys, outs = _Rows(), _Rows()
    for batch in ds.iter_batches(batch_size=4096, batch_format="numpy"):
        if len(batch["label"]) == 0:
            continue
        res = b.predict_encoded(batch["features"])
        # Copied into the buffers: the batch's arrays can be zero-copy views of a whole Ray
        # Data block, and keeping a view would keep the block (features and all) alive.
        ys.add(batch["label"])
        outs.add(res["proba"] if b.task == "classification" else res["value"])
    if not ys.n:
        return {}
    y = ys.array()
    from raylight.metrics import classification_metrics, regression_metrics

    if b.task == "classification":
        return classification_metrics(y, outs.array(), b.classes, b.manifest.get("positive_label"))
    y_true = b.preprocessor.decode_regression(y.astype(np.float64))
    return regression_metrics(y_true, outs.array())


def run_training(cfg: TrainConfig, printer: Any = None, announce: Any = None) -> TrainResult:
    """Train a model from a validated config on the current Ray cluster (see cluster.session).

    Args:
        cfg: Validated config.
        printer: ``printer(metrics, max_epochs, elapsed_s)`` called on the driver per epoch.
        announce: ``announce(stage: str, detail: str)`` called on the driver per stage.
    """
    from raylight.cluster import cluster_gpus
    from raylight.config import ConfigError

    say = announce or (lambda stage, detail: None)
    t0 = time.time()

    if cfg.scaling.use_gpu and cluster_gpus() < cfg.scaling.fewest_workers * (
        cfg.scaling.gpus_per_worker or 1
    ):
        raise ConfigError(
            [
                (
                    "scaling.use_gpu",
                    f"the cluster has {cluster_gpus():g} GPU(s); {cfg.scaling.fewest_workers} worker(s) need more",
                )
            ]
        )

    init_checkpoint = None
    if cfg.resume:
        resume_dir, init_checkpoint = resume_target(cfg.resume)
        if resume_dir:
            # Same name + storage path: Ray Train restores the run's checkpoint state.
            cfg = cfg.model_copy(
                # String ops, not Path: Path("s3://b/x") collapses the scheme's "//".
                update={
                    "run_name": resume_dir.rsplit("/", 1)[-1],
                    "output_dir": resume_dir.rsplit("/", 2)[0],
                }
            )
    name, run_dir = _run_paths(cfg)
    from raylight.data.sources import filesystem_and_path

    fs, run_path = filesystem_and_path(run_dir)
    fs.create_dir(run_path, recursive=True)
    plain = cfg.to_plain()
    _write_json(run_dir + "/config.json", plain)
    _write_text(run_dir + "/config.yaml", _to_yaml(plain))
    say("run", run_dir)

    # ---- tracking: one run per training job; a resumed run directory continues its runs.
    tracker = _open_tracker(cfg, name, run_dir, init_checkpoint, say)
    try:
        res = _train_tracked(cfg, plain, name, run_dir, init_checkpoint, tracker, printer, say)
    except BaseException as exc:
        tracker.set_tags({"raylight.error": f"{type(exc).__name__}: {exc}"[:5000]})
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    timings = res.timings
    timings["total_s"] = time.time() - t0
    _log_outcome(tracker, res, cfg)
    if cfg.register:
        res.registered = _register(res, cfg, tracker, say)
    tracker.finish("FINISHED")
    res.tracking = tracker.state()
    _write_json(run_dir + "/tracking.json", res.tracking)
    _write_json(run_dir + "/result.json", {k: v for k, v in res.__dict__.items()})
    return res


def _register(res: TrainResult, cfg: TrainConfig, tracker: Any, say: Any) -> dict[str, Any]:
    """``register=NAME``: a failure is reported and recorded; the trained bundle stays."""
    from raylight import registry, tracking

    try:
        version = registry.register_training(res, cfg, tracker)
    except (registry.RegistryError, tracking.TrackingError) as exc:
        say("registry", f"registering {cfg.register} failed: {exc}")
        tracker.set_tags({"raylight.register_error": str(exc)[:5000]})
        return {"name": cfg.register, "error": str(exc)}
    say("registry", f"{version['name']} version {version['version']} ({version['source']})")
    return version


def _open_tracker(
    cfg: TrainConfig, name: str, run_dir: str, init_checkpoint: str | None, say: Any
) -> Any:
    from raylight import tracking

    tracker = tracking.open_runs(
        cfg.tracking,
        cfg.output_dir,
        tracking.experiment_for(cfg),
        name,
        previous=tracking.read_state(run_dir),
        warn=lambda msg: say("tracking", msg),
    )
    if tracker.runs:
        _write_json(run_dir + "/" + tracking.STATE_FILE, tracker.state())
        tracker.log_params(tracking.flatten(cfg.to_plain()))
        tags = tracking.run_tags(cfg, "train", run_dir)
        if init_checkpoint:
            tags["raylight.init_checkpoint"] = init_checkpoint
        tracker.set_tags(tags)
        say("tracking", ", ".join(f"{k} run {v}" for k, v in tracker.ids.items()))
    return tracker


def _train_tracked(
    cfg: TrainConfig,
    plain: dict[str, Any],
    name: str,
    run_dir: str,
    init_checkpoint: str | None,
    tracker: Any,
    printer: Any,
    say: Any,
) -> TrainResult:
    """Data → fit → bundle, with every epoch going to the tracker."""
    from raylight.data.handoff import hand_off
    from raylight.data.pipeline import prepare

    timings: dict[str, float] = {}
    # ---- data
    t = time.time()
    data: PreparedData = prepare(cfg.data, cfg.seed, quarantine_dir=run_dir + "/quarantine")
    data = hand_off(data, cfg.data)
    timings["data_s"] = time.time() - t
    summary = data.summary.to_dict()
    _write_json(run_dir + "/data_summary.json", summary)
    say("data", _data_line(summary))
    tracker.set_tags({
        "raylight.data_fingerprint": data.summary.fingerprint,
        "raylight.data_rows": summary["rows"],
        "raylight.data_quarantined": summary["bad"],
    })  # fmt: skip
    tracker.log_artifacts(run_dir + "/data_summary.json", "")

    pre = data.preprocessor
    model_args = model_args_for(cfg, pre)
    plain["_run"] = run_info(name, cfg, model_args, run_dir, init_checkpoint)

    # ---- train
    t = time.time()
    clock = {"last": time.time()}

    def track_epoch(m: dict[str, Any]) -> None:
        now = time.time()
        m = {**m, "epoch_time_s": now - clock["last"]}
        clock["last"] = now
        tracker.log_metrics(m, step=int(m.get("epoch", 0)))

    epoch_log = EpochLog(run_dir + "/logs/epochs.csv")
    progress = _Progress(cfg.trainer.max_epochs, printer, sinks=[track_epoch, epoch_log.add])
    trainer = torch_trainer(
        cfg, plain, data, storage_path=run_dir, name="train", callbacks=[progress.callback()]
    )
    say(
        "train",
        f"{cfg.scaling.num_workers} worker(s), {cfg.trainer.max_epochs} epoch(s), {pre.num_features} features",
    )
    with progress:
        result = trainer.fit()
    timings["train_s"] = time.time() - t
    best = _best_checkpoint(result, cfg.trainer.monitor, cfg.trainer.mode)
    if best is None:
        raise RuntimeError("training finished without a checkpoint")

    # ---- bundle
    t = time.time()
    bundle_path = run_dir + "/bundle"
    best_metrics, test = export_bundle(
        best, bundle_path, cfg, plain, data, model_args, name, tracking_ids=tracker.ids
    )
    timings["bundle_eval_s"] = time.time() - t
    return TrainResult(
        run_name=name,
        run_dir=run_dir,
        bundle_path=bundle_path,
        checkpoint_path=best.path,
        metrics=best_metrics,
        test_metrics=test,
        data_summary=summary,
        epochs=len(progress.epochs),
        timings=timings,
    )


def _log_outcome(tracker: Any, res: TrainResult, cfg: TrainConfig) -> None:
    """The run's final numbers and files: best epoch, test split, bundle, config."""
    from raylight.tracking import numeric_metrics

    final = {f"best_{k}": v for k, v in numeric_metrics(res.metrics).items()}
    final.update({f"test_{k}": v for k, v in numeric_metrics(res.test_metrics).items()})
    final.update({f"time_{k}": v for k, v in res.timings.items()})
    tracker.log_metrics(final, step=int(res.metrics.get("epoch", 0)))
    tracker.set_tags(
        {"raylight.best_epoch": res.metrics.get("epoch"), "raylight.bundle": res.bundle_path}
    )
    tracker.log_artifacts(res.run_dir + "/config.yaml", "")
    if cfg.tracking.mlflow.log_bundle:
        tracker.log_artifacts(res.bundle_path, "bundle")


def model_args_for(cfg: TrainConfig, pre: Any) -> dict[str, Any]:
    """The model's constructor arguments: config values plus sizes injected from the data."""
    args = {k: v for k, v in cfg.model.items() if k not in ("_target_", "name")}
    args.update(input_dim=pre.num_features, output_dim=pre.num_outputs, task=pre.task)
    from raylight.models.spec import model_spec

    # The spec, not the class: importing a model class imports Lightning on the driver.
    injected = model_spec(cfg.model["_target_"]).injected
    if pre.images and "image_shape" in injected:
        args["image_shape"] = next(iter(pre.images.values()))["shape"]
    if pre.texts and "text_length" in injected:
        spec = next(iter(pre.texts.values()))
        args.update(
            text_length=spec["max_length"],
            text_base=spec["base"],
            base_sha256=spec["weights_sha256"],
            pad_id=spec["pad_id"],
        )
    return args


def run_info(
    name: str,
    cfg: TrainConfig,
    model_args: dict[str, Any],
    run_dir: str,
    init_checkpoint: str | None = None,
) -> dict[str, Any]:
    """What the worker loop needs beyond the config (travels as ``config["_run"]``)."""
    from raylight.data.sources import filesystem_and_path

    local = "://" not in run_dir
    return {
        "name": name,
        "model_target": cfg.model["_target_"],
        "model_args": model_args,
        "logs_dir": filesystem_and_path(run_dir)[1] + "/logs" if local else tempfile.mkdtemp(),
        "init_checkpoint": init_checkpoint,
    }


def torch_trainer(
    cfg: TrainConfig,
    plain: dict[str, Any],
    data: PreparedData,
    storage_path: str,
    name: str,
    callbacks: list[Any],
) -> Any:
    """A Ray Train ``TorchTrainer`` for one run (also what each multi-worker sweep trial builds)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    # Ray Train propagates this from the driver to its controller (and workers).
    poll = cfg.trainer.poll_interval_s(cfg.scaling.num_workers)
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(poll)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(cfg.scaling.worker_start_timeout_s)
    if data.resident:
        # The splits travel in the config as object refs; no Ray Dataset, no dataset manager.
        trainer_cls, datasets = _trainer_without_datasets(), {}
        plain = {**plain, RESIDENT_KEY: data.resident}
    else:
        trainer_cls, datasets = TorchTrainer, {"train": data.train, "val": data.val}
    return trainer_cls(
        train_loop_per_worker,
        train_loop_config=plain,
        scaling_config=_scaling(cfg),
        datasets=datasets,
        # One fixed worker reads the whole dataset: no streaming_split, so no split-coordinator
        # actor between it and Ray Data (benchmarks/ingest.py: steady ingest ratio 0.47 → 0.63,
        # first batch 2.8 s → 0.02 s). Several (or elastic) workers need the split.
        dataset_config=DataConfig(datasets_to_split=[] if cfg.scaling.num_workers == 1 else "all"),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.trainer.num_checkpoints,
                checkpoint_score_attribute=cfg.trainer.monitor,
                checkpoint_score_order=cfg.trainer.mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.trainer.max_failures),
            callbacks=callbacks,
        ),
    )


@functools.cache
def _trainer_without_datasets() -> type:
    """``TorchTrainer`` that starts no dataset manager when it is given no datasets.

    Ray Train 2.60 adds its datasets callback to every run, and that callback creates a
    dataset-manager actor (a fresh process importing Ray Train and Ray Data) when the worker
    group starts, datasets or not. A run whose splits come through the object store has nothing
    for it to manage.
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

    class _Trainer(TorchTrainer):
        def _create_default_callbacks(self) -> list[Any]:
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [c for c in callbacks if not isinstance(c, DatasetsCallback)]

    return _Trainer


def export_bundle(
    checkpoint: Any,
    bundle_path: str,
    cfg: TrainConfig,
    plain: dict[str, Any],
    data: PreparedData,
    model_args: dict[str, Any],
    run_name: str,
    tracking_ids: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the bundle from a checkpoint, reload it, and score the test split with it.

    Returns:
        (the checkpoint's epoch metrics, test metrics)
    """
    from safetensors.torch import load as load_weights

    with checkpoint.as_directory() as d:
        state = load_weights(Path(d, WEIGHTS_NAME).read_bytes())
        best_metrics = json.loads(Path(d, "metrics.json").read_text())
    bundle_io.write(
        bundle_path,
        state,
        _manifest(
            cfg, plain, data, model_args, best_metrics, run_name, checkpoint.path, tracking_ids
        ),
    )
    b = bundle_io.load(bundle_path)  # round-trip: evaluate what was written, not what is in memory
    test = score(b, data.test)
    bundle_io.update_metrics(bundle_path, {"test": test})
    return best_metrics, test


def _manifest(
    cfg: TrainConfig,
    plain: dict[str, Any],
    data: PreparedData,
    model_args: dict[str, Any],
    best_metrics: dict[str, Any],
    run_name: str,
    checkpoint: str,
    tracking_ids: dict[str, str] | None = None,
) -> dict[str, Any]:
    from raylight.data.pipeline import contract_rules

    pre = data.preprocessor
    rules = contract_rules(cfg.data)
    features = [
        {"name": c, **{k: v for k, v in rules[c].items() if k != "strict"}}
        for c in pre.feature_order
    ]
    return {
        "model": {"target": cfg.model["_target_"], "init_args": model_args},
        "task": pre.task,
        "classes": pre.classes,
        "positive_label": cfg.data.positive_label,
        "input_schema": {
            "features": features,
            "id_column": cfg.data.id_column,
            "target": cfg.data.target,
            "strict_categories": cfg.data.contract.strict_categories,
            "encoded_features": pre.output_names,
            # Accepted by /predict (optional), never used by the model, and written to a
            # request log only as `treatment` says; the salt is read from `salt_env` there.
            "pii": {
                "columns": [
                    {"name": c, "dtype": rules[c]["dtype"]} for c in cfg.data.pii_columns()
                ],
                "treatment": cfg.data.privacy.pii,
                "salt_env": cfg.data.privacy.salt_env,
            },
        },
        "preprocessor": pre.to_dict(),
        "reference": data.reference,
        "config": {k: v for k, v in plain.items() if k != "_run"},
        "lineage": {
            "run_name": run_name,
            "checkpoint": checkpoint,
            "data_fingerprint": data.summary.fingerprint,
            "data_sources": data.summary.source_paths,
            "created_at": datetime.now(timezone.utc).isoformat(),
            # The tracking runs this bundle came from (MLflow/W&B run ids): bundle → run.
            "tracking": dict(tracking_ids or {}),
            **git_info(),
            "versions": versions(),
        },
        "metrics": {"best": best_metrics, "data": data.summary.to_dict()},
    }


def _data_line(s: dict[str, Any]) -> str:
    sp = s["split_rows"]
    line = f"{s['rows']:,} rows, {s['good']:,} good, {s['bad']:,} quarantined → train {sp['train']:,} / val {sp['val']:,} / test {sp['test']:,}"
    if s.get("augmented_rows"):
        line += f" (+{s['augmented_rows']:,} augmented train rows)"
    if s["quarantine_path"]:
        line += f" (bad rows: {s['quarantine_path']})"
    return line


def _write_text(uri: str, text: str) -> None:
    from raylight.data.sources import filesystem_and_path

    fs, path = filesystem_and_path(uri)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _write_json(uri: str, obj: Any) -> None:
    _write_text(uri, json.dumps(obj, indent=2, default=str))


def _to_yaml(plain: dict[str, Any]) -> str:
    from omegaconf import OmegaConf

    header = "# Resolved config of this run. Retrain exactly with:\n#   raylight train --config-path <this dir> --config-name config\n"
    return header + OmegaConf.to_yaml(OmegaConf.create(plain))
