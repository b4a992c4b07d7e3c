"""Training end to end on a real local Ray: DDP shards, bundle round trip, resume, fault retry,
and batch prediction — through the CLI where a user would use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import penguins_overrides
from helpers import mlflow_runs
from safetensors.torch import load_file
from typer.testing import CliRunner

from raylight import bundle
from raylight.cli import app
from raylight.config import load_train_config
from raylight.train import run_training

pytestmark = pytest.mark.integration


def _epochs(run_dir: str) -> list[dict]:
    df = pd.read_csv(Path(run_dir) / "logs" / "metrics.csv")
    return df.groupby("epoch").first().reset_index().to_dict("records")


def test_two_workers_learn_share_data_and_bundle_round_trips(
    ray_session, outdir: Path, tmp_path: Path
) -> None:
    shards = tmp_path / "shards"
    cb = (
        f"trainer.callbacks=[{{_target_:helpers.callbacks.ShardRecorder,out_dir:'{shards}'}},"
        f"{{_target_:helpers.callbacks.BroadcastCounter,out_dir:'{shards}'}}]"
    )
    before = set(ray_session._private.state.actors())
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            *penguins_overrides(
                outdir, "trainer.max_epochs=6", "scaling.num_workers=2", "run_name=ddp", cb
            ),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "epoch   6/6" in res.output and "bundle" in res.output
    run_dir = outdir / "runs" / "ddp"
    result = json.loads((run_dir / "result.json").read_text())

    # loss decreases; metrics beat the trivial (majority-class) baseline
    epochs = _epochs(str(run_dir))
    losses = (
        pd.read_csv(run_dir / "logs" / "metrics.csv")
        .dropna(subset=["train_loss"])["train_loss"]
        .tolist()
    )
    assert len(epochs) == 6 and losses[-1] < losses[0] * 0.8
    test = result["test_metrics"]
    assert test["accuracy"] > test["baseline_accuracy"] + 0.2

    # both workers received disjoint, equal shards covering the train split
    per_rank = {
        r: [json.loads(line) for line in (shards / f"rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    }
    rows0, rows1 = per_rank[0][0]["rows"], per_rank[1][0]["rows"]
    assert rows0 > 0 and rows0 == rows1
    assert rows0 + rows1 <= result["data_summary"]["split_rows"]["train"]

    # No per-step collective beyond DDP's own: Lightning's SIGTERM broadcast is skipped (its
    # handler cannot be set in Ray Train's training thread, so it could only ever send "no").
    for r in (0, 1):
        counted = json.loads((shards / f"broadcasts{r}.json").read_text())
        assert counted["steps"] > 0 and counted["broadcasts"] < counted["steps"], counted

    # the bundle predicts exactly what the checkpointed in-memory model predicts
    b = bundle.load(result["bundle_path"])
    ckpt = load_file(str(Path(result["checkpoint_path"]) / "model.safetensors"))
    model = bundle.build_model(b.manifest["model"]["target"], b.manifest["model"]["init_args"])
    model.load_state_dict(ckpt)
    model.eval()
    raw = pd.read_csv(Path(b.manifest["lineage"]["data_sources"][0])).dropna()
    feats, _errors = b.encode(raw)
    with torch.no_grad():
        expected = torch.softmax(model(torch.tensor(feats)), -1).numpy()
    got = b.predict(raw)[[f"proba_{c}" for c in b.classes]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert b.manifest["lineage"]["data_fingerprint"].startswith("sha256:")
    assert b.manifest["metrics"]["test"]["accuracy"] == pytest.approx(test["accuracy"])

    # One MLflow run for the job, logged once per epoch (rank 0's report, not one per worker),
    # with the flattened config, lineage tags and the bundle + config as artifacts.
    (run,) = mlflow_runs.runs(outdir, name="ddp")
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    assert [s for s, _ in mlflow_runs.history(outdir, rid, "val_loss")] == list(range(6))
    assert run.data.params["model.hidden_dims"] == "[32, 32]"
    assert run.data.params["scaling.num_workers"] == "2"
    tags = run.data.tags
    assert tags["raylight.data_fingerprint"] == b.manifest["lineage"]["data_fingerprint"]
    assert tags["raylight.num_workers"] == "2" and tags["raylight.version.ray"]
    assert tags["raylight.loop"] == "trainer"  # auto: Trainer callbacks are set
    assert "raylight.git_commit" in tags
    assert run.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert {"bundle", "config.yaml", "data_summary.json"} <= mlflow_runs.artifacts(outdir, rid)
    assert b.manifest["lineage"]["tracking"]["mlflow"] == rid  # bundle → run
    assert result["tracking"]["mlflow"]["run_id"] == rid

    # The run's Ray Train actors ran, but no preemption watcher: nothing drains the node of an
    # embedded cluster (cluster.preemption_watcher=null).
    ray = ray_session
    classes = {
        a["ActorClassName"] for k, a in ray._private.state.actors().items() if k not in before
    }
    assert "TrainController" in classes and "RayTrainWorker" in classes, classes
    assert "PreemptionWatcher" not in classes, classes
    # The cached penguins splits went through the object store (data.handoff=auto): no dataset
    # manager or split coordinator was started for them.
    assert not {"DatasetManager", "SplitCoordinator"} & classes, classes

    # batch predict through the CLI: one output row per input row, id column carried
    inp = tmp_path / "in.csv"
    raw_all = pd.read_csv(Path(b.manifest["lineage"]["data_sources"][0]))
    raw_all.insert(0, "penguin_id", [f"p{i}" for i in range(len(raw_all))])
    raw_all.to_csv(inp, index=False)
    out = tmp_path / "preds.csv"
    res = runner.invoke(
        app,
        [
            "predict",
            f"bundle={result['bundle_path']}",
            f"input={inp}",
            f"output={out}",
            "id_column=penguin_id",
            "num_actors=1",
        ],
    )
    assert res.exit_code == 0, res.output
    preds = pd.read_csv(out)
    assert len(preds) == len(raw_all)
    assert sorted(preds["penguin_id"]) == sorted(raw_all["penguin_id"])
    assert preds["error"].notna().sum() == 2  # the two rows without measurements
    assert "2 row(s) broke the contract" in res.output


def test_resume_continues_from_the_checkpoint_epoch(ray_session, outdir: Path) -> None:
    cfg = load_train_config(
        penguins_overrides(outdir, "trainer.max_epochs=2", "scaling.num_workers=1", "run_name=res")
    )
    first = run_training(cfg)
    assert first.epochs == 2
    runner = CliRunner()
    res = runner.invoke(app, ["train", f"resume={first.run_dir}", "trainer.max_epochs=4"])
    assert res.exit_code == 0, res.output
    assert "epoch   3/4" in res.output and "epoch   4/4" in res.output
    assert "epoch   1/4" not in res.output  # nothing re-trained
    result = json.loads((Path(first.run_dir) / "result.json").read_text())
    assert result["epochs"] == 2 and result["metrics"]["epoch"] >= 2
    # The resumed job continues its tracking run: one run, every epoch once.
    (run,) = mlflow_runs.runs(outdir, name="res")
    assert run.info.run_id == first.tracking["mlflow"]["run_id"]
    assert run.info.status == "FINISHED"
    steps = [s for s, _ in mlflow_runs.history(outdir, run.info.run_id, "val_loss")]
    assert steps == [0, 1, 2, 3]
    # The driver's epoch log continues across resume= too: the first run's rows are kept.
    epochs = pd.read_csv(Path(first.run_dir) / "logs" / "epochs.csv")
    assert list(epochs["epoch"]) == [0, 1, 2, 3]


def test_killed_worker_is_retried_and_the_run_completes(
    ray_session, outdir: Path, tmp_path: Path
) -> None:
    """On the Fabric loop (DDP through Ray Train, Fabric callbacks), fed by Ray Data's split
    (data.handoff=ray_data); the Trainer's DDP path, fed through the object store, is the
    two-worker test's."""
    import ray

    marker = tmp_path / "killed.json"
    shards = tmp_path / "shards"
    cb = (
        f"trainer.callbacks=[{{_target_:helpers.callbacks.FabricKillOnce,rank:1,step:5,"
        f"marker:'{marker}'}},{{_target_:helpers.callbacks.FabricShardRecorder,out_dir:'{shards}'}}]"
    )
    cfg = load_train_config(
        penguins_overrides(
            outdir,
            "trainer.max_epochs=4",
            "scaling.num_workers=2",
            "trainer.max_failures=1",
            "trainer.loop=fabric",
            "data.handoff=ray_data",
            "run_name=fault",
            cb,
        )
    )
    before = set(ray._private.state.actors())
    res = run_training(cfg)
    classes = {
        a["ActorClassName"] for k, a in ray._private.state.actors().items() if k not in before
    }
    assert {"DatasetManager", "SplitCoordinator"} <= classes, classes
    assert marker.exists(), "the fault was never injected"
    # Both DDP ranks trained equal, disjoint shards (the first attempt's epochs included).
    per_rank = {r: (shards / f"rank{r}.jsonl").read_text().splitlines() for r in (0, 1)}
    rows = [[json.loads(line)["rows"] for line in per_rank[r]] for r in (0, 1)]
    assert rows[0][-1] > 0 and rows[0][-1] == rows[1][-1]
    assert rows[0][-1] * 2 <= res.data_summary["split_rows"]["train"]
    killed = json.loads(marker.read_text())
    assert killed["epoch"] >= 1  # a checkpoint existed to resume from
    assert res.metrics["epoch"] == 3  # finished all 4 epochs
    assert res.test_metrics["accuracy"] > res.test_metrics["baseline_accuracy"]
    # The retry stays one tracking run; no epoch logged twice.
    (run,) = mlflow_runs.runs(outdir, name="fault")
    assert run.info.status == "FINISHED"
    assert run.data.tags["raylight.loop"] == "fabric"
    steps = [s for s, _ in mlflow_runs.history(outdir, run.info.run_id, "val_loss")]
    assert steps == [0, 1, 2, 3]
    # The driver's epoch log keeps every reported epoch across the retry, once, with the
    # values MLflow has (the workers' metrics.csv belongs to the last attempt only).
    epochs = pd.read_csv(Path(res.run_dir) / "logs" / "epochs.csv")
    assert list(epochs["epoch"]) == [0, 1, 2, 3]
    logged = dict(mlflow_runs.history(outdir, run.info.run_id, "val_loss"))
    assert epochs["val_loss"].tolist() == pytest.approx([logged[e] for e in range(4)])


@pytest.mark.slow  # two full trainings (~40 s); determinism rarely regresses: make test-all
def test_same_seed_same_worker_count_reproduces_the_run(ray_session, outdir: Path) -> None:
    runs = []
    for name in ("seed-a", "seed-b"):
        cfg = load_train_config(
            penguins_overrides(
                outdir,
                "trainer.max_epochs=2",
                "scaling.num_workers=1",
                f"run_name={name}",
                "trainer.deterministic=true",
            )
        )
        runs.append(run_training(cfg))
    a, b = runs
    assert a.metrics["val_loss"] == pytest.approx(b.metrics["val_loss"], rel=1e-6)
    assert a.test_metrics == pytest.approx(b.test_metrics, rel=1e-6)


def test_regression_target_profiler_and_sparse_checkpoints(
    ray_session, outdir: Path, tmp_path: Path
) -> None:
    """A regression target on the Trainer loop (a profiler makes auto pick it), with
    trainer.checkpoint_every_n_epochs=3 over 8 epochs: metrics for all 8, checkpoints at the
    3rd, 6th and last; the bundle's weights come from a checkpointed epoch. (One run for the
    three: each run's worker start-up is ~20 s of this machine's test time.)"""
    cfg = load_train_config(
        penguins_overrides(
            outdir, "data.target=body_mass_g", "data.task=regression", "trainer.max_epochs=8", "scaling.num_workers=1",
            "run_name=reg", "model.lr=0.02", "trainer.profiler=simple",
            "trainer.checkpoint_every_n_epochs=3", "trainer.num_checkpoints=5",
        )
    )  # fmt: skip
    res = run_training(cfg)
    assert res.epochs == 8
    epochs = pd.read_csv(Path(res.run_dir) / "logs" / "epochs.csv")
    assert list(epochs["epoch"]) == list(range(8))
    saved = sorted(p.name for p in Path(res.run_dir).rglob("checkpoint_epoch=*") if p.is_dir())
    assert saved == ["checkpoint_epoch=0002", "checkpoint_epoch=0005", "checkpoint_epoch=0007"]
    result = json.loads((Path(res.run_dir) / "result.json").read_text())
    assert Path(result["checkpoint_path"]).name in saved
    # trainer.profiler: Lightning's per-hook report from the worker, in the run's logs.
    assert "run_training_batch" in (Path(res.run_dir) / "logs" / "fit-profile.txt").read_text()
    t = res.test_metrics
    assert t["rmse"] < 0.75 * t["baseline_rmse"] and t["r2"] > 0.4
    b = bundle.load(res.bundle_path)
    raw = pd.DataFrame({"species": ["Gentoo"], "island": ["Biscoe"], "bill_length_mm": [47.0], "bill_depth_mm": [15.0],
                        "flipper_length_mm": [217.0], "sex": ["male"]})  # fmt: skip
    pred = b.predict(raw)["prediction"][0]
    assert 3500 < pred < 7000  # grams, decoded from the standardized target
