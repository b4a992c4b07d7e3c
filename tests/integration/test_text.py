"""The text family end to end on a real local Ray: `experiment=rt_minilm` fine-tunes the
pretrained MiniLM-L6 encoder with LoRA on Rotten Tomatoes reviews (a subset, short sequences:
CPU-sized), the bundle holds only adapters + head and reloads onto the base, batch prediction
equals Serve over HTTP, bad texts get a 422, evaluation explains tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from safetensors.torch import load_file

from raylight import bundle as bundle_io
from raylight.config import (
    load_evaluate_config,
    load_predict_config,
    load_serve_config,
    load_train_config,
)
from raylight.evaluate.run import run_evaluation
from raylight.net import free_port
from raylight.predict import run_predict
from raylight.serve import deploy as sd
from raylight.train import run_training

pytestmark = pytest.mark.integration

REVIEWS = [
    "A wonderful, moving film with a terrific cast.",
    "Dull, lifeless and far too long.",
    "One of the most charming comedies of the year.",
    "The plot is a mess and the jokes fall flat.",
    "Beautifully shot and deeply felt.",
    "An embarrassing waste of talent.",
]


def test_minilm_lora_trains_bundles_adapters_serves_and_evaluates(
    ray_session: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    res = run_training(load_train_config([
        "experiment=rt_minilm", f"output_dir={out}", "cluster.auth_mode=disabled",
        "+data.limit_rows=480", "data.text.max_length=32", "trainer.max_epochs=2",
        "model.lr=0.002", "model.head_lr=0.003", "model.warmup_steps=0", "tracking=csv",
    ]))  # fmt: skip
    metrics = pd.read_csv(Path(res.run_dir) / "logs" / "metrics.csv")
    losses = metrics["train_loss"].dropna().tolist()
    assert len(losses) == 2 and losses[-1] < losses[0], losses
    # Two balanced classes: a pretrained encoder with adapters is well above chance already.
    assert res.test_metrics["roc_auc"] > 0.7, res.test_metrics

    # The bundle holds what trained (LoRA A/B + head) and names the base by sha256.
    weights = load_file(str(Path(res.bundle_path) / bundle_io.WEIGHTS))
    assert weights and all("lora_" in k or k.startswith("net.") for k in weights), list(weights)
    assert sum(v.numel() for v in weights.values()) < 100_000
    b = bundle_io.load(res.bundle_path)
    args = b.manifest["model"]["init_args"]
    assert args["finetune"] == "lora" and args["text_base"] == "minilm"
    assert len(args["base_sha256"]) == 64
    assert b.preprocessor.texts["text"]["max_length"] == 32

    src = tmp_path / "reviews.parquet"
    pd.DataFrame({"text": REVIEWS}).to_parquet(src)
    preds = tmp_path / "preds.parquet"
    run_predict(load_predict_config([
        f"bundle={res.bundle_path}", f"input={src}", f"output={preds}", "num_actors=1",
        "cpus_per_actor=0.5", "cluster.auth_mode=disabled",
    ]))  # fmt: skip
    batch = pd.read_parquet(preds)
    assert batch["error"].isna().all()
    direct = b.predict(pd.DataFrame({"text": REVIEWS}))
    assert list(direct["prediction"]) == list(batch["prediction"])

    cfg = load_serve_config([f"bundle={res.bundle_path}", f"port={free_port()}", "name=text",
                             "cluster.auth_mode=disabled", "num_cpus=0.5"])  # fmt: skip
    url = sd.deploy(cfg).url
    try:
        r = requests.post(url + "/predict", json=[{"text": t} for t in REVIEWS], timeout=20)
        assert r.status_code == 200, r.text
        served = r.json()["predictions"]
        assert [p["prediction"] for p in served] == list(batch["prediction"])
        for p, (_, row) in zip(served, batch.iterrows(), strict=True):
            assert p["probabilities"]["fresh"] == pytest.approx(row["proba_fresh"], abs=1e-5)
        schema = requests.get(url + "/openapi.json", timeout=10).json()
        assert "text" in str(schema["components"]["schemas"])
        for bad in [{"text": ""}, {"text": "   "}, {"text": 42}, {"text": None}, {},
                    {"text": "x" * 2001}, {"text": "ok", "extra": 1}]:  # fmt: skip
            r = requests.post(url + "/predict", json=bad, timeout=10)
            assert r.status_code == 422, (bad, r.status_code, r.text)
            assert "text" in r.text or "extra" in r.text, r.text
        # Bytes that are not UTF-8 are not JSON: refused before any field is read.
        r = requests.post(
            url + "/predict", data=b'{"text": "\xff\xfe"}', timeout=10,
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert r.status_code in (400, 422), (r.status_code, r.text)
    finally:
        sd.shutdown("text")

    ev = run_evaluation(load_evaluate_config([
        f"model={res.bundle_path}", "explain.rows=8", "explain.steps=8", "bootstrap=0",
        f"output_dir={out}", "tracking.backends=[]", "cluster.auth_mode=disabled",
    ]))  # fmt: skip
    assert ev.report["metrics"]["accuracy"] == pytest.approx(res.test_metrics["accuracy"], abs=1e-9)
    ex = ev.report["explanations"]
    assert list(ex["importance"]) == ["text"] and ex["rows"] == 8
    assert ex["examples"] and ex["examples"][0]["tokens"]
    assert "token" in Path(ev.report_path).read_text()
