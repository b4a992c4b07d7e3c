"""A multilayer perceptron for tabular classification and regression."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import nn

from raylight.models.epoch_means import EpochMeans
from raylight.models.optim import adamw

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class TabularMLP(pl.LightningModule):
    """MLP over the preprocessor's encoded feature vector.

    Batches are dicts: ``features`` (float32, [B, input_dim]) and ``label`` (int64 class ids for
    classification, float32 standardized targets for regression).

    Args:
        input_dim: Encoded feature width (set from the data).
        output_dim: Number of classes, or 1 for regression (set from the data).
        task: ``classification`` or ``regression`` (set from the data).
        hidden_dims: Width of each hidden layer.
        dropout: Dropout after each hidden layer.
        activation: One of relu, gelu, silu, tanh.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        fused_adamw: Step AdamW as one fused kernel where torch supports it (see
            :func:`raylight.models.optim.adamw`); false: torch's default implementation.
    """

    # Filled in by raylight from the data, never from config (config.py checks this).
    INJECTED_ARGS = ("input_dim", "output_dim", "task")
    # Validation metrics logged per epoch, by task (sweeps check their objective against these).
    REPORTED_METRICS = {"classification": ("val_acc",), "regression": ("val_rmse_std",)}

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        task: str = "classification",
        hidden_dims: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        activation: str = "relu",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        fused_adamw: bool = True,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression, got {task!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.task = task
        self.lr = lr
        self.weight_decay = weight_decay
        self.fused_adamw = fused_adamw
        val = ("val_loss", "val_acc" if task == "classification" else "val_rmse_std")
        self.epoch_means = EpochMeans({"train": ("train_loss",), "val": val})
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, int(h)), _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.net(features)
        return out.squeeze(-1) if self.task == "regression" else out

    def _loss(self, out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return nn.functional.cross_entropy(out, label)
        return nn.functional.mse_loss(out, label.float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch["features"])
        loss = self._loss(out, batch["label"])
        # Accumulated on the device, logged once per epoch (on_train_epoch_end), not self.log
        # per step: see raylight.models.epoch_means.
        self.epoch_means.add("train", [loss], int(batch["label"].shape[0]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch["features"])
        label = batch["label"]
        loss = self._loss(out, label)
        if self.task == "classification":
            second = (out.argmax(-1) == label).float().mean()
        else:
            # Mean squared error here; the epoch's value is the square root of its mean.
            second = nn.functional.mse_loss(out, label.float())
        self.epoch_means.add("val", [loss, second], int(label.shape[0]))

    def _log_epoch(self, stage: str) -> None:
        means = self.epoch_means.pop(stage, self.trainer.strategy)
        if "val_rmse_std" in means:
            means["val_rmse_std"] = torch.sqrt(means["val_rmse_std"])
        for name, value in means.items():
            # Already the mean over every rank; sync_dist only keeps Lightning from warning
            # (a mean of equal values).
            self.log(name, value, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adamw(
            self.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=self.fused_adamw
        )
