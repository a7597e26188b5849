"""Policies saved as files: ``torch.export`` programs mapping observations to actions.

``difftraffic_rl`` writes one into every finished run directory (``policy.pt2``, or on demand with
``difftraffic-rl export RUN_DIR``); loading it needs only torch, so the simulator's tools use
trained policies without importing the learning library.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

POLICY_FILE = "policy.pt2"
"""Name of the exported policy inside a ``difftraffic_rl`` run directory."""


def load_policy(path: str | Path, obs_dim: int | None = None) -> Callable[[Tensor], Tensor]:
    """Load an exported policy ``obs [B, obs_dim] -> action [B, action_dim]`` in ``[-1, 1]``.

    Args:
        path: a ``.pt2`` file or a run directory that holds ``policy.pt2``.
        obs_dim: the observation size of the environment it will drive; checked when given.

    Raises:
        ValueError: no policy file at ``path``, or one made for another observation size.
    """
    file = Path(path)
    if file.is_dir():
        file = file / POLICY_FILE
    if not file.is_file():
        raise ValueError(
            f"policy {str(path)!r}: no exported policy found (expected a .pt2 file or a run "
            f"directory holding {POLICY_FILE}; a finished difftraffic_rl run writes one, and "
            "'difftraffic-rl export RUN_DIR' writes one for an unfinished run)"
        )
    program = torch.export.load(file)
    example = program.example_inputs[0][0]
    if obs_dim is not None and example.shape[-1] != obs_dim:
        raise ValueError(
            f"policy {str(file)!r} takes observations of size {example.shape[-1]}, but the "
            f"environment's observations have size {obs_dim}: was it trained on another variant?"
        )
    module = program.module()

    def policy(obs: Tensor) -> Tensor:
        with torch.no_grad():
            obs = torch.as_tensor(obs)
            action: Tensor = module(obs.to(device=example.device, dtype=example.dtype))
        return action.to(device=obs.device, dtype=obs.dtype)

    return policy
