"""raylight as a plain Hydra application: ``raylight-hydra [overrides]`` trains once;
``raylight-hydra -m hydra/sweeper=raylight hparams_search=NAME [overrides]`` sweeps with Ray Tune.

The ``raylight`` CLI is the main entry point; this one exists for teams whose tooling drives
Hydra apps (``-m``, ``--cfg job``, Hydra's output directories).
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from raylight.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="tune", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    """A single (non-multirun) job: train once with the composed config."""
    from raylight.cli import print_training
    from raylight.cluster import session
    from raylight.config import validate
    from raylight.train import run_training

    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop("tune", None)
    train_cfg = validate(plain)  # type: ignore[arg-type]
    with session(train_cfg.cluster):
        res = run_training(train_cfg)
    print_training(res)
    return res.test_metrics


if __name__ == "__main__":
    main()
