"""A tiny real bundle (two features, untrained MLP) for tests that need one without training."""

from __future__ import annotations

from pathlib import Path

import torch

from raylight import bundle
from raylight.data.preprocess import Preprocessor
from raylight.models.tabular import TabularMLP

FEATURES = [{"name": "x", "dtype": "float", "nullable": False, "min": None, "max": None, "categories": None},
            {"name": "c", "dtype": "category", "nullable": False, "min": None, "max": None, "categories": ["a", "b"]}]  # fmt: skip


def write_tiny(path: Path) -> TabularMLP:
    """Write the bundle at ``path``; return the model it holds."""
    torch.manual_seed(0)
    pre = Preprocessor(
        numeric={"x": {"mean": 1.0, "std": 2.0, "nullable": False}},
        categorical={"c": ["a", "b", "__other__"]},
        target="y",
        classes=["no", "yes"],
        feature_order=["x", "c"],
    )
    args = {
        "input_dim": pre.num_features,
        "output_dim": 2,
        "task": "classification",
        "hidden_dims": [8],
    }
    model = TabularMLP(**args)
    manifest = {
        "model": {"target": "raylight.models.tabular.TabularMLP", "init_args": args},
        "task": "classification",
        "classes": ["no", "yes"],
        "input_schema": {
            "features": FEATURES,
            "id_column": None,
            "target": "y",
            "strict_categories": False,
        },
        "preprocessor": pre.to_dict(),
        "reference": {},
        "config": {},
        "lineage": {"data_fingerprint": "sha256:x"},
        "metrics": {},
    }
    bundle.write(str(path), model.state_dict(), manifest)
    return model
