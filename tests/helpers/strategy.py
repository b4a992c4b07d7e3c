"""What the strategy tests inject: a callback recording, per rank, how the worker actually
trained, and a model whose bundle holds only part of its weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from raylight.models.tabular import TabularMLP


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


class HeadOnlyMLP(TabularMLP):
    """A partial-bundle model: a fixed base (seeded, frozen, "referenced") and a trained head.

    Like a LoRA model, its bundle holds only what trained (``bundle_state_dict``) and loads it
    onto a freshly built base (``load_bundle_state_dict``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(1234)  # the same base weights in every process
            super().__init__(*args, **kwargs)
        self.head = f"net.{len(self.net) - 1}."
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith(self.head))

    def bundle_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.head)}

    def load_bundle_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {k for k in self.state_dict() if k.startswith(self.head)}
        if set(state) != expected:
            raise ValueError(f"expected exactly {sorted(expected)}, got {sorted(state)}")
        self.load_state_dict(state, strict=False)
