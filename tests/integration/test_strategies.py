"""Training strategies on a real local Ray with CPU workers (gloo): ``trainer.strategy=ddp`` and
``fsdp`` with two workers, ``trainer.compile`` with one; each bundle loads strictly into a
plain, uncompiled model. Plus the strategy choice itself, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import penguins_overrides
from safetensors.torch import load_file

from raylight import bundle
from raylight.config import load_train_config
from raylight.train import CKPT_NAME, WEIGHTS_NAME, TrainResult, _parallel_strategy, run_training

pytestmark = pytest.mark.integration


def _train(outdir: Path, probe: Path, *extra: str) -> TrainResult:
    cb = f"trainer.callbacks=[{{_target_:helpers.strategy.StrategyRecorder,out_dir:'{probe}'}}]"
    cfg = load_train_config(penguins_overrides(outdir, "tracking=csv", cb, *extra))
    return run_training(cfg)


def _probes(probe: Path, ranks: int) -> list[dict]:
    return [json.loads((probe / f"rank{r}.json").read_text()) for r in range(ranks)]


def _train_losses(run_dir: str) -> list[float]:
    df = pd.read_csv(Path(run_dir) / "logs" / "metrics.csv")
    return df.dropna(subset=["train_loss"])["train_loss"].tolist()


def _raw_rows(b: bundle.Bundle) -> pd.DataFrame:
    return pd.read_csv(Path(b.manifest["lineage"]["data_sources"][0])).dropna()


def _assert_bundle_serves(res: TrainResult, learned: bool = True) -> bundle.Bundle:
    """The bundle loads strictly into a fresh model and predicts the known classes (better
    than the majority class, when ``learned``)."""
    b = bundle.load(res.bundle_path)
    out = b.predict(_raw_rows(b))
    assert out["error"].isna().all()
    assert set(out["prediction"]) <= set(b.classes)
    probas = out[[f"proba_{c}" for c in b.classes]].to_numpy()
    np.testing.assert_allclose(probas.sum(axis=1), 1.0, rtol=1e-5)
    if learned:
        assert res.test_metrics["accuracy"] > res.test_metrics["baseline_accuracy"]
    return b


# Slow: 2-worker DDP training is also the default path of test_train's two-worker test.
@pytest.mark.slow
def test_ddp_strategy_two_workers(ray_session, outdir: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    res = _train(
        outdir, probe, "trainer.strategy=ddp", "scaling.num_workers=2", "trainer.max_epochs=2",
        "run_name=ddp",
    )  # fmt: skip
    ranks = _probes(probe, 2)
    assert {r["strategy"] for r in ranks} == {"RayDDPStrategy"}
    assert all(r["local_params"] == r["full_params"] for r in ranks)  # every rank a full copy
    losses = _train_losses(res.run_dir)
    assert len(losses) == 2 and losses[-1] < losses[0]
    _assert_bundle_serves(res)


# Slow (~80 s on 2 CPUs): FSDP over gloo on CPU is a GPU strategy's rehearsal; its config checks
# stay in the default run (tests/unit/test_config.py), the GPU run in scripts/gpu_strategies_check.py.
@pytest.mark.slow
def test_fsdp_strategy_shards_bundles_full_weights_and_resumes(
    ray_session, outdir: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "probe"
    # Submodules over 300 parameters get their own FSDP unit: nested wrappers whose names
    # must not leak into the bundle's or the checkpoint's keys.
    fsdp = ["trainer.strategy=fsdp", "trainer.fsdp.min_params_to_wrap=300", "scaling.num_workers=2"]
    res = _train(outdir, probe, *fsdp, "trainer.max_epochs=2", "run_name=fsdp")

    # Really sharded: each rank holds part of the parameters, together all of them.
    ranks = _probes(probe, 2)
    assert {r["strategy"] for r in ranks} == {"RaylightFSDPStrategy"}
    assert {r["wrapper"] for r in ranks} == {"FullyShardedDataParallel"}
    full = ranks[0]["full_params"]
    assert all(0 < r["local_params"] < full for r in ranks)
    assert sum(r["local_params"] for r in ranks) == full
    losses = _train_losses(res.run_dir)
    assert len(losses) == 2 and losses[-1] < losses[0]

    # The bundle holds the gathered, unsharded weights under the plain model's keys, equal to
    # what one process reads from the Lightning checkpoint, and predicts like that model.
    b = _assert_bundle_serves(res)
    ckpt_dir = Path(str(res.checkpoint_path))
    weights = load_file(str(ckpt_dir / WEIGHTS_NAME))
    ckpt = torch.load(ckpt_dir / CKPT_NAME, map_location="cpu", weights_only=True)
    plain = bundle.build_model(b.manifest["model"]["target"], b.manifest["model"]["init_args"])
    assert set(weights) == set(ckpt["state_dict"]) == set(plain.state_dict())
    for key, tensor in weights.items():
        assert tensor.shape == plain.state_dict()[key].shape
        torch.testing.assert_close(tensor, ckpt["state_dict"][key], rtol=0, atol=0)
    plain.load_state_dict(ckpt["state_dict"], strict=True)
    plain.eval()
    raw = _raw_rows(b)
    feats, _ = b.encode(raw)
    with torch.no_grad():
        expected = torch.softmax(plain(torch.tensor(feats)), -1).numpy()
    got = b.predict(raw)[[f"proba_{c}" for c in b.classes]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # Resume under FSDP: the full checkpoint (weights and optimizer state) is loaded back into
    # the sharded model and training continues at the next epoch.
    resumed = run_training(
        load_train_config(
            penguins_overrides(
                outdir, "tracking=csv", *fsdp, f"resume={res.run_dir}", "trainer.max_epochs=3"
            )
        )
    )
    assert resumed.epochs == 1 and resumed.metrics["epoch"] == 2
    assert resumed.metrics["step"] > res.metrics["step"]
    bundle.load(resumed.bundle_path)


@pytest.mark.slow  # keeps `make test` near 15 min; runs in `make test-all`
def test_fsdp_partial_bundle_is_cut_from_the_gathered_weights(
    ray_session, outdir: Path, tmp_path: Path
) -> None:
    """A model bundling only its trained part (``bundle_state_dict``, as LoRA does) under FSDP:
    the part is picked from the gathered full weights, and loads onto a fresh base."""
    res = _train(
        outdir, tmp_path / "probe", "model._target_=helpers.strategy.HeadOnlyMLP",
        "trainer.strategy=fsdp", "trainer.fsdp.min_params_to_wrap=300", "scaling.num_workers=2",
        "trainer.max_epochs=2", "run_name=partial",
    )  # fmt: skip
    ckpt_dir = Path(str(res.checkpoint_path))
    weights = load_file(str(ckpt_dir / WEIGHTS_NAME))
    full = torch.load(ckpt_dir / CKPT_NAME, map_location="cpu", weights_only=True)["state_dict"]
    assert set(weights) == {"net.6.weight", "net.6.bias"}
    for key, tensor in weights.items():
        torch.testing.assert_close(tensor, full[key], rtol=0, atol=0)
    # Two epochs of a head over a random frozen base need not beat the majority class.
    b = _assert_bundle_serves(res, learned=False)
    torch.testing.assert_close(b.model.state_dict(), full, rtol=0, atol=0)  # base + trained head


@pytest.mark.slow  # keeps `make test` near 15 min; runs in `make test-all`
def test_compile_trains_and_bundle_loads_uncompiled(
    ray_session, outdir: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "probe"
    res = _train(
        outdir, probe, "trainer.compile=true", "scaling.num_workers=1", "trainer.max_epochs=2",
        "run_name=compiled",
    )  # fmt: skip
    (rank,) = _probes(probe, 1)
    assert rank["compiled"] and rank["strategy"] == "SingleDeviceStrategy"
    weights = load_file(str(Path(str(res.checkpoint_path)) / WEIGHTS_NAME))
    assert not [k for k in weights if "_orig_mod" in k]
    b = _assert_bundle_serves(res)
    assert b.model._compiled_call_impl is None  # served by a plain model


def test_strategy_choice(tmp_path: Path) -> None:
    """auto: DDP only with several workers; ddp/fsdp whenever there is a process group; none
    without one (an in-process sweep trial), with a warning when one was asked for."""
    import torch.distributed as dist

    with pytest.warns(UserWarning, match="no process group"):
        assert _parallel_strategy({"strategy": "fsdp"}, world_size=1) is None
    assert _parallel_strategy({"strategy": "auto"}, world_size=1) is None
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert _parallel_strategy({"strategy": "auto"}, world_size=1) is None
        assert _parallel_strategy({"strategy": "auto"}, world_size=2) == "ddp"
        assert _parallel_strategy({"strategy": "ddp"}, world_size=1) == "ddp"
        assert _parallel_strategy({"strategy": "fsdp"}, world_size=2) == "fsdp"
    finally:
        dist.destroy_process_group()
