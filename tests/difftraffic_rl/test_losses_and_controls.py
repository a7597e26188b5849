"""Hand-computed checks of the PPO / GI-PPO losses, the alpha controller, the determinant
estimate, the LR+RP weights and the restore-and-back-off guard."""

from __future__ import annotations

import math

import pytest
import torch

from difftraffic_rl.algorithms import GIPPO, GIPPOConfig, PPOConfig
from difftraffic_rl.algorithms.base import optimize_with_backoff, scheduled_lr
from difftraffic_rl.algorithms.gippo import (
    estimate_determinant,
    mixture_log_denominator,
    next_alpha,
)
from difftraffic_rl.algorithms.lrp import gradient_variance, interpolation_weight
from difftraffic_rl.algorithms.ppo import clipped_surrogate_loss


def test_ppo_clipped_surrogate_on_a_hand_computed_case() -> None:
    ratios = torch.tensor([1.5, 0.5, 1.1], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)
    loss = clipped_surrogate_loss(ratios.log(), torch.zeros(3, dtype=torch.float64), adv, 0.2)
    # min(1.5, 1.2) + min(0.5, 0.8) + min(-2.2, -2.2) = -0.5, mean -1/6, loss +1/6
    assert loss.item() == pytest.approx(1 / 6)


def test_pi_h_denominator_is_the_mixture_and_falls_back_per_sample() -> None:
    log_old = torch.tensor([math.log(0.2), math.log(0.01)], dtype=torch.float64)
    log_alpha = torch.tensor([math.log(0.6), math.log(2.0)], dtype=torch.float64)
    log_h = mixture_log_denominator(log_old, log_alpha, max_log_ratio=4.0)
    assert log_h[0].item() == pytest.approx(math.log(0.4))
    assert log_h[1].item() == pytest.approx(math.log(2.0))  # |log 200| > 4: pi_alpha itself
    # GI-PPO loss (Eq. 16) with pi_theta = 0.5 and A = 1: ratio 0.5/0.4 = 1.25 clips to 1.2
    loss = clipped_surrogate_loss(torch.tensor([math.log(0.5)], dtype=torch.float64),
                                  log_h[:1], torch.tensor([1.0], dtype=torch.float64), 0.2)
    assert loss.item() == pytest.approx(-1.2)


CFG = GIPPOConfig(alpha_factor=2.0, det_interval=0.4, max_oorr=0.5, max_alpha=1.0)
NEUTRAL = {"fit_accepted": True, "det_min": 1.0, "det_max": 1.0, "gain": 1.0,
           "gain_normalized": 1.0, "oorr": 0.0}


@pytest.mark.parametrize(
    ("change", "alpha", "reason"),
    [
        ({}, 0.2, "increase"),
        ({"fit_accepted": False}, 0.1, "fit_rejected"),
        ({"det_min": 0.59}, 0.05, "determinant"),
        ({"det_max": 1.41}, 0.05, "determinant"),
        ({"det_min": 0.61, "det_max": 1.39}, 0.2, "increase"),
        ({"oorr": 0.51}, 0.05, "out_of_range"),
        ({"oorr": 0.51, "det_min": 0.1}, 0.05, "out_of_range"),
        ({"oorr": 0.51, "fit_accepted": False}, 0.05, "out_of_range"),
        ({"gain": -0.1, "gain_normalized": -1.5}, 0.05, "negative_gain"),
        ({"gain": -0.1, "gain_normalized": -0.5}, 0.2, "increase"),
        ({"gain": 0.1, "gain_normalized": -3.0}, 0.2, "increase"),
    ],
)
def test_alpha_controller_rules(change: dict, alpha: float, reason: str) -> None:
    assert next_alpha(0.1, CFG, **{**NEUTRAL, **change}) == (pytest.approx(alpha), reason)


def test_alpha_is_clipped_to_its_range() -> None:
    assert next_alpha(0.8, CFG, **NEUTRAL)[0] == 1.0
    cfg = GIPPOConfig(alpha_factor=2.0, min_alpha=0.03)
    assert next_alpha(0.04, cfg, **{**NEUTRAL, "oorr": 0.9})[0] == 0.03


def test_determinant_estimate_is_the_std_ratio_product() -> None:
    old = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    new = torch.tensor([[2.0, 1.0], [1.0, 0.25]])
    torch.testing.assert_close(estimate_determinant(old, new), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(estimate_determinant(old, 3 * old), torch.tensor([9.0, 9.0]))


def test_alpha_fit_determinant_estimates_det_of_i_plus_alpha_hessian() -> None:
    """Quadratic advantage A(a) = 0.5 a^T H a + b^T a with known diagonal H: the fitted
    alpha-policy's std ratio must equal det(I + alpha H) (Lemma 4.3)."""
    h = torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64)
    b = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    alpha = 0.1
    cfg = GIPPOConfig(alpha_lr=3e-3, alpha_iterations=3000, actor_hidden=(16,))
    algo = GIPPO(cfg, obs_dim=1, action_dim=3, seed=0, dtype=torch.float64)
    obs = torch.zeros(64, 1, dtype=torch.float64)
    eps = torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        actions, _, std_old = algo.actor.sample(obs, eps)
    targets = actions + alpha * (h * actions + b)
    accepted, first, last = algo.fit_alpha_policy(obs, eps, targets)
    assert accepted and last < 1e-2 * first
    with torch.no_grad():
        _, std_new = algo.actor(obs)
    det = estimate_determinant(std_old, std_new)
    expected = torch.prod(1 + alpha * h).item()
    assert det.min().item() == pytest.approx(expected, rel=1e-2)
    assert det.max().item() == pytest.approx(expected, rel=1e-2)


@pytest.mark.parametrize("alpha_lr", [1e-3, 30.0])
def test_alpha_fit_judges_the_parameters_it_ends_with(alpha_lr: float) -> None:
    """The reported last loss is the loss of the kept parameters (after the last step), and a
    fit whose last step overshoots (a huge step size) is rejected and leaves the actor as it
    was."""
    cfg = GIPPOConfig(alpha_lr=alpha_lr, alpha_iterations=4, max_optim_iter=1,
                      actor_hidden=(8,))
    algo = GIPPO(cfg, obs_dim=1, action_dim=2, seed=0, dtype=torch.float64)
    obs = torch.zeros(16, 1, dtype=torch.float64)
    eps = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = [p.detach().clone() for p in algo.actor.parameters()]
    with torch.no_grad():
        actions, _, _ = algo.actor.sample(obs, eps)
    targets = actions + 0.05
    accepted, first, last = algo.fit_alpha_policy(obs, eps, targets)
    with torch.no_grad():
        kept, _, _ = algo.actor.sample(obs, eps)
    kept_loss = (kept - targets).square().sum(dim=-1).mean().item()
    if alpha_lr < 1:
        assert accepted and last == pytest.approx(kept_loss, rel=1e-12) and last < first
    else:
        assert not accepted and last > first
        assert kept_loss == pytest.approx(first, rel=1e-12)
        assert all(torch.equal(a, b) for a, b in zip(before, algo.actor.parameters(),
                                                       strict=True))


def test_lrp_weights_from_known_variances() -> None:
    grads = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0]])
    assert gradient_variance(grads).item() == pytest.approx(4.0 + 4.0 / 3.0)
    assert gradient_variance(grads).item() == pytest.approx(torch.cov(grads.T).trace().item())
    assert interpolation_weight(torch.tensor(3.0), torch.tensor(1.0)).item() == pytest.approx(0.25)
    assert interpolation_weight(torch.tensor(0.0), torch.tensor(2.0)).item() == pytest.approx(1.0)


def test_backoff_restores_parameters_and_optimizer_state_and_shrinks_lr() -> None:
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(layer.parameters(), lr=1.0)
    before = [p.detach().clone() for p in layer.parameters()]
    seen: list[float] = []

    def failing() -> tuple[float, float]:
        seen.append(opt.param_groups[0]["lr"])
        layer.weight.data.add_(1.0)
        return 0.0, 1.0

    result = optimize_with_backoff(layer, opt, failing, lr=1.0, max_tries=3, backoff=2.0)
    assert not result.accepted and result.tries == 3
    assert seen == [1.0, 0.5, 0.25]
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))

    def succeeding_second() -> tuple[float, float]:
        layer.weight.data.add_(1.0)
        return (0.0, 1.0) if len(seen) < 4 else (1.0, 0.5)

    seen.append(0.0)
    result = optimize_with_backoff(layer, opt, succeeding_second, lr=1.0, max_tries=3, backoff=2.0)
    assert result.accepted and result.tries == 1
    assert torch.equal(layer.weight, before[0] + 1.0)


def test_linear_schedule_ends_at_min_lr_and_constant_stays() -> None:
    assert scheduled_lr(1e-3, 1e-5, "linear", 1, 100) == pytest.approx(1e-3 - 9.9e-6)
    assert scheduled_lr(1e-3, 1e-5, "linear", 100, 100) == pytest.approx(1e-5)
    assert scheduled_lr(1e-3, 1e-5, "constant", 50, 100) == 1e-3


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [("clip", 1.5, "clip=1.5"), ("gamma", 0.0, "gamma=0.0"), ("mini_epochs", 0, "mini_epochs=0"),
     ("lr_schedule", "cosine", "lr_schedule='cosine'")],
)
def test_invalid_hyperparameters_name_field_value_and_range(field, value, fragment) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        PPOConfig(**{field: value})
    with pytest.raises(ValueError, match="unknown PPOConfig keys"):
        PPOConfig.from_dict({"not_a_field": 1})
