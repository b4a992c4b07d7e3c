"""Model registry on MLflow: bundles as registered model versions, aliases, lineage.

A version's source is the bundle uploaded as its training run's ``bundle`` artifact (a local
path or a URI under the store's artifact root), so a version leads to its run, config, data
fingerprint and commit; a run leads to every version registered from it (MLflow's own
``run_id`` field of a version). Aliases (``production``, ``staging``, ...) are MLflow aliases;
raylight keeps each alias's earlier targets in a tag of the registered model so that
``rollback`` can step back.

References, as a user types them: ``NAME`` (latest version), ``NAME/3``, ``NAME@production``,
with or without the ``models:/`` prefix.
"""

from __future__ import annotations

import difflib
import getpass
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from raylight import tracking
from raylight.config import MODEL_NAME_PATTERN

HISTORY_TAG = "raylight.alias_history.{alias}"
_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/@]+))?$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,254}$")


class RegistryError(RuntimeError):
    """A registry request that cannot be met (unknown name/version/alias, invalid bundle)."""


# ============================================================================ references


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME`` / ``NAME/VERSION`` / ``NAME@ALIAS`` (optionally ``models:/``) → parts."""
    m = _REF.match(ref.strip())
    if not m:
        raise RegistryError(
            f"{ref!r} is not a model reference: use NAME, NAME/VERSION or NAME@ALIAS "
            "(optionally prefixed models:/)"
        )
    return m["name"], m["version"], m["alias"]


def is_model_uri(value: str | None) -> bool:
    return bool(value) and str(value).startswith("models:/")


def open_store(uri: str | None = None, output_dir: str = "outputs") -> Any:
    """An MlflowClient on the registry: ``uri``, else $MLFLOW_TRACKING_URI, else the embedded
    store under ``output_dir``."""
    from raylight.config import TrackingConfig

    t = TrackingConfig.model_validate({"mlflow": {"tracking_uri": uri}})
    return tracking.client(tracking.mlflow_uri(t, output_dir))


def _names(c: Any) -> list[str]:
    return [m.name for m in c.search_registered_models(max_results=1000)]


def _model(c: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_registered_model(name)
    except MlflowException:
        names = _names(c)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(names)) or "none yet"
        raise RegistryError(
            f"no registered model {name!r}{hint} (registered models: {known})"
        ) from None


def _versions(c: Any, name: str) -> list[Any]:
    vs = c.search_model_versions(f"name='{name}'", max_results=1000)
    return sorted(vs, key=lambda v: int(v.version))


def get_version(c: Any, ref: str) -> Any:
    """The ModelVersion a reference names, or a RegistryError saying what does exist."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_ref(ref)
    model = _model(c, name)
    if alias:
        aliases = dict(model.aliases or {})
        if alias not in aliases:
            close = difflib.get_close_matches(alias, list(aliases), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            have = ", ".join(f"{a} → v{v}" for a, v in sorted(aliases.items())) or "none"
            raise RegistryError(f"{name} has no alias {alias!r}{hint} (aliases: {have})")
        version = str(aliases[alias])
    if version is None:
        vs = _versions(c, name)
        if not vs:
            raise RegistryError(f"{name} has no versions")
        return vs[-1]
    try:
        return c.get_model_version(name, version)
    except MlflowException:
        have = ", ".join(str(v.version) for v in _versions(c, name)) or "none"
        raise RegistryError(f"{name} has no version {version} (versions: {have})") from None


# ============================================================================ register


def _bundle_of(source: str) -> tuple[str, dict[str, Any]]:
    """A bundle directory from what a user points at, and the tracking state beside it.

    Accepts a bundle directory, a training run directory (``<run>/bundle``) or a sweep
    directory (``<sweep>/best/bundle``).
    """
    from raylight.data.sources import filesystem_and_path

    s = source.rstrip("/")
    for cand, state_dir in (
        (s, s.rsplit("/", 1)[0] if "/" in s else "."),
        (s + "/bundle", s),
        (s + "/best/bundle", s),
    ):
        fs, path = filesystem_and_path(cand + "/bundle.json")
        if fs.get_file_info(path).type.name == "File":
            return cand, tracking.read_state(state_dir)
    raise RegistryError(
        f"{source!r} is neither a bundle directory nor a run or sweep directory holding one"
    )


def _run_id_for(c: Any, source: str) -> tuple[str | None, str | None]:
    """(run id, bundle dir) when ``source`` names an MLflow run (id or runs:/ID)."""
    m = re.match(r"^(?:runs:/)?([0-9a-f]{32})(?:/.*)?$", source)
    if not m:
        return None, None
    from mlflow.exceptions import MlflowException

    try:
        run = c.get_run(m[1])
    except MlflowException:
        raise RegistryError(f"no MLflow run {m[1]} in {c.tracking_uri}") from None
    return run.info.run_id, run.info.artifact_uri.rstrip("/") + "/bundle"


def _logged_bundle(c: Any, run_id: str) -> str | None:
    """The run's ``bundle`` artifact, if it was uploaded."""
    try:
        names = {f.path for f in c.list_artifacts(run_id)}
    except Exception:
        return None
    if "bundle" not in names:
        return None
    return c.get_run(run_id).info.artifact_uri.rstrip("/") + "/bundle"


def _same_weights(bundle_uri: str, manifest: dict[str, Any]) -> bool:
    from raylight import bundle as bundle_io

    try:
        logged = bundle_io.read_manifest(bundle_uri)
    except Exception:
        return False
    key = "weights.safetensors"
    return logged.get("checksums", {}).get(key) == manifest.get("checksums", {}).get(key)


def _version_tags(manifest: dict[str, Any]) -> dict[str, str]:
    lin = manifest.get("lineage", {})
    tags = {
        "raylight.run_name": lin.get("run_name"),
        "raylight.data_fingerprint": lin.get("data_fingerprint"),
        "raylight.git_commit": lin.get("git_commit"),
        "raylight.git_dirty": lin.get("git_dirty"),
        "raylight.task": manifest.get("task"),
        "raylight.model": manifest.get("model", {}).get("target"),
        "raylight.weights_sha256": manifest.get("checksums", {}).get("weights.safetensors"),
        "raylight.registered_by": _user(),
    }
    test = manifest.get("metrics", {}).get("test", {})
    tags.update({f"metric.test_{k}": v for k, v in test.items() if isinstance(v, int | float)})
    return {k: str(v) for k, v in tags.items() if v is not None}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def register(
    c: Any,
    source: str,
    name: str,
    description: str | None = None,
    output_dir: str = "outputs",
) -> dict[str, Any]:
    """Register a bundle as a new version of ``name``.

    Args:
        c: The registry's MlflowClient (:func:`open_store`).
        source: A bundle, run or sweep directory (path or URI), an MLflow run id or
            ``runs:/ID``.
        name: Registered model name (created on first use).
        description: Stored on the version.
        output_dir: Where a bundle without a tracking run gets one (its artifact root).

    Returns:
        :func:`describe` of the new version.

    Raises:
        RegistryError: Not a bundle, a bundle that fails validation, a bad name.
    """
    from raylight import bundle as bundle_io

    if not re.match(MODEL_NAME_PATTERN, name):
        raise RegistryError(f"{name!r} is not a model name (letters, digits, '_', '.', '-')")
    run_id, bundle_dir = _run_id_for(c, source)
    state: dict[str, Any] = {}
    if bundle_dir is None:
        bundle_dir, state = _bundle_of(source)
    try:
        b = bundle_io.load(bundle_dir)  # the full check: schema, checksums, weights, model
    except Exception as exc:
        raise RegistryError(f"bundle {bundle_dir} fails validation: {exc}") from None
    manifest = b.manifest
    if run_id is None:
        run_id = (state.get("mlflow") or {}).get("run_id") or manifest.get("lineage", {}).get(
            "tracking", {}
        ).get("mlflow")
        if run_id:
            try:
                c.get_run(run_id)
            except Exception:
                run_id = None  # tracked in another store: this store gets a run of its own
    version_source = _logged_bundle(c, run_id) if run_id else None
    if version_source is not None and not _same_weights(version_source, manifest):
        # The manifest names a run whose logged bundle holds other weights (a copy edited
        # after training): register what was given, under a run of its own.
        run_id, version_source = None, None
    if run_id and version_source is None:
        with tracking.local_dir(bundle_dir) as local:
            c.log_artifacts(run_id, local, "bundle")
        version_source = _logged_bundle(c, run_id)
    if run_id is None:
        run_id, version_source = _run_for_bundle(c, bundle_dir, manifest, name, output_dir)
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"raylight model ({manifest.get('task')})")
    mv = c.create_model_version(
        name, source=version_source, run_id=run_id, tags=_version_tags(manifest),
        description=description,
    )  # fmt: skip
    # Run → versions is MLflow's search by run_id; this tag makes it visible in the run's UI.
    prev = c.get_run(run_id).data.tags.get("raylight.registered_as")
    entry = f"{name}/{mv.version}"
    c.set_tag(run_id, "raylight.registered_as", f"{prev},{entry}" if prev else entry)
    return describe(c, mv)


def _run_for_bundle(
    c: Any, bundle_dir: str, manifest: dict[str, Any], name: str, output_dir: str
) -> tuple[str, str]:
    """A run for a bundle trained without MLflow tracking: its config, lineage and metrics."""
    from raylight.config import TrackingConfig

    cfg = manifest.get("config", {})
    exp = (cfg.get("tracking", {}).get("mlflow", {}) or {}).get("experiment") or cfg.get(
        "data", {}
    ).get("name", "raylight")
    t = TrackingConfig()
    eid = tracking.experiment_id(c, exp, tracking.artifact_location(t, output_dir))
    lin = manifest.get("lineage", {})
    run = c.create_run(eid, run_name=lin.get("run_name") or f"register-{name}")
    rid = run.info.run_id
    tr = tracking.Tracker([tracking.MlflowRun(c, rid, c.tracking_uri)])
    tr.log_params(tracking.flatten(cfg))
    tr.set_tags({
        "raylight.kind": "registered-bundle",
        "raylight.bundle": bundle_dir,
        "raylight.data_fingerprint": lin.get("data_fingerprint"),
        "raylight.git_commit": lin.get("git_commit"),
        "raylight.git_dirty": lin.get("git_dirty"),
    })  # fmt: skip
    test = manifest.get("metrics", {}).get("test", {})
    tr.log_metrics({f"test_{k}": v for k, v in test.items()}, step=0)
    tr.log_artifacts(bundle_dir, "bundle")
    tr.finish("FINISHED")
    if tr.errors:
        raise RegistryError(f"could not record the bundle's run: {tr.errors}")
    return rid, run.info.artifact_uri.rstrip("/") + "/bundle"


def register_training(res: Any, cfg: Any, tracker: Any) -> dict[str, Any]:
    """``raylight train ... register=NAME``: register the run's bundle at the end."""
    mlrun = tracker.get("mlflow")
    c = (
        mlrun.client
        if mlrun is not None
        else open_store(tracking.mlflow_uri(cfg.tracking, cfg.output_dir), cfg.output_dir)
    )
    source = mlrun.run_id if mlrun is not None and _logged_bundle(c, mlrun.run_id) else res.run_dir
    return register(c, source, cfg.register, output_dir=cfg.output_dir)


# ============================================================================ read


def _ts(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat() if ms else None


def describe(c: Any, mv: Any, detail: bool = False) -> dict[str, Any]:
    """A version as plain data: where it came from, what it scored, who registered it when."""
    model = c.get_registered_model(mv.name)
    aliases = sorted(a for a, v in (model.aliases or {}).items() if str(v) == str(mv.version))
    out: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "uri": f"models:/{mv.name}/{mv.version}",
        "aliases": aliases,
        "source": mv.source,
        "run_id": mv.run_id,
        "status": mv.status,
        "created_at": _ts(mv.creation_timestamp),
        "registered_by": (mv.tags or {}).get("raylight.registered_by") or mv.user_id or None,
        "description": mv.description or None,
        "tags": dict(mv.tags or {}),
    }
    if not detail:
        return out
    if mv.run_id:
        try:
            run = c.get_run(mv.run_id)
            out["run"] = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "experiment_id": run.info.experiment_id,
                "status": run.info.status,
                "metrics": dict(run.data.metrics),
                "run_dir": run.data.tags.get("raylight.run_dir"),
            }
        except Exception as exc:
            out["run"] = {"error": str(exc)}
    try:
        from raylight import bundle as bundle_io

        manifest = bundle_io.read_manifest(mv.source)
        out["lineage"] = manifest.get("lineage")
        out["metrics"] = manifest.get("metrics", {}).get("test")
        out["config"] = manifest.get("config")
    except Exception as exc:
        out["lineage"] = {"error": f"bundle not readable at {mv.source}: {exc}"}
    return out


def show(c: Any, ref: str) -> dict[str, Any]:
    return describe(c, get_version(c, ref), detail=True)


def list_models(c: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Every registered model (latest version, aliases), or every version of one model."""
    if name:
        _model(c, name)
        return [describe(c, v) for v in reversed(_versions(c, name))]
    rows = []
    for m in c.search_registered_models(max_results=1000):
        vs = _versions(c, m.name)
        rows.append({
            "name": m.name,
            "versions": len(vs),
            "latest": str(vs[-1].version) if vs else None,
            "aliases": {a: str(v) for a, v in (m.aliases or {}).items()},
            "updated_at": _ts(m.last_updated_timestamp),
        })  # fmt: skip
    return rows


def runs_versions(c: Any, run: str) -> list[dict[str, Any]]:
    """Every version registered from a run (run id, or a run directory with tracking.json)."""
    run_id = (
        run
        if re.match(r"^[0-9a-f]{32}$", run)
        else (tracking.read_state(run).get("mlflow") or {}).get("run_id")
    )
    if not run_id:
        raise RegistryError(f"{run!r} is neither an MLflow run id nor a tracked run directory")
    return [describe(c, v) for v in c.search_model_versions(f"run_id='{run_id}'")]


# ============================================================================ aliases


def _history(model: Any, alias: str) -> list[str]:
    raw = (model.tags or {}).get(HISTORY_TAG.format(alias=alias))
    return [str(v) for v in json.loads(raw)] if raw else []


def promote(c: Any, name: str, version: str, alias: str) -> dict[str, Any]:
    """Point ``alias`` at ``version`` (a number, or ``latest``); the alias's previous target is
    remembered for rollback."""
    if not _ALIAS.match(alias) or alias == "latest" or re.match(r"^v\d+$", alias):
        raise RegistryError(
            f"{alias!r} is not an alias name (a letter, then letters, digits, '_' or '-'; "
            "not 'latest' or v<number>)"
        )
    mv = get_version(c, name if version == "latest" else f"{name}/{version}")
    model = _model(c, name)
    current = (model.aliases or {}).get(alias)
    if current is not None and str(current) == str(mv.version):
        return {**describe(c, mv), "previous": str(current), "changed": False}
    history = _history(model, alias)
    if current is not None:
        history.append(str(current))
    c.set_registered_model_alias(name, alias, mv.version)
    c.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history[-50:]))
    return {
        **describe(c, mv),
        "previous": None if current is None else str(current),
        "changed": True,
    }


def rollback(c: Any, name: str, alias: str) -> dict[str, Any]:
    """Point ``alias`` back at the version it named before the last promotion."""
    model = _model(c, name)
    aliases = dict(model.aliases or {})
    if alias not in aliases:
        have = ", ".join(sorted(aliases)) or "none"
        raise RegistryError(f"{name} has no alias {alias!r} (aliases: {have})")
    history = _history(model, alias)
    existing = {str(v.version) for v in _versions(c, name)}
    while history and history[-1] not in existing:
        history.pop()  # a deleted version cannot be rolled back to
    if not history:
        raise RegistryError(
            f"{name}@{alias} has no earlier version to roll back to (now v{aliases[alias]})"
        )
    target = history.pop()
    c.set_registered_model_alias(name, alias, target)
    c.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history))
    return {**describe(c, c.get_model_version(name, target)), "previous": str(aliases[alias])}


# ============================================================================ serving


def resolve_bundle(c: Any, ref: str) -> tuple[str, dict[str, Any]]:
    """A model reference → (bundle path or URI to load, what was resolved).

    The version's source is the bundle artifact; a ``file://`` source becomes a plain path.
    """
    mv = get_version(c, ref)
    name, _, alias = parse_ref(ref)
    source = mv.source
    if source.startswith("file://"):
        from urllib.parse import unquote, urlparse

        source = unquote(urlparse(source).path)
    if "://" not in source and not Path(source, "bundle.json").is_file():
        raise RegistryError(f"{name} v{mv.version}: its bundle is missing at {source}")
    return source, {
        "uri": ref if ref.startswith("models:/") else f"models:/{ref}",
        "name": name,
        "version": str(mv.version),
        "alias": alias,
        "run_id": mv.run_id,
        "source": mv.source,
    }
