"""Epoch means kept on the device: weighted like Lightning's on_epoch logging, exact across
ranks (a real two-process gloo group), and what the model logs per epoch."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.utilities.distributed import _sync_ddp_if_available
from lightning.pytorch.strategies import SingleDeviceStrategy

from raylight.models.epoch_means import EpochMeans
from raylight.models.tabular import TabularMLP
from raylight.net import free_port


def test_weighted_mean_per_stage_and_reset() -> None:
    m = EpochMeans({"train": ("loss",), "val": ("loss", "acc")})
    strategy = SingleDeviceStrategy(torch.device("cpu"))
    m.add("train", [torch.tensor(1.0, requires_grad=True) * 1], 3)
    m.add("train", [torch.tensor(4.0)], 1)
    m.add("val", [torch.tensor(2.0), torch.tensor(0.5)], 2)
    train = m.pop("train", strategy)
    assert train["loss"].item() == pytest.approx((1.0 * 3 + 4.0 * 1) / 4)
    assert not train["loss"].requires_grad  # no graph kept alive across steps
    val = m.pop("val", strategy)
    assert val["loss"].item() == pytest.approx(2.0) and val["acc"].item() == pytest.approx(0.5)
    # Popped: the next epoch starts from zero; a stage without batches logs nothing.
    assert m.pop("train", strategy) == {}


class _Gloo:
    """What DDPStrategy.reduce does on a CPU process group (Lightning's own sync function)."""

    root_device = torch.device("cpu")

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        return _sync_ddp_if_available(tensor, None, reduce_op=reduce_op)


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        m = EpochMeans({"train": ("loss",), "val": ("loss",)})
        # Rank 0: 3 rows at 1.0; rank 1: 1 row at 5.0 -> (3 + 5) / 4 = 2.0, not (1 + 5) / 2.
        if rank == 0:
            m.add("train", [torch.tensor(1.0)], 3)
        else:
            m.add("train", [torch.tensor(5.0)], 1)
        # Only rank 1 saw a validation batch: rank 0 still joins the collective.
        if rank == 1:
            m.add("val", [torch.tensor(7.0)], 2)
        g = _Gloo()
        train, val = m.pop("train", g), m.pop("val", g)
        with open(os.path.join(out, f"rank{rank}"), "w") as f:
            f.write(f"{train['loss'].item()} {val['loss'].item()}")
    finally:
        dist.destroy_process_group()


def test_means_are_exact_over_ranks_with_unequal_batches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mp.start_processes(_rank, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        train, val = map(float, (tmp_path / f"rank{rank}").read_text().split())
        assert train == pytest.approx(2.0) and val == pytest.approx(7.0)


def test_model_logs_epoch_means_once_per_epoch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The values a fit logs are the row-weighted means of the per-batch losses and accuracies."""
    torch.manual_seed(0)
    x, y = torch.randn(50, 4), torch.randint(0, 2, (50,))
    # Uneven batches (20, 20, 10): a mean of batch means would differ from the row mean.
    batches = [{"features": x[i : i + 20], "label": y[i : i + 20]} for i in range(0, 50, 20)]
    model = TabularMLP(4, 2, dropout=0.0, lr=0.0)  # lr 0: the weights never change
    seen: list[dict[str, float]] = []

    class Grab(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    from lightning.pytorch.callbacks import Checkpoint

    class GrabAfterModule(Checkpoint, Grab):
        pass

    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[GrabAfterModule()],
        default_root_dir=str(tmp_path),
    )

    class Batches:  # an iterable, not a list: Lightning reads a list as several loaders
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(batches)

    trainer.fit(model, Batches(), Batches())
    with torch.no_grad():
        out = model(x)
    loss = torch.nn.functional.cross_entropy(out, y).item()
    acc = (out.argmax(-1) == y).float().mean().item()
    assert len(seen) == 2
    for metrics in seen:
        assert metrics["train_loss"] == pytest.approx(loss, rel=1e-5)
        assert metrics["val_loss"] == pytest.approx(loss, rel=1e-5)
        assert metrics["val_acc"] == pytest.approx(acc, rel=1e-6)
