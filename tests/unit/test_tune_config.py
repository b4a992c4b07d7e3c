"""Sweep definitions: every bad input is reported before any trial starts; TPE is seeded."""

from __future__ import annotations

import pytest

from raylight.config import ConfigError, load_tune_config

BASE = ["experiment=penguins_mlp", "hparams_search=penguins_optuna"]


def test_shipped_sweeps_validate() -> None:
    for search in ("penguins_optuna", "adult_optuna"):
        cfg = load_tune_config([f"hparams_search={search}"])
        assert cfg.tune.space and cfg.tune.objective_list()[0].metric == "val_loss"


def test_every_bad_input_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        load_tune_config(
            [
                *BASE,
                "+tune.space.model.lrr={type: uniform, low: 0.1, high: 0.2}",  # unknown model arg
                "+tune.space.trainer.bogus={type: uniform, low: 0.1, high: 0.2}",  # unknown key
                "+tune.space.model.dropout={type: choice, values: []}",  # empty choice
                "+tune.space.model.weight_decay={type: uniform, low: 0.5, high: 0.1}",  # low >= high
                "+tune.space.trainer.gradient_clip_val={type: loguniform, low: 0, high: 1}",  # log bound <= 0
                "tune.metric=val_f1",  # never reported
                "scaling.num_workers=4",  # beyond the local cluster
                "cluster.num_cpus=2",
            ]
        )
    msg = str(info.value)
    problems = dict(info.value.problems)
    assert "unknown argument" in problems["tune.space.model.lrr"]
    assert "unknown key" in problems["tune.space.trainer.bogus"]
    assert "non-empty" in msg
    assert "must be below high" in msg
    assert "positive bounds" in msg
    assert "never reports 'val_f1'" in problems["tune.metric"]
    assert "scaling.num_workers" in problems


def test_grid_domain_needs_grid_or_random_search() -> None:
    with pytest.raises(ConfigError, match="grid domains need"):
        load_tune_config([*BASE, "+tune.space.model.dropout={type: grid, values: [0.0, 0.1]}"])
    cfg = load_tune_config(
        [*BASE, "tune.search=grid", "+tune.space.model.dropout={type: grid, values: [0.0, 0.1]}"]
    )
    assert cfg.tune.space["model.dropout"].type == "grid"


def test_only_batch_size_of_data_can_be_searched() -> None:
    with pytest.raises(ConfigError, match=r"only data\.batch_size"):
        load_tune_config(
            [*BASE, "+tune.space.data.max_categories={type: randint, low: 2, high: 9}"]
        )


def test_seeded_tpe_proposes_the_same_first_configs() -> None:
    from raylight.tune import searcher, tune_domain

    cfg = load_tune_config(BASE)

    def proposals(seed: int) -> list[dict]:
        alg = searcher(cfg.tune, seed)
        alg.set_search_properties(
            cfg.tune.metric, cfg.tune.mode, {k: tune_domain(d) for k, d in cfg.tune.space.items()}
        )
        return [alg.suggest(f"t{i}") for i in range(4)]

    a, b, c = proposals(7), proposals(7), proposals(8)
    assert a == b
    assert a != c


def test_pareto_front_keeps_only_non_dominated_trials() -> None:
    import json

    import pandas as pd

    from raylight.config import Objective
    from raylight.tune import pareto_front

    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "params": [json.dumps({"i": i}) for i in range(4)],
            "last_val_loss": [0.30, 0.32, 0.31, 0.35],
            "last_model_params": [5000.0, 1000.0, 6000.0, 900.0],
        }
    )
    objs = [Objective(metric="val_loss", mode="min"), Objective(metric="model_params", mode="min")]
    front = {p["trial_id"] for p in pareto_front(trials, objs)}
    assert front == {"a", "b", "d"}  # c is worse than a on both


def test_list_choices_survive_the_optuna_encoding() -> None:
    from raylight.config import Domain
    from raylight.tune import _categorical, decode_params

    space = {
        "model.hidden_dims": Domain(type="choice", values=[[64, 32], [16]]),
        "model.lr": Domain(type="uniform", low=0.1, high=0.2),
    }
    encoded = {"model.hidden_dims": _categorical([64, 32]), "model.lr": 0.15}
    assert decode_params(encoded, space) == {"model.hidden_dims": [64, 32], "model.lr": 0.15}


def test_asha_stopped_trials_reach_optuna_as_pruned_with_their_last_value() -> None:
    from optuna.trial import TrialState

    from raylight.tune import searcher, tune_domain

    cfg = load_tune_config(BASE)
    assert cfg.tune.scheduler.type == "asha" and cfg.tune.search == "optuna"
    alg = searcher(cfg.tune, 0, max_t=6)
    alg.set_search_properties(
        cfg.tune.metric, cfg.tune.mode, {k: tune_domain(d) for k, d in cfg.tune.space.items()}
    )
    m = cfg.tune.metric
    for tid, epochs in (("stopped", 2), ("full", 6), ("failed", 1)):
        alg.suggest(tid)
        for it in range(1, epochs + 1):
            alg.on_trial_result(tid, {m: 1.0 / it, "training_iteration": it})
    alg.on_trial_complete("stopped", {m: 0.5, "training_iteration": 2})
    alg.on_trial_complete("full", {m: 1 / 6, "training_iteration": 6})
    alg.on_trial_complete("failed", error=True)
    trials = {t.number: t for t in alg._ot_study.trials}
    assert [trials[i].state for i in range(3)] == [
        TrialState.PRUNED,  # Optuna keeps its last intermediate value; TPE ranks it behind "full"
        TrialState.COMPLETE,
        TrialState.FAIL,
    ]
    assert trials[0].value == pytest.approx(0.5) and trials[0].last_step == 2
    assert trials[1].value == pytest.approx(1 / 6)

    # Without a scheduler every trial that ends completes, as in Tune.
    fifo = load_tune_config([*BASE, "tune.scheduler.type=none"])
    alg = searcher(fifo.tune, 0, max_t=6)
    alg.set_search_properties(
        m, fifo.tune.mode, {k: tune_domain(d) for k, d in fifo.tune.space.items()}
    )
    alg.suggest("short")
    alg.on_trial_result("short", {m: 0.7, "training_iteration": 1})
    alg.on_trial_complete("short", {m: 0.7, "training_iteration": 1})
    assert alg._ot_study.trials[0].state == TrialState.COMPLETE


def test_random_and_grid_generators_hold_the_concurrency_limit() -> None:
    """Tune ignores max_concurrent_trials for a variant generator it is handed (it warns and
    starts every trial at once), so raylight's generator must carry the limit itself."""
    from ray import tune
    from ray.tune.experiment import Experiment

    from raylight.tune import searcher

    cfg = load_tune_config([*BASE, "tune.search=random"])
    gen = searcher(cfg.tune, 0, max_concurrent=1)
    gen.add_configurations(
        [Experiment("c", lambda config: None, config={"x": tune.uniform(0, 1)}, num_samples=3)]
    )
    first = gen.next_trial()
    assert first is not None
    assert gen.next_trial() is None  # one live trial: the next waits
    gen.on_trial_complete(first.trial_id)
    assert gen.next_trial() is not None


def test_asha_brackets_reach_rays_scheduler_and_a_bad_value_names_its_key() -> None:
    from raylight.tune import make_scheduler

    cfg = load_tune_config(
        [*BASE, "tune.scheduler.reduction_factor=3", "tune.scheduler.brackets=2"]
    )
    asha = make_scheduler(cfg.tune, max_t=12)
    # Rungs are (milestone, recorded results). Bracket 0 stops trials first at 1 epoch,
    # bracket 1 at 3: the hedge for slow starters.
    first_stops = sorted(min(rung[0] for rung in b._rungs) for b in asha._brackets)
    assert first_stops == [1, 3]
    assert len(make_scheduler(load_tune_config(BASE).tune, max_t=12)._brackets) == 1
    with pytest.raises(ConfigError) as info:
        load_tune_config([*BASE, "tune.scheduler.brackets=0"])
    assert "tune.scheduler.brackets" in dict(info.value.problems)
