"""The pace-car traffic tasks: gradients into the policy, exact resume, configurations, learning,
exported policies, and the example script."""

import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

import difftraffic_rl
from difftraffic import IDMParams, KraussDriver, KraussParams
from difftraffic.cli import main as difftraffic_main
from difftraffic_rl.cli import main as difftraffic_rl_main
from difftraffic_rl.config import RunConfig, default_config, load_run_config
from difftraffic_rl.evaluation import episode_returns
from difftraffic_rl.networks import Actor
from difftraffic_rl.tasks import make_task
from difftraffic_rl.training import load_trainer

REPO = Path(__file__).resolve().parents[2]


def test_gradients_reach_the_policy_through_the_dynamics_while_the_pace_car_changes_lanes():
    env = make_task("pacecar-2lane", 8, dtype=torch.float64)
    obs = env.reset(seed=3)
    actor = Actor(env.obs_dim, env.action_dim, [16], torch.Generator().manual_seed(0)).double()
    start_lane = env.task.road.nearest_lane(env.env.state.y[:, 0])
    toward_other_lane = torch.where(start_lane == 0, 1.0, -1.0).double()
    total = torch.zeros(8, dtype=torch.float64)
    for t in range(48):
        mean, _ = actor(obs / 50.0)
        # The policy sets the throttle; a fixed steering schedule moves the pace car into the
        # other lane (turn, counter-steer, hold), so the window spans a change of leaders.
        steering = toward_other_lane * (1.0 if t < 32 else (-0.5 if t < 40 else 0.0))
        action = torch.stack([0.9 + 0.1 * torch.tanh(mean[:, 0]), steering], dim=1)
        obs, reward, terminated, _, _ = env.step(action)
        assert not terminated.any()
        total = total + reward
    end_lane = env.task.road.nearest_lane(env.env.state.y[:, 0])
    assert (end_lane != start_lane).all(), "the pace car did not change lanes"
    total.sum().backward()
    grads = torch.cat([p.grad.flatten() for p in actor.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all()
    assert grads.abs().sum() > 0


def test_state_dict_continues_the_very_same_episodes():
    env = make_task("pacecar-4lane", 4, dtype=torch.float64)
    env.reset(seed=0)
    generator = torch.Generator().manual_seed(1)
    actions = torch.rand(60, 4, 2, generator=generator, dtype=torch.float64) * 2 - 1
    for t in range(20):
        env.step(actions[t])
    saved = env.state_dict()
    first = [env.step(actions[t])[0] for t in range(20, 60)]
    other = make_task("pacecar-4lane", 4, dtype=torch.float64)
    other.load_state_dict(saved)
    second = [other.step(actions[t])[0] for t in range(20, 60)]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_state_dict_continues_dawdling_krauss_drivers_exactly():
    """Krauss humans dawdle from the env's generator; the checkpoint names the model and holds
    the generator, so a restored env draws the very same dawdling."""
    driver = KraussDriver(T=0.4, a=35.0, b=25.0, s0=1.5, sigma=0.5, b_emergency=50.0)
    env = make_task("pacecar-2lane", 4, dtype=torch.float64, driver=driver)
    env.reset(seed=0)
    actions = torch.rand(40, 4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in range(10):
        env.step(actions[t] * 2 - 1)
    saved = env.state_dict()
    assert saved["drivers"]["model"] == "krauss" and env.env.drivers.needs_generator
    first = [env.step(actions[t] * 2 - 1)[0] for t in range(10, 40)]
    other = make_task("pacecar-2lane", 4, dtype=torch.float64, driver=driver)
    other.load_state_dict(saved)
    assert isinstance(other.env.drivers, KraussParams)
    second = [other.step(actions[t] * 2 - 1)[0] for t in range(10, 40)]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_the_ring_task_resumes_exactly_and_its_rewards_reach_the_policy():
    """The ring (one automated car among 21 drivers) through the protocol: a checkpoint
    continues the very same episodes, and the return's gradient reaches the actor."""
    env = make_task("ring", 4, dtype=torch.float64, max_episode_steps=200, warmup_steps=0)
    assert (env.obs_dim, env.action_dim, env.max_episode_steps) == (3, 1, 200)
    obs = env.reset(seed=0)
    actor = Actor(3, 1, [16], torch.Generator().manual_seed(0)).double()
    total = torch.zeros(4, dtype=torch.float64)
    for _ in range(30):
        mean, _ = actor(obs)
        obs, reward, terminated, _, _ = env.step(0.3 * torch.tanh(mean))
        assert not terminated.any()
        total = total + reward
    total.sum().backward()
    grads = torch.cat([p.grad.flatten() for p in actor.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    env.detach()
    saved = env.state_dict()
    actions = torch.rand(50, 4, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    first = [env.step(actions[t] - 0.5)[0] for t in range(50)]
    other = make_task("ring", 4, dtype=torch.float64, max_episode_steps=200, warmup_steps=0)
    other.load_state_dict(saved)
    second = [other.step(actions[t] - 0.5)[0] for t in range(50)]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_checkpoints_written_before_the_model_interface_still_load():
    """A checkpoint of IDM drivers stored under the old ``"idm"`` key restores them."""
    env = make_task("pacecar-2lane", 2, dtype=torch.float64)
    env.reset(seed=0)
    saved = env.state_dict()
    old = {k: v for k, v in saved.items() if k != "drivers"}
    old["idm"] = saved["drivers"]["params"]
    other = make_task("pacecar-2lane", 2, dtype=torch.float64)
    other.load_state_dict(old)
    assert isinstance(other.env.drivers, IDMParams)
    assert torch.equal(other.env.drivers.T, env.env.drivers.T)


@pytest.mark.parametrize("variant", ["1lane", "2lane", "3lane", "4lane", "10lane"])
@pytest.mark.parametrize("algo", ["lr", "rp", "lrp", "ppo", "gippo"])
def test_traffic_configurations_hold_the_papers_settings(variant, algo):
    config = RunConfig.from_dict(default_config(f"pacecar-{variant}", algo)).resolved()
    h, train = config["hyperparameters"], config["train"]
    assert h["actor_hidden"] == [512, 64, 64] and h["critic_hidden"] == [64, 64]
    assert h["horizon"] == 32 and train["num_envs"] == 64 and train["epochs"] == 500
    assert h["critic_lr"] == 1e-3 and h["critic_iterations"] == 16
    expected_lr = {"lr": 3e-4, "rp": 1e-3, "lrp": 3e-4, "ppo": 3e-4, "gippo": 3e-4}[algo]
    assert h["actor_lr"] == expected_lr
    if algo in ("ppo", "gippo"):
        assert h["minibatch_size"] == 2048 and h["mini_epochs"] == 5 and h["clip"] == 0.2
    if algo == "gippo":
        assert h["alpha0"] == 0.1 and h["alpha_lr"] == 1e-5 and h["max_alpha"] == 1.0
        assert h["det_interval"] == 0.4 and h["max_oorr"] == 0.5 and h["alpha_factor"] == 1.1


def test_lane_membership_reaches_the_simulator_from_the_command_line_and_the_checkpoint(tmp_path):
    assert make_task("pacecar-2lane", 1).task.road.lane_membership == "body"
    settings = ["task_kwargs.lane_membership=center", "train.tensorboard=false", "train.num_envs=4"]
    difftraffic_rl_main(
        ["train", "--task", "pacecar-2lane", "--algo", "lr", "--epochs", "1", "--no-progress",
         "--logdir", str(tmp_path), *(f"--set={item}" for item in settings)]
    )  # fmt: skip
    (run_dir,) = tmp_path.iterdir()
    assert load_run_config(run_dir / "config.yaml").task_kwargs == {"lane_membership": "center"}
    assert load_trainer(run_dir).env.task.road.lane_membership == "center"
    with pytest.raises(ValueError, match="PaceCarConfig.lane_membership .* got 'lateral'"):
        make_task("pacecar-2lane", 1, lane_membership="lateral")


@pytest.mark.slow
def test_short_training_improves_the_return_on_one_lane(tmp_path):
    untrained = difftraffic_rl.train(
        "pacecar-1lane", "ppo", seed=2, epochs=1, logdir=tmp_path, progress=False
    )
    trained = difftraffic_rl.train(
        "pacecar-1lane", "ppo", seed=2, epochs=60, logdir=tmp_path, progress=False
    )
    env = make_task("pacecar-1lane", 16)

    def deterministic(algorithm):
        return lambda obs: algorithm.act(obs, deterministic=True)

    before = episode_returns(env, deterministic(untrained.algorithm)).mean()
    after = episode_returns(env, deterministic(trained.algorithm)).mean()
    assert after > before + 200.0


def test_a_trained_run_renders_with_the_difftraffic_command(tmp_path):
    result = difftraffic_rl.train(
        "pacecar-2lane",
        "ppo",
        seed=1,
        epochs=2,
        logdir=tmp_path,
        progress=False,
        overrides=["train.tensorboard=false"],
    )
    policy_file = result.run_dir / "policy.pt2"
    assert policy_file.is_file()
    exported = torch.export.load(policy_file).module()
    obs = torch.randn(5, 20) * 10
    expected = result.algorithm.act(obs, deterministic=True)
    torch.testing.assert_close(exported(obs), expected)
    out = tmp_path / "trained.mp4"
    difftraffic_main(
        [
            "render",
            "2lane",
            "--steps",
            "10",
            "--out",
            str(out),
            "--quiet",
            "--policy",
            str(result.run_dir),
            "--width",
            "160",
            "--height",
            "96",
        ]
    )
    frames = iio.imread(out)
    assert frames.shape == (11, 96, 160, 3)


DEMO_MIN_RETURN = 850.0
"""The demo's promise: its pace car holds the humans near 10 m/s. Measured with the demo's own
settings (seed 3, 250 epochs, a critic on normalized values, one torch thread, this machine
class, commits ccd3f82, 8f0eb56 and a4d1f26):
924.9 ± 8.9 over 32 worlds, against an idle pace car's 33.0 and a random one's 33.7. The failures
lie far below: the 71.1 of issue 11 (a pace car stuck sideways in front of stopped humans) and
seed 1's 472 under the same settings (a pace car that loses the humans in half of its episodes);
850 is the issue's bar."""


def test_the_demo_trains_a_pace_car_that_holds_the_humans(tmp_path):
    """``make demo`` exactly as a newcomer runs it (only the video is shortened): training is
    deterministic, so the evaluation return of its seed is a fixed number."""
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "pace_car_gippo.py"),
            "--video-steps",
            "30",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    returns = {
        name: float(value)
        for name, value in re.findall(
            r"^ +(GI-PPO|idle|random) +(-?\d+\.\d) ±", run.stdout, re.MULTILINE
        )
    }
    assert set(returns) == {"GI-PPO", "idle", "random"}, run.stdout
    assert returns["GI-PPO"] >= DEMO_MIN_RETURN, run.stdout
    assert returns["idle"] < 100 and returns["random"] < 100
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert iio.imread(tmp_path / "pace_car.mp4").shape[0] == 31
    assert iio.imread(tmp_path / "pace_car.png").ndim == 3
