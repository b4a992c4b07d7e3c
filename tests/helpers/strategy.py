"""A Lightning callback that records, per rank, how the worker actually trained."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl


class StrategyRecorder(pl.Callback):
    """After the first epoch each rank writes ``out_dir/rank{R}.json``: the strategy class, the
    parameter elements this rank holds (a shard under FSDP), the model's size, and whether its
    forward is compiled."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.full_params = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.full_params = sum(p.numel() for p in pl_module.parameters())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != 0:
            return
        record = {
            "strategy": type(trainer.strategy).__name__,
            "wrapper": type(trainer.model).__name__,
            "local_params": sum(p.numel() for p in trainer.model.parameters()),
            "full_params": self.full_params,
            "compiled": getattr(pl_module, "_compiled_call_impl", None) is not None,
        }
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
