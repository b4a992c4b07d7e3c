"""``hydra/sweeper=raylight``: hand a Hydra multirun to Ray Tune + Optuna + ASHA.

Hydra's own sweepers launch jobs in lock-step batches. This one composes the config exactly as
Hydra would for a job, then runs one raylight sweep over ``tune.space`` (trials run concurrently,
poor ones stop early, the Optuna study learns from finished ones). Hydra's comma sweep syntax
(``model.lr=0.1,0.01``) is refused with a pointer to ``tune.space``: one search space, one place.
"""

# No `from __future__ import annotations` here: Hydra's plugin scanner imports this module in a
# way that leaves it out of sys.modules while the dataclass below is created, and dataclasses
# then cannot resolve string annotations.
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf


@dataclass
class RaylightSweeperConf:
    _target_: str = "hydra_plugins.raylight_sweeper.raylight_sweeper.RaylightSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="raylight", node=RaylightSweeperConf, provider="raylight"
)


class RaylightSweeper(Sweeper):
    """Runs the whole multirun as one Ray Tune sweep."""

    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None  # noqa: UP045 (see the import note)
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def sweep(self, arguments: list[str]) -> Any:
        from raylight.cli import print_sweep
        from raylight.cluster import session
        from raylight.config import ConfigError, validate_tune
        from raylight.tune import run_tuning, sweep_cluster

        assert self.config is not None
        sweeps = [
            o.input_line
            for o in OverridesParser.create().parse_overrides(arguments)
            if o.is_sweep_override()
        ]
        if sweeps:
            raise ConfigError(
                [
                    (
                        s.split("=", 1)[0],
                        "Hydra sweep syntax is not used by hydra/sweeper=raylight; put the domain in tune.space",
                    )
                    for s in sweeps
                ]
            )
        job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(arguments))
        with_hydra = OmegaConf.to_container(job_cfg, resolve=False)
        assert isinstance(with_hydra, dict)
        with_hydra.pop("hydra", None)
        plain = OmegaConf.to_container(OmegaConf.create(with_hydra), resolve=True)
        assert isinstance(plain, dict)
        cfg = validate_tune(plain)  # type: ignore[arg-type]
        with session(sweep_cluster(cfg)):
            result = run_tuning(cfg)
        print_sweep(cfg, result)
        return result
