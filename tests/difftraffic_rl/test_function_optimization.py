"""De Jong and Ackley tasks: values, scaling, gradients, protocol and input validation."""

from __future__ import annotations

import math

import pytest
import torch

from difftraffic_rl.envs import VecEnv
from difftraffic_rl.tasks import available_tasks, make_task, register_task
from difftraffic_rl.tasks.function_optimization import ackley, dejong


def test_registry_has_the_four_paper_problems_with_their_dimensions() -> None:
    assert {"dejong", "dejong64", "ackley", "ackley64"} <= set(available_tasks())
    for name, dim in (("dejong", 1), ("dejong64", 64), ("ackley", 1), ("ackley64", 64)):
        env = make_task(name, num_envs=3)
        assert isinstance(env, VecEnv)
        assert (env.num_envs, env.obs_dim, env.action_dim, env.max_episode_steps) == (3, 1, dim, 1)


def test_unknown_task_and_duplicate_registration_fail_with_the_name() -> None:
    with pytest.raises(ValueError, match="nope"):
        make_task("nope", num_envs=1)
    with pytest.raises(ValueError, match="dejong"):
        register_task("dejong", "x:y")


def test_dejong_and_ackley_values_at_known_points() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    assert dejong(x).tolist() == [0.0, 5.0]
    assert ackley(x[:1]).item() == pytest.approx(0.0, abs=1e-12)
    one = torch.tensor([[1.0]], dtype=torch.float64)
    expected = -20 * math.exp(-0.2) - math.exp(math.cos(2 * math.pi)) + 20 + math.e
    assert ackley(one).item() == pytest.approx(expected, rel=1e-12)


def test_ackley_gradient_is_finite_at_the_optimum() -> None:
    x = torch.zeros(2, 64, dtype=torch.float64, requires_grad=True)
    ackley(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().max() == 0


def test_ackley_gradcheck_away_from_zero() -> None:
    x = torch.tensor([[0.3, -0.7, 1.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ackley, (x,))


@pytest.mark.parametrize(
    ("name", "bound", "fn"), [("dejong", 5.12, dejong), ("ackley", 32.768, ackley)]
)
def test_step_scales_actions_and_is_differentiable(name: str, bound: float, fn) -> None:
    env = make_task(name, num_envs=4, dtype=torch.float64)
    action = torch.tensor([[-1.0], [-0.25], [0.1], [0.9]], dtype=torch.float64, requires_grad=True)
    obs, reward, terminated, truncated, info = env.step(action)
    assert torch.allclose(reward, -fn(bound * action.detach()))
    assert obs.shape == (4, 1) and obs.abs().sum() == 0
    assert truncated.all() and not terminated.any()
    assert torch.equal(info["final_obs"], obs)
    reward.sum().backward()
    assert action.grad is not None and torch.isfinite(action.grad).all()
    if name == "dejong":
        assert torch.allclose(action.grad[1:], -2 * bound**2 * action.detach()[1:])


def test_bad_actions_fail_with_shape_or_value_in_the_message() -> None:
    env = make_task("dejong64", num_envs=2)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 64\)"):
        env.step(torch.zeros(2, 3))
    bad = torch.zeros(2, 64)
    bad[0, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)
    with pytest.raises(ValueError, match="num_envs=0"):
        make_task("dejong", num_envs=0)
