"""Policies from files: exported torch programs drive pace cars without difftraffic_rl."""

import pytest
import torch

from difftraffic import PaceCarEnv
from difftraffic.policy import POLICY_FILE, load_policy


class BrakeAndSteerLeft(torch.nn.Module):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.stack([obs[:, 0] * 0 - 0.5, obs[:, 0] * 0 + 0.25], dim=1))


def export(module: torch.nn.Module, obs_dim: int, path) -> None:
    program = torch.export.export(
        module, (torch.zeros(2, obs_dim),), dynamic_shapes={"obs": {0: torch.export.Dim("b")}}
    )
    torch.export.save(program, path)


def test_a_run_directory_policy_drives_the_environment(tmp_path):
    env = PaceCarEnv("2lane", num_envs=3, seed=0)
    export(BrakeAndSteerLeft(), env.obs_dim, tmp_path / POLICY_FILE)
    policy = load_policy(tmp_path, env.obs_dim)
    obs, _ = env.reset()
    action = policy(obs)
    expected = torch.tanh(torch.tensor([-0.5, 0.25])).expand(3, 2)
    torch.testing.assert_close(action, expected)
    assert not action.requires_grad


def test_missing_file_and_wrong_observation_size_are_explained(tmp_path):
    with pytest.raises(ValueError, match="no exported policy found"):
        load_policy(tmp_path)
    export(BrakeAndSteerLeft(), 8, tmp_path / "one_lane.pt2")
    with pytest.raises(ValueError, match="size 8, but the environment's observations have size 20"):
        load_policy(tmp_path / "one_lane.pt2", obs_dim=20)
