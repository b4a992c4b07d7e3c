"""GPU check of trainer.strategy / precision / compile: one GPU, one Ray Train worker per config.

What the CPU tests cannot reach: FSDP's CUDA path (Lightning's own wrapping and full-state-dict
gather), fsdp.cpu_offload, fp16 AMP (16-mixed) and torch.compile on CUDA. On the lent GPU machine,
after scripts/gpu_check.sh's install step (its packages in /tmp/site):

    PYTHONPATH=/tmp/site:src python3 scripts/gpu_strategies_check.py

Writes ``$OUT/strategies_gpu.json``. Last run (H100, torch 2.11+cu130, Lightning 2.6.6, Ray 2.60):
all four configs trained 2 epochs (test accuracy 0.90-0.92 vs 0.46 majority class) and wrote
float32 bundles under the plain model's keys.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

BASE = [
    "data=penguins", "output_dir=/tmp/strategies", "cluster.auth_mode=disabled", "tracking=csv",
    "model.hidden_dims=[64,64]", "model.lr=0.01", "scaling.use_gpu=true", "scaling.num_workers=1",
    "trainer.max_epochs=2", "trainer.max_failures=0",
]  # fmt: skip
CONFIGS = {
    "fsdp_bf16": [
        "trainer.strategy=fsdp",
        "trainer.precision=bf16-mixed",
        "trainer.fsdp.min_params_to_wrap=1000",
    ],
    "fsdp_offload": ["trainer.strategy=fsdp", "trainer.fsdp.cpu_offload=true"],
    "ddp_fp16": ["trainer.strategy=ddp", "trainer.precision=16-mixed"],
    "compile_bf16": ["trainer.compile=true", "trainer.precision=bf16-mixed"],
}


def main() -> None:
    import ray
    from safetensors.torch import load_file

    from raylight.cluster import _configure_data
    from raylight.config import load_train_config
    from raylight.train import WEIGHTS_NAME, run_training

    ray.init(num_gpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    _configure_data()
    results: dict[str, dict] = {}
    for name, extra in CONFIGS.items():
        t = time.time()
        try:
            res = run_training(load_train_config([*BASE, f"run_name={name}", *extra]))
            weights = load_file(os.path.join(str(res.checkpoint_path), WEIGHTS_NAME))
            results[name] = {
                "ok": True,
                "s": round(time.time() - t, 1),
                "test_accuracy": res.test_metrics.get("accuracy"),
                "baseline_accuracy": res.test_metrics.get("baseline_accuracy"),
                "keys": sorted(weights),
                "dtypes": sorted({str(v.dtype) for v in weights.values()}),
            }
        except Exception as exc:  # report and go on with the next config
            results[name] = {
                "ok": False,
                "s": round(time.time() - t, 1),
                "error": repr(exc)[-3000:],
            }
        print(name, json.dumps(results[name])[:600], flush=True)
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "strategies_gpu.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
