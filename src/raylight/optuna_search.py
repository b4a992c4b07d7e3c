"""Tune's Optuna searcher, telling Optuna which trials a scheduler stopped early.

Imported only when a sweep uses Optuna (it imports Ray Tune and Optuna).
"""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch


class MultiFidelityOptunaSearch(OptunaSearch):
    """``OptunaSearch`` whose early-stopped trials reach Optuna as PRUNED, not COMPLETE.

    Tune's searcher reports each epoch to Optuna as an intermediate value, then completes a
    trial ASHA stopped as COMPLETE with its last value. A 1-epoch loss then ranks beside
    12-epoch losses, and TPE learns to propose configurations that start fast rather than
    those that end best. Told PRUNED (Optuna keeps the last intermediate value as the trial's
    value), such a trial ranks behind every full-length one, ordered by how far it got: how
    Optuna's TPE treats the trials its own pruners stop.

    Args:
        full_epochs: Epochs of a full trial (ASHA's ``max_t``). A trial that ends without error
            before it counts as stopped early. None: every trial completes as in Tune.
        **kwargs: ``OptunaSearch``'s arguments.
    """

    def __init__(self, *args: Any, full_epochs: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.full_epochs = full_epochs

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell Optuna how the trial ended: PRUNED when it stopped before ``full_epochs``."""
        full = self.full_epochs
        stopped_early = (
            full is not None
            and not error
            and result is not None
            and trial_id in self._ot_trials
            and trial_id not in self._completed_trials
            and int(result.get(TRAINING_ITERATION, full)) < full
        )
        if not stopped_early:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)
