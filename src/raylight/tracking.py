"""Experiment tracking: MLflow and Weights & Biases runs, logged from the driver.

Why the driver: Ray Train hands every epoch's rank-0 report to the driver (``train._Progress``)
and Tune hands every trial result to its driver-side callbacks, so the driver sees all there is
to log. Logging there gives one tracking run per training job across worker-failure retries
(the driver outlives its workers) and ``resume=`` (the run id is kept in the run directory), and
an embedded SQLite store works on a multi-node cluster, where workers cannot reach the driver's
disk. Lightning's CSVLogger (``csv``) stays on rank 0.

A backend that fails mid-run is reported once and switched off; the run goes on and its result
records the error. A backend that cannot be reached at the start is a clear error before any
training work (:class:`TrackingError`).

Nothing here imports mlflow or wandb at import time.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from raylight.config import TrackingConfig

log = logging.getLogger(__name__)

STATE_FILE = "tracking.json"
# MLflow's limits (3.x): a param value up to 6000 characters, 100 params per batch call.
_PARAM_MAX = 6000
_BATCH = 100
# Keys reported every epoch that are not metrics of the model.
_NOT_METRICS = {"epoch", "step", "training_iteration", "timestamp", "time_this_iter_s"}


class TrackingError(RuntimeError):
    """A tracking backend cannot be used (unreachable, misconfigured, missing package)."""


# ============================================================================ helpers


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys → string values (lists as JSON), for run params."""
    out: dict[str, str] = {}
    if isinstance(tree, dict) and (tree or not prefix):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix.rstrip(".")
    value = tree if isinstance(tree, str) else json.dumps(tree, default=str)
    out[key] = value if len(value) <= _PARAM_MAX else value[: _PARAM_MAX - 3] + "..."
    return out


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a report, without bookkeeping keys."""
    import math

    out = {}
    for k, v in metrics.items():
        if k in _NOT_METRICS or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


def _local_root(output_dir: str) -> Path:
    """Where a local store lives: the output dir, or ./outputs when the output dir is a URI."""
    return Path("outputs" if "://" in output_dir else output_dir).expanduser().resolve()


def mlflow_uri(tracking: TrackingConfig, output_dir: str) -> str:
    """The MLflow tracking (and registry) URI: explicit, else $MLFLOW_TRACKING_URI, else the
    embedded SQLite store under the output dir."""
    if tracking.mlflow.tracking_uri:
        return tracking.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return default_store_uri(output_dir)


def default_store_uri(output_dir: str) -> str:
    return f"sqlite:///{_local_root(output_dir) / 'mlflow.db'}"


def artifact_location(tracking: TrackingConfig, output_dir: str) -> str:
    if tracking.mlflow.artifact_location:
        loc = tracking.mlflow.artifact_location
    elif "://" in output_dir:
        loc = output_dir.rstrip("/") + "/mlartifacts"
    else:
        loc = str(_local_root(output_dir) / "mlartifacts")
    return loc if "://" in loc else Path(loc).expanduser().resolve().as_uri()


def probe(uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast on an http(s) store nobody answers at (MLflow's client retries for minutes)."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    from raylight.net import unreachable

    exc = unreachable(uri, 80, timeout_s)
    if exc is not None:
        raise TrackingError(f"MLflow tracking server {uri} cannot be reached: {exc}")


def client(uri: str) -> Any:
    """An ``MlflowClient`` on one store for both tracking and the registry."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise TrackingError(
            "tracking backend mlflow needs the mlflow package: pip install 'mlflow>=3.10'"
        ) from None
    probe(uri)
    _ensure_cwd()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # MLflow logs the database migration at INFO on every new store: noise for a CLI user.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _ensure_cwd() -> None:
    """MLflow resolves local paths against the working directory, even absolute-looking ones.

    A Ray job's driver runs in the job's unpacked working_dir; where several Ray nodes share one
    machine's temp dir (scripts/local-cluster.sh), another node unpacking the same package
    replaces that directory under the running driver, and ``os.getcwd()`` fails. Move to the
    directory's replacement (same path, recorded by jobs/run.py), else to the temp dir.
    """
    try:
        os.getcwd()
        return
    except FileNotFoundError:
        pass
    for candidate in (os.environ.get("RAYLIGHT_JOB_CWD"), tempfile.gettempdir()):
        if candidate and os.path.isdir(candidate):
            os.chdir(candidate)
            return


def experiment_id(c: Any, name: str, artifact_root: str) -> str:
    """The experiment's id, created (with its artifact root) on first use."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root)
    except Exception:
        # Created meanwhile by another driver on the same store.
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@contextmanager
def local_dir(uri: str) -> Iterator[str]:
    """A local copy of the file or directory at ``uri`` (copied down when it is remote)."""
    if "://" not in uri:
        yield uri
        return
    from pyarrow import fs as pafs

    from raylight.data.sources import filesystem_and_path

    src_fs, src = filesystem_and_path(uri)
    with tempfile.TemporaryDirectory(prefix="raylight-artifact-") as tmp:
        # A file is copied to a file of the same name (copy_files wants a file target then).
        is_file = src_fs.get_file_info(src).type == pafs.FileType.File
        dest = os.path.join(tmp, src.rstrip("/").rsplit("/", 1)[-1]) if is_file else tmp
        pafs.copy_files(
            src, dest, source_filesystem=src_fs, destination_filesystem=pafs.LocalFileSystem()
        )
        yield dest


# ============================================================================ backends


class Backend(Protocol):
    name: str
    run_id: str

    def log_params(self, params: dict[str, str]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifacts(self, local: str, path: str) -> None: ...
    def finish(self, status: str) -> None: ...


class MlflowRun:
    """One MLflow run on a (possibly embedded) store, addressed by id."""

    name = "mlflow"

    def __init__(self, c: Any, run_id: str, uri: str) -> None:
        self.client = c
        self.run_id = run_id
        self.uri = uri

    @classmethod
    def open(
        cls,
        tracking: TrackingConfig,
        output_dir: str,
        experiment: str,
        run_name: str,
        run_id: str | None = None,
        parent_id: str | None = None,
    ) -> MlflowRun:
        uri = mlflow_uri(tracking, output_dir)
        c = client(uri)
        if run_id:
            try:
                c.get_run(run_id)
                c.update_run(run_id, status="RUNNING")
                return cls(c, run_id, uri)
            except Exception as exc:
                log.warning(
                    "MLflow run %s not found in %s (%s); starting a new one", run_id, uri, exc
                )
        eid = experiment_id(c, experiment, artifact_location(tracking, output_dir))
        tags = {"mlflow.parentRunId": parent_id} if parent_id else None
        run = c.create_run(eid, run_name=run_name, tags=tags)
        return cls(c, run.info.run_id, uri)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        # A resumed run keeps its params; MLflow refuses to change a logged value.
        new = [Param(k, v) for k, v in params.items() if k not in have]
        for i in range(0, len(new), _BATCH):
            self.client.log_batch(self.run_id, params=new[i : i + _BATCH], synchronous=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _BATCH], synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_artifacts(self, local: str, path: str) -> None:
        if Path(local).is_dir():
            self.client.log_artifacts(self.run_id, local, path)
        else:
            self.client.log_artifact(self.run_id, local, path or None)

    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class WandbRun:
    """One W&B run (offline files by default). Several may be open in one process (trials)."""

    name = "wandb"

    def __init__(self, run: Any) -> None:
        self.run = run
        self.run_id = run.id

    @classmethod
    def open(
        cls,
        tracking: TrackingConfig,
        output_dir: str,
        run_name: str,
        run_id: str | None = None,
        group: str | None = None,
        job_type: str = "train",
    ) -> WandbRun:
        try:
            import wandb
        except ImportError:
            raise TrackingError(
                "tracking backend wandb needs the wandb package: pip install wandb"
            ) from None
        w = tracking.wandb
        if w.mode == "online" and not os.environ.get("WANDB_API_KEY"):
            raise TrackingError(
                "tracking.wandb.mode=online needs an API key in the WANDB_API_KEY environment "
                "variable (never in a config file); or use mode=offline and `wandb sync` later"
            )
        directory = w.dir or str(_local_root(output_dir))
        Path(directory).mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            init_timeout=w.init_timeout_s,
            silent=True,
            **({"base_url": w.base_url} if w.base_url else {}),
        )
        try:
            run = wandb.init(
                project=w.project, entity=w.entity, name=run_name, id=run_id, resume="allow" if run_id else None,
                mode=w.mode, dir=directory, group=group, job_type=job_type, reinit="create_new",
                settings=settings,
            )  # fmt: skip
        except Exception as exc:
            raise TrackingError(f"W&B ({w.mode}) could not start a run: {exc}") from None
        return cls(run)

    def log_params(self, params: dict[str, str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        # W&B tags are labels; key/value lineage goes to the config under "tags.".
        self.run.config.update({f"tags.{k}": v for k, v in tags.items()}, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_artifacts(self, local: str, path: str) -> None:
        import wandb

        art = wandb.Artifact(name=f"{self.run.id}-{Path(path or local).name}", type=path or "file")
        if Path(local).is_dir():
            art.add_dir(local)
        else:
            art.add_file(local)
        self.run.log_artifact(art)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


# ============================================================================ the tracker


class Tracker:
    """Fan-out over the open backends. A failing backend is reported once and switched off."""

    def __init__(self, runs: list[Backend], warn: Callable[[str], None] | None = None) -> None:
        self.runs = runs
        self.errors: dict[str, str] = {}
        self._warn = warn or log.warning

    @property
    def ids(self) -> dict[str, str]:
        return {r.name: r.run_id for r in self.runs}

    def get(self, name: str) -> Backend | None:
        return next((r for r in self.runs if r.name == name and name not in self.errors), None)

    def _each(self, what: str, fn: Callable[[Backend], None]) -> None:
        for r in self.runs:
            if r.name in self.errors:
                continue
            try:
                fn(r)
            except Exception as exc:
                self.errors[r.name] = f"{what}: {type(exc).__name__}: {exc}"
                self._warn(
                    f"tracking ({r.name}) failed while {what}: {exc} — the run goes on; "
                    f"{r.name} logging is off for the rest of it"
                )

    def log_params(self, params: dict[str, str]) -> None:
        self._each("logging params", lambda r: r.log_params(params))

    def set_tags(self, tags: dict[str, Any]) -> None:
        clean = {k: str(v) for k, v in tags.items() if v is not None}
        self._each("setting tags", lambda r: r.set_tags(clean))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        nums = numeric_metrics(metrics)
        if nums:
            self._each("logging metrics", lambda r: r.log_metrics(nums, step))

    def log_artifacts(self, uri: str, path: str) -> None:
        """Upload a file or directory (local path or URI) under ``path`` of the run."""

        def up(r: Backend) -> None:
            with local_dir(uri) as local:
                r.log_artifacts(local, path)

        self._each(f"uploading {path or uri}", up)

    def finish(self, status: str = "FINISHED") -> None:
        self._each("finishing the run", lambda r: r.finish(status))

    def state(self) -> dict[str, Any]:
        """What the run directory keeps, so a resumed run continues these runs."""
        out: dict[str, Any] = {}
        for r in self.runs:
            out[r.name] = {"run_id": r.run_id}
            if isinstance(r, MlflowRun):
                out[r.name]["tracking_uri"] = r.uri
        if self.errors:
            out["errors"] = dict(self.errors)
        return out


def open_runs(
    tracking: TrackingConfig,
    output_dir: str,
    experiment: str,
    run_name: str,
    previous: dict[str, Any] | None = None,
    parent: dict[str, str] | None = None,
    group: str | None = None,
    job_type: str = "train",
    warn: Callable[[str], None] | None = None,
) -> Tracker:
    """Open (or continue) one run per configured driver-side backend.

    Args:
        tracking: The tracking config.
        output_dir: The run's output root (locates the embedded store).
        experiment: MLflow experiment name.
        run_name: Display name of the run.
        previous: A :meth:`Tracker.state` saved by an earlier attempt of the same run: those
            runs are continued, not duplicated.
        parent: Backend name → run id of a parent run (a sweep): MLflow nests under it.
        group: W&B group (the sweep).
        job_type: W&B job type ("train", "sweep", "trial").
        warn: Where mid-run failures are reported.

    Raises:
        TrackingError: A backend cannot be used at all.
    """
    previous = previous or {}
    parent = parent or {}
    runs: list[Backend] = []
    try:
        for name in tracking.backends:
            prev = (previous.get(name) or {}).get("run_id")
            if name == "mlflow":
                runs.append(MlflowRun.open(
                    tracking, output_dir, experiment, run_name, run_id=prev,
                    parent_id=parent.get("mlflow"),
                ))  # fmt: skip
            elif name == "wandb":
                runs.append(WandbRun.open(tracking, output_dir, run_name, prev, group, job_type))
    except TrackingError:
        for r in runs:
            r.finish("KILLED")
        raise
    except Exception as exc:
        for r in runs:
            r.finish("KILLED")
        log.debug("tracking could not start", exc_info=True)
        raise TrackingError(f"tracking could not start: {type(exc).__name__}: {exc}") from exc
    return Tracker(runs, warn)


def run_tags(cfg: Any, kind: str, run_dir: str) -> dict[str, Any]:
    """Lineage tags of a training run or sweep: code, data, versions, where it ran."""
    from raylight.train import git_info, versions

    git = git_info()
    tags: dict[str, Any] = {
        "raylight.kind": kind,
        "raylight.run_dir": run_dir,
        "raylight.git_commit": git["git_commit"],
        "raylight.git_dirty": git["git_dirty"],
        "mlflow.source.git.commit": git["git_commit"],
        "raylight.cluster_mode": cfg.cluster.mode,
        "raylight.cluster_address": cfg.cluster.address,
        "raylight.num_workers": cfg.scaling.num_workers,
        "raylight.use_gpu": cfg.scaling.use_gpu,
        "raylight.gpus": (cfg.scaling.gpus_per_worker or 1) * cfg.scaling.num_workers
        if cfg.scaling.use_gpu
        else 0,
        "raylight.data": cfg.data.name,
        "raylight.model": cfg.model["_target_"],
    }
    if hasattr(cfg, "resolved_loop"):  # which loop ran the module (trainer.loop=auto resolved)
        tags["raylight.loop"] = cfg.resolved_loop()
    tags.update({f"raylight.version.{k}": v for k, v in versions().items()})
    return tags


def read_state(run_dir: str) -> dict[str, Any]:
    from raylight.data.sources import filesystem_and_path

    fs, path = filesystem_and_path(run_dir.rstrip("/") + "/" + STATE_FILE)
    if fs.get_file_info(path).type.name != "File":
        return {}
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def experiment_for(cfg: Any) -> str:
    return cfg.tracking.mlflow.experiment or cfg.data.name
