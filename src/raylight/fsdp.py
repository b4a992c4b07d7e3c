"""FSDP for ``trainer.strategy=fsdp``: Ray's FSDP strategy, made to run on CPU workers too.

Imported only inside a Ray Train worker (it imports Lightning and torch.distributed).

Three things stand between Lightning 2.6's FSDP and CPU workers (gloo), none of them torch's
FSDP itself, which shards and trains on CPU:

- Lightning's accelerator connector refuses ``strategy="fsdp"`` (or exactly its
  ``FSDPStrategy``) without a CUDA accelerator. Ray's ``RayFSDPStrategy`` is a subclass, so the
  check (``type(...) is FSDPStrategy``) does not apply to it.
- Lightning wraps with ``device_id=root_device.index``, which is None for the CPU, and torch's
  FSDP then looks for an accelerator and raises "FSDP needs a non-CPU accelerator device".
  On CPU we wrap with ``device_id=torch.device("cpu")``.
- Lightning gathers full state dicts with ``offload_to_cpu=True``. When the compute device is
  already the CPU, torch's FSDP "moves" the gathered parameter to the CPU (the same storage)
  and then frees the unsharded storage: rank 0 reads freed memory and segfaults
  (pytorch/pytorch#188989). On CPU we gather without the offload (the tensors are on the CPU).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from ray.train.lightning import RayFSDPStrategy
from torch.distributed.fsdp import CPUOffload, FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy
from torch.nn import Module


class RaylightFSDPStrategy(RayFSDPStrategy):
    """``RayFSDPStrategy`` with the two CPU fixes above; on GPUs it is Ray's strategy as is."""

    def _setup_model(self, model: Module) -> Module:
        if self.root_device.type != "cpu" or any(isinstance(m, FSDP) for m in model.modules()):
            return super()._setup_model(model)
        # Lightning's wrapping with an explicit CPU device. What else it does there is moot
        # here: torchmetrics are on the CPU already, and raylight sets no activation
        # checkpointing.
        return FSDP(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The full, unsharded state dict, keyed like the unwrapped module.

        A collective: every rank must call it; with several ranks only rank 0 gets the tensors
        (the others an empty dict).
        """
        if self.root_device.type != "cpu":
            return super().lightning_module_state_dict()
        assert self.model is not None
        config = FullStateDictConfig(offload_to_cpu=False, rank0_only=self.world_size > 1)
        with FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT, config):
            return self.model.state_dict()


def fsdp_strategy(settings: dict[str, Any]) -> RaylightFSDPStrategy:
    """The strategy for ``trainer.fsdp`` (see ``config.FsdpSettings``).

    ``state_dict_type="full"`` keeps a checkpoint one file keyed like the plain model: what
    ``resume=``, the bundle and a later run with another strategy read.
    """
    policy = None
    if settings["min_params_to_wrap"]:
        policy = partial(size_based_auto_wrap_policy, min_num_params=settings["min_params_to_wrap"])
    return RaylightFSDPStrategy(
        sharding_strategy=settings["sharding_strategy"],
        cpu_offload=CPUOffload(offload_params=True) if settings["cpu_offload"] else None,
        auto_wrap_policy=policy,
        state_dict_type="full",
    )
