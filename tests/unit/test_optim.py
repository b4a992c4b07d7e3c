"""The built-in models' AdamW: fused where torch supports it, the same training either way."""

from __future__ import annotations

import torch

from raylight.models.optim import adamw, can_fuse
from raylight.models.tabular import TabularMLP

KW = dict(input_dim=12, output_dim=3, task="classification", hidden_dims=[16, 8], dropout=0.0)


def _train(opt_factory, steps: int = 25) -> tuple[TabularMLP, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = TabularMLP(**KW, lr=0.01, weight_decay=0.01)
    opt = opt_factory(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def test_models_get_fused_adamw_on_cpu_with_their_settings() -> None:
    model = TabularMLP(**KW, lr=0.02, weight_decay=0.001)
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["fused"] is True
    assert (group["lr"], group["weight_decay"]) == (0.02, 0.001)


def test_fused_trains_like_the_default_implementation() -> None:
    fused, _ = _train(lambda m: m.configure_optimizers())
    plain, _ = _train(lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.01))
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_optimizer_state_resumes_across_implementations() -> None:
    # A run resumed from a checkpoint written before this optimizer was fused: the state
    # loads and steps; the implementation follows the checkpoint's parameter groups.
    model, plain = _train(lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.01))
    resumed = model.configure_optimizers()
    resumed.load_state_dict(plain.state_dict())
    assert not resumed.param_groups[0]["fused"]
    x = torch.randn(8, 12)
    resumed.zero_grad()
    model(x).sum().backward()
    resumed.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # A checkpoint written by the fused optimizer resumes fused, with its moments.
    model, fused = _train(lambda m: m.configure_optimizers())
    again = model.configure_optimizers()
    again.load_state_dict(fused.state_dict())
    assert again.param_groups[0]["fused"] is True
    p0 = next(model.parameters())
    torch.testing.assert_close(again.state[p0]["exp_avg"], fused.state[p0]["exp_avg"])


def test_parameter_groups_and_what_stays_unfused() -> None:
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    opt = adamw([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], weight_decay=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert all(g["fused"] for g in opt.param_groups)

    class Shard(torch.Tensor):  # stands in for FSDP's flat parameters or DTensor shards
        pass

    assert not can_fuse([torch.zeros(2).as_subclass(Shard)])
    assert not can_fuse([torch.zeros(2, dtype=torch.int64)])
    assert not can_fuse([])
    opt = adamw([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=0.1)
    assert opt.param_groups[0]["fused"] is True


def test_fused_adamw_false_keeps_torchs_default() -> None:
    model = TabularMLP(**KW, lr=0.02, fused_adamw=False)
    assert not model.configure_optimizers().param_groups[0]["fused"]
