"""The image family end to end on a real local Ray: `experiment=digits_cnn` trains a CNN on
scikit-learn's 8x8 digits, the bundle round-trips, batch prediction over PNG files equals
Serve over HTTP (base64 PNG or raw pixels), bad images get a 422, evaluation works."""

from __future__ import annotations

import base64
import gzip
import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from raylight import bundle as bundle_io
from raylight.config import (
    load_evaluate_config,
    load_predict_config,
    load_serve_config,
    load_train_config,
)
from raylight.data.images import to_png
from raylight.evaluate.run import run_evaluation
from raylight.net import free_port
from raylight.predict import run_predict
from raylight.serve import deploy as sd
from raylight.train import run_training

pytestmark = pytest.mark.integration
RULE = {"dtype": "image", "shape": [8, 8], "min": 0, "max": 16}


def _digits(n: int) -> tuple[np.ndarray, list[str]]:
    path = importlib.metadata.distribution("scikit-learn").locate_file(
        "sklearn/datasets/data/digits.csv.gz"
    )
    with gzip.open(str(path), "rt") as f:
        data = np.loadtxt(f, delimiter=",", max_rows=n)
    return data[:, :64], [str(int(y)) for y in data[:, 64]]


def test_digits_cnn_trains_predicts_serves_and_evaluates(ray_session: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_training(load_train_config([
        "experiment=digits_cnn", f"output_dir={out}", "cluster.auth_mode=disabled",
        "trainer.max_epochs=3", "tracking=csv",
    ]))  # fmt: skip
    metrics = pd.read_csv(Path(res.run_dir) / "logs" / "metrics.csv")
    losses = metrics["train_loss"].dropna().tolist()
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.6, losses
    assert res.test_metrics["accuracy"] > 0.8  # 10 classes: chance is 0.1
    b = bundle_io.load(res.bundle_path)
    assert b.manifest["model"]["init_args"]["image_shape"] == [1, 8, 8]
    assert b.preprocessor.images["image"]["shape"] == [1, 8, 8]

    pixels, labels = _digits(24)
    pngs = [to_png(p, RULE) for p in pixels]
    src = tmp_path / "pngs.parquet"
    pd.DataFrame({"image": pngs, "label": labels}).to_parquet(src)
    preds = tmp_path / "preds.parquet"
    run_predict(load_predict_config([
        f"bundle={res.bundle_path}", f"input={src}", f"output={preds}", "num_actors=1",
        "cpus_per_actor=0.5", "cluster.auth_mode=disabled",
    ]))  # fmt: skip
    batch = pd.read_parquet(preds)
    assert batch["error"].isna().all()
    assert (batch["prediction"] == pd.Series(labels)).mean() > 0.8

    cfg = load_serve_config([f"bundle={res.bundle_path}", f"port={free_port()}", "name=vision",
                             "cluster.auth_mode=disabled", "num_cpus=0.5"])  # fmt: skip
    url = sd.deploy(cfg).url
    try:
        body = [{"image": base64.b64encode(p).decode()} for p in pngs]
        r = requests.post(url + "/predict", json=body, timeout=10)
        assert r.status_code == 200, r.text
        served = r.json()["predictions"]
        assert [p["prediction"] for p in served] == list(batch["prediction"])
        for p, (_, row) in zip(served, batch.iterrows(), strict=True):
            assert p["probabilities"]["3"] == pytest.approx(row["proba_3"], abs=1e-5)
        raw = requests.post(url + "/predict", json={"image": pixels[0].reshape(8, 8).tolist()},
                            timeout=10)  # fmt: skip
        assert raw.status_code == 200 and raw.json()["predictions"][0]["prediction"] == labels[0]
        # multipart/form-data upload, as `curl -F image=@digit.png` sends it
        up = requests.post(url + "/predict/upload", files={"image": ("d.png", pngs[1], "image/png")},
                           timeout=10)  # fmt: skip
        assert up.status_code == 200, up.text
        one = up.json()["predictions"][0]
        assert one["prediction"] == served[1]["prediction"]
        for k, v in served[1]["probabilities"].items():  # a batch of 1 vs 24: float noise only
            assert one["probabilities"][k] == pytest.approx(v, abs=1e-5)
        bad_up = requests.post(url + "/predict/upload",
                               files={"image": ("d.txt", b"not an image", "text/plain")},
                               timeout=10)  # fmt: skip
        assert bad_up.status_code == 422 and "image" in bad_up.text, bad_up.text
        none_up = requests.post(url + "/predict/upload", data={"other": "1"}, timeout=10)
        assert none_up.status_code == 422, none_up.text
        for bad, why in [
            ({"image": list(range(10))}, "10 pixel values"),
            ({"image": "bm90IGFuIGltYWdl"}, "base64 PNG/JPEG"),
            ({"image": (pixels[0] * 20).tolist()}, "outside"),
            (
                {
                    "image": base64.b64encode(
                        to_png(np.zeros(16), {**RULE, "shape": [4, 4]})
                    ).decode()
                },
                "4x4 image, expected 8x8",
            ),
            ({"image": None}, "image"),
            ({"image": {"x": 1}}, "image"),
        ]:
            r = requests.post(url + "/predict", json=bad, timeout=10)
            assert r.status_code == 422, (bad, r.status_code, r.text)
            assert why in r.text and "image" in r.text, r.text
    finally:
        sd.shutdown("vision")

    ev = run_evaluation(load_evaluate_config([
        f"model={res.bundle_path}", "explain.rows=16", "bootstrap=0", f"output_dir={out}",
        "tracking.backends=[]", "cluster.auth_mode=disabled",
    ]))  # fmt: skip
    assert ev.report["metrics"]["accuracy"] == pytest.approx(res.test_metrics["accuracy"], abs=1e-9)
    assert list(ev.report["explanations"]["importance"]) == ["image"]
    html = Path(ev.report_path).read_text()
    assert '<section id="explanations">' in html
    assert html.count('alt="pixel attributions') == len(ev.report["explanations"]["examples"]) > 0
    assert "_pixel_maps" not in ev.report["explanations"]
