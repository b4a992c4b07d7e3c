"""raylight's own epoch loop on Lightning Fabric (``trainer.loop=fabric``, the ``auto`` default).

Lightning's Trainer spends about 1 ms of Python per training step around the model's own work
(some 25 hook dispatches through its callback and profiler machinery, the automatic-optimization
closure, batch and progress bookkeeping): 20% of a tabular MLP's CPU step
(benchmarks/train_overhead.py). This loop runs the same ``LightningModule`` through Fabric —
the module's ``training_step``/``validation_step``/``configure_optimizers`` and epoch hooks,
Fabric's precision, gradient clipping, DDP and ``self.log`` — and does the rest in a plain
``for`` loop. Reporting and checkpoints go through the same code as the Trainer path
(:func:`raylight.train.report_epoch`), so Ray Train, Ray Tune, the bundle and resume see no
difference.

Checkpoints keep Lightning's layout (``state_dict``, ``optimizer_states``, ``lr_schedulers``,
``epoch``, ``global_step``) plus ``raylight_loop: fabric``. This loop resumes from its own and
from the Trainer's; the Trainer refuses this loop's (it would restart the epoch count).

Fabric callbacks (``trainer.callbacks`` with ``loop=fabric``) are plain objects; each hook they
define is called with keyword arguments (any subset of hooks):

- ``on_fit_start(fabric, module)``, ``on_train_start(fabric, module)``
- ``on_train_epoch_start(fabric, module, epoch)``
- ``on_train_batch_start(fabric, module, batch, batch_idx, epoch, step)``
- ``on_train_batch_end(fabric, module, outputs, batch, batch_idx, epoch, step)`` (after the
  optimizer step; ``outputs`` is the detached loss; ``step`` counts optimizer steps, as
  Lightning's ``global_step``)
- ``on_validation_epoch_start(fabric, module, epoch)``, ``on_validation_epoch_end(...)``
- ``on_train_epoch_end(fabric, module, epoch, metrics)`` (before the report)
- ``on_train_end(fabric, module)``
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import torch
    from lightning.fabric import Fabric

LOOP_KEY = "raylight_loop"


@dataclass
class _Optimization:
    """The module's ``configure_optimizers`` output, normalised: one optimizer, and its
    schedulers with their interval (``step`` or ``epoch``) and frequency."""

    optimizer: Any
    schedulers: list[tuple[Any, str, int]] = field(default_factory=list)


def _optimization(out: Any) -> _Optimization:
    """Read what ``configure_optimizers`` may return with automatic optimization.

    Accepted: an optimizer; a dict with ``optimizer`` and an optional ``lr_scheduler`` (a
    scheduler or a dict with ``scheduler``, ``interval``, ``frequency``); a pair of one-item
    lists ``([optimizer], [scheduler])``. Several optimizers need manual optimization, which is
    the Trainer's (``trainer.loop=trainer``).
    """
    import torch

    if isinstance(out, torch.optim.Optimizer):
        return _Optimization(out)
    if isinstance(out, dict) and "optimizer" in out:
        opt = _Optimization(out["optimizer"])
        sched = out.get("lr_scheduler")
        if sched is not None:
            opt.schedulers.append(_scheduler(sched))
        return opt
    if isinstance(out, (list, tuple)) and len(out) == 2 and isinstance(out[0], (list, tuple)):
        opts, scheds = out
        if len(opts) == 1:
            opt = _Optimization(opts[0])
            opt.schedulers += [_scheduler(s) for s in scheds]
            return opt
    raise ValueError(
        "trainer.loop=fabric runs one optimizer (configure_optimizers returned "
        f"{type(out).__name__}); set trainer.loop=trainer for several optimizers"
    )


def _scheduler(spec: Any) -> tuple[Any, str, int]:
    if isinstance(spec, dict):
        return spec["scheduler"], str(spec.get("interval", "epoch")), int(spec.get("frequency", 1))
    return spec, "epoch", 1


def _latest_logger() -> Any:
    """A Fabric logger that keeps the last value of every metric the module logs."""
    from lightning.fabric.loggers import Logger

    class Latest(Logger):
        def __init__(self) -> None:
            super().__init__()
            self.metrics: dict[str, float] = {}
            self.in_steps = False  # the loop is inside an epoch's step calls
            self.warned = False

        @property
        def name(self) -> str:
            return "raylight"

        @property
        def version(self) -> str:
            return "0"

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            if self.in_steps and not self.warned:
                import warnings

                self.warned = True
                warnings.warn(
                    f"self.log({', '.join(metrics)}) in a step under trainer.loop=fabric: Fabric "
                    "keeps the last value logged, with no on_epoch mean, so the epoch reports "
                    "carry last-batch values. Log epoch values from on_*_epoch_end "
                    "(raylight.models.epoch_means does) or set trainer.loop=trainer",
                    stacklevel=2,
                )
            self.metrics.update({k: float(v) for k, v in metrics.items()})

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    return Latest()


def _ray_ddp_strategy() -> Any:
    """Fabric's DDP strategy on a Ray Train worker: ranks from Ray's context, the process group
    Ray Train already set up, the worker's own device (Ray assigns one per worker, so the
    local rank does not index a device list here)."""
    from lightning.fabric.strategies import DDPStrategy
    from ray.train.lightning import RayLightningEnvironment

    class RayFabricDDP(DDPStrategy):
        @property
        def root_device(self) -> torch.device:
            import ray.train.torch

            return ray.train.torch.get_device()

    return RayFabricDDP(cluster_environment=RayLightningEnvironment())


def build_fabric(config: dict[str, Any], world_size: int, callbacks: list[Any]) -> Fabric:
    """A Fabric for one worker: its precision, callbacks, and DDP when the run has a process
    group (see ``train._parallel_strategy``)."""
    from lightning.fabric import Fabric

    from raylight.train import _parallel_strategy

    t = config["trainer"]
    ddp = _parallel_strategy(t, world_size) == "ddp"
    fabric = Fabric(
        accelerator="auto",
        devices=1,
        num_nodes=world_size if ddp else 1,
        strategy=_ray_ddp_strategy() if ddp else "auto",
        precision=t["precision"],
        callbacks=callbacks,
        loggers=[_latest_logger()],
    )
    if ddp:
        fabric.launch()  # processes exist already (Ray's): this only joins the process group
    return fabric


def _check_callbacks(callbacks: list[Any]) -> None:
    from lightning.pytorch import Callback

    trainer_cbs = [type(c).__name__ for c in callbacks if isinstance(c, Callback)]
    if trainer_cbs:
        raise ValueError(
            f"trainer.callbacks holds Lightning Trainer callbacks ({', '.join(trainer_cbs)}) "
            "but trainer.loop=fabric: set trainer.loop=trainer (or auto), or give Fabric "
            "callbacks (hooks listed in raylight.fabric_loop)"
        )


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint file (local or any fsspec URL), tensors only (``weights_only``)."""
    import fsspec
    import torch

    with fsspec.open(path, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def written_by_fabric(path: str) -> bool:
    """Whether a local checkpoint file was written by this loop (read without its tensors)."""
    import torch

    if "://" in path or not os.path.isfile(path):
        return False  # a remote file: not read twice just to check
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return ckpt.get(LOOP_KEY) == "fabric"


class FabricLoop:
    """Fit one module for ``trainer.max_epochs`` epochs, reporting to ``session`` every epoch.

    Args:
        config: The plain resolved config plus ``_run``.
        session: A :class:`raylight.train.TrainSession` or ``tune.TuneSession``.
        module: The LightningModule (compiled in place when ``trainer.compile``).
    """

    def __init__(self, config: dict[str, Any], session: Any, module: pl.LightningModule) -> None:
        from raylight.train import _instantiate

        self.config = config
        self.t = config["trainer"]
        self.session = session
        callbacks = [_instantiate(cb) for cb in self.t["callbacks"]]
        _check_callbacks(callbacks)
        self.fabric = build_fabric(config, session.world_size, callbacks)
        self.module = module
        self.model_params = float(sum(p.numel() for p in module.parameters()))
        self.accumulate = int(self.t["accumulate_grad_batches"])
        self.epoch = 0
        self.global_step = 0
        self.csv: Any = None
        if "csv" in config["tracking"]["backends"] and self.fabric.global_rank == 0:
            from lightning.fabric.loggers import CSVLogger

            self.csv = CSVLogger(config["_run"]["logs_dir"], name="", version="")

    # ------------------------------------------------------------------ set-up and restore

    def setup(self) -> None:
        if self.t["deterministic"]:
            import torch

            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        # The optimizer is made after the module is on its device (Lightning's order too, so a
        # fused optimizer sees the parameters it will step).
        self.model = self.fabric.setup_module(self.module)
        opt = _optimization(self.module.configure_optimizers())
        self.optimizer = self.fabric.setup_optimizers(opt.optimizer)
        self.schedulers = opt.schedulers

    def restore(self, path: str) -> None:
        """Continue from a checkpoint (this loop's or the Trainer's): weights, optimizer and
        scheduler states, and the epoch after the one it was written at."""
        ckpt = load_checkpoint(path)
        self.module.load_state_dict(ckpt["state_dict"])
        states = ckpt.get("optimizer_states") or []
        if states:
            self.optimizer.load_state_dict(states[0])
        for (sched, _, _), state in zip(
            self.schedulers, ckpt.get("lr_schedulers") or [], strict=True
        ):
            sched.load_state_dict(state)
        self.epoch = int(ckpt["epoch"]) + 1
        self.global_step = int(ckpt.get("global_step", 0))

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "state_dict": self.module.state_dict(),
            "optimizer_states": [self.optimizer.state_dict()],
            "lr_schedulers": [s.state_dict() for s, _, _ in self.schedulers],
            "epoch": self.epoch,
            "global_step": self.global_step,
            LOOP_KEY: "fabric",
        }

    def _save(self, path: str) -> None:
        import torch

        if self.fabric.global_rank == 0:  # DDP ranks hold the same weights
            torch.save(self._checkpoint(), path)

    # ------------------------------------------------------------------ the loop

    def fit(self, train_batches: Any, val_batches: Any) -> None:
        from raylight.train import bundle_state, report_epoch

        fabric, module = self.fabric, self.module
        max_epochs = int(self.t["max_epochs"])
        every = int(self.t.get("checkpoint_every_n_epochs", 1))
        tmp_root = tempfile.mkdtemp(
            prefix=f"raylight-{self.config['_run']['name']}-rank{self.session.rank}-"
        )
        # Fresh passes over the data: the epochs before a resume point are skipped, so the
        # loaders' per-epoch shuffle seeds line up with an uninterrupted run's.
        for attr in (train_batches, val_batches):
            if hasattr(attr, "epoch"):
                attr.epoch = self.epoch
        try:
            fabric.call("on_fit_start", fabric=fabric, module=module)
            module.on_fit_start()
            fabric.call("on_train_start", fabric=fabric, module=module)
            module.on_train_start()
            while self.epoch < max_epochs:
                self._train_epoch(train_batches)
                if self.t["limit_val_batches"] != 0:
                    self._validate(val_batches)
                module.on_train_epoch_end()
                logged = fabric.loggers[0].metrics
                metrics = dict(logged)
                metrics.update(
                    epoch=self.epoch, step=self.global_step, model_params=self.model_params
                )
                fabric.call(
                    "on_train_epoch_end", fabric=fabric, module=module, epoch=self.epoch,
                    metrics=metrics,
                )  # fmt: skip
                self._step_schedulers("epoch")
                if self.csv is not None:
                    self.csv.log_metrics({**logged, "epoch": self.epoch}, step=self.global_step)
                last = self.epoch + 1 >= max_epochs
                report_epoch(
                    self.session, tmp_root, metrics, self.epoch, last, every,
                    save_checkpoint=self._save,
                    rank0_weights=lambda: bundle_state(module) if self.fabric.global_rank == 0
                    else None,
                )  # fmt: skip
                self.epoch += 1
            fabric.call("on_train_end", fabric=fabric, module=module)
            module.on_train_end()
            module.on_fit_end()
        finally:
            if self.csv is not None:
                self.csv.finalize("success")
            shutil.rmtree(tmp_root, ignore_errors=True)

    def _batches(self, loader: Any, limit: int | None) -> Iterator[tuple[int, Any]]:
        for i, batch in enumerate(loader):
            if limit is not None and i >= limit:
                break
            yield i, batch

    def _train_epoch(self, loader: Any) -> None:
        fabric, module, model, opt = self.fabric, self.module, self.model, self.optimizer
        k = self.accumulate
        clip = self.t["gradient_clip_val"]
        by_norm = self.t["gradient_clip_algorithm"] == "norm"
        precision = fabric.strategy.precision
        model.train()
        fabric.call("on_train_epoch_start", fabric=fabric, module=module, epoch=self.epoch)
        module.on_train_epoch_start()
        pending = 0  # batches whose gradients wait for an optimizer step
        fabric.loggers[0].in_steps = True
        batches = self._batches(loader, self.t["limit_train_batches"])
        nxt = next(batches, None)
        while nxt is not None:
            i, batch = nxt
            batch = precision.convert_input(fabric.to_device(batch))
            # Look one batch ahead: the epoch's last batch always steps the optimizer (as in
            # Lightning), and an iterator without a length tells the end only this way.
            nxt = next(batches, None)
            pending += 1
            step_now = pending == k or nxt is None
            fabric.call(
                "on_train_batch_start", fabric=fabric, module=module, batch=batch,
                batch_idx=i, epoch=self.epoch, step=self.global_step,
            )  # fmt: skip
            # No DDP all-reduce on the batches that only accumulate.
            with fabric.no_backward_sync(model, enabled=not step_now):
                # Autocast here too: in one process the wrapper calls training_step directly,
                # outside the precision context its forward would open.
                with fabric.autocast():
                    loss = model.training_step(batch, i)
                fabric.backward(loss / k if k > 1 else loss)
            if step_now:
                if clip is not None:
                    if by_norm:
                        fabric.clip_gradients(model, opt, max_norm=clip)
                    else:
                        fabric.clip_gradients(model, opt, clip_val=clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                self.global_step += 1
                pending = 0
                self._step_schedulers("step")
            fabric.call(
                "on_train_batch_end", fabric=fabric, module=module, outputs=loss.detach(),
                batch=batch, batch_idx=i, epoch=self.epoch, step=self.global_step,
            )  # fmt: skip
        fabric.loggers[0].in_steps = False

    def _validate(self, loader: Any) -> None:
        import torch

        fabric, module, model = self.fabric, self.module, self.model
        model.eval()
        fabric.call("on_validation_epoch_start", fabric=fabric, module=module, epoch=self.epoch)
        module.on_validation_epoch_start()
        precision = fabric.strategy.precision
        fabric.loggers[0].in_steps = True
        with torch.inference_mode(), fabric.autocast():
            for i, batch in self._batches(loader, self.t["limit_val_batches"]):
                model.validation_step(precision.convert_input(fabric.to_device(batch)), i)
        fabric.loggers[0].in_steps = False
        module.on_validation_epoch_end()
        fabric.call("on_validation_epoch_end", fabric=fabric, module=module, epoch=self.epoch)
        model.train()

    def _step_schedulers(self, interval: str) -> None:
        count = self.global_step if interval == "step" else self.epoch + 1
        for sched, every_interval, freq in self.schedulers:
            if every_interval == interval and count % freq == 0:
                sched.step()


def fit_fabric(
    config: dict[str, Any], session: Any, module: pl.LightningModule, checkpoint_path: str | None
) -> None:
    """Fit ``module`` with the Fabric loop, from ``checkpoint_path`` when given."""
    loop = FabricLoop(config, session, module)
    loop.setup()
    if checkpoint_path:
        loop.restore(checkpoint_path)
    train_batches, val_batches = session.loaders(config)
    loop.fit(train_batches, val_batches)
