"""What the driver needs to know about a model class, without importing it.

Checking a config (``config._check_model``), sizing a model from the data
(``train.model_args_for``) and checking a sweep's objective (``tune.reported_metrics``) need only
a model's constructor arguments, the arguments raylight fills in from the data and the metrics
it reports. Importing a model class to read them imports Lightning and torch: ~4.8 of the ~6.5 s
a training config took to load on 2 CPUs, on every ``raylight train/tune/validate/submit``,
though the driver never trains. So the built-in models' specs are written out here, and
``tests/unit/test_model_spec.py`` keeps them equal to what the real classes say; any other class
(a user's own model) is imported and read, as before.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Every model takes these; raylight fills them in from the data.
DATA_ARGS = ("input_dim", "output_dim", "task")


class ModelSpecError(ValueError):
    """The model target cannot be imported or is not a LightningModule class."""


@dataclass(frozen=True)
class Param:
    """One constructor argument.

    Attributes:
        annotation: Its type hint (evaluated), or None when it has none.
        required: True when it has no default.
    """

    annotation: Any = None
    required: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A model class's interface as raylight uses it.

    Attributes:
        target: Dotted class path (``model._target_``).
        params: Named constructor arguments (not ``self``, ``*args`` or ``**kwargs``).
        takes_kwargs: The constructor has ``**kwargs``.
        injected: Arguments set from the data, never from config (``INJECTED_ARGS``).
        reported_metrics: Validation metrics logged per epoch, by task, or one tuple for every
            task (``REPORTED_METRICS``); None when the class does not declare them.
    """

    target: str
    params: Mapping[str, Param]
    takes_kwargs: bool = False
    injected: tuple[str, ...] = DATA_ARGS
    reported_metrics: Mapping[str, tuple[str, ...]] | tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """The class name."""
        return self.target.rpartition(".")[2]


# Arguments every built-in model shares (order does not matter: specs compare as dicts).
_DATA = {
    "input_dim": Param(int, required=True),
    "output_dim": Param(int, required=True),
    "task": Param(str),
}
_OPTIM = {
    "lr": Param(float),
    "weight_decay": Param(float),
    "fused_adamw": Param(bool),
}

TABULAR_MLP = ModelSpec(
    target="raylight.models.tabular.TabularMLP",
    params={
        **_DATA,
        "hidden_dims": Param(Sequence[int]),
        "dropout": Param(float),
        "activation": Param(str),
        **_OPTIM,
    },
    injected=DATA_ARGS,
    reported_metrics={"classification": ("val_acc",), "regression": ("val_rmse_std",)},
)

IMAGE_CNN = ModelSpec(
    target="raylight.models.vision.ImageCNN",
    params={
        **_DATA,
        "image_shape": Param(Sequence[int]),
        "channels": Param(Sequence[int]),
        "hidden_dim": Param(int),
        "dropout": Param(float),
        **_OPTIM,
    },
    injected=(*DATA_ARGS, "image_shape"),
    reported_metrics={"classification": ("val_acc",)},
)

TEXT_CLASSIFIER = ModelSpec(
    target="raylight.models.text.TextClassifier",
    params={
        **_DATA,
        "text_length": Param(int),
        "text_base": Param(str),
        "base_sha256": Param(str | None),
        "pad_id": Param(int),
        "finetune": Param(str),
        "pretrained": Param(bool),
        "pooling": Param(str),
        "lora_r": Param(int),
        "lora_alpha": Param(float),
        "lora_dropout": Param(float),
        "lora_targets": Param(Sequence[str]),
        "hidden_dim": Param(int),
        "dropout": Param(float),
        "head_lr": Param(float),
        "warmup_steps": Param(int),
        **_OPTIM,
    },
    injected=(*DATA_ARGS, "text_length", "text_base", "base_sha256", "pad_id"),
    reported_metrics={"classification": ("val_acc",)},
)

BUILTIN: dict[str, ModelSpec] = {s.target: s for s in (TABULAR_MLP, IMAGE_CNN, TEXT_CLASSIFIER)}


def spec_of(cls: type, target: str) -> ModelSpec:
    """Read a model class's spec from the class itself (its signature and attributes)."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    try:
        hints = inspect.get_annotations(cls.__init__, eval_str=True)  # type: ignore[misc]
    except Exception:
        hints = {}  # an annotation that does not evaluate: accept any value for it
    params: dict[str, Param] = {}
    takes_kwargs = False
    for i, (name, p) in enumerate(sig.parameters.items()):
        if i == 0 or p.kind is p.VAR_POSITIONAL:  # self, *args
            continue
        if p.kind is p.VAR_KEYWORD:
            takes_kwargs = True
            continue
        params[name] = Param(hints.get(name), required=p.default is p.empty)
    return ModelSpec(
        target=target,
        params=params,
        takes_kwargs=takes_kwargs,
        injected=tuple(getattr(cls, "INJECTED_ARGS", DATA_ARGS)),
        reported_metrics=getattr(cls, "REPORTED_METRICS", None),
    )


def model_spec(target: str) -> ModelSpec:
    """The spec of ``model._target_``: written out for built-in models, else read from the class.

    Raises:
        ModelSpecError: The target is not a dotted path, cannot be imported, or is not a
            ``lightning.pytorch.LightningModule`` class.
    """
    if target in BUILTIN:
        return BUILTIN[target]
    return spec_of(model_class(target), target)


def model_class(target: str) -> type:
    """Import the LightningModule class ``target`` names (this imports Lightning).

    Raises:
        ModelSpecError: The target is not a dotted path, cannot be imported, or is not a
            ``lightning.pytorch.LightningModule`` class.
    """
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise ModelSpecError("must be a dotted class path, e.g. raylight.models.tabular.TabularMLP")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelSpecError(f"cannot import {target!r}: {exc}") from exc
    import lightning.pytorch as pl

    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        raise ModelSpecError(f"{target} is not a LightningModule (lightning.pytorch)")
    return cls
