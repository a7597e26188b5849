"""Ant and Hopper on Newton: gradients through rollouts, falling and resting, joint limits,
determinism, non-finite gradient handling, Featherstone, errors, configurations and a training
epoch.

Few worlds and module-scoped environments keep this file short (Warp compiles its CPU kernels
once, into ~/.cache/warp).
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("newton", reason="Ant/Hopper need the difftraffic[physics] extra")

import difftraffic_rl  # noqa: E402
from difftraffic_rl.config import RunConfig, default_config  # noqa: E402
from difftraffic_rl.tasks import make_task  # noqa: E402
from difftraffic_rl.tasks.physics.ant import TERMINATION_HEIGHT as ANT_TERMINATION_HEIGHT  # noqa: E402
from difftraffic_rl.tasks.physics.newton_sim import import_newton  # noqa: E402

ROBOTS = ("ant", "hopper")
SIZES = {"ant": (37, 8), "hopper": (11, 3)}
WORLDS = 3


@pytest.fixture(scope="module", params=ROBOTS)
def env(request):
    return make_task(request.param, WORLDS)


@pytest.fixture(scope="module", params=ROBOTS)
def quiet_env(request):
    """One world, no start noise, no early termination: the robot's own fall."""
    return make_task(request.param, 1, stochastic_init=False, early_termination=False)


def random_actions(steps: int, num_envs: int, action_dim: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(num_envs, action_dim, generator=generator) * 2 - 1).requires_grad_()
        for _ in range(steps)
    ]


def test_sizes_are_the_benchmarks(env):
    obs_dim, action_dim = SIZES[env.physics.asset.removesuffix(".xml")]
    assert (env.obs_dim, env.action_dim, env.max_episode_steps) == (obs_dim, action_dim, 1000)
    assert env.reset(seed=0).shape == (WORLDS, obs_dim)


def test_32_step_rollout_gives_finite_nonzero_action_gradients_in_every_world(env):
    env.reset(seed=3)
    env.log_metrics()
    actions = random_actions(32, WORLDS, env.action_dim, seed=0)
    total = sum(env.step(action)[1].sum() for action in actions)
    total.backward()
    grads = torch.stack([a.grad for a in actions])
    assert torch.isfinite(grads).all()
    assert (grads.abs().sum(dim=(0, 2)) > 0).all()
    assert env.log_metrics() == {
        "physics/nonfinite_grad_worlds": 0.0,
        "physics/unstable_worlds": 0.0,
    }


def test_robot_starts_at_its_height_falls_and_rests_on_the_ground(quiet_env):
    env = quiet_env
    obs = env.reset()
    is_ant = env.obs_dim == 37
    # Ant: torso centre 0.75 m above the ground; Hopper: z = 0 puts the torso centre at 1.25 m.
    assert obs[0, 0].item() == pytest.approx(0.75 if is_ant else 0.0, abs=1e-6)
    resting_on_torso = 0.25 if is_ant else -1.25 + 0.05  # the torso's radius above the ground
    heights, speeds = [], []
    with torch.no_grad():
        for _ in range(150):
            obs = env.step(torch.zeros(1, env.action_dim))[0]
            heights.append(obs[0, 0].item())
            speeds.append(env.joint_qd.abs().max().item())
    assert heights[5] < heights[0] - 0.005
    assert min(heights) > resting_on_torso - 0.06  # soft contact: centimetres, not through
    assert speeds[-1] < 0.05


def test_same_seed_same_rollout_and_state_dict_resumes_exactly():
    def rollout(env, actions):
        with torch.no_grad():
            steps = [env.step(a) for a in actions]
        return torch.stack([torch.cat((obs, reward[:, None]), -1) for obs, reward, *_ in steps])

    actions = [a.detach() for a in random_actions(6, 2, 3, seed=1)]
    first, second = make_task("hopper", 2), make_task("hopper", 2)
    a, b = first.reset(seed=5), second.reset(seed=5)
    assert torch.equal(a, b) and a.std() > 0.01
    assert torch.equal(rollout(first, actions), rollout(second, actions))
    second.load_state_dict(first.state_dict())
    assert torch.equal(rollout(first, actions), rollout(second, actions))
    assert not torch.equal(second.reset(seed=6), a)


def test_repeated_and_recycled_backward_passes_give_the_same_gradients():
    env = make_task("hopper", WORLDS)
    env.reset(seed=4)
    start = env.state_dict()
    actions = random_actions(4, WORLDS, env.action_dim, seed=5)

    def window_return():
        env.load_state_dict(start)
        return sum(env.step(a)[1].sum() for a in actions)

    total = window_return()
    first = torch.autograd.grad(total, actions, retain_graph=True)
    again = torch.autograd.grad(total, actions)  # retain_graph: no accumulation
    del total
    recycled = torch.autograd.grad(window_return(), actions)  # reuses the freed substep states
    for a, b, c in zip(first, again, recycled, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c) and a.abs().sum() > 0


def test_a_nonfinite_gradient_zeroes_that_worlds_contribution_and_is_counted():
    env = make_task("hopper", WORLDS)
    env.reset(seed=0)
    env.log_metrics()
    action = random_actions(1, WORLDS, env.action_dim, seed=2)[0]
    joint_f = F.pad(200.0 * action, (env.sim.dofs - env.action_dim, 0))
    _, _, joint_q, joint_qd = env.sim.step(env.sim_state, joint_f)

    def poison_world_1(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[1, 0] = math.nan
        return grad

    joint_q.register_hook(poison_world_1)
    (joint_q.sum() + joint_qd.sum()).backward()
    assert torch.isfinite(action.grad).all()
    assert (action.grad[1] == 0).all() and (action.grad[[0, 2]].abs().sum(-1) > 0).all()
    assert env.log_metrics()["physics/nonfinite_grad_worlds"] == 1.0


def test_a_world_that_blows_up_is_terminated_reset_and_counted():
    env = make_task("hopper", WORLDS)
    env.reset(seed=0)
    env.log_metrics()
    position, velocity = env.sim_state
    velocity = velocity.clone()
    velocity[1] = math.inf
    env.sim_state = (position, velocity)
    obs, reward, terminated, truncated, info = env.step(torch.zeros(WORLDS, env.action_dim))
    assert terminated.tolist() == [False, True, False] and reward[1] == 0
    assert not torch.isfinite(info["final_obs"][1]).all() and torch.isfinite(obs).all()
    assert env.log_metrics()["physics/unstable_worlds"] == 1.0


@pytest.mark.parametrize("robot", ROBOTS)
def test_featherstone_is_selectable_and_gives_a_finite_differentiable_rollout(robot):
    env = make_task(robot, 2, solver="featherstone")
    assert type(env.sim.solver).__name__ == "SolverFeatherstone"
    env.reset(seed=0)
    actions = random_actions(8, 2, env.action_dim, seed=3)
    steps = [env.step(a) for a in actions]
    assert all(torch.isfinite(obs).all() for obs, *_ in steps)
    sum(reward.sum() for _, reward, *_ in steps).backward()
    grads = torch.stack([a.grad for a in actions])
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"solver": "implicit"}, r"solver='implicit' is invalid; valid values: \['semi_"),
        ({"dtype": torch.float64}, "dtype=torch.float64 is invalid; valid: torch.float32"),
        ({"contact_ke": -1.0}, r"contact_ke=-1.0 is invalid; valid range: finite and > 0"),
        ({"armature": math.nan}, "armature=nan is invalid"),
        ({"substeps": 0}, "substeps=0 is invalid; valid range: integer >= 1"),
        ({"max_episode_steps": 0}, "max_episode_steps=0 is invalid; valid range: >= 1"),
        ({"contact_kee": 1.0}, r"unknown physics parameters \['contact_kee'\]"),
    ],
)
def test_bad_arguments_fail_with_name_value_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task("ant", 2, **kwargs)


def test_bad_actions_fail_loudly(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(WORLDS, env.action_dim + 1))
    with pytest.raises(ValueError, match="NaN"):
        env.step(torch.full((WORLDS, env.action_dim), math.nan))


def test_missing_engine_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "newton", None)
    with pytest.raises(ImportError, match=r"difftraffic\[physics\]"):
        import_newton()


@pytest.mark.parametrize("algo", ["lr", "rp", "lrp", "ppo", "pe"])
def test_every_algorithm_trains_an_epoch_on_hopper(algo):
    result = difftraffic_rl.train(
        "hopper",
        algo,
        seed=1,
        epochs=1,
        logdir=None,
        progress=False,
        overrides=["train.num_envs=4", "horizon=8"],
    )
    assert math.isfinite(result.metrics[-1]["losses/critic"])


def test_one_gippo_epoch_on_ant_logs_the_gradient_counters(tmp_path):
    result = difftraffic_rl.train(
        "ant",
        "gippo",
        seed=1,
        epochs=1,
        logdir=tmp_path,
        progress=False,
        overrides=["train.num_envs=4", "horizon=8"],
    )
    row = result.metrics[-1]
    assert math.isfinite(row["losses/critic"]) and row["physics/nonfinite_grad_worlds"] == 0
    header = (result.run_dir / "progress.csv").read_text().splitlines()[0]
    assert "physics/nonfinite_grad_worlds" in header and "physics/unstable_worlds" in header


@pytest.mark.parametrize("robot", ROBOTS)
@pytest.mark.parametrize("algo", ["lr", "rp", "lrp", "ppo", "gippo", "pe"])
def test_configurations_hold_the_papers_settings(robot, algo):
    config = RunConfig.from_dict(default_config(robot, algo)).resolved()
    h, train = config["hyperparameters"], config["train"]
    is_ant = robot == "ant"
    assert config["task"] == robot and config["algo"] == algo
    assert h["actor_hidden"] == [128, 64, 32] and h["critic_hidden"] == [64, 64]
    assert h["horizon"] == 32 and train["epochs"] == 2000
    assert train["num_envs"] == (64 if is_ant else 256)
    assert h["critic_lr"] == (2e-3 if is_ant else 2e-4) and h["critic_iterations"] == 16
    assert h["critic_num_batches"] == 4 and h["gamma"] == 0.99 and h["gae_lambda"] == 0.95
    expected_lr = {"lr": 1e-4, "rp": 2e-3, "lrp": 1e-4, "ppo": 1e-4, "gippo": 1e-4, "pe": 2e-3}
    assert h["actor_lr"] == expected_lr[algo]
    assert h["lr_schedule"] == ("constant" if algo in ("ppo", "gippo") else "linear")
    if algo in ("ppo", "gippo"):
        assert h["minibatch_size"] == 2048 and h["mini_epochs"] == 5 and h["clip"] == 0.2
    if algo == "gippo":
        assert h["alpha0"] == (0.5 if is_ant else 5e-3)
        assert h["alpha_lr"] == (5e-4 if is_ant else 5e-3)
        assert h["max_oorr"] == (0.5 if is_ant else 0.75)
        assert h["max_alpha"] == 1.0 and h["alpha_factor"] == 1.02
        assert h["det_interval"] == 0.4 and h["alpha_iterations"] == 16
    RunConfig.from_dict(config)


def settle_frictionless_ant(solver: str, limit_ke: float, steps: int) -> dict[str, float]:
    """Drop the unactuated Ant from its start pose on frictionless ground (its feet slide freely,
    so only the joint-limit springs hold the legs; it settles in under 1 s). Returns the torso
    height after ``steps`` and its lowest value over the second half of them (m), the largest
    hip-limit violation (deg) and how far the ankles end past their 30 deg limit (deg)."""
    env = make_task(
        "ant",
        1,
        stochastic_init=False,
        early_termination=False,
        solver=solver,
        contact_mu=0.0,
        limit_ke=limit_ke,
    )
    env.reset()
    ankle_limit = env.sim.model.joint_limit_lower.numpy()[7]  # front-left ankle: 30 deg
    assert ankle_limit == pytest.approx(math.radians(30.0), abs=1e-4)  # degrees read as degrees
    hip_limit = math.radians(40.0)
    heights, hip_violation = [], 0.0
    with torch.no_grad():
        for _ in range(steps):
            env.step(torch.zeros(1, env.action_dim))
            hinges = env.joint_q[0, 7:]
            heights.append(env.joint_q[0, 2].item())
            hip_violation = max(hip_violation, (hinges[0::2].abs() - hip_limit).max().item())
    ankle_violation = ankle_limit - hinges[1::2].abs().min().item()  # all four bend 30..100 deg
    return {
        "height": heights[-1],
        "late_min_height": min(heights[steps // 2 :]),
        "hip": math.degrees(max(hip_violation, 0.0)),
        "ankle": math.degrees(ankle_violation),
    }


@pytest.mark.parametrize("solver", ["semi_implicit", "featherstone"])
def test_unactuated_ant_sinks_onto_its_torso_through_the_benchmarks_soft_ankle_limits(solver):
    # The 182 kg ant loads each ankle with ~190 N m; the benchmark's 1e3 N m/rad limit spring
    # gives that ~11 deg past the 30 deg limit, where the torso (radius 0.25 m) meets the ground,
    # below the termination height on both solvers (dflex has the same limit law, masses and
    # contact law). Without limits the ankles would open ~17 deg past, the torso sink to 0.21 m.
    rest = settle_frictionless_ant(solver, limit_ke=1.0e3, steps=60)
    assert 0.23 < rest["height"] < ANT_TERMINATION_HEIGHT
    assert 7.0 < rest["ankle"] < 14.0
    assert rest["hip"] < 0.5  # symmetric start: the hips carry no load about their axes


def test_ankle_limits_hold_the_unactuated_ant_up_when_stiff_enough():
    # The same drop with 10x stiffer limit springs: the legs stop near 30 deg and the torso
    # stays above the termination height, so the collapse above is the stiffness, not the limits.
    rest = settle_frictionless_ant("semi_implicit", limit_ke=1.0e4, steps=90)
    assert rest["late_min_height"] > ANT_TERMINATION_HEIGHT
    assert rest["ankle"] < 6.0
    assert rest["hip"] < 0.5


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_newton_backward_matches_central_differences_on_a_short_rollout(robot):
    # Directional derivative of a 4-step return along a random unit direction of all actions:
    # autograd through the Newton step against (R(a + eps d) - R(a - eps d)) / 2 eps in float32
    # (measured agreement 0.2-0.3 % at eps = 1e-2 for both robots).
    worlds = 4
    env = make_task(robot, worlds)
    env.reset(seed=4)
    start = env.state_dict()
    generator = torch.Generator().manual_seed(5)
    actions = [
        (torch.rand(worlds, env.action_dim, generator=generator) * 2 - 1).requires_grad_(True)
        for _ in range(4)
    ]
    direction = [torch.randn(worlds, env.action_dim, generator=generator) for _ in actions]
    norm = torch.sqrt(sum((d**2).sum() for d in direction))
    direction = [d / norm for d in direction]

    def window_return(window: list[torch.Tensor]) -> torch.Tensor:
        env.load_state_dict(start)
        return sum(env.step(a)[1].sum() for a in window)

    grads = torch.autograd.grad(window_return(actions), actions)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True)).item()
    eps = 1e-2
    with torch.no_grad():
        plus = window_return([a + eps * d for a, d in zip(actions, direction, strict=True)])
        minus = window_return([a - eps * d for a, d in zip(actions, direction, strict=True)])
    numeric = ((plus - minus) / (2 * eps)).item()
    assert abs(analytic) > 1e-3
    assert numeric == pytest.approx(analytic, rel=0.02)
