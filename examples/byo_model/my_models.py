"""A model of your own, trained, tuned, registered and served by raylight without editing it.

The contract raylight relies on (see README.md next to this file):

1. A ``lightning.pytorch.LightningModule`` whose constructor takes ``input_dim``,
   ``output_dim`` and ``task`` (filled in from the data) plus any arguments of yours (from the
   config's ``model:`` block, checked against this signature before any Ray work).
2. Batches are dicts: ``features`` (float32 ``[B, input_dim]``, the bundle's preprocessed
   columns) and ``label`` (int64 class ids, or float32 standardised targets for regression).
3. ``forward(features)`` returns logits ``[B, output_dim]`` (classification) or ``[B]``
   (regression): the bundle, batch prediction and Serve call it on preprocessed features, so
   serving needs no adapter of yours for tabular or image columns.
4. ``validation_step`` logs the monitored metric (``trainer.monitor``, default ``val_loss``);
   ``REPORTED_METRICS`` names what a sweep may optimise.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(width, width),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualMLP(pl.LightningModule):
    """Pre-norm residual MLP blocks with label smoothing: a stand-in for "your" architecture.

    Args:
        input_dim: Encoded feature width (from the data).
        output_dim: Classes, or 1 for regression (from the data).
        task: ``classification`` or ``regression`` (from the data).
        width: Width of the residual stream.
        blocks: Number of residual blocks.
        dropout: Dropout inside each block.
        label_smoothing: Cross-entropy label smoothing (classification).
        lr: AdamW learning rate.
    """

    REPORTED_METRICS = {"classification": ("val_acc",), "regression": ("val_loss",)}

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        task: str = "classification",
        width: int = 64,
        blocks: int = 2,
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
        lr: float = 3e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = task
        self.inp = nn.Linear(input_dim, width)
        self.blocks = nn.Sequential(*[_Block(width, dropout) for _ in range(blocks)])
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, output_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        y = self.out(self.blocks(self.inp(features)))
        return y.squeeze(-1) if self.task == "regression" else y

    def _loss(self, out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return nn.functional.cross_entropy(
                out, label, label_smoothing=self.hparams.label_smoothing
            )
        return nn.functional.mse_loss(out, label.float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["features"]), batch["label"])
        n = batch["label"].shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out, label = self(batch["features"]), batch["label"]
        n = label.shape[0]
        self.log("val_loss", self._loss(out, label), on_epoch=True, sync_dist=True, batch_size=n)
        if self.task == "classification":
            acc = (out.argmax(-1) == label).float().mean()
            self.log("val_acc", acc, on_epoch=True, sync_dist=True, batch_size=n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
