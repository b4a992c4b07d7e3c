"""The model bundle: the one artifact that crosses stages.

A directory (local path or pyarrow filesystem URI) with ``weights.safetensors`` and
``bundle.json`` (model class + init args, input schema, label map, preprocessor state, reference
statistics, resolved config, lineage, metrics, and checksums). No pickle anywhere: loading never
executes code from the bundle beyond importing the named LightningModule class, which must be
an installed subclass of ``LightningModule``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raylight.data.contract import check_batch
from raylight.data.preprocess import Preprocessor
from raylight.data.sources import filesystem_and_path

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
MANIFEST = "bundle.json"
_REQUIRED = (
    "format_version", "model", "task", "input_schema", "preprocessor", "classes",
    "reference", "config", "lineage", "metrics", "checksums",
)  # fmt: skip


class BundleError(ValueError):
    """A bundle is missing, malformed or does not match its checksums."""


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "checksums"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem_and_path(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def _read_bytes(uri: str) -> bytes:
    fs, path = filesystem_and_path(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise BundleError(f"missing {uri}") from exc
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            raise BundleError(f"missing {uri}") from exc
        raise


def write(path: str, state_dict: dict[str, torch.Tensor], manifest: dict[str, Any]) -> str:
    """Write weights and manifest; fills in format version and checksums. Returns the path."""
    from safetensors.torch import save

    weights = save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["checksums"] = {}
    manifest["checksums"] = {
        WEIGHTS: "sha256:" + hashlib.sha256(weights).hexdigest(),
        "manifest": "sha256:" + hashlib.sha256(_canonical(manifest)).hexdigest(),
    }
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"refusing to write a bundle without {missing}")
    _write_bytes(_join(path, WEIGHTS), weights)
    _write_bytes(_join(path, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
    return path


def read_manifest(path: str) -> dict[str, Any]:
    """Read and verify ``bundle.json`` (structure + its own checksum)."""
    raw = _read_bytes(_join(path, MANIFEST))
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{MANIFEST} in {path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} in {path} must be a JSON object")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"{MANIFEST} in {path} lacks {missing}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"bundle format {manifest['format_version']} is not supported (expected {FORMAT_VERSION})"
        )
    want = manifest["checksums"].get("manifest")
    got = "sha256:" + hashlib.sha256(_canonical(manifest)).hexdigest()
    if want != got:
        raise BundleError(
            f"{MANIFEST} in {path} was modified after it was written (checksum mismatch)"
        )
    return manifest


def update_metrics(path: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge metrics into an existing bundle's manifest, re-signing it."""
    manifest = read_manifest(path)
    manifest["metrics"] = {**manifest["metrics"], **metrics}
    manifest["checksums"]["manifest"] = "sha256:" + hashlib.sha256(_canonical(manifest)).hexdigest()
    _write_bytes(_join(path, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def _model_class(target: str) -> type:
    from raylight.models.spec import ModelSpecError, model_class

    try:
        return model_class(target)
    except ModelSpecError as exc:
        raise BundleError(f"model target {target!r}: {exc}") from exc


def build_model(target: str, init_args: dict[str, Any]) -> Any:
    """Instantiate a LightningModule from its dotted path and plain arguments."""
    return _model_class(target)(**init_args)


@dataclass
class Bundle:
    """A loaded, verified bundle: model in eval mode plus everything to use it on raw rows."""

    path: str
    manifest: dict[str, Any]
    model: Any
    preprocessor: Preprocessor

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def input_schema(self) -> dict[str, Any]:
        return self.manifest["input_schema"]

    def encode(self, raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Apply the training contract + preprocessor to raw rows.

        Returns:
            (features [n, d] float32, errors [n] object: None or the reason the row is bad)
        """
        schema = self.input_schema
        columns = {
            c["name"]: {k: v for k, v in c.items() if k != "name"} for c in schema["features"]
        }
        missing = [c for c in columns if c not in raw.columns]
        if missing:
            raise ValueError(f"input lacks feature column(s) {missing}")
        checked = check_batch(
            raw[list(columns)],
            columns,
            strict_categories=schema.get("strict_categories", False),
            split_key=list(columns)[:1],
            split_fractions=(1.0, 0.0, 0.0),
            seed=0,
        )
        feats = self.preprocessor.transform_features(checked)
        return feats, checked["__error__"].to_numpy()

    def predict_encoded(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on encoded features: class ids + probabilities, or values."""
        import torch

        x = np.asarray(features, dtype=np.float32)
        if not x.flags.writeable:
            x = x.copy()  # Arrow-backed batches are read-only; torch wants to own writable memory
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x))
        if self.task == "classification":
            proba = torch.softmax(out.float(), dim=-1).numpy()
            return {"class_id": proba.argmax(-1), "proba": proba}
        z = out.float().numpy().reshape(-1)
        return {"value": self.preprocessor.decode_regression(z)}

    def predict(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Predict raw rows; rows that break the contract get ``error`` and no prediction."""
        feats, errors = self.encode(raw)
        res = self.predict_encoded(feats)
        out = pd.DataFrame(index=raw.index)
        bad = pd.notna(errors)
        if self.task == "classification":
            labels = np.asarray(self.classes, dtype=object)[res["class_id"]]
            out["prediction"] = np.where(bad, None, labels)
            for i, c in enumerate(self.classes):
                out[f"proba_{c}"] = np.where(bad, np.nan, res["proba"][:, i])
        else:
            out["prediction"] = np.where(bad, np.nan, res["value"])
        out["error"] = errors
        return out


def load(path: str) -> Bundle:
    """Load and verify a bundle; refuse anything malformed or tampered with a clear error."""
    from safetensors.torch import load as load_weights

    manifest = read_manifest(path)
    weights = _read_bytes(_join(path, WEIGHTS))
    got = "sha256:" + hashlib.sha256(weights).hexdigest()
    if manifest["checksums"].get(WEIGHTS) != got:
        raise BundleError(f"{WEIGHTS} in {path} does not match bundle.json (checksum mismatch)")
    try:
        state = load_weights(weights)
    except Exception as exc:  # safetensors raises its own and plain errors on garbage
        raise BundleError(f"{WEIGHTS} in {path} is not a valid safetensors file: {exc}") from exc
    try:
        pre = Preprocessor.from_dict(manifest["preprocessor"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"bad preprocessor state in {path}: {exc}") from exc
    spec = manifest["model"]
    if not isinstance(spec, dict) or "target" not in spec or "init_args" not in spec:
        raise BundleError("bundle.json 'model' must hold 'target' and 'init_args'")
    model = build_model(spec["target"], spec["init_args"])
    try:
        # A model that bundles only part of its weights (LoRA adapters over a referenced base)
        # loads them itself and checks that the part is complete.
        loader = getattr(model, "load_bundle_state_dict", None)
        if callable(loader):
            loader(state)
        else:
            model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise BundleError(f"weights do not fit {spec['target']}: {exc}") from exc
    model.eval()
    return Bundle(path=path, manifest=manifest, model=model, preprocessor=pre)
