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


# ------------------------------------------------ splits handed over through the object store


def _prepared(train: Any, val: Any) -> Any:
    from raylight.data.pipeline import PreparedData

    return PreparedData(train=train, val=val, test=val, preprocessor=None, summary=None,
                        reference={})  # type: ignore[arg-type]  # fmt: skip


def _data_config(**over: Any) -> Any:
    from raylight.config import DataConfig

    return DataConfig.model_validate({"name": "t", "path": "unused.csv", "target": "label", **over})


def test_small_cached_splits_are_handed_over_as_arrays(ray_session: Any) -> None:
    from raylight.data.handoff import hand_off

    data = hand_off(_prepared(_dataset().materialize(), _dataset().materialize()), _data_config())
    assert data.resident is not None and set(data.resident) == {"train", "val"}
    split = data.resident["train"]
    x, y = ray_session.get(split.ref)
    assert split.rows == ROWS and x.dtype == np.float32 and y.dtype == np.int64
    assert x.shape == (ROWS, 3) and split.nbytes == x.nbytes + y.nbytes
    assert sorted(x[:, 0].tolist()) == [3.0 * i for i in range(ROWS)]
    # Regression labels keep the float32 Ray Data's feed gives them.
    reg = hand_off(_prepared(_dataset(), _dataset()), _data_config(task="regression"))
    assert ray_session.get(reg.resident["val"].ref)[1].dtype == np.float32


@pytest.mark.parametrize(
    "over", [{"handoff": "ray_data"}, {"cache": False}, {"resident_max_mb": 0}]
)
def test_splits_stay_ray_datasets_when_handoff_is_off(ray_session: Any, over: dict) -> None:
    from raylight.data.handoff import hand_off

    data = _prepared(_dataset(), _dataset())
    assert hand_off(data, _data_config(**over)).resident is None


def test_splits_beyond_resident_max_mb_or_empty_stay_ray_datasets(ray_session: Any) -> None:
    from raylight.data.handoff import hand_off

    empty = _dataset().limit(0).materialize()
    assert hand_off(_prepared(_dataset(), empty), _data_config()).resident is None

    # 1 MB limit: a 1.2 MB val split keeps both splits in Ray Data (both go, or neither).
    big = ray_session.data.from_numpy(np.zeros((100_000, 3), dtype=np.float32)).map_batches(
        lambda b: {"features": b["data"], "label": np.zeros(len(b["data"]), dtype=np.int64)}
    )
    data = hand_off(_prepared(_dataset(), big.materialize()), _data_config(resident_max_mb=1))
    assert data.resident is None


def test_ranks_take_equal_disjoint_strided_shares_batched_from_the_first_epoch(
    ray_session: Any,
) -> None:
    from raylight.data.handoff import hand_off
    from raylight.train import resident_loaders

    data = hand_off(_prepared(_dataset(), _dataset()), _data_config())
    world = 3
    per_rank = [resident_loaders(data.resident, _config(), r, world) for r in range(world)]
    seen: list[float] = []
    first_epochs = []
    for train, val in per_rank:
        sizes1, rows1 = _epoch(train)
        sizes2, rows2 = _epoch(train)
        # Every epoch, the first included, batches this rank's share from memory, reshuffled.
        assert sizes1 == sizes2 == [BATCH] * 5 + [ROWS // world - 5 * BATCH]
        assert sorted(rows1) == sorted(rows2) and rows1 != rows2
        val_rows = _epoch(val)[1]
        assert val_rows == _epoch(val)[1] == sorted(val_rows)  # validation: file order
        seen += rows1
        first_epochs.append(rows1)
    # Equal shares (DDP needs equal steps), disjoint, together every row but the remainder.
    assert len(seen) == len(set(seen)) == world * (ROWS // world)
    # The same seed gives the same order in a new run.
    again = resident_loaders(data.resident, _config(), 0, world)[0]
    assert _epoch(again)[1] == first_epochs[0]
