"""Callbacks the tests inject through `trainer.callbacks` (the product's public hook):
Lightning Trainer callbacks, and Fabric-loop ones (``Fabric*``, hooks of raylight.fabric_loop)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl


class ShardRecorder(pl.Callback):
    """Each rank appends the rows it trained on per epoch to ``out_dir/rank{R}.jsonl``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.rows = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.rows += int(batch["label"].shape[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.out_dir) / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "rows": self.rows}) + "\n")


class KillOnce(pl.Callback):
    """SIGKILL this worker process at a chosen global step on one rank — first attempt only.

    The marker file makes the kill happen once: the restarted worker group must then finish.
    """

    def __init__(self, rank: int, step: int, marker: str) -> None:
        self.rank = rank
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if (
            trainer.global_rank == self.rank
            and trainer.global_step >= self.step
            and not os.path.exists(self.marker)
        ):
            Path(self.marker).write_text(
                json.dumps({"step": trainer.global_step, "epoch": trainer.current_epoch})
            )
            os.kill(os.getpid(), signal.SIGKILL)


class CorruptFile(pl.Callback):
    """Overwrite a file with junk after one epoch (rank 0): a tracking store dying mid-run."""

    def __init__(self, path: str, epoch: int = 0) -> None:
        self.path = path
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0 and trainer.current_epoch == self.epoch:
            with open(self.path, "r+b") as f:
                f.write(b"this is not a database any more" * 4096)


class BroadcastCounter(pl.Callback):
    """Counts ``torch.distributed.broadcast`` calls during training on each rank (the real
    function still runs) and writes ``out_dir/broadcasts{R}.json`` with the steps trained."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.count = 0
        self._real = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch.distributed as dist

        self._real = real = dist.broadcast

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.count += 1
            return real(*args, **kwargs)

        dist.broadcast = counting

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch.distributed as dist

        dist.broadcast = self._real
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        record = {"broadcasts": self.count, "steps": trainer.global_step}
        (Path(self.out_dir) / f"broadcasts{trainer.global_rank}.json").write_text(
            json.dumps(record)
        )


class FabricShardRecorder:
    """:class:`ShardRecorder` for ``trainer.loop=fabric``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.rows = 0

    def on_train_epoch_start(self, fabric, module, epoch) -> None:  # type: ignore[no-untyped-def]
        self.rows = 0

    def on_train_batch_end(self, fabric, module, outputs, batch, batch_idx, epoch, step) -> None:  # type: ignore[no-untyped-def]
        self.rows += int(batch["label"].shape[0])

    def on_train_epoch_end(self, fabric, module, epoch, metrics) -> None:  # type: ignore[no-untyped-def]
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.out_dir) / f"rank{fabric.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch, "rows": self.rows}) + "\n")


class FabricKillOnce:
    """:class:`KillOnce` for ``trainer.loop=fabric`` (a plain object, as Fabric callbacks are)."""

    def __init__(self, rank: int, step: int, marker: str) -> None:
        self.rank = rank
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, fabric, module, batch, batch_idx, epoch, step) -> None:  # type: ignore[no-untyped-def]
        if (
            fabric.global_rank == self.rank
            and step >= self.step
            and not os.path.exists(self.marker)
        ):
            Path(self.marker).write_text(json.dumps({"step": step, "epoch": epoch}))
            os.kill(os.getpid(), signal.SIGKILL)
