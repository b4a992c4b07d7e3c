"""``raylight`` — one command per verb; each composes a config and calls one library function.

Hydra overrides are plain arguments: ``raylight train data=penguins trainer.max_epochs=5``.
Exit codes: 0 ok, 1 the run failed, 2 the config (or input) is invalid — reported before any
Ray work starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Distributed training, tuning and serving on Ray, driven by one Hydra config.",
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, `| tee`) would default to 80 columns and crush the tables.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
CONFIG_PATH = typer.Option(
    None,
    "--config-path",
    "-cp",
    help="Directory of a primary config to use instead of the shipped conf/.",
)
CONFIG_NAME = typer.Option("train", "--config-name", "-cn", help="Primary config name (file stem).")


def _fail_config(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    raise typer.Exit(2)


def _load(overrides: list[str], config_path: str | None, config_name: str) -> Any:
    from raylight.config import ConfigError, load_train_config

    overrides = list(overrides)
    resume = next((o.split("=", 1)[1] for o in overrides if o.startswith("resume=")), None)
    if resume and config_path is None:
        # Resuming a run: its saved resolved config is the base, overrides apply on top.
        from raylight.data.sources import path_exists

        if path_exists(resume.rstrip("/") + "/config.yaml"):
            config_path, config_name = resume, "config"
    try:
        return load_train_config(overrides, config_name=config_name, config_dir=config_path)
    except ConfigError as exc:
        _fail_config(exc)


@app.command(context_settings=_EXTRA)
def validate(
    ctx: typer.Context, config_path: str | None = CONFIG_PATH, config_name: str = CONFIG_NAME
) -> None:
    """Compose and check a training config without starting Ray; print it resolved."""
    cfg = _load(ctx.args, config_path, config_name)
    from omegaconf import OmegaConf

    console.print(OmegaConf.to_yaml(OmegaConf.create(cfg.to_plain())), end="")
    console.print("[green]config OK[/]")


def _epoch_printer(m: dict[str, Any], max_epochs: int, elapsed: float) -> None:
    keys = [k for k in ("train_loss", "val_loss", "val_acc", "val_rmse_std") if k in m]
    parts = "  ".join(f"{k} {m[k]:.4f}" for k in keys)
    console.print(
        f"  epoch {int(m.get('epoch', 0)) + 1:>3}/{max_epochs}  {parts}  [dim]({elapsed:.1f}s)[/]"
    )


def _announce(stage: str, detail: str) -> None:
    console.print(f"[bold cyan]{stage:>6}[/] {detail}")


def _metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


@app.command(context_settings=_EXTRA)
def train(
    ctx: typer.Context, config_path: str | None = CONFIG_PATH, config_name: str = CONFIG_NAME
) -> None:
    """Train a model: validate config → Ray Data → Ray Train + Lightning → model bundle."""
    cfg = _load(ctx.args, config_path, config_name)
    if cfg.cluster.mode == "job":  # validated here, run there
        submit_job("train", ctx.args, cfg.cluster, wait=True, follow=True)
        return
    from raylight.cluster import session
    from raylight.config import ConfigError
    from raylight.data.pipeline import BadDataError
    from raylight.train import run_training

    console.print(
        f"[bold]raylight train[/] data={cfg.data.name} model={cfg.model['_target_'].rsplit('.', 1)[-1]} workers={cfg.scaling.num_workers} cluster={cfg.cluster.mode}"
    )
    from raylight.tracking import TrackingError

    try:
        with session(cfg.cluster):
            res = run_training(cfg, printer=_epoch_printer, announce=_announce)
    except (ConfigError, TrackingError) as exc:
        _fail_config(exc)
    except BadDataError as exc:
        err.print(f"[bold red]bad data:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    print_training(res)
    if res.registered and "error" in res.registered:
        raise typer.Exit(1)


@app.command(context_settings=_EXTRA)
def tune(
    ctx: typer.Context,
    config_path: str | None = CONFIG_PATH,
    config_name: str = typer.Option("tune", "--config-name", "-cn"),
) -> None:
    """Sweep: Ray Tune + Optuna/random/grid + ASHA over the training config.

    ``raylight tune experiment=adult_mlp hparams_search=adult_optuna tune.num_samples=16``;
    ``raylight tune resume=SWEEP_DIR [tune.restart_errored=true]`` continues a sweep.
    """
    from raylight.config import ConfigError, TuneRunConfig, load_tune_config

    args = list(ctx.args)
    resume = next(
        (a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in ("resume", "tune.resume")), None
    )
    try:
        if resume:
            cfg = _load_sweep(resume, args)
        else:
            cfg = load_tune_config(args, config_name=config_name, config_dir=config_path)
    except ConfigError as exc:
        _fail_config(exc)
    assert isinstance(cfg, TuneRunConfig)
    if cfg.cluster.mode == "job":
        submit_job("tune", ctx.args, cfg.cluster, wait=True, follow=True)
        return
    from raylight.cluster import session
    from raylight.data.pipeline import BadDataError
    from raylight.tracking import TrackingError
    from raylight.tune import run_tuning, sweep_cluster

    try:
        with session(sweep_cluster(cfg)):
            res = run_tuning(cfg, announce=_announce)
    except TrackingError as exc:
        _fail_config(exc)
    except BadDataError as exc:
        err.print(f"[bold red]bad data:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    print_sweep(cfg, res)
    print_tracking(res.tracking, res.registered)
    if res.registered and "error" in res.registered:
        raise typer.Exit(1)


def print_training(res: Any) -> None:
    """The end-of-run report: test metrics, timings, where the bundle and logs are."""
    console.print(
        _metrics_table(f"test metrics ({res.test_metrics.get('n', 0):,} rows)", res.test_metrics)
    )
    t = res.timings
    console.print(
        f"[dim]data {t['data_s']:.1f}s · train {t['train_s']:.1f}s · bundle+eval {t['bundle_eval_s']:.1f}s · total {t['total_s']:.1f}s[/]"
    )
    console.print(f"[bold green]bundle[/]  {res.bundle_path}")
    console.print(
        f"[bold]run dir[/] {res.run_dir}  (config.yaml, data_summary.json, logs/metrics.csv, train/ checkpoints)"
    )
    if res.data_summary.get("quarantine_path"):
        console.print(
            f"[yellow]quarantine[/] {res.data_summary['bad']} bad row(s) with reasons in {res.data_summary['quarantine_path']}"
        )
    print_tracking(res.tracking, res.registered)


def print_tracking(state: dict[str, Any], registered: dict[str, Any] | None) -> None:
    """Where the run was tracked, what failed there, and the registered version."""
    for name, info in state.items():
        if name != "errors":
            hint = "  (browse: raylight ui)" if name == "mlflow" else ""
            console.print(f"[bold]{name}[/]  run {info['run_id']}{hint}")
    for name, e in (state.get("errors") or {}).items():
        err.print(f"[yellow]tracking ({name}) failed and was switched off:[/] {e}", soft_wrap=True)
    if registered and "error" in registered:
        err.print(f"[bold red]registration failed:[/] {registered['error']}", soft_wrap=True)
    elif registered:
        console.print(f"[bold green]registered[/] {registered['uri']}")


def print_sweep(cfg: Any, res: Any) -> None:
    """The end-of-sweep report: top-k table, counts, Pareto front, best trial, paths."""
    metric, mode = cfg.tune.objective_list()[0].metric, cfg.tune.objective_list()[0].mode
    top = res.trials.sort_values(f"best_{metric}", ascending=mode == "min").head(cfg.tune.top_k)
    table = Table(
        title=f"top {len(top)} of {len(res.trials)} trials by {metric} ({mode})",
        header_style="bold",
    )
    param_cols = [c for c in top.columns if c.startswith("param.")]
    for col in [
        "trial",
        "status",
        "epochs",
        *[c.removeprefix("param.") for c in param_cols],
        f"best {metric}",
    ]:
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for _, r in top.iterrows():
        vals = [_fmt(r[c]) for c in param_cols]
        table.add_row(
            str(r["trial_id"]), str(r["status"]), str(r["epochs"]), *vals, _fmt(r[f"best_{metric}"])
        )
    console.print(table)
    counts = res.trials["status"].value_counts().to_dict()
    console.print(
        "trials: "
        + ", ".join(f"{k.lower()} {v}" for k, v in counts.items())
        + f" · {res.timings['total_s']:.0f}s"
    )
    if res.pareto:
        console.print(
            f"[bold]Pareto front[/] ({len(res.pareto)} trial(s)): "
            + "; ".join(f"{p['trial_id']}" for p in res.pareto)
        )
    console.print(_metrics_table("best trial, test split", res.best["test"]))
    console.print(
        f"[bold green]best config[/] {res.best_config_path}  (retrain: raylight train --config-path {Path(res.best_config_path).parent} --config-name config)"
    )
    console.print(f"[bold green]bundle[/]      {res.bundle_path}")
    console.print(
        f"[bold]sweep dir[/]   {res.sweep_dir}  (trials.parquet, trials.csv, plots: {', '.join(Path(p).name for p in res.plots) or 'none'})"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _load_sweep(resume: str, args: list[str]) -> Any:
    """A sweep's own saved definition; only tune.restart_errored may be changed on resume."""
    import json

    from raylight.config import ConfigError, TuneRunConfig
    from raylight.tune import STATE_FILE

    state = Path(resume) / STATE_FILE
    if not state.is_file():
        raise ConfigError(
            [("resume", f"{resume!r} is not a raylight sweep directory (no {STATE_FILE})")]
        )
    cfg = TuneRunConfig.model_validate(json.loads(state.read_text())["config"])
    update: dict[str, Any] = {"resume": str(Path(resume).resolve())}
    for a in args:
        key, _, value = a.partition("=")
        if key in ("resume", "tune.resume"):
            continue
        if key == "tune.restart_errored":
            update["restart_errored"] = value.lower() in ("1", "true", "yes")
        else:
            raise ConfigError(
                [
                    (
                        key,
                        "a resumed sweep keeps its definition; only tune.restart_errored can change",
                    )
                ]
            )
    return cfg.model_copy(update={"tune": cfg.tune.model_copy(update=update)})


@app.command(context_settings=_EXTRA)
def predict(ctx: typer.Context) -> None:
    """Batch inference: ``raylight predict bundle=PATH input=FILE output=FILE``."""
    from raylight.config import ConfigError, load_predict_config

    try:
        cfg = load_predict_config(ctx.args)
    except ConfigError as exc:
        _fail_config(exc)
    if cfg.cluster.mode == "job":
        submit_job("predict", ctx.args, cfg.cluster, wait=True, follow=True)
        return
    from raylight.bundle import BundleError, read_manifest
    from raylight.cluster import session
    from raylight.predict import run_predict

    try:
        read_manifest(cfg.bundle)
    except BundleError as exc:
        _fail_config(exc)
    try:
        with session(cfg.cluster):
            res = run_predict(cfg)
    except (ValueError, BundleError) as exc:
        _fail_config(exc)
    console.print(
        f"[bold green]wrote[/] {res.rows:,} predictions to {res.output}"
        + (
            f" ([yellow]{res.errors} row(s) broke the contract; see the error column[/])"
            if res.errors
            else ""
        )
    )


SERVE_ACTIONS = ("run", "status", "shutdown", "rollback", "build")


@app.command(context_settings=_EXTRA)
def serve(
    ctx: typer.Context,
    out: str = typer.Option("deploy", "--out", help="build: directory for the YAML files."),
    image: str = typer.Option(
        "ghcr.io/raylight-dev/raylight:0.1.0-ray2.60.0-torch2.13.0-cu128",
        "--image",
        help="build: container image of the RayService pods.",
    ),
) -> None:
    """Online inference with Ray Serve: ``raylight serve [ACTION] bundle=PATH ...``.

    ACTION is run (default: deploy and, on the embedded cluster, stay in the foreground),
    status, shutdown, rollback (drop the canary, or return to the previous version) or build
    (write a Serve config YAML for ``serve deploy`` and a KubeRay RayService manifest).
    """
    from raylight.config import ConfigError, load_serve_config

    args = list(ctx.args)
    action = args.pop(0) if args and args[0] in SERVE_ACTIONS else "run"
    if action != "run" and action != "build" and not any(a.startswith("bundle=") for a in args):
        args.append("bundle=''")  # bundle is not needed to find a running app
    try:
        cfg = load_serve_config(args, require_bundle=action in ("run", "build"))
    except ConfigError as exc:
        _fail_config(exc)
    from raylight.serve import deploy as sd

    if action == "build":
        from raylight.serve.build import write

        for kind, path in write(cfg, out, image).items():
            console.print(f"[bold green]wrote[/] {kind}: {path}")
        return
    if cfg.cluster.mode == "job":
        # Deploy (or inspect) from a job on the cluster: inside it this is cluster=address,
        # so the command returns once the app is deployed.
        submit_job("serve", ctx.args, cfg.cluster, wait=True, follow=True)
        return
    if cfg.cluster.mode == "local" and action != "run":
        try:
            if action == "status":
                console.print_json(data=sd.local_status(cfg))
            elif action == "shutdown":
                sd.local_shutdown(cfg)
                console.print(f"stopped {cfg.name}")
            else:
                _fail_config(sd.ServeError(
                    "rollback needs a running cluster (cluster=address): the foreground server "
                    "serves one bundle; restart it with the bundle you want"
                ))  # fmt: skip
        except sd.ServeError as exc:
            _fail_config(exc)
        return
    from raylight.bundle import BundleError
    from raylight.cluster import init

    foreground = action == "run" and cfg.cluster.mode == "local"
    stop = sd.StopSignal() if foreground else None
    if action == "run":
        try:
            sd.preflight(cfg.app_args())
        except (BundleError, OSError, ValueError) as exc:
            _fail_config(exc)
    where = "starting" if cfg.cluster.mode == "local" else f"connecting to {cfg.cluster.address}"
    _announce("ray", where)
    started = init(cfg.cluster)
    import logging

    import ray
    import ray.serve  # configures its logger on import: quiet it after

    # Serve's INFO lines ("Started Serve", "Connecting to existing Serve app") are noise here.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if stop is not None:
        stop.install()  # again: ray.init replaced the SIGTERM handler with its own (abort)
    try:
        if action == "status":
            console.print_json(data=sd.status(cfg.name))
            return
        if action == "shutdown":
            sd.shutdown(cfg.name)
            console.print(f"deleted Serve application {cfg.name}")
            return
        # Recorded before deploying, so `raylight serve status|shutdown` find a server that is
        # still starting (status: not answering yet).
        state = sd.write_state(cfg) if stop is not None else None
        res = sd.rollback(cfg) if action == "rollback" else sd.deploy(cfg)
        for route, v in res.versions.items():
            console.print(f"[bold]{route}[/]: {v['name']} version {v['version']}")
        console.print(f"[bold green]serving[/] {res.url}/predict  (docs: {res.url}/docs)")
        if stop is not None and state is not None:
            console.print("Ctrl-C (or `raylight serve shutdown`) stops it.")
            try:
                stop.wait()
            finally:
                state.unlink(missing_ok=True)
            console.print("stopped")
    except sd.ServeError as exc:
        _fail_config(exc)
    finally:
        if started:
            # The embedded Ray takes Serve down with it.
            ray.shutdown()


# ----------------------------------------------------------------------------- jobs

ADDRESS = typer.Option(None, "--address", help="Jobs API URL (overrides the profile's address).")


def _submit_config(overrides: list[str], address: str | None) -> Any:
    from raylight.config import ConfigError, load_submit_config

    if address:
        overrides = [*overrides, f"cluster.address={address}"]
    try:
        return load_submit_config(overrides)
    except ConfigError as exc:
        _fail_config(exc)


def _follow_job(cluster: Any, job_id: str, follow: bool) -> int:
    """Stream logs (or just wait); exit code from the job's final status."""
    from raylight import jobs

    if follow:
        for chunk in jobs.follow(cluster, job_id):
            console.out(chunk, end="", highlight=False)
    final = jobs.wait(cluster, job_id)
    colour = "green" if final == "SUCCEEDED" else "red"
    err.print(f"job {job_id}: [bold {colour}]{final}[/]")
    return 0 if final == "SUCCEEDED" else 1


def submit_job(command: str, args: list[str], cluster: Any, wait: bool, follow: bool) -> None:
    """Submit ``raylight <command> <args>`` to ``cluster``'s Jobs API; optionally follow it."""
    from raylight import jobs

    try:
        sub = jobs.submit(cluster, command, args)
        console.print(f"[bold green]submitted[/] {sub.job_id} to {sub.address}")
        console.print(f"  {sub.entrypoint}")
        if wait or follow:
            raise typer.Exit(_follow_job(cluster, sub.job_id, follow))
        console.print(
            f"  raylight jobs logs {sub.job_id} --follow   |   raylight jobs stop {sub.job_id}"
        )
    except jobs.JobError as exc:
        _fail_config(exc)


@app.command(context_settings=_EXTRA)
def submit(
    ctx: typer.Context,
    address: str | None = ADDRESS,
    wait: bool = typer.Option(False, "--wait", help="Wait for the job; exit code follows it."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream its logs (implies --wait)."),
) -> None:
    """Run a raylight command as a Ray job: ``raylight submit [cluster=NAME] -- train ...``.

    Overrides before the command choose the cluster profile (default ``remote``); the command
    and its overrides run on the cluster, with this project's code shipped as the job's
    working_dir. Prints the job id; ``--wait``/``--follow`` exit with the job's outcome.
    """
    from raylight.jobs import COMMANDS

    args = [a for a in ctx.args if a != "--"]
    split = next((i for i, a in enumerate(args) if a in COMMANDS), None)
    if split is None:
        _fail_config(ValueError(f"name the command to run: one of {', '.join(COMMANDS)}"))
    cfg = _submit_config(args[:split], address)
    submit_job(args[split], args[split + 1 :], cfg.cluster, wait, follow)


@app.command(context_settings=_EXTRA)
def jobs(
    ctx: typer.Context,
    address: str | None = ADDRESS,
    follow: bool = typer.Option(False, "--follow", "-f", help="logs: stream until the job ends."),
) -> None:
    """Ray jobs on a cluster: ``raylight jobs list|status|logs|stop [JOB_ID] [cluster=NAME]``."""
    from raylight import jobs as rj

    args = list(ctx.args)
    action = args.pop(0) if args else "list"
    if action not in ("list", "status", "logs", "stop"):
        _fail_config(ValueError(f"unknown action {action!r}: list, status, logs or stop"))
    job_id = None
    if action != "list":
        if not args or "=" in args[0]:
            _fail_config(ValueError(f"raylight jobs {action} needs a JOB_ID"))
        job_id = args.pop(0)
    cfg = _submit_config(args, address)
    try:
        if action == "list":
            table = Table(title=f"Ray jobs on {cfg.cluster.address}")
            for col in ("job id", "status", "entrypoint"):
                table.add_column(col)
            for j in rj.list_jobs(cfg.cluster):
                table.add_row(str(j["job_id"]), j["status"], str(j["entrypoint"])[:100])
            console.print(table)
        elif action == "status":
            console.print_json(data=rj.status(cfg.cluster, str(job_id)))
        elif action == "logs":
            if follow:
                raise typer.Exit(_follow_job(cfg.cluster, str(job_id), True))
            console.out(rj.logs(cfg.cluster, str(job_id)), end="", highlight=False)
        else:
            rj.stop(cfg.cluster, str(job_id))
            console.print(f"stop requested for {job_id}")
    except rj.JobError as exc:
        _fail_config(exc)


@app.command(context_settings=_EXTRA)
def cluster(
    ctx: typer.Context,
    image: str = typer.Option(None, "--image", help="Container image (default: the pinned one)."),
    out: str | None = typer.Option(None, "--out", help="Write here instead of stdout."),
    gpus: int = typer.Option(1, "--gpus-per-worker", help="GPUs per worker pod (0: CPU)."),
    max_workers: int = typer.Option(4, "--max-workers", help="Autoscaling limit of workers."),
) -> None:
    """Render KubeRay manifests: ``raylight cluster render kuberay-job experiment=...``.

    ``kuberay-job [COMMAND] overrides``: a RayJob running ``raylight COMMAND`` (default train)
    with the overrides, validated here first; ``kuberay-cluster``: a RayCluster.
    """
    from raylight import kuberay

    args = [a for a in ctx.args if a != "--"]
    if len(args) < 2 or args[0] != "render" or args[1] not in ("kuberay-job", "kuberay-cluster"):
        _fail_config(ValueError("usage: raylight cluster render kuberay-job|kuberay-cluster ..."))
    kind, rest = args[1], args[2:]
    spec = {"gpus_per_worker": gpus, "max_workers": max_workers}
    if kind == "kuberay-cluster":
        doc = kuberay.raycluster(image=image or kuberay.IMAGE, **spec)
    else:
        from raylight.jobs import COMMANDS, strip_cluster_overrides

        command = rest.pop(0) if rest and rest[0] in COMMANDS else "train"
        if command == "train":
            _load(rest, None, "train")  # a bad config fails here, not in the cluster
        name = f"raylight-{command}"
        doc = kuberay.rayjob(
            command, strip_cluster_overrides(rest), name=name, image=image or kuberay.IMAGE, **spec
        )
    text = kuberay.dump(doc)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        err.print(f"wrote {out}")
    else:
        console.out(text, end="", highlight=False)


@app.command(context_settings=_EXTRA)
def evaluate(ctx: typer.Context) -> None:
    """Judge a model: ``raylight evaluate model=outputs/runs/<run> | models:/NAME@ALIAS``.

    Metrics, slices with bootstrap intervals, fairness (fairlearn), Integrated Gradients
    explanations and plots, as a self-contained report.html + report.json, logged to the
    model's MLflow run. ``input=FILE`` judges labelled rows of your own instead of the bundle's
    test split.
    """
    from raylight.config import ConfigError, load_evaluate_config

    try:
        cfg = load_evaluate_config(ctx.args)
    except ConfigError as exc:
        _fail_config(exc)
    from raylight.bundle import BundleError
    from raylight.cluster import session
    from raylight.evaluate.run import run_evaluation
    from raylight.registry import RegistryError
    from raylight.tracking import TrackingError

    try:
        with session(cfg.cluster):
            res = run_evaluation(cfg, announce=_announce)
    except (BundleError, RegistryError, TrackingError, ValueError) as exc:
        _fail_config(exc)
    m = res.report["metrics"]
    console.print(
        _metrics_table(
            f"metrics ({m['n']:,} rows)", {k: v for k, v in m.items() if not isinstance(v, dict)}
        )
    )
    from rich.markup import escape

    worst = res.report["slices"].get("worst") or []
    if worst:
        key = res.report["slices"]["metric"]
        console.print(
            "worst slices: "
            + ", ".join(
                f"{escape(str(w['column']))}={escape(str(w['value']))} ({key} {w[key]:.3f}, n={w['n']})"
                for w in worst
            )
        )
    for col, f in (res.report.get("fairness", {}).get("attributes") or {}).items():
        console.print(
            f"fairness {col}: demographic parity difference {f['demographic_parity_difference']:.3f}, "
            f"equalized odds difference {f['equalized_odds_difference']:.3f}"
        )
    imp = list((res.report.get("explanations") or {}).get("importance", {}).items())[:5]
    if imp:
        console.print("top features: " + ", ".join(f"{k} {v:.3f}" for k, v in imp))
    console.print(f"[bold green]report[/] {res.report_path}  (+ report.json)")
    if res.tracking.get("mlflow"):
        console.print(f"[bold]mlflow[/]  run {res.tracking['mlflow']['run_id']}")


@app.command()
def monitor(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="The endpoint's base URL."),
    watch: float = typer.Option(0, "--watch", help="Refresh every this many seconds (0: once)."),
    count: int = typer.Option(0, "--count", help="With --watch: stop after this many reads."),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="Env var holding the endpoint's API key."
    ),
    header: str = typer.Option("x-api-key", "--header", help="Header the API key goes in."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw /drift JSON."),
) -> None:
    """Drift of a served model's inputs and its traffic: reads ``URL/drift``.

    Exit code 3 when a feature is over a drift threshold (for cron jobs and CI gates).
    """
    import json
    import time

    from raylight.serve.watch import MonitorError, fetch, tables

    key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not key:
        _fail_config(ValueError(f"--api-key-env: ${api_key_env} is not set"))
    reads = 0
    while True:
        try:
            report = fetch(url, key, header)
        except MonitorError as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from None
        reads += 1
        if as_json:
            console.print_json(json.dumps(report))
        else:
            for t in tables(report):
                console.print(t)
        drifted = any((v.get("drift") or {}).get("drifted") for v in report["versions"])
        if watch <= 0 or (count and reads >= count):
            raise typer.Exit(3 if drifted else 0)
        time.sleep(watch)


# ----------------------------------------------------------------------------- registry

registry_app = typer.Typer(
    no_args_is_help=True,
    help="MLflow model registry: versions of trained bundles, aliases, lineage.",
)
app.add_typer(registry_app, name="registry")
STORE = typer.Option(
    None,
    "--store",
    help="MLflow tracking/registry URI; default $MLFLOW_TRACKING_URI, else the embedded store "
    "<output-dir>/mlflow.db.",
)
OUTPUT_DIR = typer.Option("outputs", "--output-dir", help="Output root of the embedded store.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _registry(store: str | None, output_dir: str) -> Any:
    from raylight import registry, tracking

    try:
        return registry.open_store(store, output_dir)
    except tracking.TrackingError as exc:
        _fail_config(exc)


def _registry_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from raylight.registry import RegistryError

    try:
        return fn(*args, **kwargs)
    except RegistryError as exc:
        _fail_config(exc)


def _version_table(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    for col in ("version", "aliases", "created", "by", "run", "test metrics"):
        t.add_column(col)
    for r in rows:
        metrics = ", ".join(
            f"{k.removeprefix('metric.test_')} {float(v):.4f}"
            for k, v in r["tags"].items()
            if k.startswith("metric.test_") and k != "metric.test_n"
        )
        t.add_row(
            r["version"], ", ".join(r["aliases"]), (r["created_at"] or "")[:19],
            r["registered_by"] or "", (r["run_id"] or "")[:12], metrics,
        )  # fmt: skip
    return t


@registry_app.command("register")
def registry_register(
    source: str = typer.Argument(
        ..., help="Bundle, run or sweep directory (path or URI), MLflow run id or runs:/ID."
    ),
    name: str = typer.Option(..., "--name", help="Registered model name."),
    description: str | None = typer.Option(None, "--description"),
    alias: str | None = typer.Option(None, "--alias", help="Also point this alias at it."),
    store: str | None = STORE,
    output_dir: str = OUTPUT_DIR,
) -> None:
    """Register a bundle as a new model version (validated first)."""
    from raylight import registry

    c = _registry(store, output_dir)
    v = _registry_call(registry.register, c, source, name, description, output_dir)
    console.print(
        f"[bold green]registered[/] {v['uri']}  (run {v['run_id']}, source {v['source']})"
    )
    if alias:
        p = _registry_call(registry.promote, c, name, v["version"], alias)
        console.print(f"{name}@{alias} → v{p['version']}")


@registry_app.command("list")
def registry_list(
    name: str | None = typer.Argument(None, help="A model: list its versions."),
    store: str | None = STORE,
    output_dir: str = OUTPUT_DIR,
    as_json: bool = JSON,
) -> None:
    """Registered models, or the versions of one."""
    from raylight import registry

    rows = _registry_call(registry.list_models, _registry(store, output_dir), name)
    if as_json:
        console.print_json(data=rows)
    elif name:
        console.print(_version_table(f"{name}: versions", rows))
    else:
        t = Table(title="registered models")
        for col in ("name", "versions", "latest", "aliases", "updated"):
            t.add_column(col)
        for r in rows:
            aliases = ", ".join(f"{a} → v{v}" for a, v in sorted(r["aliases"].items()))
            t.add_row(
                r["name"],
                str(r["versions"]),
                str(r["latest"]),
                aliases,
                (r["updated_at"] or "")[:19],
            )
        console.print(t)


@registry_app.command("show")
def registry_show(
    ref: str = typer.Argument(..., help="NAME, NAME/VERSION or NAME@ALIAS."),
    store: str | None = STORE,
    output_dir: str = OUTPUT_DIR,
    as_json: bool = JSON,
) -> None:
    """One version: metrics, lineage (run, config, data fingerprint, commit), who and when."""
    from raylight import registry

    d = _registry_call(registry.show, _registry(store, output_dir), ref)
    if as_json:
        console.print_json(data=d)
        return
    lin = d.get("lineage") or {}
    run = d.get("run") or {}
    t = Table(
        title=f"{d['uri']}" + (f"  ({', '.join(d['aliases'])})" if d["aliases"] else ""),
        show_header=False,
    )
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in (
        ("registered", f"{d['created_at']} by {d['registered_by']}"),
        ("description", d.get("description")),
        ("source", d["source"]),
        ("run", f"{run.get('run_name')} ({d['run_id']}, {run.get('status')})"),
        ("run dir", run.get("run_dir")),
        ("data fingerprint", lin.get("data_fingerprint")),
        ("data", ", ".join(lin.get("data_sources") or [])),
        ("git commit", f"{lin.get('git_commit')}" + (" (dirty)" if lin.get("git_dirty") else "")),
        ("versions", ", ".join(f"{p} {v}" for p, v in (lin.get("versions") or {}).items())),
        ("trained", lin.get("created_at")),
        ("test metrics", ", ".join(f"{k} {v:.4f}" for k, v in (d.get("metrics") or {}).items() if isinstance(v, float))),
        ("model", (d.get("config") or {}).get("model", {}).get("_target_")),
    ):  # fmt: skip
        if v:
            t.add_row(k, str(v))
    console.print(t)


@registry_app.command("promote", context_settings=_EXTRA)
def registry_promote(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    version: str = typer.Argument(...),
    alias: str = typer.Option("production", "--alias"),
    force: bool = typer.Option(False, "--force", help="Promote even if the gate fails."),
    reason: str | None = typer.Option(None, "--reason", help="Why (required with --force)."),
    store: str | None = STORE,
    output_dir: str = OUTPUT_DIR,
) -> None:
    """Point an alias (default production) at a version; the old target is kept for rollback.

    With a gate (``gate=adult`` or ``gate.min.accuracy=0.84 gate.max.ece=0.05 ...``, evaluate
    overrides), the version is judged first — its latest report on the same rows is reused,
    else it is evaluated — and a failed threshold refuses the promotion unless ``--force
    --reason "..."``, which is recorded on the version.
    """
    from raylight import registry

    c = _registry(store, output_dir)
    if force and not reason:
        _fail_config(ValueError('--force needs --reason "...": it is recorded on the version'))
    if ctx.args:
        mv = _registry_call(
            registry.get_version, c, name if version == "latest" else f"{name}/{version}"
        )
        _gate(c, name, str(mv.version), ctx.args, store, output_dir, force, reason)
        version = str(mv.version)
    d = _registry_call(registry.promote, c, name, version, alias)
    was = f" (was v{d['previous']})" if d["previous"] else ""
    console.print(f"[bold green]{name}@{alias}[/] → v{d['version']}{was}")


def _gate(
    c: Any,
    name: str,
    version: str,
    overrides: list[str],
    store: str | None,
    output_dir: str,
    force: bool,
    reason: str | None,
) -> None:
    """Judge a version against the gate; exit 1 on failure unless forced (then record why)."""
    import json

    from raylight.config import ConfigError, load_evaluate_config
    from raylight.evaluate import gate
    from raylight.evaluate.run import eval_scope

    args = [f"model=models:/{name}/{version}", f"output_dir={output_dir}", *overrides]
    if store:
        args.append(f"registry_uri={store}")
    try:
        cfg = load_evaluate_config(args)
    except ConfigError as exc:
        _fail_config(exc)
    if not (cfg.gate.min or cfg.gate.max):
        _fail_config(
            ValueError(f"no gate thresholds in {overrides}: use gate=NAME or gate.min.KEY=V")
        )
    tags = c.get_model_version(name, version).tags or {}
    report = None
    path = tags.get("raylight.eval_report")
    if path and tags.get("raylight.eval_on") == eval_scope(cfg) and Path(path).is_file():
        report = json.loads(Path(path).read_text())
        console.print(f"gate: reusing the report {path}")
    if report is None:
        from raylight.cluster import session
        from raylight.evaluate.run import run_evaluation

        console.print(f"gate: evaluating {name} v{version} ({eval_scope(cfg)})")
        with session(cfg.cluster):
            report = run_evaluation(cfg, announce=_announce).report
    from rich.markup import escape  # check names like "demographic_parity_difference[sex]"

    result = gate.check(report, cfg.gate.min, cfg.gate.max)
    for chk in result["checks"]:
        mark = "[green]ok[/]" if chk["ok"] else "[bold red]FAIL[/]"
        console.print(
            f"  {mark} {escape(chk['name'])} = {chk['value']:.4f} (needs {chk['op']} {chk['threshold']:g})"
        )
    c.set_model_version_tag(name, version, "raylight.gate", json.dumps(
        {"passed": result["passed"], "min": cfg.gate.min, "max": cfg.gate.max}
    ))  # fmt: skip
    if result["passed"]:
        return
    failed = gate.describe(result)
    if not force:
        err.print(f"[bold red]gate failed[/] for {name} v{version}, not promoted:")
        for line in failed:
            err.print(f"  - {escape(line)}")
        err.print('(promote anyway with --force --reason "...", which is recorded on the version)')
        raise typer.Exit(1)
    import getpass

    c.set_model_version_tag(name, version, "raylight.gate_override", json.dumps(
        {"reason": reason, "by": getpass.getuser(), "failed": failed}
    ))  # fmt: skip
    err.print(f"[yellow]gate failed, promoted anyway (--force):[/] {reason}")


@registry_app.command("rollback")
def registry_rollback(
    name: str = typer.Argument(...),
    alias: str = typer.Option("production", "--alias"),
    store: str | None = STORE,
    output_dir: str = OUTPUT_DIR,
) -> None:
    """Point an alias back at the version it named before its last promotion."""
    from raylight import registry

    d = _registry_call(registry.rollback, _registry(store, output_dir), name, alias)
    console.print(f"[bold green]{name}@{alias}[/] → v{d['version']} (was v{d['previous']})")


@registry_app.command("lineage")
def registry_lineage(
    run: str = typer.Argument(..., help="MLflow run id or a tracked run directory."),
    store: str | None = STORE,
    output_dir: str = OUTPUT_DIR,
    as_json: bool = JSON,
) -> None:
    """Every model version registered from a run."""
    from raylight import registry

    rows = _registry_call(registry.runs_versions, _registry(store, output_dir), run)
    if as_json:
        console.print_json(data=rows)
        return
    t = Table(title=f"versions registered from {run}")
    for col in ("model", "version", "aliases", "source"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["version"], ", ".join(r["aliases"]), r["source"])
    console.print(t)


@app.command()
def ui(
    port: int = typer.Option(5000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback by default)."),
    store: str | None = STORE,
    output_dir: str = OUTPUT_DIR,
) -> None:
    """The MLflow UI on the tracking store (embedded by default), bound to 127.0.0.1."""
    import shutil

    from raylight import tracking
    from raylight.config import TrackingConfig

    uri = tracking.mlflow_uri(
        TrackingConfig.model_validate({"mlflow": {"tracking_uri": store}}), output_dir
    )
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        _fail_config(FileNotFoundError(f"no tracking store at {uri}: train something first"))
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    console.print(f"MLflow UI on http://{host}:{port}  (store {uri}); Ctrl-C stops it")
    os.execv(exe, [exe, "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)])


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
