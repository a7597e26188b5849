"""compile_step (torch.compile of the step) against the eager step, the reference."""

from __future__ import annotations

import torch

from difftraffic.compile import compile_step
from difftraffic.dynamics import step
from difftraffic.idm import IDMParams
from difftraffic.road import Road
from difftraffic.state import TrafficState

STEPS = 20


def _platoons(make_platoons) -> tuple[Road, TrafficState, torch.Tensor, torch.Tensor]:
    """Two worlds of three 3-car platoons on a 3-lane ring, one AV each steering across lanes,
    starting 12 m apart at mixed speeds: the followers brake, and the AV's lane changes move
    leaders. Controls ``[STEPS, B, N]``."""
    generator = torch.Generator().manual_seed(0)
    road = Road(3, 3.5, 30.0, 150.0, "body")
    batch, n = 2, 9
    state = make_platoons(road, batch, n, 12.0, (5.0, 15.0), generator)
    acceleration = 2.0 * torch.randn(STEPS, batch, n, generator=generator).double()
    steering = 0.05 * torch.randn(STEPS, batch, n, generator=generator).double()
    return road, state, acceleration, steering


def _rollout(step_fn, road, state, acceleration, steering):
    """Final positions, speeds and headings after :data:`STEPS` steps, and every step's
    collision flags."""
    drivers = IDMParams(v0=torch.linspace(20.0, 28.0, state.num_vehicles, dtype=torch.float64))
    neighbors, collided = None, []
    for t in range(STEPS):
        result = step_fn(state, road, drivers, 0.1, acceleration[t], steering[t], neighbors)
        state, neighbors = result.state, result.neighbors
        collided.append(result.collided)
    return state.x, state.v, state.heading, torch.stack(collided)


def test_the_compiled_step_gives_the_eager_values_and_gradients(make_platoons):
    road, state, acceleration, steering = _platoons(make_platoons)
    results, gradients = [], []
    for step_fn in (lambda *args: step(*args, path="eager"), compile_step()):
        controls = (acceleration.clone().requires_grad_(True),
                    steering.clone().requires_grad_(True))  # fmt: skip
        start_v = state.v.clone().requires_grad_(True)
        x, v, heading, collided = _rollout(step_fn, road, state.replace(v=start_v), *controls)
        results.append((x, v, heading, collided))
        loss = x.sum() + 3.0 * v.sum() + 10.0 * heading.sum()
        gradients.append(torch.autograd.grad(loss, (*controls, start_v)))
    (eager_x, eager_v, eager_heading, eager_collided), compiled = results
    # Inductor may reorder float64 arithmetic inside a fused kernel: rounding-level differences.
    torch.testing.assert_close(compiled[0], eager_x, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(compiled[1], eager_v, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(compiled[2], eager_heading, rtol=1e-10, atol=1e-9)
    assert torch.equal(compiled[3], eager_collided)
    for expected, got in zip(*gradients, strict=True):
        assert expected.abs().sum() > 0  # the comparison is not between zeros
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-9)
