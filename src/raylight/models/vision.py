"""A small convolutional network for image classification (digits, MNIST-size images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raylight.models.tabular import TabularMLP


class ImageCNN(TabularMLP):
    """Conv blocks (conv 3x3 → batch norm → ReLU → 2x2 max-pool) → global average pool → head.

    Takes the preprocessor's encoded vector of one image column (standardized pixels, C*H*W,
    row-major) and reshapes it, so batches, the bundle, batch prediction and serving are the same
    as for tabular models. Training, validation metrics and the optimizer are
    :class:`TabularMLP`'s (``val_loss``, ``val_acc``).

    Args:
        input_dim: C*H*W (set from the data).
        output_dim: Number of classes (set from the data).
        task: Must be ``classification`` (set from the data).
        image_shape: [C, H, W] of the image column (set from the data).
        channels: Output channels of each conv block (a block pools only while the map is ≥ 2).
        hidden_dim: Width of the hidden layer of the head (0: none).
        dropout: Dropout before the last layer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        fused_adamw: See :class:`~raylight.models.tabular.TabularMLP`.
    """

    INJECTED_ARGS = ("input_dim", "output_dim", "task", "image_shape")
    REPORTED_METRICS = {"classification": ("val_acc",)}

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        task: str = "classification",
        image_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (16, 32),
        hidden_dim: int = 64,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        fused_adamw: bool = True,
    ) -> None:
        if task != "classification":
            raise ValueError("ImageCNN is a classifier (data.task=classification)")
        c, h, w = (int(x) for x in image_shape)
        if c * h * w != input_dim:
            raise ValueError(
                f"image_shape {list(image_shape)} holds {c * h * w} values but the data has "
                f"{input_dim} features: an ImageCNN needs exactly one image column as its input"
            )
        # The MLP part of the parent is not used: build it empty, then replace the network.
        super().__init__(
            input_dim,
            output_dim,
            task,
            hidden_dims=(),
            dropout=0.0,
            lr=lr,
            weight_decay=weight_decay,
            fused_adamw=fused_adamw,
        )
        self.save_hyperparameters()
        self.image_shape = (c, h, w)
        blocks: list[nn.Module] = []
        width, size = c, min(h, w)
        for out in channels:
            blocks += [
                nn.Conv2d(width, int(out), 3, padding=1),
                nn.BatchNorm2d(int(out)),
                nn.ReLU(),
            ]
            if size >= 4:
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            width = int(out)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden_dim:
            head += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*blocks, *head)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.reshape(-1, *self.image_shape))
