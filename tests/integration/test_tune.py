"""Sweeps on a real local Ray: ASHA stops trials early without stalling the rest, the best config
retrains to the same metric, and a sweep whose driver is SIGKILLed resumes without rerunning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from raylight.cli import app
from raylight.config import load_train_config, load_tune_config
from raylight.train import run_training
from raylight.tune import run_tuning

pytestmark = pytest.mark.integration

SWEEP = ["experiment=penguins_mlp", "hparams_search=penguins_optuna", "cluster.auth_mode=disabled"]


def test_asha_sweep_completes_and_best_config_retrains(ray_session, outdir: Path) -> None:
    cfg = load_tune_config(
        [
            *SWEEP,
            f"output_dir={outdir}",
            "tune.name=asha",
            "tune.num_samples=6",
            "tune.scheduler.reduction_factor=2",
        ]
    )
    started = time.time()
    res = run_tuning(cfg)
    elapsed = time.time() - started
    t = res.trials
    assert len(t) == 6 and (t["status"] != "ERROR").all(), t
    # ASHA stopped at least one trial early, and the trials after it still ran (no stall).
    assert (t["status"] == "EARLY_STOPPED").sum() >= 1, t[["trial_id", "status", "epochs"]]
    assert (t["status"] == "COMPLETED").sum() >= 1
    assert elapsed < 240, f"sweep took {elapsed:.0f}s: stalled?"
    sweep = Path(res.sweep_dir)
    assert len(pd.read_parquet(sweep / "trials.parquet")) == 6 and (sweep / "trials.csv").is_file()
    assert {Path(p).name for p in res.plots} >= {
        "optimization_history.png",
        "parallel_coordinate.png",
    }

    # Tracking: one parent run for the sweep, a child run per trial, the best one tagged.
    from helpers import mlflow_runs

    (parent,) = mlflow_runs.runs(outdir, name="asha")
    pid = parent.info.run_id
    assert parent.data.tags["raylight.kind"] == "sweep" and parent.info.status == "FINISHED"
    assert parent.data.tags["raylight.data_fingerprint"].startswith("sha256:")
    children = [r for r in mlflow_runs.runs(outdir) if r.data.tags.get("mlflow.parentRunId") == pid]
    assert len(children) == 6 and all(r.info.status == "FINISHED" for r in children)
    best = [r for r in children if r.data.tags.get("raylight.best") == "true"]
    assert len(best) == 1 and best[0].data.tags["raylight.trial_id"] == res.best["trial_id"]
    stopped = sum(r.data.tags.get("raylight.stopped_early") == "True" for r in children)
    assert stopped == (t["status"] == "EARLY_STOPPED").sum()
    for r in children:  # params = the trial's sampled values; one metric point per epoch
        assert set(r.data.params) == {"model.lr", "model.hidden_dims"}
        epochs = int(r.data.tags["raylight.epochs"])
        steps = [s for s, _ in mlflow_runs.history(outdir, r.info.run_id, "val_loss")]
        assert steps == list(range(1, epochs + 1))
    assert {"bundle", "trials.csv", "config.yaml"} <= mlflow_runs.artifacts(outdir, pid)

    # The exported config is complete: `raylight train --config-path best --config-name config`.
    best_val = res.best["metrics"]["val_loss"]
    retrain = load_train_config(
        [f"output_dir={outdir}", "run_name=retrain", "cluster.auth_mode=disabled"],
        config_name="config",
        config_dir=Path(res.best_config_path).parent,
    )
    again = run_training(retrain)
    # Same seed, same data, same single-worker loop: equal up to float reduction order.
    assert again.metrics["val_loss"] == pytest.approx(best_val, rel=1e-4)
    assert again.test_metrics["accuracy"] == pytest.approx(res.best["test"]["accuracy"], abs=1e-9)


def _run_own_ray(
    cmd: list[str], timeout: int, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a raylight command that starts its own embedded Ray; stop that Ray's daemons after."""
    raytmp = tempfile.mkdtemp(prefix="rl")  # short: Ray's socket paths have a length limit
    try:
        return subprocess.run(
            cmd,
            env={**os.environ, "RAY_TMPDIR": raytmp},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
    finally:
        subprocess.run(["pkill", "-9", "-f", raytmp], check=False)


def _finished_trials(sweep: Path, epochs: int) -> dict[str, int]:
    out = {}
    for f in sweep.glob("*/result.json"):
        n = sum(1 for line in f.read_text().splitlines() if line.strip())
        out[f.parent.name] = n
    return {k: v for k, v in out.items() if v >= epochs}


def test_sweep_resumes_after_the_driver_is_killed(ray_session, outdir: Path) -> None:
    epochs = 4
    args = [*SWEEP, f"output_dir={outdir}", "tune.name=killed", "tune.num_samples=5", "tune.scheduler.type=none",
            f"trainer.max_epochs={epochs}", "tune.max_concurrent_trials=1"]  # fmt: skip
    raytmp = tempfile.mkdtemp(prefix="rlk")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": raytmp}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raylight.cli", "tune", *args],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sweep = outdir / "sweeps" / "killed"
    try:
        deadline = time.time() + 240
        while len(_finished_trials(sweep, epochs)) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # Ray's own daemons of the killed driver (same temp dir) must not keep running.
        subprocess.run(["pkill", "-9", "-f", raytmp], check=False)
    before = _finished_trials(sweep, epochs)
    assert len(before) >= 2

    res = CliRunner().invoke(app, ["tune", f"resume={sweep}"])
    assert res.exit_code == 0, res.output
    after = {
        f.parent.name: sum(1 for line in f.read_text().splitlines() if line.strip())
        for f in sweep.glob("*/result.json")
    }
    for trial, n in before.items():
        assert after[trial] == n, f"finished trial {trial} was rerun ({n} → {after[trial]} results)"
    trials = pd.read_csv(sweep / "trials.csv")
    assert len(trials) == 5 and (trials["status"] == "COMPLETED").all(), trials
    assert json.loads((sweep / "best" / "best.json").read_text())["trial_id"] in set(
        trials["trial_id"]
    )
    # The resumed sweep continued its tracking runs: one parent, one child per trial.
    from helpers import mlflow_runs

    (parent,) = mlflow_runs.runs(outdir, name="killed")
    children = [
        r for r in mlflow_runs.runs(outdir)
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]  # fmt: skip
    # Trials the killed driver started after Tune last saved its state are proposed again under
    # new ids; their runs are closed as KILLED and tagged orphaned, never left running.
    live = [r for r in children if r.data.tags.get("raylight.orphaned") != "true"]
    orphans = [r for r in children if r.data.tags.get("raylight.orphaned") == "true"]
    assert sorted(r.data.tags["raylight.trial_id"] for r in live) == sorted(trials["trial_id"])
    assert all(r.info.status == "FINISHED" for r in [*live, parent])
    assert all(r.info.status == "KILLED" for r in orphans)
    # (A run the driver created just before it died may not carry its trial id yet.)
    assert not {r.data.tags.get("raylight.trial_id") for r in orphans} & set(trials["trial_id"])


@pytest.mark.slow  # ~30 s; keeps the default suite under 15 minutes on 2 cores
def test_hydra_sweeper_plugin_runs_a_tune_sweep(tmp_path: Path) -> None:
    """`raylight-hydra -m hydra/sweeper=raylight ...`: Hydra multirun handed to Ray Tune."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "raylight.hydra_app", "-m", "hydra/sweeper=raylight", *SWEEP,
           "tune.num_samples=3", "trainer.max_epochs=2", "tune.name=hy", f"output_dir={out}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}"]  # fmt: skip
    proc = _run_own_ray(cmd, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_csv(out / "sweeps" / "hy" / "trials.csv")
    assert len(trials) == 3 and (trials["status"] != "ERROR").all()
    assert (out / "sweeps" / "hy" / "best" / "config.yaml").is_file()

    bad = subprocess.run(
        [*cmd[:-3], "model.lr=0.1,0.01", f"output_dir={out}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert bad.returncode != 0 and "tune.space" in bad.stderr + bad.stdout


@pytest.mark.slow
def test_multi_worker_trials_stopped_by_asha_do_not_stall(tmp_path: Path) -> None:
    """Each trial its own 2-worker TorchTrainer (Tuner(driver_fn)); ASHA stops some; all end.

    Runs the CLI in its own process: its embedded cluster has the dashboard on (127.0.0.1), which
    Ray Train needs to free a stopped trial's placement group (DESIGN.md).
    """
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "raylight.cli", "tune", *SWEEP, f"output_dir={out}", "tune.name=mw",
           "scaling.num_workers=2", "scaling.cpus_per_worker=0.9", "trainer.max_epochs=8", "tune.search=grid", "tune.num_samples=1",
           # A good learning rate first, then two hopeless ones: ASHA must stop those at epoch 1
           # and the sweep must go on to the next trial (the stall this guards against).
           # Grid order holds only because the generator limits concurrency (Tune ignored
           # max_concurrent_trials for it: all three started at once, the good one sometimes
           # last). 8 epochs: Tune's stop reaches a multi-worker trial a report or two late.
           "~tune.space", "+tune.space={model: {lr: {type: grid, values: [0.02, 0.00001, 0.00002]}}}",
           "tune.scheduler.reduction_factor=2", "tune.max_concurrent_trials=1"]  # fmt: skip
    proc = _run_own_ray(cmd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    t = pd.read_csv(out / "sweeps" / "mw" / "trials.csv")
    assert len(t) == 3 and (t["status"] != "ERROR").all(), t
    assert (t["status"] == "EARLY_STOPPED").sum() >= 1, t[["trial_id", "status", "epochs"]]


def test_multi_worker_trials_refused_without_the_state_api(ray_session, outdir: Path) -> None:
    """The session cluster has no dashboard: a multi-worker sweep must fail fast, not stall."""
    from raylight.config import ConfigError

    cfg = load_tune_config([*SWEEP, f"output_dir={outdir}", "tune.name=nostate", "scaling.num_workers=2",
                            "scaling.cpus_per_worker=0.9", "tune.num_samples=2"])  # fmt: skip
    with pytest.raises(ConfigError, match="State API"):
        run_tuning(cfg)
