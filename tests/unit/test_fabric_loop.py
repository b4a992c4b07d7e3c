"""The Fabric loop (``trainer.loop=fabric``) against Lightning's Trainer on the same module.

Both loops run in this process through ``train.fit_lightning`` with a recording session (the
interface Ray Train and Tune sessions implement): same seed, same batches, same module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from raylight.config import compose, load_train_config, resolve_loop
from raylight.models.tabular import TabularMLP
from raylight.train import CKPT_NAME, fit_lightning

N_FEATURES, N_CLASSES = 6, 3


class Batches:
    """Re-iterable dict batches, a seeded shuffle per epoch (what ``_TorchBatches`` yields)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bs: int, shuffle: bool) -> None:
        self.x, self.y, self.bs, self.shuffle = x, y, bs, shuffle
        self.epoch = 0

    def __iter__(self) -> Any:
        epoch = self.epoch
        self.epoch += 1
        order = torch.arange(len(self.y))
        if self.shuffle:
            order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(self.y), self.bs):
            idx = order[i : i + self.bs]
            yield {"features": self.x[idx], "label": self.y[idx]}


class Session:
    """Records reports and keeps each reported checkpoint directory."""

    rank = 0
    world_size = 1

    def __init__(self, keep: Path, checkpoint: str | None = None) -> None:
        self.keep = keep
        self.checkpoint = checkpoint
        self.metrics: list[dict[str, Any]] = []
        self.checkpoints: list[str] = []
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(200, N_FEATURES, generator=g)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0.5).long()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None, dir_name: Any) -> None:
        self.metrics.append(dict(metrics))
        if checkpoint_dir:
            dest = self.keep / f"ckpt{len(self.metrics) - 1}"
            shutil.copytree(checkpoint_dir, dest)
            self.checkpoints.append(str(dest))

    def get_checkpoint(self) -> Any:
        if self.checkpoint is None:
            return None
        from ray.train import Checkpoint

        return Checkpoint.from_directory(self.checkpoint)

    def loaders(self, config: dict[str, Any]) -> tuple[Any, Any]:
        bs = int(config["data"]["batch_size"])
        return Batches(self.x[:150], self.y[:150], bs, True), Batches(
            self.x[150:], self.y[150:], bs, False
        )


def _config(
    tmp: Path,
    *overrides: str,
    dropout: float = 0.1,
    target: str = "raylight.models.tabular.TabularMLP",
    **model: Any,
) -> dict[str, Any]:
    cfg = load_train_config(
        ["tracking=none", "data.batch_size=32", "trainer.max_epochs=4", *overrides]
    )
    plain = cfg.to_plain()
    args = dict(
        input_dim=N_FEATURES, output_dim=N_CLASSES, hidden_dims=[16, 8], dropout=dropout, lr=0.02
    )
    plain["_run"] = {
        "name": "t",
        "model_target": target,
        "model_args": {**args, **model},
        "logs_dir": str(tmp / "logs"),
        "init_checkpoint": None,
    }
    return plain


def _fit(
    tmp: Path, loop: str, *overrides: str, checkpoint: str | None = None, **kw: Any
) -> Session:
    keep = tmp / f"{loop}-{len(list(tmp.iterdir()))}"
    keep.mkdir()
    config = _config(tmp, f"trainer.loop={loop}", *overrides, **kw)
    session = Session(keep, checkpoint)
    fit_lightning(config, session)
    return session


def _curve(s: Session, key: str) -> list[float]:
    return [m[key] for m in s.metrics]


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.05"),
        ("trainer.gradient_clip_val=0.01", "trainer.gradient_clip_algorithm=value"),
        ("trainer.precision=bf16-true",),
        ("trainer.precision=bf16-mixed",),
    ],
    ids=["plain", "accumulate+clip-norm", "clip-value", "bf16-true", "bf16-mixed"],
)
def test_same_loss_curve_as_the_trainer(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    """At a fixed seed (dropout on) the two loops train the same weights, epoch by epoch."""
    trainer = _fit(tmp_path, "trainer", *overrides)
    fabric = _fit(tmp_path, "fabric", *overrides)
    for key in ("train_loss", "val_loss", "val_acc"):
        assert _curve(fabric, key) == pytest.approx(_curve(trainer, key), rel=1e-5), key
    assert _curve(fabric, "epoch") == [0, 1, 2, 3]
    assert _curve(fabric, "step") == _curve(trainer, "step")
    assert fabric.metrics[0]["model_params"] == trainer.metrics[0]["model_params"]
    # The curve moved: the comparison above is not between two untrained models.
    assert _curve(fabric, "train_loss")[-1] < _curve(fabric, "train_loss")[0]


def test_checkpoint_cadence_and_contents(tmp_path: Path) -> None:
    s = _fit(tmp_path, "fabric", "trainer.checkpoint_every_n_epochs=3")
    # Epoch 2 (every 3rd) and the last; each directory like the Trainer's.
    assert [Path(c).name for c in s.checkpoints] == ["ckpt2", "ckpt3"]
    assert sorted(os.listdir(s.checkpoints[-1])) == sorted(
        [CKPT_NAME, "model.safetensors", "metrics.json"]
    )
    ckpt = torch.load(Path(s.checkpoints[-1]) / CKPT_NAME, weights_only=True)
    assert (ckpt["epoch"], ckpt["raylight_loop"]) == (3, "fabric")
    assert ckpt["global_step"] == s.metrics[-1]["step"]


@pytest.mark.parametrize("first", ["fabric", "trainer"])
def test_resume_continues_the_run(tmp_path: Path, first: str) -> None:
    """Two epochs, then a resume to four: the same epochs 3-4 as an uninterrupted run, from
    the Fabric loop's own checkpoint and from the Trainer's. (No dropout: neither loop keeps
    the global RNG state in its checkpoints.)"""
    whole = _fit(tmp_path, "fabric", dropout=0.0)
    part = _fit(tmp_path, first, "trainer.max_epochs=2", dropout=0.0)
    rest = _fit(tmp_path, "fabric", checkpoint=part.checkpoints[-1], dropout=0.0)
    assert _curve(rest, "epoch") == [2, 3]
    assert _curve(rest, "step") == _curve(whole, "step")[2:]
    for key in ("train_loss", "val_loss"):
        assert _curve(rest, key) == pytest.approx(_curve(whole, key)[2:], rel=1e-5), key


def test_the_trainer_refuses_a_fabric_checkpoint(tmp_path: Path) -> None:
    part = _fit(tmp_path, "fabric", "trainer.max_epochs=1")
    with pytest.raises(ValueError, match=r"trainer\.loop=fabric"):
        _fit(tmp_path, "trainer", checkpoint=part.checkpoints[-1])


def test_mixed_precision_autocasts_the_step(tmp_path: Path) -> None:
    """bf16-mixed: training_step runs under CPU autocast in the Fabric loop as in the Trainer
    (Fabric's wrapper calls it directly in one process, outside its forward's context)."""
    seen: dict[str, list[bool]] = {"fabric": [], "trainer": []}

    orig = TabularMLP.training_step

    def spy(self: Any, batch: Any, i: int) -> Any:
        seen[current].append(torch.is_autocast_enabled("cpu"))
        return orig(self, batch, i)

    TabularMLP.training_step = spy  # type: ignore[method-assign]
    try:
        for current in ("trainer", "fabric"):
            _fit(tmp_path, current, "trainer.precision=bf16-mixed", "trainer.max_epochs=1")
    finally:
        TabularMLP.training_step = orig  # type: ignore[method-assign]
    assert seen["fabric"] and all(seen["fabric"]) and all(seen["trainer"])


class Count:
    """A Fabric callback: counts batches and records the hooks it sees."""

    def __init__(self) -> None:
        self.hooks: list[str] = []
        self.batches = 0

    def on_train_epoch_start(self, fabric: Any, module: Any, epoch: int) -> None:
        self.hooks.append(f"epoch_start {epoch}")

    def on_train_batch_end(self, fabric: Any, module: Any, outputs: Any, batch: Any,
                           batch_idx: int, epoch: int, step: int) -> None:  # fmt: skip
        self.batches += 1

    def on_train_epoch_end(self, fabric: Any, module: Any, epoch: int, metrics: Any) -> None:
        assert "val_loss" in metrics and "train_loss" in metrics
        self.hooks.append(f"epoch_end {epoch}")


COUNT: list[Count] = []


def make_count() -> Count:
    COUNT.append(Count())
    return COUNT[-1]


def test_fabric_callbacks_and_batch_limits(tmp_path: Path) -> None:
    cb = f"trainer.callbacks=[{{_target_: {__name__}.make_count}}]"
    s = _fit(tmp_path, "fabric", cb, "trainer.limit_train_batches=2", "trainer.max_epochs=2")
    count = COUNT[-1]
    assert count.batches == 4  # 2 epochs x 2 batches (of 5)
    assert count.hooks == ["epoch_start 0", "epoch_end 0", "epoch_start 1", "epoch_end 1"]
    assert _curve(s, "step") == [2, 4]


def test_a_trainer_callback_under_the_fabric_loop_is_refused(tmp_path: Path) -> None:
    cb = "trainer.callbacks=[{_target_: lightning.pytorch.callbacks.LearningRateMonitor}]"
    with pytest.raises(ValueError, match=r"Lightning Trainer callbacks.*LearningRateMonitor"):
        _fit(tmp_path, "fabric", cb)


@pytest.mark.parametrize(
    ("overrides", "loop"),
    [
        ((), "fabric"),
        (("trainer.callbacks=[{_target_: lightning.pytorch.callbacks.LearningRateMonitor}]",),
         "trainer"),
        (("trainer.profiler=simple",), "trainer"),
        (("trainer.strategy=fsdp",), "trainer"),
        (("trainer.loop=trainer",), "trainer"),
        (("trainer.loop=fabric", "trainer.strategy=ddp"), "fabric"),
        (("model=minilm",), "fabric"),
        # A user's own LightningModule: Fabric would not reduce its per-step self.log calls.
        (("model._target_=my_models.TabularNet",), "trainer"),
        (("model._target_=my_models.TabularNet", "trainer.loop=fabric"), "fabric"),
    ],
)  # fmt: skip
def test_auto_resolves_to_the_loop_the_config_can_run(
    overrides: tuple[str, ...], loop: str
) -> None:
    plain, _ = compose(list(overrides))
    target = plain["model"]["_target_"]
    assert resolve_loop(plain["trainer"], target) == loop
    if not any(o.startswith("model") for o in overrides):  # a config that validates as is
        assert load_train_config(list(overrides)).resolved_loop() == loop


def test_fabric_with_trainer_only_settings_fails_validation() -> None:
    from raylight.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_train_config(
            ["trainer.loop=fabric", "trainer.strategy=fsdp", "trainer.profiler=simple"]
        )
    text = str(exc.value)
    assert "trainer.strategy" in text and "trainer.profiler" in text


class LogsPerStep(TabularMLP):
    """A user's module in Lightning's usual style: ``self.log`` in every training step."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("step_loss", loss, on_step=False, on_epoch=True)
        return loss


def test_per_step_logging_under_the_fabric_loop_warns(tmp_path: Path) -> None:
    target = f"{__name__}.LogsPerStep"
    with pytest.warns(UserWarning, match=r"self\.log\(step_loss\) in a step"):
        s = _fit(tmp_path, "fabric", "trainer.max_epochs=1", target=target)
    assert "step_loss" in s.metrics[0]  # reported, as the last batch's value


class WithSchedulers(TabularMLP):
    """A per-step warm-up and a per-epoch decay: both scheduler intervals."""

    def configure_optimizers(self) -> Any:
        opt = super().configure_optimizers()
        warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 7))
        decay = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return [opt], [{"scheduler": warm, "interval": "step"}, decay]


def test_schedulers_step_as_under_the_trainer(tmp_path: Path) -> None:
    target = f"{__name__}.WithSchedulers"
    trainer = _fit(tmp_path, "trainer", target=target)
    fabric = _fit(tmp_path, "fabric", target=target)
    for key in ("train_loss", "val_loss"):
        assert _curve(fabric, key) == pytest.approx(_curve(trainer, key), rel=1e-5), key


class TwoOptimizers(TabularMLP):
    def configure_optimizers(self) -> Any:
        return [super().configure_optimizers(), torch.optim.SGD(self.parameters(), lr=0.1)], []


def test_several_optimizers_need_the_trainer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"runs one optimizer.*trainer\.loop=trainer"):
        _fit(tmp_path, "fabric", target=f"{__name__}.TwoOptimizers")
