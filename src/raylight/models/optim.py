"""The built-in models' optimizer: AdamW, fused into one kernel where torch supports it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# Fused AdamW is one kernel over every parameter instead of several per tensor (for-each) or
# a Python loop per tensor (torch's default on CPU). Measured on 2 CPUs, one thread, the
# default TabularMLP (115 -> 128 -> 64 -> 2): optimizer step 0.33 -> 0.15 ms, about 4% of a
# batch-1024 training step (benchmarks/README.md, train_overhead).
_FUSED_DEVICES = ("cpu", "cuda")
_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def can_fuse(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW applies to every one of these parameters.

    Only plain parameters on a CPU or CUDA device in a floating dtype: tensor subclasses
    (FSDP's flat parameters, DTensor shards) and other devices keep torch's default
    implementation, which handles them.
    """
    params = list(params)
    return bool(params) and all(
        type(p) in (torch.Tensor, torch.nn.Parameter)
        and p.device.type in _FUSED_DEVICES
        and p.dtype in _FUSED_DTYPES
        for p in params
    )


def adamw(params: Iterable[Any], fused: bool = True, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over parameters or parameter groups, fused when :func:`can_fuse`.

    Lightning calls ``configure_optimizers`` after the strategy moved (or wrapped) the model,
    so the parameters seen here are the ones that will be stepped.

    Args:
        params: Parameters, or parameter groups (dicts with ``params``).
        fused: False: torch's default implementation whatever the parameters (the models'
            ``fused_adamw``, for A/B runs).
        **kwargs: AdamW's arguments (lr, weight_decay, ...).
    """
    items = list(params)
    tensors = [p for item in items for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = fused and can_fuse(tensors)
    return torch.optim.AdamW(items, **kwargs, **({"fused": True} if fused else {}))
