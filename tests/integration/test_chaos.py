"""Fault scenarios on a real two-node local cluster (``scripts/chaos.py``; also ``make chaos``).

Each scenario starts its own head + worker node on 127.0.0.1 and kills part of it mid-work;
minutes each, so they run in ``make test-all``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _chaos() -> Any:
    spec = importlib.util.spec_from_file_location("raylight_chaos", ROOT / "scripts" / "chaos.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["raylight_chaos"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


def test_training_survives_losing_a_node(tmp_path: Path) -> None:
    r = _chaos().train_node_loss(tmp_path)
    assert r.ok and r.data_lost == 0, (r.outcome, r.details)
    assert r.details["epochs_before_kill"], "the node was lost before any epoch was reported"


def test_a_sweep_survives_losing_a_node(tmp_path: Path) -> None:
    r = _chaos().sweep_node_loss(tmp_path)
    assert r.ok and r.data_lost == 0, (r.outcome, r.details)
    assert any(r.details["num_failures"].values())  # a trial really lost its node and retried


def test_serve_survives_a_replica_kill_and_a_node_loss(tmp_path: Path) -> None:
    for r in _chaos().serve_faults(tmp_path):
        assert r.ok and r.data_lost == 0, (r.scenario, r.outcome, r.details)
        assert r.recovery_s is not None
