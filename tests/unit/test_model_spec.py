"""The built-in models' written-out specs stay true, and validating a config never imports
Lightning for them; a user's own model class is still imported and checked."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raylight.config import ConfigError, load_train_config
from raylight.models.spec import BUILTIN, ModelSpecError, model_spec, spec_of


@pytest.mark.parametrize("target", sorted(BUILTIN))
def test_builtin_spec_equals_what_the_class_says(target: str) -> None:
    module_name, _, attr = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), attr)
    assert spec_of(cls, target) == BUILTIN[target]


def test_every_shipped_model_config_has_a_builtin_spec() -> None:
    conf = Path(__file__).resolve().parents[2] / "src" / "raylight" / "conf" / "model"
    targets = {
        line.split(":", 1)[1].strip()
        for path in conf.glob("*.yaml")
        for line in path.read_text().splitlines()
        if line.startswith("_target_:")
    }
    assert targets and targets <= set(BUILTIN)


def test_loading_builtin_configs_imports_neither_lightning_nor_torch() -> None:
    """Checked in a fresh process: the CLI's side of every `raylight train` stays light."""
    code = textwrap.dedent(
        """
        import sys
        from raylight.config import load_train_config, load_tune_config
        from raylight.train import model_args_for
        from raylight.tune import reported_metrics
        for ovs in (["data=penguins"], ["experiment=digits_cnn"], ["data=rotten_tomatoes",
                    "model=minilm"]):
            cfg = load_train_config(ovs)
            reported_metrics(cfg)
        load_tune_config(["experiment=adult_mlp", "hparams_search=adult_optuna"])
        heavy = sorted(m for m in ("lightning", "torch", "ray") if m in sys.modules)
        assert not heavy, f"imported {heavy}"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_users_model_class_is_imported_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spec_test_models.py").write_text(
        textwrap.dedent(
            """
            import lightning.pytorch as pl

            class Head:
                pass

            class Wide(pl.LightningModule):
                INJECTED_ARGS = ("input_dim", "output_dim", "task")
                REPORTED_METRICS = ("val_f1",)

                def __init__(self, input_dim: int, output_dim: int, task: str, width: int,
                             depth: int = 2, head: Head | None = None) -> None:
                    super().__init__()

            class NotAModule:
                def __init__(self, input_dim, output_dim, task):
                    pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = model_spec("spec_test_models.Wide")
    assert spec.params["width"].required and not spec.params["depth"].required
    assert spec.reported_metrics == ("val_f1",)

    cfg = load_train_config(["data=penguins", "~model", "+model._target_=spec_test_models.Wide",
                             "+model.width=64"])  # fmt: skip
    assert cfg.model["width"] == 64
    # A hint pydantic cannot validate against (a plain class) accepts the value.
    cfg = load_train_config(["data=penguins", "~model", "+model._target_=spec_test_models.Wide",
                             "+model.width=64", "+model.head=linear"])  # fmt: skip
    assert cfg.model["head"] == "linear"
    with pytest.raises(ConfigError) as info:
        load_train_config(["data=penguins", "~model", "+model._target_=spec_test_models.Wide",
                           "+model.depth=deep", "+model.colour=1"])  # fmt: skip
    problems = dict(info.value.problems)
    assert problems["model.width"] == "required argument is missing"
    assert "integer" in problems["model.depth"]
    assert problems["model.colour"] == "unknown argument of Wide"

    with pytest.raises(ModelSpecError, match="not a LightningModule"):
        model_spec("spec_test_models.NotAModule")
    with pytest.raises(ModelSpecError, match="cannot import"):
        model_spec("spec_test_models.Missing")
