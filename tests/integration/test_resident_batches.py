"""Resident training data (``data.resident_max_mb``): after one Ray Data pass, epochs batch from
memory — the same rows, the same batch sizes, a seeded shuffle — and only when the pass fits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from raylight.train import _TorchBatches

pytestmark = pytest.mark.integration

ROWS, BATCH = 1000, 64


def _config(**data: Any) -> dict[str, Any]:
    base = {"task": "classification", "batch_size": BATCH, "shuffle_buffer": 100,
            "cache": True, "resident_max_mb": 16}  # fmt: skip
    return {"seed": 7, "data": {**base, **data}, "scaling": {"use_gpu": False}}


def _dataset() -> Any:
    import ray

    x = np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3)
    return ray.data.from_items(
        [{"features": x[i], "label": i % 2} for i in range(ROWS)], override_num_blocks=4
    )


def _epoch(loader: _TorchBatches) -> tuple[list[int], list[float]]:
    sizes, first = [], []
    for b in loader:
        assert b["features"].dtype == torch.float32 and b["label"].dtype == torch.long
        sizes.append(len(b["label"]))
        first += b["features"][:, 0].tolist()
    return sizes, first


def test_later_epochs_come_from_memory_with_the_same_rows(ray_session: Any) -> None:
    loader = _TorchBatches(_dataset(), _config(), shuffle=True)
    sizes1, rows1 = _epoch(loader)
    assert loader.resident is not None and len(loader.resident[0]) == ROWS
    sizes2, rows2 = _epoch(loader)
    sizes3, rows3 = _epoch(loader)
    assert sum(sizes1) == ROWS  # (Ray Data may cut a batch short at a block boundary)
    assert sizes2 == sizes3 == [BATCH] * (ROWS // BATCH) + [ROWS % BATCH]
    assert sorted(rows1) == sorted(rows2) == sorted(rows3) == [3.0 * i for i in range(ROWS)]
    assert rows2 != rows3  # a fresh permutation each epoch
    again = _TorchBatches(_dataset(), _config(), shuffle=True)
    _epoch(again)
    assert _epoch(again)[1] == rows2  # seeded: the same order in a new run
    # Validation (no shuffle) keeps the file order from memory too.
    val = _TorchBatches(_dataset(), _config(), shuffle=False)
    assert _epoch(val)[1] == _epoch(val)[1] == [3.0 * i for i in range(ROWS)]


@pytest.mark.parametrize(
    "data", [{"resident_max_mb": 0}, {"cache": False}, {"resident_max_mb": 0.01}]
)
def test_data_stays_in_ray_data_when_off_streaming_or_too_big(ray_session: Any, data: dict) -> None:
    if data.get("resident_max_mb") == 0.01:  # 10 KB: the 16 KB split does not fit
        cfg = _config()
        loader = _TorchBatches(_dataset(), cfg, shuffle=True)
        loader.resident_bytes = 10_000
    else:
        loader = _TorchBatches(_dataset(), _config(**data), shuffle=True)
    _epoch(loader)
    _epoch(loader)
    assert loader.resident is None
