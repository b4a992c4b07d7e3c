"""Sweeps: Ray Tune + Optuna (TPE) / random / grid + ASHA over the training pipeline.

The data stage runs once per sweep on the driver; every trial trains on the same encoded
splits. A trial is either

- one worker: the Tune function runs the very same Lightning loop as ``raylight train``
  (``train.fit_lightning``) in-process and reports to Tune directly. It is much faster to start,
  and an ASHA-stopped trial leaves no placement group behind (DESIGN.md's pitfall), or
- several workers: the Tune function builds a ``TorchTrainer`` named after the trial
  (``Tuner(driver_fn)``, Ray 2.60's pattern) whose reports reach Tune via
  ``TuneReportCallback``.

At the end: the trials as Parquet/CSV, the top-k table, the best trial's complete config as a
YAML that ``raylight train --config-path/--config-name`` retrains, its bundle, and plots.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from raylight.config import ConfigError, Domain, TrainConfig, TuneRunConfig, TuneSettings

if TYPE_CHECKING:
    import pandas as pd

    from raylight.data.pipeline import PreparedData

STATE_FILE = "raylight_sweep.json"
# Metrics the shipped models report every epoch; a model may declare its own (REPORTED_METRICS).
ALWAYS_REPORTED = ("train_loss", "val_loss", "epoch", "step", "model_params")


# ============================================================================ validation


def _get(plain: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = plain
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def apply_params(plain: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``plain`` with each dotted key set to its value."""
    out = copy.deepcopy(plain)
    for dotted, value in params.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def reported_metrics(cfg: TrainConfig) -> set[str] | None:
    """Metrics the configured model reports, or None when the model does not declare them."""
    from raylight.models.spec import ModelSpecError, model_spec

    try:
        declared = model_spec(cfg.model["_target_"]).reported_metrics
    except ModelSpecError:
        return None
    if declared is None:
        return None
    task_metrics = declared.get(cfg.data.task, ()) if isinstance(declared, dict) else declared
    return set(ALWAYS_REPORTED) | set(task_metrics)


def check_sweep(cfg: TrainConfig, s: TuneSettings) -> list[tuple[str, str]]:
    """Every problem of a sweep definition, found before any trial starts."""
    from raylight.config import _check_model, _pydantic_problems

    problems: list[tuple[str, str]] = []
    plain = cfg.to_plain()
    if not s.space:
        problems.append(("tune.space", "empty: give at least one dotted key → domain"))
    samples: dict[str, Any] = {}
    for key, dom in s.space.items():
        where = f"tune.space.{key}"
        if key.startswith("data.") and key != "data.batch_size":
            problems.append(
                (where, "trials share one prepared dataset: only data.batch_size can be searched")
            )
            continue
        if key.startswith(("cluster.", "output_dir", "run_name", "resume", "tracking.")):
            problems.append((where, "not a hyperparameter"))
            continue
        found, _ = _get(plain, key)
        if not found and not key.startswith("model."):
            problems.append((where, f"unknown key: {key!r} is not in the training config"))
            continue
        if s.search == "optuna" and dom.type == "grid":
            problems.append(
                (where, "grid domains need tune.search=grid or random; use choice with optuna")
            )
        samples[key] = dom.sample()
    # Validate a trial config built from the first value of every domain (types, ranges, model args).
    if samples:
        # Keys that are not hyperparameters were reported above; the rest must make a valid
        # trial config (types, ranges, model constructor arguments).
        trial = apply_params(plain, samples)
        try:
            trial_cfg = TrainConfig.model_validate(trial)
            for k, msg in _check_model(trial_cfg.model):
                problems.append((f"tune.space.{k}" if k in s.space else k, msg))
        except ValidationError as exc:
            errs = _pydantic_problems(exc)
            problems += [(f"tune.space.{k}" if k in s.space else k, m) for k, m in errs]
    if cfg.scaling.num_workers > 1 and cfg.cluster.mode == "local":
        import os

        cpus = cfg.cluster.num_cpus or os.cpu_count() or 1
        need = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker + 0.01
        if need > cpus:
            problems.append((
                "scaling.cpus_per_worker",
                f"a {cfg.scaling.num_workers}-worker trial needs {need:g} CPUs (its workers plus 0.01 for the "
                f"trial's driver function) but the local cluster has {cpus}; lower scaling.cpus_per_worker "
                "(e.g. 0.9) or use scaling.num_workers=1",
            ))  # fmt: skip
    known = reported_metrics(cfg)
    for i, obj in enumerate(s.objective_list()):
        key = "tune.metric" if not s.objectives else f"tune.objectives[{i}].metric"
        if known is not None and obj.metric not in known:
            problems.append(
                (key, f"training never reports {obj.metric!r}; it reports {sorted(known)}")
            )
    max_t = s.scheduler.max_t or cfg.trainer.max_epochs
    if s.scheduler.type == "asha" and s.scheduler.grace_period > max_t:
        problems.append(
            (
                "tune.scheduler.grace_period",
                f"{s.scheduler.grace_period} exceeds max_t={max_t} epochs",
            )
        )
    if s.scheduler.max_t and s.scheduler.max_t > cfg.trainer.max_epochs:
        problems.append(
            (
                "tune.scheduler.max_t",
                f"{s.scheduler.max_t} exceeds trainer.max_epochs={cfg.trainer.max_epochs}",
            )
        )
    if s.resume is not None:
        from raylight.data.sources import path_exists

        if not path_exists(s.resume.rstrip("/") + "/" + STATE_FILE):
            problems.append(
                ("tune.resume", f"{s.resume!r} is not a raylight sweep directory (no {STATE_FILE})")
            )
    return problems


# ============================================================================ search


def tune_domain(dom: Domain) -> Any:
    """A Ray Tune search-space domain for one config domain."""
    from ray import tune

    assert dom.low is not None or dom.values is not None
    if dom.type == "loguniform":
        return tune.loguniform(dom.low, dom.high)
    if dom.type == "uniform":
        return tune.uniform(dom.low, dom.high)
    if dom.type == "quniform":
        return tune.quniform(dom.low, dom.high, dom.q)
    if dom.type == "randint":
        return tune.randint(int(dom.low or 0), int(dom.high or 0) + 1)  # inclusive high
    # Optuna's categorical choices must be scalars: lists/dicts travel as JSON strings and are
    # decoded in the trial (decode_params).
    values = [_categorical(v) for v in dom.values or []]
    if dom.type == "choice":
        return tune.choice(values)
    return tune.grid_search(values)


def decode_params(params: dict[str, Any], space: dict[str, Domain]) -> dict[str, Any]:
    """Undo the JSON encoding of non-scalar categorical values (see tune_domain)."""
    out = {}
    for k, v in params.items():
        dom = space.get(k)
        if dom is not None and dom.values and isinstance(v, str) and v not in dom.values:
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        out[k] = v
    return out


def searcher(s: TuneSettings, seed: int, max_t: int | None = None, max_concurrent: int = 0) -> Any:
    """Optuna TPE (seeded) for ``optuna``; Tune's variant generator for random and grid.

    Args:
        s: The sweep's settings.
        seed: The search's seed.
        max_t: Epochs of a full trial. With ASHA, a single-objective trial that ends before it
            was stopped early, and Optuna is told so
            (:class:`~raylight.optuna_search.MultiFidelityOptunaSearch`).
        max_concurrent: Trials at once for random and grid (0: no limit). Tune ignores
            ``TuneConfig.max_concurrent_trials`` when it is handed a variant generator (it warns
            and runs every trial at once), so the generator carries the limit itself.
    """
    if s.search != "optuna":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)
    import optuna

    objectives = s.objective_list()
    multi = len(objectives) > 1
    kwargs = {"n_startup_trials": s.startup_trials} if s.startup_trials else {}
    sampler = optuna.samplers.TPESampler(seed=seed, **kwargs)
    from raylight.optuna_search import MultiFidelityOptunaSearch

    return MultiFidelityOptunaSearch(
        metric=[o.metric for o in objectives] if multi else objectives[0].metric,
        mode=[o.mode for o in objectives] if multi else objectives[0].mode,
        sampler=sampler,
        seed=seed,
        full_epochs=max_t if s.scheduler.type == "asha" and not multi else None,
    )


def make_scheduler(s: TuneSettings, max_t: int) -> Any:
    """ASHA from ``tune.scheduler`` (epochs as time), or FIFO for ``type: none``.

    Single objective: the Tuner hands metric and mode to the scheduler. Multi-objective: ASHA
    stops on the first objective.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if s.scheduler.type != "asha":
        return FIFOScheduler()
    objectives = s.objective_list()
    multi = len(objectives) > 1
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=objectives[0].metric if multi else None,
        mode=objectives[0].mode if multi else None,
        max_t=max_t,
        grace_period=s.scheduler.grace_period,
        reduction_factor=s.scheduler.reduction_factor,
        brackets=s.scheduler.brackets,
    )


# ============================================================================ trials


class TuneSession:
    """``train.fit_lightning``'s session for an in-process (one-worker) trial: reports to Tune."""

    rank = 0
    world_size = 1

    def __init__(self, train_ds: Any, val_ds: Any, resident: dict[str, Any] | None = None) -> None:
        self.train_ds = train_ds
        self.val_ds = val_ds
        # The splits handed over through the object store (raylight.data.handoff), if any.
        self.resident = resident

    def report(
        self, metrics: dict[str, Any], checkpoint_dir: str | None, dir_name: str | None
    ) -> None:
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    def get_checkpoint(self) -> Any:
        from ray import tune

        return tune.get_checkpoint()

    def loaders(self, config: dict[str, Any]) -> tuple[Any, Any]:
        from raylight.train import _torch_batches, resident_loaders

        if self.resident:
            return resident_loaders(self.resident, config, rank=0, world_size=1)
        return (
            _torch_batches(self.train_ds, config, shuffle=True),
            _torch_batches(self.val_ds, config),
        )


def _trial_plain(
    base: dict[str, Any], params: dict[str, Any], data: PreparedData, name: str, trial_dir: str
) -> tuple[TrainConfig, dict[str, Any]]:
    from raylight.train import model_args_for, run_info

    plain = apply_params(base, params)
    cfg = TrainConfig.model_validate(plain)
    plain = cfg.to_plain()
    plain["_run"] = run_info(name, cfg, model_args_for(cfg, data.preprocessor), trial_dir)
    return cfg, plain


def in_process_trial(
    params: dict[str, Any], base: dict[str, Any], data: PreparedData, space: dict[str, Any]
) -> None:
    """Tune function for a one-worker trial: Lightning right here, reporting to Tune."""
    from ray import tune

    from raylight.train import fit_lightning

    ctx = tune.get_context()
    params = decode_params(params, {k: Domain.model_validate(d) for k, d in space.items()})
    _, plain = _trial_plain(base, params, data, ctx.get_trial_id(), ctx.get_trial_dir())
    fit_lightning(plain, TuneSession(data.train, data.val, data.resident))


def trainer_trial(
    params: dict[str, Any],
    base: dict[str, Any],
    data: PreparedData,
    space: dict[str, Any],
    storage: str,
) -> None:
    """Tune driver function for a multi-worker trial: its own TorchTrainer, named after the trial."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raylight.train import torch_trainer

    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    params = decode_params(params, {k: Domain.model_validate(d) for k, d in space.items()})
    cfg, plain = _trial_plain(base, params, data, trial_id, ctx.get_trial_dir())
    # Same name + storage on restore: Ray Train resumes this trial from its last checkpoint.
    torch_trainer(
        cfg, plain, data, storage_path=storage, name=trial_id, callbacks=[TuneReportCallback()]
    ).fit()


# ============================================================================ driver


@dataclass
class SweepResult:
    name: str
    sweep_dir: str
    trials: pd.DataFrame
    best: dict[str, Any]
    best_config_path: str
    bundle_path: str
    pareto: list[dict[str, Any]]
    plots: list[str]
    timings: dict[str, float]
    tracking: dict[str, Any] = field(default_factory=dict)
    registered: dict[str, Any] | None = None


def _sweep_paths(cfg: TuneRunConfig) -> tuple[str, str]:
    s = cfg.tune
    if s.resume:
        d = s.resume.rstrip("/")
        return Path(d).name, d
    name = s.name or f"{cfg.data.name}-{s.search}-{datetime.now():%Y%m%d-%H%M%S}"
    root = (
        cfg.output_dir
        if "://" in cfg.output_dir
        else str(Path(cfg.output_dir).expanduser().resolve())
    )
    return name, f"{root.rstrip('/')}/sweeps/{name}"


def sweep_cluster(cfg: TuneRunConfig) -> Any:
    """The cluster config a sweep runs with.

    Multi-worker trials: ASHA-stopped trials' placement groups are freed through the State API,
    which needs the dashboard (DESIGN.md's measured pitfall); it stays on 127.0.0.1.
    """
    if cfg.scaling.num_workers > 1 and cfg.cluster.mode == "local":
        return cfg.cluster.model_copy(update={"include_dashboard": True})
    return cfg.cluster


def _require_state_api() -> None:
    """Multi-worker trials need Ray's State API (served by the dashboard).

    When the scheduler stops a trial, Ray Train frees its workers' placement group through the
    State API; without it the CPUs stay reserved and the next trial waits forever (measured:
    DESIGN.md, and a stalled sweep in this repo's slow test when the dashboard was off).
    """
    from raylight.config import ConfigError

    try:
        from ray.util.state import list_placement_groups

        # No address on purpose: this finds the cluster the way Ray Train's own State API calls
        # will. With several Ray instances on one machine both fail ("Found multiple active Ray
        # instances"); telling it our address here only turned that into a stalled sweep.

        list_placement_groups(limit=1, timeout=10, raise_on_missing_output=False)
    except Exception as exc:
        raise ConfigError([(
            "scaling.num_workers",
            "multi-worker sweep trials need Ray's State API (start the cluster with the dashboard, "
            f"e.g. cluster.include_dashboard=true, which raylight does for its embedded cluster; "
            f"with several Ray instances on this machine, stop the others): {exc}",
        )]) from None  # fmt: skip


def _concurrency(cfg: TuneRunConfig, per_trial: dict[str, float]) -> int:
    import ray

    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    res = ray.cluster_resources()
    n = math.floor(res.get("CPU", 1) / max(per_trial.get("CPU", 1), 1e-6) + 1e-9)
    if per_trial.get("GPU"):
        n = min(n, math.floor(res.get("GPU", 0) / per_trial["GPU"] + 1e-9))
    return max(1, n)


def run_tuning(cfg: TuneRunConfig, announce: Any = None) -> SweepResult:
    """Run (or resume) a sweep on the current Ray cluster and export its best trial."""
    from raylight.data.handoff import hand_off
    from raylight.data.pipeline import prepare
    from raylight.train import _write_json

    say = announce or (lambda stage, detail: None)
    t0 = time.time()
    s = cfg.tune
    name, sweep_dir = _sweep_paths(cfg)
    root, sweep_name = str(Path(sweep_dir).parent), Path(sweep_dir).name
    if s.resume:
        # The sweep's own saved definition is the truth; only restart_errored may change.
        saved = json.loads(Path(sweep_dir, STATE_FILE).read_text())
        restart_errored = s.restart_errored
        cfg = TuneRunConfig.model_validate(saved["config"])
        s = cfg.tune
        s = s.model_copy(update={"restart_errored": restart_errored})
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    train_cfg = cfg.train_config()
    base = train_cfg.to_plain()
    seed = s.seed if s.seed is not None else cfg.seed
    say("sweep", sweep_dir)

    t = time.time()
    data = prepare(cfg.data, cfg.seed, quarantine_dir=sweep_dir + "/quarantine")
    data = hand_off(data, cfg.data)
    say(
        "data",
        f"{data.summary.rows:,} rows → train {data.summary.split_rows['train']:,} / val {data.summary.split_rows['val']:,}",
    )
    timings = {"data_s": time.time() - t}
    if not s.resume:
        _write_json(
            sweep_dir + "/" + STATE_FILE,
            {"config": cfg.to_plain(), "created_at": datetime.now().isoformat()},
        )

    space_plain = {k: d.model_dump() for k, d in s.space.items()}
    parent, callbacks = _open_sweep_tracking(cfg, name, sweep_dir, space_plain, say)
    parent.set_tags({
        "raylight.data_fingerprint": data.summary.fingerprint,
        "raylight.data_rows": data.summary.rows,
        "raylight.data_quarantined": data.summary.bad,
    })  # fmt: skip
    try:
        return _run_sweep(cfg, s, name, sweep_dir, root, sweep_name, base, seed, data,
                          space_plain, parent, callbacks, timings, t0, say)  # fmt: skip
    except BaseException as exc:
        parent.set_tags({"raylight.error": f"{type(exc).__name__}: {exc}"[:5000]})
        parent.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise


def _open_sweep_tracking(
    cfg: TuneRunConfig, name: str, sweep_dir: str, space_plain: dict[str, Any], say: Any
) -> tuple[Any, list[Any]]:
    """The sweep's parent run (continued on resume) and the callback that opens child runs."""
    from raylight import tracking

    if not any(b in cfg.tracking.backends for b in ("mlflow", "wandb")):
        return tracking.Tracker([]), []
    from raylight.sweep_tracking import TrialTracking, read_sweep_state, write_sweep_state

    state = read_sweep_state(sweep_dir)
    experiment = tracking.experiment_for(cfg)
    parent = tracking.open_runs(
        cfg.tracking, cfg.output_dir, experiment, name, previous=state.get("parent"),
        group=name, job_type="sweep", warn=lambda msg: say("tracking", msg),
    )  # fmt: skip
    state["parent"] = parent.state()
    write_sweep_state(sweep_dir, state)
    plain = cfg.to_plain()
    parent.log_params(tracking.flatten(plain))
    parent.set_tags(tracking.run_tags(cfg, "sweep", sweep_dir))
    say("tracking", ", ".join(f"{k} parent run {v}" for k, v in parent.ids.items()))
    max_t = cfg.tune.scheduler.max_t or cfg.trainer.max_epochs
    cb = TrialTracking(
        cfg.tracking.model_dump(mode="json"), cfg.output_dir, experiment, name, sweep_dir,
        parent.ids, max_t, space_plain,
    )  # fmt: skip
    return parent, [cb]


def _run_sweep(
    cfg: TuneRunConfig,
    s: TuneSettings,
    name: str,
    sweep_dir: str,
    root: str,
    sweep_name: str,
    base: dict[str, Any],
    seed: int,
    data: PreparedData,
    space_plain: dict[str, Any],
    parent: Any,
    callbacks: list[Any],
    timings: dict[str, float],
    t0: float,
    say: Any,
) -> SweepResult:
    from ray import tune

    from raylight.train import _to_yaml, _write_json, _write_text

    per_trial: dict[str, float] = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        per_trial["GPU"] = cfg.scaling.gpus_per_worker or 1
    if cfg.scaling.num_workers > 1:
        _require_state_api()
    if cfg.scaling.num_workers == 1:
        trainable = tune.with_parameters(in_process_trial, base=base, data=data, space=space_plain)
        trainable = tune.with_resources(trainable, per_trial)
    else:
        trainable = tune.with_parameters(
            trainer_trial, base=base, data=data, space=space_plain, storage=sweep_dir + "/train"
        )
        # The trial's own TorchTrainer reserves the workers; the driver function needs ~nothing.
        trainable = tune.with_resources(trainable, {"CPU": 0.01})
        per_trial = {k: v * cfg.scaling.num_workers for k, v in per_trial.items()}
        per_trial["CPU"] += 0.01

    objectives = s.objective_list()
    first = objectives[0]
    max_t = s.scheduler.max_t or cfg.trainer.max_epochs
    multi = len(objectives) > 1
    scheduler = make_scheduler(s, max_t)
    concurrency = _concurrency(cfg, per_trial)
    say(
        "search",
        f"{s.search}, {s.num_samples} trial(s), ≤{concurrency} at once, scheduler {s.scheduler.type}, seed {seed}",
    )
    if s.resume:
        tuner = tune.Tuner.restore(
            sweep_dir,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=s.restart_errored,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: tune_domain(d) for k, d in s.space.items()},
            tune_config=tune.TuneConfig(
                metric=None if multi else first.metric,
                mode=None if multi else first.mode,
                search_alg=searcher(s, seed, max_t, concurrency),
                scheduler=scheduler,
                num_samples=s.num_samples,
                # Random/grid: the generator holds the limit (see searcher).
                max_concurrent_trials=concurrency if s.search == "optuna" else None,
                # One-worker trials run in the trial process: reusing it skips a process start and
                # the torch/Lightning imports per trial (benchmarks/tune_overhead.py: 2.4 s →
                # 0.2 s per trial). Multi-worker trials own a TorchTrainer: fresh actors.
                reuse_actors=cfg.scaling.num_workers == 1,
            ),
            run_config=tune.RunConfig(
                name=sweep_name,
                storage_path=root,
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=cfg.trainer.num_checkpoints,
                    checkpoint_score_attribute=cfg.trainer.monitor,
                    checkpoint_score_order=cfg.trainer.mode,
                ),
                # A trial whose process or node dies is retried from its last checkpoint, as a
                # training run's worker group is (trainer.max_failures); not counted as done.
                failure_config=tune.FailureConfig(max_failures=cfg.trainer.max_failures),
                callbacks=callbacks,
                verbose=1,
            ),
        )
    t = time.time()
    grid = tuner.fit()
    timings["trials_s"] = time.time() - t

    trials = trials_table(grid, s, max_t)
    trials.to_parquet(sweep_dir + "/trials.parquet", index=False)
    trials.to_csv(sweep_dir + "/trials.csv", index=False)
    ok = trials[trials["status"] != "ERROR"]
    if ok.empty:
        raise RuntimeError(f"every trial failed; see {sweep_dir}/trials.csv and the trial logs")
    best_row = ok.sort_values(f"best_{first.metric}", ascending=first.mode == "min").iloc[0]
    pareto = pareto_front(ok, objectives) if multi else []

    # ---- export the best trial: complete config + bundle
    params = json.loads(best_row["params"])
    best_cfg, best_plain = _trial_plain(
        base, params, data, f"{name}/{best_row['trial_id']}", sweep_dir + "/best"
    )
    best_plain.pop("_run", None)
    best_plain["run_name"] = None
    best_plain["resume"] = None
    best_dir = sweep_dir + "/best"
    Path(best_dir).mkdir(parents=True, exist_ok=True)
    _write_text(best_dir + "/config.yaml", _to_yaml(best_plain))
    ckpt = _best_checkpoint_of(grid, best_row["trial_id"], first.metric, first.mode)
    from raylight.train import export_bundle, model_args_for

    model_args = model_args_for(best_cfg, data.preprocessor)
    best_metrics, test = export_bundle(
        ckpt,
        best_dir + "/bundle",
        best_cfg,
        best_plain,
        data,
        model_args,
        f"{name}/{best_row['trial_id']}",
    )
    best = {
        "trial_id": best_row["trial_id"],
        "params": params,
        "metrics": best_metrics,
        "test": test,
    }
    _write_json(best_dir + "/best.json", best)
    plots = write_plots(trials, s, sweep_dir)
    timings["total_s"] = time.time() - t0
    _write_json(
        sweep_dir + "/summary.json",
        {"best": best, "pareto": pareto, "timings": timings, "plots": plots},
    )
    registered = _finish_sweep_tracking(
        cfg, parent, sweep_dir, best, plots, timings, set(trials["trial_id"]), say
    )
    return SweepResult(
        name=name, sweep_dir=sweep_dir, trials=trials, best=best, best_config_path=best_dir + "/config.yaml",
        bundle_path=best_dir + "/bundle", pareto=pareto, plots=plots, timings=timings,
        tracking=parent.state(), registered=registered,
    )  # fmt: skip


def _close_orphaned_children(
    mlrun: Any, state: dict[str, Any], trial_ids: set[str], say: Any
) -> None:
    """Close every child run of the sweep's parent that belongs to no trial of the finished
    sweep: KILLED and tagged ``raylight.orphaned``.

    Such runs come from a driver that died mid-sweep: trials it started after Tune last saved
    its state (``resume=`` re-proposes them under new ids), and a run MLflow created just before
    the sweep state could record it. One search over the parent's children finds both.
    """
    live = {
        ids["mlflow"]["run_id"]
        for tid, ids in state["trials"].items()
        if tid in trial_ids and "mlflow" in ids
    }
    try:
        eid = mlrun.client.get_run(mlrun.run_id).info.experiment_id
        children = mlrun.client.search_runs(
            [eid], filter_string=f"tags.mlflow.parentRunId = '{mlrun.run_id}'", max_results=10000
        )
        for run in children:
            if run.info.run_id in live:
                continue
            mlrun.client.set_tag(run.info.run_id, "raylight.orphaned", "true")
            mlrun.client.set_terminated(run.info.run_id, status="KILLED")
    except Exception as exc:
        say("tracking", f"could not close the sweep's orphaned child runs: {exc}")


def _finish_sweep_tracking(
    cfg: TuneRunConfig,
    parent: Any,
    sweep_dir: str,
    best: dict[str, Any],
    plots: list[str],
    timings: dict[str, float],
    trial_ids: set[str],
    say: Any,
) -> dict[str, Any] | None:
    """The parent run gets the best trial's numbers and files; the best child is tagged.

    A child run whose trial the sweep no longer knows was started by a driver that died
    before Tune saved its state (``resume=`` re-proposes those trials under new ids): it is
    closed as KILLED and tagged, so the parent's children are the sweep's trials plus
    clearly marked leftovers, none left "running" forever.
    """
    from raylight import tracking
    from raylight.sweep_tracking import read_sweep_state
    from raylight.tracking import numeric_metrics

    state = read_sweep_state(sweep_dir)
    child = (state["trials"].get(best["trial_id"]) or {}).get("mlflow")
    mlrun = parent.get("mlflow")
    if mlrun is not None:
        _close_orphaned_children(mlrun, state, trial_ids, say)
    if child and mlrun is not None:
        try:
            mlrun.client.set_tag(child["run_id"], "raylight.best", "true")
        except Exception as exc:
            say("tracking", f"could not tag the best trial's run: {exc}")
    final = {f"best_{k}": v for k, v in numeric_metrics(best["metrics"]).items()}
    final.update({f"test_{k}": v for k, v in numeric_metrics(best["test"]).items()})
    final.update({f"time_{k}": v for k, v in timings.items()})
    parent.log_metrics(final, step=0)
    parent.set_tags({
        "raylight.best_trial": best["trial_id"],
        "raylight.best_trial_run": (child or {}).get("run_id"),
        "raylight.bundle": sweep_dir + "/best/bundle",
    })  # fmt: skip
    for f in ("trials.csv", "summary.json", "best/config.yaml", "best/best.json"):
        parent.log_artifacts(sweep_dir + "/" + f, "")
    for plot in plots:
        parent.log_artifacts(plot, "plots")
    if cfg.tracking.mlflow.log_bundle:
        parent.log_artifacts(sweep_dir + "/best/bundle", "bundle")
    registered = None
    if cfg.register:
        from raylight import registry

        c = (
            mlrun.client
            if mlrun is not None
            else registry.open_store(cfg.tracking.mlflow.tracking_uri, cfg.output_dir)
        )
        source = mlrun.run_id if mlrun is not None and "mlflow" not in parent.errors else sweep_dir
        try:
            registered = registry.register(c, source, cfg.register, output_dir=cfg.output_dir)
            say("registry", f"{registered['name']} version {registered['version']}")
        except (registry.RegistryError, tracking.TrackingError) as exc:
            say("registry", f"registering {cfg.register} failed: {exc}")
            registered = {"name": cfg.register, "error": str(exc)}
    parent.finish("FINISHED")
    from raylight.sweep_tracking import write_sweep_state

    state = read_sweep_state(sweep_dir)
    state["parent"] = parent.state()
    write_sweep_state(sweep_dir, state)
    return registered


def _best_checkpoint_of(grid: Any, trial_id: str, metric: str, mode: str) -> Any:
    from ray.train import Checkpoint

    for r in grid:
        if r.metrics and r.metrics.get("trial_id") == trial_id:
            best = None
            try:
                best = r.get_best_checkpoint(metric=metric, mode=mode)
            except Exception:
                best = None
            if best is None and r.checkpoint is not None:
                best = r.checkpoint
            if (
                best is None
                and r.metrics_dataframe is not None
                and "checkpoint_path" in r.metrics_dataframe
            ):
                # Multi-worker trials: Ray Train stored the checkpoints; Tune got their paths.
                df = r.metrics_dataframe.dropna(subset=["checkpoint_path"])
                row = df.sort_values(metric, ascending=mode == "min").iloc[0]
                best = Checkpoint(row["checkpoint_path"])
            if best is not None:
                return best
    raise RuntimeError(f"no checkpoint for trial {trial_id}")


def trials_table(grid: Any, s: TuneSettings, max_t: int) -> pd.DataFrame:
    """One row per trial: id, status, params (JSON and one column each), best/last metrics."""
    import pandas as pd

    rows = []
    metrics = [o.metric for o in s.objective_list()]
    for r in grid:
        df = r.metrics_dataframe if r.metrics_dataframe is not None else pd.DataFrame()
        trial_id = (r.metrics or {}).get("trial_id") or Path(r.path).name
        params = decode_params({k: r.config.get(k) for k in s.space}, s.space) if r.config else {}
        epochs = int(df["training_iteration"].max()) if "training_iteration" in df else 0
        status = "ERROR" if r.error else ("EARLY_STOPPED" if epochs < max_t else "COMPLETED")
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "status": status,
            "epochs": epochs,
            "params": json.dumps(params),
        }
        for k, v in params.items():
            row[f"param.{k}"] = json.dumps(v) if isinstance(v, list) else v
        for m in {*metrics, "val_loss", "val_acc", "train_loss"}:
            if m in df:
                col = df[m].dropna()
                mode = next(
                    (o.mode for o in s.objective_list() if o.metric == m),
                    "min" if "loss" in m else "max",
                )
                row[f"best_{m}"] = (
                    float(col.min() if mode == "min" else col.max()) if len(col) else None
                )
                row[f"last_{m}"] = float(col.iloc[-1]) if len(col) else None
        row["error"] = str(r.error).splitlines()[0][:300] if r.error else None
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_front(trials: pd.DataFrame, objectives: list[Any]) -> list[dict[str, Any]]:
    """Non-dominated trials over each objective's last reported value."""
    cols = [f"last_{o.metric}" for o in objectives]
    sign = [1 if o.mode == "min" else -1 for o in objectives]
    pts = trials.dropna(subset=cols)
    front = []
    for i, a in pts.iterrows():
        va = [a[c] * sg for c, sg in zip(cols, sign, strict=True)]
        dominated = False
        for j, b in pts.iterrows():
            if i == j:
                continue
            vb = [b[c] * sg for c, sg in zip(cols, sign, strict=True)]
            if all(x <= y for x, y in zip(vb, va, strict=True)) and any(
                x < y for x, y in zip(vb, va, strict=True)
            ):
                dominated = True
                break
        if not dominated:
            front.append(
                {
                    "trial_id": a["trial_id"],
                    "params": json.loads(a["params"]),
                    **{c: a[c] for c in cols},
                }
            )
    return front


def _distribution(dom: Domain) -> Any:
    import optuna.distributions as od

    if dom.type == "loguniform":
        return od.FloatDistribution(dom.low, dom.high, log=True)
    if dom.type == "uniform":
        return od.FloatDistribution(dom.low, dom.high)
    if dom.type == "quniform":
        return od.FloatDistribution(dom.low, dom.high)
    if dom.type == "randint":
        return od.IntDistribution(int(dom.low or 0), int(dom.high or 0))
    return od.CategoricalDistribution([_categorical(v) for v in dom.values or []])


def _categorical(v: Any) -> Any:
    return v if v is None or isinstance(v, bool | int | float | str) else json.dumps(v)


def write_plots(trials: pd.DataFrame, s: TuneSettings, sweep_dir: str) -> list[str]:
    """Optimization history, parameter importances and parallel coordinates as PNG.

    The trials of any search (optuna, random, grid) are loaded into an Optuna study, so the
    plots are the same whatever searched.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    objectives = s.objective_list()
    study = optuna.create_study(
        directions=["minimize" if o.mode == "min" else "maximize" for o in objectives]
    )
    dists = {k: _distribution(d) for k, d in s.space.items()}
    for _, row in trials[trials["status"] != "ERROR"].iterrows():
        values = [row.get(f"best_{o.metric}") for o in objectives]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue
        params = {k: _categorical(v) for k, v in json.loads(row["params"]).items()}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, values=values)
        )
    out: list[str] = []
    if len(study.trials) < 2:
        return out
    plots = {
        "optimization_history": lambda: ovm.plot_optimization_history(
            study,
            target=(lambda t: t.values[0]) if len(objectives) > 1 else None,
            target_name=objectives[0].metric,
        ),
        "param_importances": lambda: ovm.plot_param_importances(
            study,
            target=(lambda t: t.values[0]) if len(objectives) > 1 else None,
            target_name=objectives[0].metric,
        ),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(
            study,
            target=(lambda t: t.values[0]) if len(objectives) > 1 else None,
            target_name=objectives[0].metric,
        ),
    }
    if len(objectives) > 1:
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(
            study, target_names=[o.metric for o in objectives]
        )
    for plot_name, make in plots.items():
        try:
            ax = make()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            path = f"{sweep_dir}/{plot_name}.png"
            fig.set_size_inches(9, 5)
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            out.append(path)
        except (
            Exception
        ) as exc:  # a plot that cannot be drawn (e.g. one param) must not fail the sweep
            Path(f"{sweep_dir}/{plot_name}.skipped.txt").write_text(
                f"{type(exc).__name__}: {exc}\n"
            )
    return out


__all__ = ["ConfigError", "SweepResult", "apply_params", "check_sweep", "run_tuning"]
