"""The bundle round-trips, and refuses malformed or tampered content with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.bundles import write_tiny as _write

from raylight import bundle


def test_round_trip_predicts_like_the_in_memory_model(tmp_path: Path) -> None:
    model = _write(tmp_path)
    b = bundle.load(str(tmp_path))
    raw = pd.DataFrame({"x": ["1.0", "3.5", "oops"], "c": ["a", "zzz", "b"]})
    out = b.predict(raw)
    feats, _errors = b.encode(raw)
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(torch.tensor(feats[:2])), -1).numpy()
    np.testing.assert_allclose(out[["proba_no", "proba_yes"]].to_numpy()[:2], expected, rtol=1e-6)
    assert pd.isna(out["error"][0]) and "x: not a number" in out["error"][2]
    assert pd.isna(out["prediction"][2])
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    w = tmp_path / bundle.WEIGHTS
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="checksum mismatch"):
        bundle.load(str(tmp_path))


def test_edited_manifest_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    m = tmp_path / bundle.MANIFEST
    doc = json.loads(m.read_text())
    doc["classes"] = ["yes", "no"]
    m.write_text(json.dumps(doc))
    with pytest.raises(bundle.BundleError, match="modified after it was written"):
        bundle.load(str(tmp_path))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p: (p / bundle.MANIFEST).write_text("{not json"), "not valid JSON"),
        (lambda p: (p / bundle.MANIFEST).write_text("[]"), "JSON object"),
        (lambda p: (p / bundle.MANIFEST).write_text('{"format_version": 1}'), "lacks"),
        (lambda p: (p / bundle.WEIGHTS).unlink(), "missing"),
        (lambda p: (p / bundle.MANIFEST).unlink(), "missing"),
    ],
)
def test_malformed_bundles_are_refused(tmp_path: Path, mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    _write(tmp_path)
    mutate(tmp_path)
    with pytest.raises(bundle.BundleError, match=match):
        bundle.load(str(tmp_path))


def test_model_target_must_be_a_lightning_module(tmp_path: Path) -> None:
    with pytest.raises(bundle.BundleError, match="not a LightningModule"):
        bundle.build_model("collections.OrderedDict", {})
    with pytest.raises(bundle.BundleError, match="cannot import"):
        bundle.build_model("no_such_pkg.Model", {})
