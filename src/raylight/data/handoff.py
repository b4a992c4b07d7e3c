"""Small cached splits handed to the training workers through Ray's object store.

Training data that fits a worker's memory (``data.cache=true`` and the split within
``data.resident_max_mb``) is batched from memory anyway after the first epoch
(``train._TorchBatches``). Handing those splits to Ray Train as Ray Datasets still costs every
run a dataset-manager actor (a fresh process importing Ray Train and Ray Data, created by the
controller only after the worker group is up; each worker's first ``get_dataset_shard`` waits
for it), split coordinators when there are several workers, and a streaming executor for the
first pass. ``data.handoff=auto`` puts the encoded arrays in the object store once, from the
driver, and each worker takes its rank's share from there: the same rows, the same dtypes, an
equal share per rank (as ``streaming_split(equal=True)``), a seeded full permutation every
epoch from the first. Larger or streamed data keeps Ray Data's streaming feed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylight.config import DataConfig
    from raylight.data.pipeline import PreparedData

#: The splits a training run feeds its workers.
SPLITS = ("train", "val")


@dataclass(frozen=True)
class ResidentSplit:
    """One encoded split in the object store: ``ref`` holds ``(features, labels)`` arrays.

    Attributes:
        ref: Object ref of the ``(features, labels)`` numpy arrays; owned by the driver that
            put it, so it lives as long as the run's driver.
        rows: Rows in the split.
        nbytes: Bytes of both arrays.
    """

    ref: Any
    rows: int
    nbytes: int


def label_dtype(task: str) -> str:
    """The label dtype training batches carry (as ``iter_torch_batches`` is told)."""
    return "int64" if task == "classification" else "float32"


def applies(data: DataConfig) -> bool:
    """Whether ``data.handoff`` may hand splits over at all (their size is checked later)."""
    return data.handoff == "auto" and data.cache and data.resident_max_mb > 0


def split_arrays(ds: Any, task: str) -> tuple[Any, Any] | None:
    """A Ray Dataset's ``features``/``label`` columns as one contiguous array each (None when
    the split has no rows).

    Features become float32 and labels :func:`label_dtype`: what the Ray Data feed's
    ``iter_torch_batches`` gives the model.
    """
    import numpy as np

    xs, ys = [], []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        xs.append(np.asarray(batch["features"], dtype=np.float32))
        ys.append(np.asarray(batch["label"], dtype=label_dtype(task)))
    if not xs:
        return None
    return np.concatenate(xs), np.concatenate(ys)


def hand_off(data: PreparedData, settings: DataConfig) -> PreparedData:
    """``data`` with its train and val splits put in the object store, when they qualify.

    They qualify under ``data.handoff=auto`` with ``data.cache=true`` when each split's size
    (Ray Data's own count, from the materialized blocks' metadata) fits
    ``data.resident_max_mb``; otherwise ``data`` comes back unchanged and the workers read
    Ray Datasets. Both splits go, or neither: a run with no Ray Dataset needs no dataset manager.
    An empty split stays with Ray Data too (what its feed does with no rows is the reference).
    """
    if not applies(settings) or data.resident is not None:
        return data
    import ray

    limit = settings.resident_max_mb * 2**20
    splits = {name: getattr(data, name) for name in SPLITS}
    if any(ds.size_bytes() > limit for ds in splits.values()):
        return data
    resident = {}
    for name, ds in splits.items():
        arrays = split_arrays(ds, settings.task)
        # Arrow's count can undercount a tensor column once it is float32 numpy.
        if arrays is None or arrays[0].nbytes + arrays[1].nbytes > limit:
            return data
        x, y = arrays
        resident[name] = ResidentSplit(ray.put((x, y)), len(y), x.nbytes + y.nbytes)
    return dataclasses.replace(data, resident=resident)


def take_shard(split: ResidentSplit, rank: int, world_size: int, use_gpu: bool) -> tuple[Any, Any]:
    """This rank's share of a handed-over split as torch tensors (on the worker's GPU if any).

    Ranks take every ``world_size``-th row from their own offset, cut to the same length on
    every rank (``len // world_size``): DDP needs the same number of steps everywhere, and
    strided rows keep each share a sample of the whole split, whatever its row order.
    """
    import ray
    import torch

    x, y = ray.get(split.ref)
    if world_size > 1:
        n = len(y) // world_size
        x, y = x[rank::world_size][:n], y[rank::world_size][:n]
    # Copies: the object store's buffers are read-only, and a copy lets them go.
    return to_worker_device(torch.tensor(x), torch.tensor(y), use_gpu)


def to_worker_device(x: Any, y: Any, use_gpu: bool) -> tuple[Any, Any]:
    """Resident tensors where the worker trains: its GPU when it has one, else as they are."""
    import torch

    if use_gpu and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
        return x.to(dev), y.to(dev)
    return x, y
