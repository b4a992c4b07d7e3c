"""Tracking a sweep: one parent run, each trial a child run (MLflow nesting, W&B group).

A Tune callback on the driver, where every trial's results arrive. It holds only plain data,
because Tune pickles it with the sweep's state and ``raylight tune resume=`` brings it back:
the trial → run mapping lives in the sweep's ``tracking.json``, so a resumed trial continues its
run instead of opening a second one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune import Callback

from raylight import tracking
from raylight.config import TrackingConfig

# Tune's bookkeeping in every result: not metrics of the model.
_TUNE_KEYS = {
    "time_total_s", "pid", "iterations_since_restore", "time_since_restore",
    "timesteps_since_restore", "timesteps_total", "episodes_total", "done",
}  # fmt: skip


def read_sweep_state(sweep_dir: str) -> dict[str, Any]:
    p = Path(sweep_dir, tracking.STATE_FILE)
    return json.loads(p.read_text()) if p.exists() else {"parent": {}, "trials": {}}


def write_sweep_state(sweep_dir: str, state: dict[str, Any]) -> None:
    p = Path(sweep_dir, tracking.STATE_FILE)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(p)  # atomic: a killed driver leaves the old or the new mapping, never half


class TrialTracking(Callback):
    """Opens a child run per trial, logs its params and every result, closes it at the end."""

    def __init__(
        self,
        tracking_plain: dict[str, Any],
        output_dir: str,
        experiment: str,
        sweep_name: str,
        sweep_dir: str,
        parent: dict[str, str],
        max_t: int,
        space: dict[str, Any],
    ) -> None:
        self.tracking_plain = tracking_plain
        self.output_dir = output_dir
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_dir = sweep_dir
        self.parent = parent
        self.max_t = max_t
        self.space = space
        self._open: dict[str, tracking.Tracker] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = {}  # live clients and W&B runs do not survive a restart
        return state

    def _warn(self, msg: str) -> None:
        tracking.log.warning(msg)

    def _tracker(self, trial: Any) -> tracking.Tracker:
        tid = trial.trial_id
        if tid in self._open:
            return self._open[tid]
        from raylight.config import Domain
        from raylight.tune import decode_params

        state = read_sweep_state(self.sweep_dir)
        t = TrackingConfig.model_validate(self.tracking_plain)
        tr = tracking.open_runs(
            t, self.output_dir, self.experiment, f"{self.sweep_name}/{tid}",
            previous=state["trials"].get(tid), parent=self.parent, group=self.sweep_name,
            job_type="trial", warn=self._warn,
        )  # fmt: skip
        space = {k: Domain.model_validate(v) for k, v in self.space.items()}
        params = decode_params(dict(trial.config), space)
        tr.log_params(tracking.flatten({k: v for k, v in params.items()}))
        tr.set_tags({
            "raylight.kind": "trial", "raylight.trial_id": tid, "raylight.sweep": self.sweep_name,
        })  # fmt: skip
        state["trials"][tid] = tr.state()
        write_sweep_state(self.sweep_dir, state)
        self._open[tid] = tr
        return tr

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._tracker(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS and "/" not in k}
        self._tracker(trial).log_metrics(metrics, step=int(result.get("training_iteration", 0)))

    def _close(self, trial: Any, status: str) -> None:
        tr = self._open.pop(trial.trial_id, None) or self._tracker(trial)
        self._open.pop(trial.trial_id, None)
        last = (trial.last_result or {}).get("training_iteration") or 0
        tr.set_tags({"raylight.epochs": last, "raylight.stopped_early": 0 < last < self.max_t})
        tr.finish(status)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for tid in list(self._open):
            self._open.pop(tid).finish("KILLED")
