"""The flat parameter buffer: same arithmetic as per-tensor parameters, gradients stay views."""

from __future__ import annotations

import torch

from difftraffic_rl.flat_parameters import FlatParameters
from difftraffic_rl.networks import Actor


def _actor(seed: int = 0) -> Actor:
    return Actor(3, 2, (8, 8), torch.Generator().manual_seed(seed))


def _train(actor: Actor, step: object, steps: int = 20) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        obs = torch.randn(16, 3, generator=generator) * 10.0  # large: the norm clip is active
        mean, std = actor(obs)
        loss = (mean * 3.0 + std).square().mean()
        step(loss)  # type: ignore[operator]


def test_adam_clip_and_nan_scrub_on_the_flat_buffer_match_per_tensor_steps_bitwise() -> None:
    reference, flat = _actor(), _actor()
    reference_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.7, 0.95))
    params = FlatParameters(flat)
    flat_opt = params.adam(1e-2, (0.7, 0.95))

    def reference_step(loss: torch.Tensor) -> None:
        reference_opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in reference.parameters():
            torch.nan_to_num_(p.grad, nan=0.0)
        torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 0.5)
        reference_opt.step()

    def flat_step(loss: torch.Tensor) -> None:
        params.zero_grad()
        loss.backward()
        torch.nan_to_num_(params.grad, nan=0.0)
        params.clip_grad_norm_(0.5)
        flat_opt.step()

    _train(reference, reference_step)
    _train(flat, flat_step)
    for a, b in zip(reference.parameters(), flat.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(flat.parameters()), next(_actor().parameters()))  # it trained


def test_parameters_and_gradients_are_views_of_the_buffers_after_backward() -> None:
    actor = _actor()
    before = [p.detach().clone() for p in actor.parameters()]
    params = FlatParameters(actor)
    assert params.flat.numel() == sum(p.numel() for p in before)
    for p, old in zip(actor.parameters(), before, strict=True):
        assert torch.equal(p, old)  # values kept
    mean, _ = actor(torch.ones(4, 3))
    mean.sum().backward()
    buffer = params.grad.untyped_storage().data_ptr()
    assert all(p.grad.untyped_storage().data_ptr() == buffer for p in actor.parameters())
    assert params.grad.abs().sum() > 0
    with torch.no_grad():
        params.flat.zero_()
    assert all(float(p.detach().abs().sum()) == 0.0 for p in actor.parameters())
    params.zero_grad()
    assert all(float(p.grad.abs().sum()) == 0.0 for p in actor.parameters())
