"""``raylight evaluate``: judge a bundle on labelled rows and write the report.

Reads top to bottom: resolve the model (bundle, run/sweep directory or registry reference) →
read the rows (the bundle's own data and split by default, or a labelled file) through the
same contract training used → predict → metrics, slices, fairness, explanations → HTML +
JSON → tracking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from raylight.config import DataConfig, EvaluateConfig

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class EvalResult:
    out_dir: str
    report_path: str
    json_path: str
    report: dict[str, Any]
    tracking: dict[str, Any]


def resolve_model(cfg: EvaluateConfig) -> tuple[str, dict[str, Any] | None]:
    """(bundle path, registry info or None) for what ``model=`` names."""
    if cfg.model.startswith("models:/"):
        from raylight import registry

        c = registry.open_store(cfg.registry_uri, cfg.output_dir)
        return registry.resolve_bundle(c, cfg.model)
    from raylight.registry import _bundle_of

    path, _ = _bundle_of(cfg.model)
    return path, None


def read_rows(
    cfg: EvaluateConfig, data: DataConfig, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows to judge, parsed by the data contract; bad rows counted, not used.

    Returns:
        (good rows of the chosen split, counts: read, bad, used)
    """
    import ray

    from raylight.data import sources
    from raylight.data.contract import ERROR_COL, RAW_COL, SPLIT_COL
    from raylight.data.pipeline import _checked

    if cfg.input:
        data = data.model_copy(
            update={"source": "file", "path": cfg.input, "format": "auto", "limit_rows": None}
        )
    if not ray.is_initialized():
        raise RuntimeError("evaluation reads data with Ray Data: start a cluster session first")
    df = _checked(data, seed, sources.resolve(data), pii="drop").to_pandas()
    counts = {"read": len(df), "bad": int(df[ERROR_COL].notna().sum())}
    good = df[df[ERROR_COL].isna()]
    if not cfg.input and cfg.split != "all":
        good = good[good[SPLIT_COL] == SPLIT_IDS[cfg.split]]
    good = good.drop(columns=[ERROR_COL, RAW_COL, SPLIT_COL]).reset_index(drop=True)
    for c, rule in data.contract.columns.items():
        if rule.dtype == "image" and c in good:
            # parsed images travel as float32 bytes; the bundle's encoder takes pixel arrays
            good[c] = [np.frombuffer(bytes(v), dtype=np.float32) for v in good[c]]
    counts["used"] = len(good)
    return good, counts


def run_evaluation(cfg: EvaluateConfig, announce: Any = None) -> EvalResult:
    """Evaluate on the current Ray cluster (see ``cluster.session``); write and track the report."""
    from raylight import bundle as bundle_io
    from raylight.config import DataConfig
    from raylight.evaluate import explain, fairness, metrics, plots, report

    say = announce or (lambda stage, detail: None)
    t0 = time.time()
    bundle_path, reg = resolve_model(cfg)
    b = bundle_io.load(bundle_path)
    manifest = b.manifest
    train_cfg = manifest.get("config") or {}
    data = DataConfig.model_validate(train_cfg["data"])
    seed = int(train_cfg.get("seed", 0))
    say("model", f"{bundle_path}" + (f" ({reg['uri']} → v{reg['version']})" if reg else ""))

    pii = data.pii_columns()
    for key in ("slices", "sensitive"):
        named = [c for c in (getattr(cfg, key) or []) if c in pii]
        if named:
            raise ValueError(f"{key}: {named} are pii columns; a report would show their values")
    rows, counts = read_rows(cfg, data, seed)
    where = cfg.input or f"{data.name}, {cfg.split} split"
    say("data", f"{where}: {counts['used']:,} rows ({counts['bad']:,} broke the contract)")
    if rows.empty:
        raise ValueError(f"no labelled rows to evaluate in {where}")
    target = data.target
    labelled = rows[rows[target].notna()].reset_index(drop=True)
    counts["unlabelled"] = len(rows) - len(labelled)
    feats, errors = b.encode(labelled)
    ok = ~np.asarray([e is not None for e in errors])
    labelled = labelled[ok].reset_index(drop=True)
    feats = feats[ok]
    task, classes = b.task, b.classes
    positive = None
    if task == "classification":
        y = b.preprocessor.encode_target(labelled[target])
        proba = b.predict_encoded(feats)["proba"]
        out = proba
        pos_label = manifest.get("positive_label")
        positive = (
            classes.index(pos_label) if pos_label in classes else (1 if len(classes) == 2 else None)
        )
        overall = metrics.classification(y, proba, classes, positive)
    else:
        y = labelled[target].astype(float).to_numpy()
        out = b.predict_encoded(feats)["value"]
        overall = metrics.regression(y, out)
    say(
        "metrics",
        ", ".join(f"{k} {v:.4f}" for k, v in overall.items() if isinstance(v, float))[:200],
    )

    # ---- slices and fairness, on the rows' parsed (not encoded) values
    slice_cols = [
        c for c in (cfg.slices if cfg.slices is not None else data.slices) if c in labelled
    ]
    sensitive = [
        c for c in (cfg.sensitive if cfg.sensitive is not None else data.sensitive) if c in labelled
    ]
    sl = metrics.slices(
        task, y, out, {c: labelled[c].to_numpy() for c in slice_cols}, classes, positive,
        n_boot=cfg.bootstrap, level=cfg.level, seed=cfg.seed, min_rows=cfg.min_slice_rows,
    )  # fmt: skip
    fair: dict[str, Any] = {}
    if task == "classification" and sensitive and positive is not None:
        fair = {
            "positive": classes[positive],
            "note": f"positive class {classes[positive]!r}; rates of hard predictions (argmax)",
            "attributes": fairness.group_fairness(
                y, out.argmax(axis=1), {c: labelled[c].to_numpy() for c in sensitive}, positive
            ),
        }

    # ---- explanations
    ex: dict[str, Any] = {}
    if cfg.explain.rows > 0:
        shown = labelled.drop(columns=[c for c in b.preprocessor.images if c in labelled])
        ex = explain.explain(
            b, feats, shown.to_dict(orient="records"), sample=cfg.explain.rows,
            examples=cfg.explain.examples, steps=cfg.explain.steps, seed=cfg.seed,
        )  # fmt: skip

    # ---- plots
    figs: dict[str, bytes] = {}
    if task == "classification":
        figs["confusion"] = plots.confusion(y, out.argmax(axis=1), classes)
        figs["roc_pr"] = plots.roc_pr(y, out, classes, positive)
        _, bins = metrics.expected_calibration_error(y, out)
        figs["calibration"] = plots.calibration(bins)
    else:
        figs["residuals"] = plots.residuals(y, out)
    for col, srows in sl["columns"].items():
        if srows:
            figs[f"slice:{col}"] = plots.slice_bars(srows, sl["metric"], col)
    if ex.get("importance"):
        figs["importance"] = plots.importance(ex["importance"])
    for k, col, pixels, attr in ex.pop("_pixel_maps", []):
        figs[f"attribution:{k}"] = plots.pixel_attribution(pixels, attr, f"{col}: attribution")

    lin = manifest.get("lineage", {})
    title = f"Evaluation of {reg['uri'] if reg else lin.get('run_name') or bundle_path}"
    rep: dict[str, Any] = {
        "summary": {
            "title": title,
            "facts": {
                "model": reg["uri"] + f" (v{reg['version']})" if reg else bundle_path,
                "bundle": bundle_path,
                "task": task,
                "data": where,
                "rows evaluated": len(labelled),
                "rows that broke the contract (not used)": counts["bad"],
                "rows without a label (not used)": counts["unlabelled"],
                "trained on": lin.get("data_fingerprint"),
                "training run": lin.get("run_name"),
                "evaluated at": datetime.now().isoformat(timespec="seconds"),
            },
            "privacy": (
                f"pii columns {', '.join(pii)}: dropped when the rows were read; "
                "not features, not in any section of this report."
                if pii
                else "The data contract marks no column as pii."
            ),
        },
        "model": {"bundle": bundle_path, "registry": reg, "lineage": lin},
        "privacy": {"pii_columns": pii, "treatment": "dropped when read" if pii else None},
        "data": {"source": where, "split": None if cfg.input else cfg.split, **counts},
        "metrics": overall,
        "slices": sl,
        "fairness": fair,
        "explanations": ex,
    }
    if task == "classification":
        rep["calibration_bins"] = metrics.expected_calibration_error(y, out)[1]
    if cfg.gate.min or cfg.gate.max:
        from raylight.evaluate import gate

        rep["gate"] = gate.check(rep, cfg.gate.min, cfg.gate.max)
        rep["gate"]["min"], rep["gate"]["max"] = dict(cfg.gate.min), dict(cfg.gate.max)

    out_dir = _out_dir(cfg, lin.get("run_name") or "model")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    html_path, json_path = f"{out_dir}/report.html", f"{out_dir}/report.json"
    Path(html_path).write_text(report.render(rep, figs))
    Path(json_path).write_text(report.to_json(rep))
    rep["timings"] = {"total_s": time.time() - t0}
    tracked = _track(cfg, rep, out_dir, lin, data.name, say)
    if reg:
        _tag_version(cfg, reg, json_path, manifest, say)
    return EvalResult(out_dir, html_path, json_path, rep, tracked)


def _tag_version(
    cfg: EvaluateConfig, reg: dict[str, Any], json_path: str, manifest: dict[str, Any], say: Any
) -> None:
    """A registry version remembers its latest report, so ``promote`` can reuse it."""
    from raylight import registry

    try:
        c = registry.open_store(cfg.registry_uri, cfg.output_dir)
        c.set_model_version_tag(reg["name"], reg["version"], "raylight.eval_report", json_path)
        c.set_model_version_tag(reg["name"], reg["version"], "raylight.eval_on", eval_scope(cfg))
    except Exception as exc:
        say("registry", f"could not tag {reg['name']} v{reg['version']} with its report: {exc}")


def eval_scope(cfg: EvaluateConfig) -> str:
    """What a report judged: a later gate may reuse it only for the same rows."""
    return f"input:{cfg.input}" if cfg.input else f"split:{cfg.split}"


def _out_dir(cfg: EvaluateConfig, name: str) -> str:
    if cfg.out:
        return str(Path(cfg.out).expanduser().resolve())
    root = Path(cfg.output_dir).expanduser().resolve()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
    return str(
        root
        / "evaluations"
        / f"{safe}-{cfg.split if not cfg.input else 'input'}-{datetime.now():%Y%m%d-%H%M%S}"
    )


def _track(
    cfg: EvaluateConfig,
    rep: dict[str, Any],
    out_dir: str,
    lineage: dict[str, Any],
    experiment: str,
    say: Any,
) -> dict[str, Any]:
    """Log the report to the bundle's own MLflow run when this store has it, else a new run."""
    from raylight import tracking

    if "mlflow" not in cfg.tracking.backends:
        return {}
    run_id = (lineage.get("tracking") or {}).get("mlflow")
    previous = None
    if run_id:
        try:
            tracking.client(tracking.mlflow_uri(cfg.tracking, cfg.output_dir)).get_run(run_id)
            previous = {"mlflow": {"run_id": run_id}}
        except Exception:
            previous = None
    t = cfg.tracking.model_copy(update={"backends": ["mlflow"]})
    try:
        tr = tracking.open_runs(
            t, cfg.output_dir, cfg.tracking.mlflow.experiment or experiment,
            f"evaluate-{lineage.get('run_name') or 'model'}", previous=previous,
            warn=lambda m: say("tracking", m),
        )  # fmt: skip
    except tracking.TrackingError as exc:
        say("tracking", f"report not tracked: {exc}")
        return {"error": str(exc)}
    prefix = "eval_" + (cfg.split if not cfg.input else "input") + "_"
    tr.log_metrics({prefix + k: v for k, v in rep["metrics"].items()}, step=0)
    tr.log_artifacts(out_dir, "evaluation/" + Path(out_dir).name)
    tr.set_tags({"raylight.evaluation": out_dir})
    tr.finish("FINISHED")
    return tr.state()
