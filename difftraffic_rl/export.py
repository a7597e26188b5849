"""A trained policy as one self-contained file: ``torch.export`` of the deterministic actor.

The file maps raw observations ``[B, obs_dim]`` to actions ``[B, action_dim]`` in ``[-1, 1]``
(observation normalization and the ``tanh`` squashing included). Loading it needs only torch
(``torch.export.load(path).module()``), so the simulator's tools (``difftraffic render
--policy RUN_DIR``) use trained policies without importing ``difftraffic_rl``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from difftraffic_rl.algorithms.base import Algorithm


class DeterministicPolicy(nn.Module):
    """``obs [B, obs_dim] -> tanh(mean action) [B, action_dim]`` of a trained algorithm."""

    def __init__(self, algorithm: Algorithm) -> None:
        super().__init__()
        self.algorithm = copy.deepcopy(algorithm)
        self.actor = self.algorithm.actor
        # Trained parameters are views into one flat buffer; give each its own storage so the
        # exported file holds plain, complete tensors.
        with torch.no_grad():
            for parameter in self.actor.parameters():
                own = parameter.detach().clone()
                parameter.set_(own.untyped_storage(), 0, own.shape, own.stride())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.algorithm.act(obs, deterministic=True)


def export_policy(algorithm: Algorithm, path: str | Path) -> Path:
    """Write ``algorithm``'s deterministic policy to ``path`` (atomically) and return the path.

    The batch dimension stays dynamic: the file serves any number of worlds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obs_dim = algorithm.obs_rms.mean.shape[0]
    example = torch.zeros(2, obs_dim, device=algorithm.device, dtype=algorithm.dtype)
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.export.export(
            DeterministicPolicy(algorithm).eval(), (example,), dynamic_shapes={"obs": {0: batch}}
        )
    temporary = path.with_name(f"{path.stem}.partial{path.suffix}")
    torch.export.save(program, temporary)
    os.replace(temporary, path)
    return path
