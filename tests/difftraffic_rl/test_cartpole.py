"""Cart-pole swing-up: gradients (gradcheck and finite differences), physics sanity, episodes,
reproducibility, errors and a short training run."""

import math

import pytest
import torch

import difftraffic_rl
from difftraffic_rl.algorithms.pe import action_value_gradients, enhancement_loss
from difftraffic_rl.config import RunConfig, default_config
from difftraffic_rl.evaluation import episode_returns
from difftraffic_rl.tasks import make_task
from difftraffic_rl.tasks.physics.cartpole import (
    CartPoleParams,
    cartpole_energy,
    cartpole_observation,
    cartpole_reward,
    cartpole_step,
    wrap_angle,
)

F64 = torch.float64


def _states(count: int, seed: int = 0) -> torch.Tensor:
    """``[count, 4]`` states inside the rail, away from the angle wrap at +-pi."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([2.0, 2.0, 2.5, 3.0], dtype=F64)
    return (torch.rand(count, 4, generator=g, dtype=F64) * 2 - 1) * scale


def _rollout_return(state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Sum of rewards ``[B]`` of ``actions [T, B, 1]`` from ``state [B, 4]``."""
    total = torch.zeros(state.shape[0], dtype=state.dtype)
    for action in actions:
        state = cartpole_step(state, action)
        total = total + cartpole_reward(state)
    return total


def test_one_step_passes_gradcheck_for_state_and_action():
    state = _states(3).requires_grad_()
    action = torch.rand(3, 1, generator=torch.Generator().manual_seed(1), dtype=F64) * 1.6 - 0.8
    action.requires_grad_()
    assert torch.autograd.gradcheck(lambda s, a: cartpole_step(s, a), (state, action))
    assert torch.autograd.gradcheck(
        lambda s, a: cartpole_observation(cartpole_step(s, a)), (state, action)
    )


def test_short_rollout_return_passes_gradcheck_for_initial_state_and_actions():
    state = _states(2, seed=2).requires_grad_()
    actions = torch.full((6, 2, 1), 0.05, dtype=F64)
    actions[:, 1] = -0.03
    actions.requires_grad_()
    assert torch.autograd.gradcheck(_rollout_return, (state, actions))


def test_rollout_gradient_matches_central_finite_differences():
    state = _states(4, seed=3)
    actions = torch.linspace(-0.2, 0.2, 20 * 4, dtype=F64).reshape(20, 4, 1).requires_grad_()
    _rollout_return(state, actions).sum().backward()
    step = 1e-6
    for t, world in ((0, 0), (7, 2), (19, 3)):
        plus, minus = actions.detach().clone(), actions.detach().clone()
        plus[t, world, 0] += step
        minus[t, world, 0] -= step
        numeric = (_rollout_return(state, plus) - _rollout_return(state, minus)).sum() / (2 * step)
        assert actions.grad[t, world, 0].item() == pytest.approx(numeric.item(), rel=1e-5)
        assert abs(numeric.item()) > 1e-3


def test_energy_is_conserved_to_first_order_in_the_substep_without_damping_or_force():
    start = torch.tensor([[0.0, 0.0, -math.pi + 0.5, 0.0], [0.0, 1.0, 1.0, 2.0]], dtype=F64)
    drifts = []
    for substeps in (4, 40):
        params = CartPoleParams(joint_damping=0.0, substeps=substeps)
        state, energies = start, []
        for _ in range(120):
            state = cartpole_step(state, torch.zeros(2, 1, dtype=F64), params)
            energies.append(cartpole_energy(state, params))
        drifts.append((torch.stack(energies) - cartpole_energy(start, params)).abs().max(0).values)
    # The benchmark's integrator (semi-implicit Euler) is first order: 10x substeps, ~10x less.
    assert (drifts[1] < drifts[0] / 7).all() and (drifts[1] > drifts[0] / 13).all()
    swing_energy = cartpole_energy(start, CartPoleParams())[0].abs()
    assert drifts[0][0] < 0.01 * swing_energy


def test_the_benchmarks_joint_damping_dissipates_energy():
    start = torch.tensor([[0.0, 0.0, -math.pi + 1.0, 0.0]], dtype=F64)
    # Fine substeps keep the integrator's own energy error well below the dissipation.
    damped, free = CartPoleParams(substeps=40), CartPoleParams(joint_damping=0.0, substeps=40)
    state_damped, state_free = start, start
    for _ in range(240):
        state_damped = cartpole_step(state_damped, torch.zeros(1, 1, dtype=F64), damped)
        state_free = cartpole_step(state_free, torch.zeros(1, 1, dtype=F64), free)
    lost = cartpole_energy(start, damped) - cartpole_energy(state_damped, damped)
    drift = (cartpole_energy(start, free) - cartpole_energy(state_free, free)).abs()
    assert lost.item() > 10 * drift.item() and lost.item() > 1.0


def test_rail_end_spring_pushes_the_cart_back():
    beyond = torch.tensor([[4.5, 0.0, 0.0, 0.0], [-4.5, 0.0, 0.0, 0.0]], dtype=F64)
    moved = cartpole_step(beyond, torch.zeros(2, 1, dtype=F64))
    assert moved[0, 1] < 0 and moved[1, 1] > 0


def test_reward_wraps_the_angle_and_is_zero_upright_at_rest():
    upright_after_turns = torch.tensor([[0.0, 0.0, 4 * math.pi, 0.0]], dtype=F64)
    assert cartpole_reward(upright_after_turns).item() == pytest.approx(0.0, abs=1e-12)
    state = torch.tensor([[1.0, 2.0, 2 * math.pi + 0.5, -1.0]], dtype=F64)
    expected = -(0.5**2 + 0.1 * 1.0 + 0.05 * 1.0 + 0.1 * 4.0)
    assert cartpole_reward(state).item() == pytest.approx(expected)
    angles = torch.tensor([-math.pi, math.pi, 3 * math.pi + 0.1], dtype=F64)
    wrapped = wrap_angle(angles)
    assert torch.allclose(wrapped, torch.tensor([-math.pi, -math.pi, -math.pi + 0.1], dtype=F64))


def test_idle_episode_hangs_down_truncates_at_240_and_resets_in_the_same_step():
    env = make_task("cartpole", 3, dtype=F64)
    obs = env.reset()
    assert torch.allclose(obs[0], torch.tensor([0.0, 0.0, 0.0, -1.0, 0.0], dtype=F64), atol=1e-12)
    total = torch.zeros(3, dtype=F64)
    push = torch.full((3, 1), 0.3, dtype=F64)
    for t in range(240):
        obs, reward, terminated, truncated, info = env.step(push if t == 239 else 0 * push)
        total += reward if t < 239 else 0.0
        assert not terminated.any()
        assert bool(truncated.all()) == (t == 239)
    assert total[0].item() == pytest.approx(-239 * math.pi**2, rel=1e-9)
    start = torch.tensor([0.0, 0.0, 0.0, -1.0, 0.0], dtype=F64)
    assert torch.allclose(obs, start.expand(3, 5), atol=1e-12)
    assert info["final_obs"][:, 1].gt(1e-3).all(), "final_obs must hold the pushed state"
    obs, _, _, truncated, _ = env.step(0 * push)
    assert not truncated.any() and obs[:, 1].abs().max() < 1e-12


def test_only_the_reset_world_loses_the_gradient_and_final_obs_keeps_it():
    env = make_task("cartpole", 2, dtype=F64, max_episode_steps=3)
    env.reset()
    saved = env.state_dict()
    saved["elapsed"] = torch.tensor([2, 0])
    env.load_state_dict(saved)
    action = torch.full((2, 1), 0.5, dtype=F64, requires_grad=True)
    obs, _, _, truncated, info = env.step(action)
    assert truncated.tolist() == [True, False]
    (grad_final,) = torch.autograd.grad(info["final_obs"][:, 1].sum(), action, retain_graph=True)
    assert (grad_final > 0).all()
    (grad_obs,) = torch.autograd.grad(obs[:, 1].sum(), action)
    assert grad_obs[0, 0] == 0 and grad_obs[1, 0] == grad_final[1, 0]


def test_same_seed_same_noisy_rollout_and_state_dict_resumes_exactly():
    def rollout(env, steps):
        return torch.stack([env.step(torch.full((4, 1), 0.2))[0] for _ in range(steps)])

    first = make_task("cartpole", 4, stochastic_init=True, max_episode_steps=10)
    second = make_task("cartpole", 4, stochastic_init=True, max_episode_steps=10)
    a, b = first.reset(seed=5), second.reset(seed=5)
    assert torch.equal(a, b) and a[:, 0].std() > 0.1
    assert torch.equal(rollout(first, 25), rollout(second, 25))
    third = make_task("cartpole", 4, stochastic_init=True, max_episode_steps=10)
    third.load_state_dict(first.state_dict())
    assert torch.equal(rollout(first, 25), rollout(third, 25))
    other_seed = make_task("cartpole", 4, stochastic_init=True).reset(seed=6)
    assert not torch.equal(a, other_seed)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pole_mass": 0.0}, "pole_mass=0.0"),
        ({"joint_damping": -1.0}, "joint_damping=-1.0"),
        ({"substeps": 0}, "substeps=0"),
        ({"max_episode_steps": 0}, "max_episode_steps=0"),
        ({"pole_lenght": 1.0}, "unknown cart-pole parameters"),
    ],
)
def test_bad_parameters_fail_with_name_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task("cartpole", 2, **kwargs)


def test_bad_actions_and_states_fail_loudly():
    env = make_task("cartpole", 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(2, 1))
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        env.step(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        env.step(torch.tensor([[0.0], [math.nan]]))
    with pytest.raises(ValueError, match=r"expected \[B, 4\]"):
        cartpole_step(torch.zeros(2, 3), torch.zeros(2, 1))


def test_two_epochs_of_pe_on_cartpole_give_finite_losses_and_action_gradients():
    result = difftraffic_rl.train(
        "cartpole",
        "pe",
        seed=1,
        epochs=2,
        logdir=None,
        progress=False,
        overrides=["train.num_envs=8", "horizon=8"],
    )
    last = result.metrics[-1]
    assert math.isfinite(last["losses/actor"]) and math.isfinite(last["losses/critic"])
    assert last["pe/action_grad_norm"] > 0


@pytest.mark.slow
def test_rp_at_the_papers_settings_improves_the_swing_up_return_in_150_epochs():
    env = make_task("cartpole", 4)
    untrained = difftraffic_rl.train(
        "cartpole", "rp", seed=1, epochs=1, logdir=None, progress=False
    )
    trained = difftraffic_rl.train(
        "cartpole", "rp", seed=1, epochs=150, logdir=None, progress=False
    )
    before = episode_returns(env, untrained.algorithm.act).mean().item()
    after = episode_returns(env, trained.algorithm.act).mean().item()
    assert after > before + 300.0


@pytest.mark.parametrize("vectorize", [True, False])
def test_pe_action_gradient_is_each_steps_own_one_step_gradient(vectorize):
    # Two steps, two worlds, one action dimension: r_0 = -(a_0 - 1)^2, V'_0 = 3 a_0,
    # r_1 = -a_1^2 + 5 a_0 (a later reward that depends on the earlier action), V'_1 = a_1 a_0.
    a0 = torch.tensor([[0.5], [2.0]], dtype=F64, requires_grad=True)
    a1 = torch.tensor([[-1.0], [0.25]], dtype=F64, requires_grad=True)
    rewards = torch.stack([-((a0[:, 0] - 1) ** 2), -(a1[:, 0] ** 2) + 5 * a0[:, 0]])
    next_values = torch.stack([3 * a0[:, 0], a1[:, 0] * a0[:, 0]])
    grads = action_value_gradients(rewards, next_values, [a0, a1], gamma=0.5, vectorize=vectorize)
    # d/da_0 (r_0 + 0.5 V'_0) = -2 (a_0 - 1) + 1.5; d/da_1 (r_1 + 0.5 V'_1) = -2 a_1 + 0.5 a_0.
    expected = torch.tensor([[[2.5], [-0.5]], [[2.25], [0.5]]], dtype=F64)
    torch.testing.assert_close(grads, expected)


def test_pe_enhancement_loss_and_its_parameter_gradient_by_hand():
    # a_theta = w * s with one weight: L = -mean_i g_i w s_i, dL/dw = -mean_i g_i s_i.
    weight = torch.tensor(2.0, dtype=F64, requires_grad=True)
    states = torch.tensor([[[1.0], [-3.0]]], dtype=F64)
    grads = torch.tensor([[[0.5], [2.0]]], dtype=F64)
    loss = enhancement_loss(weight * states, grads)
    assert loss.item() == pytest.approx(-(0.5 * 2.0 + 2.0 * -6.0) / 2)
    loss.backward()
    assert weight.grad.item() == pytest.approx(-(0.5 * 1.0 + 2.0 * -3.0) / 2)


def test_pe_adds_the_enhancement_term_to_rps_loss():
    from difftraffic_rl.algorithms.pe import PE, PEConfig
    from difftraffic_rl.rollout import EpisodeTracker, gae

    losses = {}
    for weight in (0.0, 1.0):
        env = make_task("cartpole", 4)
        obs = env.reset()
        pe = PE(PEConfig(horizon=4, enhancement_weight=weight), env.obs_dim, env.action_dim, seed=0)
        rollout = pe.collect(env, obs, EpisodeTracker(4, pe.device, pe.dtype))
        advantages = gae(
            rollout.rewards, rollout.values, rollout.next_values, rollout.dones, 0.99, 0.95
        )
        loss, metrics = pe.actor_loss(rollout, advantages)
        losses[weight] = (loss.item(), metrics["pe/loss"])
    assert losses[0.0][1] == pytest.approx(losses[1.0][1])
    assert losses[1.0][0] == pytest.approx(losses[0.0][0] + losses[1.0][1], rel=1e-5)
    assert abs(losses[1.0][1]) > 1e-3


@pytest.mark.parametrize("algo", ["lr", "rp", "lrp", "ppo", "gippo", "pe"])
def test_cartpole_configurations_hold_the_papers_settings(algo):
    config = RunConfig.from_dict(default_config("cartpole", algo)).resolved()
    h, train = config["hyperparameters"], config["train"]
    assert h["actor_hidden"] == [64, 64] and h["critic_hidden"] == [64, 64]
    assert h["horizon"] == 32 and train["num_envs"] == 64 and train["epochs"] == 500
    assert h["critic_lr"] == 1e-3 and h["critic_iterations"] == 16
    assert h["critic_num_batches"] == 4 and h["gamma"] == 0.99 and h["gae_lambda"] == 0.95
    expected_lr = {"lr": 1e-4, "rp": 1e-2, "lrp": 1e-4, "ppo": 3e-4, "gippo": 3e-4, "pe": 1e-2}
    assert h["actor_lr"] == expected_lr[algo]
    if algo in ("ppo", "gippo"):
        assert h["minibatch_size"] == 2048 and h["mini_epochs"] == 5 and h["clip"] == 0.2
        # appendix footnote 2: the rate keeps the KL of each update near 0.008
        assert h["lr_schedule"] == "adaptive" and h["kl_target"] == 0.008
    if algo == "gippo":
        assert h["alpha0"] == 0.5 and h["alpha_lr"] == 1e-2 and h["max_alpha"] == 1.0
        assert h["alpha_factor"] == 1.02 and h["det_interval"] == 0.4 and h["max_oorr"] == 0.75
        assert h["alpha_iterations"] == 16
        assert h["discard_failed_alpha_policy"] is True  # see docs/results/physics.md
    RunConfig.from_dict(config)
