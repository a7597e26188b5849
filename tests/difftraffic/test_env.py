"""The batched torch environment: protocol, gradients, autoreset, truncation, errors."""

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch

import difftraffic  # noqa: F401  (registers the Gymnasium ids)
from difftraffic import PaceCarEnv


def make_env(variant="2lane", num_envs=4, seed=0, **kwargs):
    return PaceCarEnv(variant, num_envs, seed=seed, dtype=torch.float64, **kwargs)


def test_reset_and_step_shapes_follow_the_protocol():
    env = make_env()
    obs, info = env.reset()
    assert obs.shape == (4, env.obs_dim) == (4, 20) and info == {}
    assert env.action_dim == 2 and env.max_episode_steps == 1000
    obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 2, dtype=torch.float64))
    assert obs.shape == (4, 20) and reward.shape == terminated.shape == truncated.shape == (4,)
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert set(info) >= {"collision", "off_road", "too_far", "fell_behind"}
    assert env.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    assert env.metadata["render_fps"] == round(1 / 0.03)


def test_rewards_backpropagate_into_earlier_actions():
    env = make_env("1lane", num_envs=2)
    env.reset()
    actions = torch.full((20, 2, 2), 0.1, dtype=torch.float64, requires_grad=True)
    total = torch.zeros(2, dtype=torch.float64)
    for t in range(20):
        _, reward, terminated, _, _ = env.step(actions[t])
        assert not terminated.any()
        total = total + reward
    total.sum().backward()
    grad = actions.grad
    assert torch.isfinite(grad).all()
    # The pace car brakes the human through the IDM, so its early acceleration matters.
    assert grad[:10, :, 0].abs().sum() > 0


@pytest.mark.parametrize("cut", [False, True])
def test_detach_cuts_the_graph_at_a_rollout_boundary(cut):
    env = make_env("1lane", num_envs=1)
    env.reset()
    first = torch.full((1, 2), 0.2, dtype=torch.float64, requires_grad=True)
    for _ in range(5):
        env.step(first)
    if cut:
        env.detach()
    _, reward, _, _, _ = env.step(torch.zeros(1, 2, dtype=torch.float64))
    if cut:
        assert not reward.requires_grad
    else:
        (grad,) = torch.autograd.grad(reward.sum(), first)
        assert grad[0, 0] != 0


def test_same_step_autoreset_returns_the_new_episode_and_keeps_the_final_obs():
    env = make_env("2lane", num_envs=3)
    obs0, _ = env.reset()
    # Brake hard: the humans overtake the pace car, which ends the episode ("fell behind").
    brake = torch.tensor([[-1.0, 0.0]] * 3, dtype=torch.float64)
    for _ in range(400):
        obs, reward, terminated, truncated, info = env.step(brake)
        if terminated.any():
            break
    assert terminated.all() and info["fell_behind"].all()
    assert (reward == -1.0).all()
    assert info["_final_obs"].all()
    final = info["final_obs"]
    # The final observation shows a human ahead of the pace car (positive relative x) ...
    assert (final[:, 4::4] > 0).any(dim=1).all()
    # ... while the returned observation is a fresh episode: all humans behind, at rest.
    assert (obs[:, 4::4] < 0).all() and (obs[:, 6::4] == 0).all()
    assert (env.elapsed == 0).all()
    assert obs0.shape == obs.shape


def test_truncation_after_max_episode_steps():
    env = make_env("1lane", num_envs=2, config_overrides={"max_episode_steps": 5})
    env.reset()
    flags = []
    for _ in range(6):
        _, _, terminated, truncated, info = env.step(torch.zeros(2, 2, dtype=torch.float64))
        flags.append(truncated.tolist())
        assert not terminated.any()
    assert flags[4] == [True, True] and flags[5] == [False, False]
    assert flags[:4] == [[False, False]] * 4


def test_same_seed_same_rollout_and_reset_seed_reseeds():
    def run(env, seed):
        obs, _ = env.reset(seed=seed)
        trace = [obs]
        generator = torch.Generator().manual_seed(3)
        for _ in range(30):
            action = torch.rand(env.num_envs, 2, generator=generator, dtype=torch.float64) * 2 - 1
            obs, *_ = env.step(action)
            trace.append(obs)
        return torch.stack(trace)

    a = run(make_env("4lane", seed=11), None)
    b = run(make_env("4lane", seed=99), 11)
    c = run(make_env("4lane", seed=12), None)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_wrong_action_shape_and_nan_actions_are_rejected():
    env = make_env(num_envs=4)
    env.reset()
    with pytest.raises(ValueError, match=r"actions must have shape \(4, 2\).*got \(4, 3\)"):
        env.step(torch.zeros(4, 3))
    action = torch.zeros(4, 2)
    action[2, 1] = float("nan")
    with pytest.raises(ValueError, match="actions must be finite.*world 2"):
        env.step(action)


def test_step_before_reset_and_bad_arguments_are_rejected():
    with pytest.raises(RuntimeError, match="reset"):
        make_env().step(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1, got 0"):
        make_env(num_envs=0)
    with pytest.raises(ValueError, match="render_mode must be one of"):
        make_env(render_mode="ascii")
    with pytest.raises(ValueError, match="step_path must be one of .*got 'fast'"):
        make_env(step_path="fast")


def test_the_fused_step_drives_the_env_like_the_eager_one_gradients_included():
    """Environments step eagerly by default; step_path='auto' takes the fused step."""
    assert make_env().step_path == "eager"
    results = []
    for path in ("eager", "auto"):
        env = make_env(step_path=path)
        env.reset(seed=3)
        actions = 0.5 * torch.randn(40, 4, 2, generator=torch.Generator().manual_seed(0))
        actions = actions.double().requires_grad_(True)
        total = torch.zeros((), dtype=torch.float64)
        for t in range(40):
            obs, reward, _, _, _ = env.step(actions[t])
            total = total + reward.sum()
        (grad,) = torch.autograd.grad(total, actions)
        results.append((obs, total, grad, env.neighbors.order is not None))
    (eager_obs, eager_total, eager_grad, eager_order), (obs, total, grad, order) = results
    assert not eager_order and order  # the fused step ran, and only under "auto"
    torch.testing.assert_close(obs, eager_obs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(total, eager_total, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-8, atol=1e-10)


def test_gymnasium_make_vec_returns_numpy_batches():
    envs = gymnasium.make_vec("difftraffic/PaceCar-4lane-v0", num_envs=3)
    obs, _ = envs.reset(seed=1)
    assert isinstance(obs, np.ndarray) and obs.shape == (3, 4 * 17)
    obs, reward, terminated, truncated, _ = envs.step(np.zeros((3, 2), dtype=np.float32))
    assert isinstance(reward, np.ndarray) and reward.shape == (3,)


def test_gymnasium_make_single_env_reproduces_with_a_seed():
    env = gymnasium.make("difftraffic/PaceCar-1lane-v0")
    first, _ = env.reset(seed=5)
    a, *_ = env.step(np.array([0.3, 0.1], dtype=np.float32))
    second, _ = env.reset(seed=5)
    b, *_ = env.step(np.array([0.3, 0.1], dtype=np.float32))
    assert env.observation_space.contains(first)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(a, b)


def test_gymnasium_single_env_ends_the_episode_and_requires_reset():
    env = gymnasium.make("difftraffic/PaceCar-2lane-v0")
    env.reset(seed=0)
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(np.array([-1.0, 0.0], dtype=np.float32))
        assert not truncated
        if terminated:
            break
    assert terminated and reward == -1.0 and info["fell_behind"]
    assert (obs[4::4] > 0).any(), "the final observation shows the human that overtook"
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.float32))


def test_gymnasium_make_in_a_fresh_interpreter_with_the_module_prefix():
    # The README's line: no `import difftraffic` first (Gymnasium >= 1.0 has no plugin hook).
    code = (
        "import gymnasium, sys\n"
        "assert 'difftraffic' not in sys.modules\n"
        "env = gymnasium.make('difftraffic:difftraffic/PaceCar-2lane-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert obs.shape == env.observation_space.shape, obs.shape\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": torch.int32}, r"dtype must be torch.float32 or torch.float64, got torch.int32"),
        ({"dtype": torch.bfloat16}, r"got torch.bfloat16 \(too coarse"),
        ({"device": "cuda:99"}, r"device='cuda:99' is not available in this torch build"),
    ],
)
def test_an_unusable_dtype_or_device_is_named_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaceCarEnv("2lane", num_envs=2, **kwargs)


def test_unknown_config_fields_and_non_numeric_actions_are_named():
    with pytest.raises(ValueError, match=r"unknown PaceCarConfig field\(s\) \['speed'\]"):
        PaceCarEnv("2lane", num_envs=1, config_overrides={"speed": 10.0})
    env = PaceCarEnv("2lane", num_envs=1, seed=0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be a \[num_envs, action_dim\] array"):
        env.step("left")


def test_out_of_range_actions_are_clipped_as_documented():
    def speeds(action: float) -> torch.Tensor:
        env = PaceCarEnv("1lane", num_envs=1, seed=0)
        env.reset(seed=0)
        env.step(torch.tensor([[action, 0.0]]))
        return env.state.v

    torch.testing.assert_close(speeds(5.0), speeds(1.0), rtol=0, atol=0)
    assert not torch.equal(speeds(0.5), speeds(1.0))


@pytest.mark.parametrize("soft", [False, True])
def test_soft_lanes_carry_the_pace_cars_lateral_position_into_the_reward(soft):
    """The pace car placed 10 cm short of the line into the other lane, ahead of that lane's
    humans: under the discrete nearest-centre rule the humans' reward has zero gradient in its
    lateral position; with ``soft_lanes`` (the smooth rule) it has one."""
    overrides = {"lane_membership": "center", "soft_lanes": soft}
    env = make_env("2lane", num_envs=1, config_overrides=overrides)
    env.reset(seed=3)
    state = env.state
    av = state.is_av[0].nonzero().item()
    line = 4.0  # between lane 0 (centre 2 m) and lane 1 (centre 6 m)
    lane = int(state.y[0, av].item() > line)
    y = state.y.clone()
    y[0, av] = line + (0.1 if lane else -0.1)
    y.requires_grad_(True)
    env.state = state.replace(y=y)
    total = torch.zeros(1, dtype=torch.float64)
    for _ in range(30):
        _, reward, terminated, _, _ = env.step(torch.zeros(1, 2, dtype=torch.float64))
        assert not terminated.any()
        total = total + reward
    # discrete: no autograd path from y to the reward at all
    (grad,) = (
        torch.autograd.grad(total.sum(), y, allow_unused=True) if total.requires_grad else (None,)
    )
    grad_av = 0.0 if grad is None else grad[0, av].item()
    assert (abs(grad_av) > 1e-6) if soft else (grad_av == 0.0)


def test_soft_lanes_need_the_nearest_centre_rule():
    with pytest.raises(ValueError, match="soft_lanes smooths the nearest-centre rule"):
        make_env("2lane", config_overrides={"soft_lanes": True})
