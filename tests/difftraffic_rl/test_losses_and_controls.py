"""Hand-computed checks of the PPO / GI-PPO losses, the alpha controller, the determinant
estimate, the LR+RP weights, the restore-and-back-off guard and the KL-adaptive rate."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch

from difftraffic_rl.algorithms import GIPPO, GIPPOConfig, PPOConfig, RPConfig
from difftraffic_rl.algorithms.base import optimize_with_backoff, scheduled_lr
from difftraffic_rl.algorithms.gippo import (
    estimate_determinant,
    mixture_log_denominator,
    next_alpha,
)
from difftraffic_rl.algorithms.lrp import gradient_variance, interpolation_weight
from difftraffic_rl.algorithms.ppo import adaptive_lr, clipped_surrogate_loss, gaussian_kl
from difftraffic_rl.config import RunConfig, apply_overrides, default_config
from difftraffic_rl.rollout import Rollout
from difftraffic_rl.training import Trainer


def test_ppo_clipped_surrogate_on_a_hand_computed_case() -> None:
    ratios = torch.tensor([1.5, 0.5, 1.1], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)
    loss = clipped_surrogate_loss(ratios.log(), torch.zeros(3, dtype=torch.float64), adv, 0.2)
    # min(1.5, 1.2) + min(0.5, 0.8) + min(-2.2, -2.2) = -0.5, mean -1/6, loss +1/6
    assert loss.item() == pytest.approx(1 / 6)


def test_pi_h_denominator_is_the_mixture_and_falls_back_per_minibatch() -> None:
    log_old = torch.tensor([math.log(0.2), math.log(0.01)], dtype=torch.float64)
    log_alpha = torch.tensor([math.log(0.6), math.log(0.03)], dtype=torch.float64)
    log_h = mixture_log_denominator(log_old, log_alpha, max_log_ratio=4.0)
    assert log_h.tolist() == pytest.approx([math.log(0.4), math.log(0.02)])
    # GI-PPO loss (Eq. 16) with pi_theta = 0.5 and A = 1: ratio 0.5/0.4 = 1.25 clips to 1.2
    loss = clipped_surrogate_loss(
        torch.tensor([math.log(0.5)], dtype=torch.float64),
        log_h[:1],
        torch.tensor([1.0], dtype=torch.float64),
        0.2,
    )
    assert loss.item() == pytest.approx(-1.2)
    # One sample with |log pi_alpha - log pi_old| = log 200 > 4 makes pi_alpha the denominator
    # of the whole minibatch, as in the authors' code.
    log_alpha_far = torch.tensor([math.log(0.6), math.log(2.0)], dtype=torch.float64)
    assert torch.equal(mixture_log_denominator(log_old, log_alpha_far, 4.0), log_alpha_far)


CFG = GIPPOConfig(alpha_factor=2.0, det_interval=0.4, max_oorr=0.5, max_alpha=1.0)
NEUTRAL = {
    "fit_accepted": True,
    "det_min": 1.0,
    "det_max": 1.0,
    "gain": 1.0,
    "gain_normalized": 1.0,
    "oorr": 0.0,
}


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
def test_the_final_alpha_fit_check_judges_the_parameters_it_ends_with(alpha_lr: float) -> None:
    """With ``alpha_fit_check="final"`` the reported last loss is the loss of the kept
    parameters (after the last step), and a fit whose last step overshoots (a huge step size) is
    rejected and leaves the actor as it was."""
    cfg = GIPPOConfig(
        alpha_lr=alpha_lr,
        alpha_iterations=4,
        max_optim_iter=1,
        actor_hidden=(8,),
        alpha_fit_check="final",
    )
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
        assert all(torch.equal(a, b) for a, b in zip(before, algo.actor.parameters(), strict=True))


@pytest.mark.parametrize("discard", [False, True])
def test_a_failed_alpha_policy_is_discarded_only_when_asked(discard: bool) -> None:
    """With ``max_oorr = 0`` every alpha-policy that moves a ratio out of ``1 +- clip`` fails the
    out-of-range test; discarding it hands the PPO phase ``pi_old`` (its parameters and its
    log-densities as the Eq. 16 denominator)."""
    overrides = [
        "train.tensorboard=false",
        "train.num_envs=16",
        "hyperparameters.alpha0=1.0",
        "hyperparameters.alpha_lr=0.01",
        "hyperparameters.max_oorr=0.0",
        f"hyperparameters.discard_failed_alpha_policy={discard}",
    ]
    trainer = Trainer(
        RunConfig.from_dict(apply_overrides(default_config("dejong", "gippo"), overrides))
    )
    algo = trainer.algorithm
    seen: dict[str, torch.Tensor] = {}
    fit = algo.fit_alpha_policy

    def recording_fit(*args: torch.Tensor) -> tuple[bool, float, float]:
        seen["before_fit"] = algo.actor_params.flat.detach().clone()
        return fit(*args)

    def recording_ppo(
        rollout: Rollout,
        denominator: Callable[[torch.Tensor], torch.Tensor],
        advantages: torch.Tensor,
    ) -> dict[str, float]:
        seen["at_ppo"] = algo.actor_params.flat.detach().clone()
        seen["denominator"] = denominator(torch.arange(rollout.num_samples))
        seen["old"] = rollout.log_probs.reshape(-1)
        return {}

    algo.fit_alpha_policy = recording_fit  # type: ignore[method-assign]
    algo.ppo_update = recording_ppo  # type: ignore[method-assign]
    row = trainer.run_epoch()
    assert row["gippo/fit_accepted"] == 1 and row["gippo/oorr"] > 0
    assert row["gippo/alpha_policy_kept"] == float(not discard)
    assert torch.equal(seen["at_ppo"], seen["before_fit"]) == discard
    assert torch.equal(seen["denominator"], seen["old"]) == discard


def test_backoff_restores_parameters_but_keeps_the_optimizer_moments() -> None:
    """As in the authors' code, a rejected try's parameters are undone but Adam keeps the moments
    (and step count) it accumulated, so the next try does not replay the same first steps."""
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])

    def step() -> None:
        opt.zero_grad()
        layer(x).square().sum().backward()
        opt.step()

    step()
    before = [p.detach().clone() for p in layer.parameters()]
    saved = copy.deepcopy(opt.state_dict()["state"])

    def failing() -> tuple[float, float]:
        step()
        return 0.0, 1.0

    assert not optimize_with_backoff(layer, opt, failing, lr=0.1, max_tries=3, backoff=2.0).accepted
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    for index, state in opt.state_dict()["state"].items():
        assert state["step"].item() == saved[index]["step"].item() + 3
        assert not torch.equal(state["exp_avg_sq"], saved[index]["exp_avg_sq"])


def test_lrp_weights_from_known_variances() -> None:
    grads = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0]])
    assert gradient_variance(grads).item() == pytest.approx(4.0 + 4.0 / 3.0)
    assert gradient_variance(grads).item() == pytest.approx(torch.cov(grads.T).trace().item())
    assert interpolation_weight(torch.tensor(3.0), torch.tensor(1.0)).item() == pytest.approx(0.25)
    assert interpolation_weight(torch.tensor(0.0), torch.tensor(2.0)).item() == pytest.approx(1.0)


def test_backoff_restores_parameters_and_shrinks_lr() -> None:
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
    # The authors' PPO guard: every retry at lr / backoff, not compounding.
    seen.clear()
    optimize_with_backoff(layer, opt, failing, lr=1.0, max_tries=3, backoff=2.0, compounding=False)
    assert seen == [1.0, 0.5, 0.5]
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


ADAPTIVE = PPOConfig(
    lr_schedule="adaptive",
    lr_carryover="none",
    kl_target=0.01,
    adaptive_lr_factor=2.0,
    adaptive_min_lr=1e-4,
    adaptive_max_lr=1e-2,
)


@pytest.mark.parametrize(
    ("lr", "kl", "expected"),
    [
        (1e-3, 0.0201, 5e-4),  # above 2 * target: divided
        (1e-3, 0.0049, 2e-3),  # below target / 2: multiplied
        (1e-3, 0.02, 1e-3),  # the band's edges keep the rate
        (1e-3, 0.005, 1e-3),
        (1e-3, 0.01, 1e-3),
        (1.5e-4, 1.0, 1e-4),  # clamped to the bounds
        (8e-3, 0.0, 1e-2),
        (1e-4, 1.0, 1e-4),
    ],
)
def test_adaptive_rate_follows_the_kl_band(lr: float, kl: float, expected: float) -> None:
    assert adaptive_lr(lr, kl, ADAPTIVE) == pytest.approx(expected)


def test_gaussian_kl_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    mean, ref_mean = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    std, ref_std = torch.rand(5, 3, generator=gen) + 0.1, torch.rand(5, 3, generator=gen) + 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std), torch.distributions.Normal(ref_mean, ref_std)
    ).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, std, ref_mean, ref_std), expected)
    assert torch.all(gaussian_kl(mean, std, mean, std) == 0)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("clip", 1.5, "clip=1.5"),
        ("gamma", 0.0, "gamma=0.0"),
        ("mini_epochs", 0, "mini_epochs=0"),
        ("lr_schedule", "cosine", "lr_schedule='cosine'"),
        ("kl_target", 0.0, "kl_target=0.0"),
        ("kl_target", -0.008, "kl_target=-0.008"),
        ("kl_target", math.inf, "kl_target=inf"),
        ("adaptive_lr_factor", 1.0, "adaptive_lr_factor=1.0"),
        ("adaptive_max_lr", 1e-7, "adaptive_max_lr=1e-07"),
    ],
)
def test_invalid_hyperparameters_name_field_value_and_range(field, value, fragment) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        PPOConfig(**{field: value})
    with pytest.raises(ValueError, match="unknown PPOConfig keys"):
        PPOConfig.from_dict({"not_a_field": 1})


def test_adaptive_schedule_is_ppos_and_owns_the_rate_across_epochs() -> None:
    with pytest.raises(ValueError, match=r"kl_target=nan is invalid; valid range: finite and > 0"):
        PPOConfig(kl_target=math.nan)
    with pytest.raises(ValueError, match="lr_carryover='on_failure'.*'none' with lr_schedule"):
        GIPPOConfig(lr_schedule="adaptive")
    with pytest.raises(ValueError, match="lr_schedule='adaptive'.*'linear', 'constant'"):
        RPConfig(lr_schedule="adaptive")
    with pytest.raises(ValueError, match="critic_lr_schedule='adaptive'"):
        PPOConfig(critic_lr_schedule="adaptive")


@pytest.mark.parametrize("alpha_lr", [1e-3, 30.0])
def test_the_authors_alpha_fit_check_judges_the_loss_before_the_last_step(alpha_lr: float) -> None:
    """``alpha_fit_check="before_last_step"`` with k steps judges exactly what ``"final"`` with
    k - 1 steps judges (same first and last loss, same verdict), and when it accepts it keeps
    the parameters after the k-th, unchecked, step."""

    def fit(check: str, iterations: int) -> tuple[tuple[bool, float, float], list[torch.Tensor]]:
        cfg = GIPPOConfig(
            alpha_lr=alpha_lr,
            alpha_iterations=iterations,
            max_optim_iter=1,
            actor_hidden=(8,),
            alpha_fit_check=check,
        )
        algo = GIPPO(cfg, obs_dim=1, action_dim=2, seed=0, dtype=torch.float64)
        obs = torch.zeros(16, 1, dtype=torch.float64)
        eps = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with torch.no_grad():
            actions, _, _ = algo.actor.sample(obs, eps)
        result = algo.fit_alpha_policy(obs, eps, actions + 0.05)
        return result, [p.detach().clone() for p in algo.actor.parameters()]

    (authors, authors_params), (final, final_params) = fit("before_last_step", 4), fit("final", 3)
    assert authors == final and authors[0] == (alpha_lr < 1)
    moved = any(not torch.equal(a, b) for a, b in zip(authors_params, final_params, strict=True))
    assert moved == authors[0]  # accepted: one more step taken; rejected: both restored


def test_an_unknown_alpha_fit_check_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="alpha_fit_check"):
        GIPPOConfig(alpha_fit_check="last").validate()
