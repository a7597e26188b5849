"""One step and rollouts: integration, AV bicycle model, gradients, safety, batching, precision."""

from __future__ import annotations

import math

import pytest
import torch

from difftraffic.dynamics import rollout, step
from difftraffic.idm import IDMParams, equilibrium_gap
from difftraffic.neighbors import compute_neighbors, leader_gap_and_speed
from difftraffic.road import Road

F64 = torch.float64
PARAM_NAMES = ("v0", "T", "a", "b", "delta", "s0")


# --- an independent reference: plain Python floats, one vehicle at a time ---------------------


def reference_single_lane(x, v, params, length, dt, steps, ring_length=None):
    """IDM platoon on one lane, index 0 in front, integrated exactly as the issue specifies:
    synchronous update from time t, ``v' = max(0, v + acc dt)``, ``x' = x + v' dt``."""
    x, v = list(x), list(v)
    history = [list(x)]
    n = len(x)
    for _ in range(steps):
        acc = []
        for i in range(n):
            p = params[i]
            free = 1.0 - (v[i] / p["v0"]) ** p["delta"]
            lead = i - 1 if i > 0 else (n - 1 if ring_length is not None and n > 1 else None)
            if lead is None:
                acc.append(p["a"] * free)
                continue
            distance = x[lead] - x[i]
            if ring_length is not None:
                distance %= ring_length
            gap = distance - length
            approach = v[i] * p["T"] + v[i] * (v[i] - v[lead]) / (2.0 * math.sqrt(p["a"] * p["b"]))
            s_star = p["s0"] + max(0.0, approach)
            acc.append(p["a"] * (free - (s_star / gap) ** 2))
        v = [max(0.0, v[i] + acc[i] * dt) for i in range(n)]
        x = [x[i] + v[i] * dt for i in range(n)]
        if ring_length is not None:
            x = [xi % ring_length for xi in x]
        history.append(list(x))
    return history


DRIVERS = [
    {"v0": 25.0, "T": 1.0, "a": 2.6, "b": 4.5, "delta": 4.0, "s0": 2.5},
    {"v0": 30.0, "T": 1.5, "a": 1.2, "b": 2.0, "delta": 4.0, "s0": 2.0},
    {"v0": 20.0, "T": 0.8, "a": 3.0, "b": 3.0, "delta": 2.0, "s0": 1.0},
    {"v0": 28.0, "T": 1.2, "a": 1.8, "b": 2.5, "delta": 6.0, "s0": 3.0},
    {"v0": 22.0, "T": 2.0, "a": 0.9, "b": 1.5, "delta": 1.0, "s0": 2.0},
]


def per_driver(drivers) -> IDMParams:
    return IDMParams(**{n: torch.tensor([[d[n] for d in drivers]], dtype=F64) for n in PARAM_NAMES})


@pytest.mark.parametrize("ring_length", [None, 160.0])
def test_platoon_matches_plain_python_idm(make_state, ring_length) -> None:
    x0 = [100.0, 80.0, 64.0, 40.0, 30.0]
    v0 = [5.0, 12.0, 9.0, 15.0, 0.0]
    road = Road(1, 4.0, 20.0, ring_length)
    state = make_state(x0, [2.0] * 5, v0)
    states, collided = rollout(state, road, per_driver(DRIVERS), 0.1, 400)
    expected = torch.tensor(
        reference_single_lane(x0, v0, DRIVERS, 5.0, 0.1, 400, ring_length), dtype=F64
    )
    got = torch.stack([s.x[0] for s in states])
    assert (got - expected).abs().max().item() < 1e-9
    assert not collided.any()
    assert got[-1, -1] != x0[-1]  # the rear car (starting at rest) moved


# --- one step ------------------------------------------------------------------------------------


def test_av_follows_kinematic_bicycle_semi_implicitly(make_state) -> None:
    state = make_state([10.0], [2.0], [5.0], heading=[0.1], is_av=[True])
    acc, steer, dt = 2.0, 0.2, 0.1
    result = step(
        state,
        Road.straight(),
        IDMParams(v0=20.0),
        dt,
        torch.tensor([[acc]], dtype=F64),
        torch.tensor([[steer]], dtype=F64),
    )
    v_next = 5.0 + acc * dt
    heading_next = 0.1 + v_next * math.tan(steer) / (0.6 * 5.0) * dt
    new = result.state
    assert new.v.item() == pytest.approx(v_next, abs=1e-12)
    assert new.heading.item() == pytest.approx(heading_next, abs=1e-12)
    assert new.x.item() == pytest.approx(10.0 + v_next * math.cos(heading_next) * dt, abs=1e-12)
    assert new.y.item() == pytest.approx(2.0 + v_next * math.sin(heading_next) * dt, abs=1e-12)
    assert result.acceleration.item() == acc


def test_highway_env_kinematics_follow_highway_envs_own_vehicle(make_state) -> None:
    """``av_kinematics="highway_env"`` drives an AV as highway-env's ``Vehicle.step`` does (the
    GI-PPO authors' pace car), step for step over a weaving, speeding-up, braking trajectory;
    the human behind it still follows the IDM."""
    from highway_env.vehicle.kinematics import Vehicle

    dt, steps = 0.03, 200
    reference = Vehicle(None, [60.0, 6.0], heading=0.05, speed=3.0)
    state = make_state(
        [60.0, 30.0], [6.0, 6.0], [3.0, 8.0], heading=[0.05, 0.0], is_av=[True, False]
    )
    road, drivers = Road.straight(num_lanes=2), IDMParams(v0=20.0)
    for t in range(steps):
        acc, steer = 4.0 * math.cos(t / 25.0), 0.3 * math.sin(t / 15.0)
        reference.act({"acceleration": acc, "steering": steer})
        reference.step(dt)
        controls = (torch.tensor([[acc, 0.0]], dtype=F64), torch.tensor([[steer, 0.0]], dtype=F64))
        state = step(state, road, drivers, dt, *controls, av_kinematics="highway_env").state
        got = [state.x[0, 0].item(), state.y[0, 0].item(), state.heading[0, 0].item()]
        assert got == pytest.approx([*reference.position, reference.heading], abs=1e-9)
        assert state.v[0, 0].item() == pytest.approx(reference.speed, abs=1e-9)
    assert abs(reference.heading - 0.05) > 0.05 and reference.speed > 5.0  # it did turn, speed up
    # the default model turns faster about the rear axle: the two are not the same car
    rear_axle = make_state([60.0], [6.0], [10.0], heading=[0.0], is_av=[True])
    turn = (torch.tensor([[0.0]], dtype=F64), torch.tensor([[0.3]], dtype=F64))
    slip = step(rear_axle, road, drivers, dt, *turn, av_kinematics="highway_env").state
    axle = step(rear_axle, road, drivers, dt, *turn).state
    assert axle.heading.item() > 1.5 * slip.heading.item() > 0


def test_av_kinematics_name_the_valid_models_and_stay_off_the_fused_step(make_state) -> None:
    state = make_state([10.0], [2.0], [5.0], is_av=[True])
    road, drivers = Road.straight(), IDMParams(v0=20.0)
    with pytest.raises(ValueError, match="av_kinematics must be one of 'rear_axle', 'highway_env'"):
        step(state, road, drivers, 0.1, av_kinematics="bicycle")
    with pytest.raises(ValueError, match="av_kinematics='highway_env' runs on the eager step"):
        step(state, road, drivers, 0.1, path="fused", av_kinematics="highway_env")


def test_speed_never_below_zero_and_standstill_passes_no_gradient(make_state) -> None:
    state = make_state([10.0], [2.0], [1.0], is_av=[True])
    acc = torch.tensor([[-20.0]], dtype=F64, requires_grad=True)
    new = step(state, Road.straight(), IDMParams(v0=20.0), 0.1, acc).state
    assert new.v.item() == 0.0 and new.x.item() == 10.0
    (grad,) = torch.autograd.grad(new.x.sum(), acc)
    assert grad.item() == 0.0


def test_humans_ignore_av_actions_and_inactive_slots_stay(make_state) -> None:
    state = make_state(
        [50.0, 30.0, 5.0],
        [2.0, 2.0, 2.0],
        [10.0, 10.0, 3.0],
        is_av=[True, False, False],
        active=[True, True, False],
    )
    acc = torch.tensor([[1.0, 50.0, 50.0]], dtype=F64, requires_grad=True)
    steer = torch.tensor([[0.0, 0.3, 0.3]], dtype=F64, requires_grad=True)
    road, idm = Road.straight(), IDMParams(v0=20.0)
    with_actions = step(state, road, idm, 0.1, acc, steer)
    without = step(state, road, idm, 0.1, acc.detach() * torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.equal(with_actions.state.x[0, 1:], without.state.x[0, 1:])
    assert torch.equal(with_actions.state.heading[0, 1:], torch.zeros(2, dtype=F64))
    assert with_actions.state.x[0, 2].item() == 5.0 and with_actions.state.v[0, 2].item() == 3.0
    grads = torch.autograd.grad(
        with_actions.state.x.sum() + with_actions.state.v.sum(), (acc, steer)
    )
    assert grads[0][0, 1:].tolist() == [0.0, 0.0] and grads[0][0, 0].item() > 0
    assert grads[1][0, 1:].tolist() == [0.0, 0.0]


def test_human_acceleration_is_the_idm_from_the_state_at_t(make_state) -> None:
    state = make_state([40.0, 20.0], [2.0, 2.0], [8.0, 12.0])
    idm = IDMParams(v0=20.0, T=1.2, a=1.5, b=2.0, s0=2.0)
    result = step(state, Road.straight(), idm, 0.1)
    approach = 12.0 * 1.2 + 12.0 * 4.0 / (2.0 * math.sqrt(3.0))
    expected = 1.5 * (1.0 - (12.0 / 20.0) ** 4 - ((2.0 + approach) / 15.0) ** 2)
    assert result.acceleration[0, 1].item() == pytest.approx(expected, abs=1e-12)
    assert result.acceleration[0, 0].item() == pytest.approx(1.5 * (1 - 0.4**4), abs=1e-12)


def test_ring_positions_wrap(make_state) -> None:
    state = make_state([99.5, 50.0], [2.0, 2.0], [10.0, 10.0])
    new = step(state, Road.ring(100.0), IDMParams(v0=20.0), 0.1).state
    assert 0.0 <= new.x[0, 0].item() < 1.0


def test_step_reports_collisions_of_both_vehicles(make_state) -> None:
    # An AV at 20 m/s runs into a stopped human 1 m ahead of its bumper.
    state = make_state(
        [30.0, 24.0, 0.0], [2.0, 2.0, 2.0], [0.0, 20.0, 0.0], is_av=[False, True, False]
    )
    result = step(state, Road.straight(), IDMParams(v0=20.0), 0.1)
    assert result.collided[0].tolist() == [True, True, False]


def test_leader_methods_give_the_same_rollout(make_state) -> None:
    state = make_state(
        [60.0, 52.0, 40.0, 30.0, 20.0], [2.0, 4.0, 6.0, 2.0, 6.0], [10.0, 11.0, 9.0, 13.0, 12.0]
    )
    road = Road.ring(120.0, num_lanes=2)
    runs = [
        rollout(state, road, IDMParams(v0=20.0), 0.1, 100, leader_method=m)
        for m in ("pairwise", "sorted")
    ]
    assert torch.equal(runs[0][0][-1].x, runs[1][0][-1].x)
    assert torch.equal(runs[0][1], runs[1][1])


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("av_kinematics", ["rear_axle", "highway_env"])
def test_gradcheck_rollout_wrt_actions_initial_state_and_idm(make_state, av_kinematics) -> None:
    """float64 gradcheck of a 6-step rollout on two lanes: an AV leads a two-car platoon in
    lane 0 while steering slightly (never leaving its lane); lane 1 has its own pair. Every
    follower's approach term stays positive and every speed stays above zero (no kinks)."""
    horizon, n = 6, 5
    acc = torch.full((horizon, 1, n), 0.5, dtype=F64, requires_grad=True)
    steer = torch.full((horizon, 1, n), 0.02, dtype=F64, requires_grad=True)
    x0 = torch.tensor([[60.0, 40.0, 22.0, 55.0, 35.0]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[2.0, 2.0, 2.0, 6.0, 6.0]], dtype=F64, requires_grad=True)
    v0 = torch.tensor([[8.0, 9.0, 10.0, 12.0, 11.0]], dtype=F64, requires_grad=True)
    h0 = torch.tensor([[0.01, 0.0, 0.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    idm = [
        torch.tensor(value, dtype=F64, requires_grad=True)
        for value in (22.0, 1.1, 1.6, 2.2, 4.0, 2.0)
    ]
    is_av = [True, False, False, False, False]

    def final_state(acc, steer, x0, y0, v0, h0, *idm_values):
        state = make_state(x0, y0, v0, heading=h0, is_av=is_av)
        road, drivers = Road.straight(num_lanes=2), IDMParams(*idm_values)
        states, _ = rollout(
            state, road, drivers, 0.1, horizon, acc, steer, av_kinematics=av_kinematics
        )
        last = states[-1]
        return torch.cat([last.x, last.y, last.v, last.heading, states[3].v])

    inputs = (acc, steer, x0, y0, v0, h0, *idm)
    assert torch.autograd.gradcheck(final_state, inputs)
    # Not vacuous: the AV's actions reach the followers in its lane, the IDM parameters reach
    # every human.
    out = final_state(*inputs)
    grads = torch.autograd.grad(out[2, 1] + out[2, 2], (acc, steer, *idm))
    assert grads[0][:-1, 0, 0].abs().min() > 0
    assert grads[1][:-1, 0, 0].abs().max() > 0
    assert all(g.abs().item() > 0 for g in grads[2:])


def test_gradient_across_a_lane_change(make_state) -> None:
    """What the gradient carries when an AV cuts into another lane.

    An AV in lane 1, heading -0.1 rad with zero steering, drifts into lane 0 in front of a faster
    human, who becomes its follower after ~11 steps and brakes. The follower's speed at step 40

    * depends on the AV's initial ``x`` (non-zero gradient): once the AV leads, the gap is a
      differentiable function of the AV's position;
    * has exactly zero gradient w.r.t. the AV's initial lateral position ``y``, although ``y``
      decides *when* the AV enters the lane (a finite difference shows a real effect): lane
      membership is discrete and carries no gradient;
    * before the AV enters the lane, the follower's speed has zero gradient w.r.t. anything
      about the AV, including its ``x``.
    """
    road, idm = Road.straight(num_lanes=2), IDMParams(v0=20.0)

    def follower_speeds(av_x: torch.Tensor, av_y: torch.Tensor):
        x = torch.stack([av_x, torch.tensor(35.0, dtype=F64)]).unsqueeze(0)
        y = torch.stack([av_y, torch.tensor(2.0, dtype=F64)]).unsqueeze(0)
        state = make_state(x, y, [10.0, 14.0], heading=[-0.1, 0.0], is_av=[True, False])
        states, collided = rollout(state, road, idm, 0.1, 40)
        assert not collided.any()
        return states, torch.stack([s.v[0, 1] for s in states])

    av_x = torch.tensor(60.0, dtype=F64, requires_grad=True)
    av_y = torch.tensor(6.0, dtype=F64, requires_grad=True)
    states, speeds = follower_speeds(av_x, av_y)
    leaders = [compute_neighbors(s, road) for s in states]
    entry = next(t for t, nb in enumerate(leaders) if bool(nb.has_leader[0, 1]))
    assert 5 < entry < 20 and int(leaders[entry].leader[0, 1]) == 0
    assert not any(bool(nb.has_leader[0, 1]) for nb in leaders[:entry])

    grad_x, grad_y = torch.autograd.grad(
        speeds[-1], (av_x, av_y), allow_unused=True, retain_graph=True
    )
    assert grad_x.item() > 1e-3  # a farther AV lets the follower keep more speed
    assert grad_y is None or grad_y.item() == 0.0  # None: y is not even in the graph
    before_x, before_y = torch.autograd.grad(speeds[entry], (av_x, av_y), allow_unused=True)
    assert before_x is None or before_x.item() == 0.0
    assert before_y is None or before_y.item() == 0.0

    with torch.no_grad():
        _, earlier = follower_speeds(av_x, av_y - 0.5)  # enters lane 0 ~5 steps sooner
    assert abs(earlier[-1].item() - speeds[-1].item()) > 1e-2


def test_gradients_stay_finite_over_a_long_stop_and_go_rollout(make_state) -> None:
    state = make_state(
        [100.0, 85.0, 70.0, 55.0],
        [2.0] * 4,
        [0.0, 10.0, 12.0, 14.0],
        is_av=[True, False, False, False],
    )
    T = torch.tensor(1.2, dtype=F64, requires_grad=True)
    acc = torch.zeros(300, 1, 4, dtype=F64)
    acc[:60, 0, 0], acc[100:150, 0, 0], acc[150:200, 0, 0] = 1.5, -3.0, 2.0
    acc.requires_grad_()
    states, collided = rollout(state, Road.straight(), IDMParams(v0=20.0, T=T), 0.1, 300, acc)
    assert not collided.any()
    loss = sum(s.v.sum() for s in states)
    grads = torch.autograd.grad(loss, (acc, T))
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[1].item() != 0.0


# --- safety over long runs -------------------------------------------------------------------


def random_platoons(num_worlds, lanes, per_lane, seed, ring):
    """Per-driver random IDM parameters and safe starts: every gap at least the equilibrium gap
    of the follower's starting speed. Returns ``(x, y, v, idm, ring_length or None)``."""
    g = torch.Generator().manual_seed(seed)
    shape = (num_worlds, lanes * per_lane)

    def uniform(low, high):
        return low + (high - low) * torch.rand(shape, generator=g, dtype=F64)

    idm = IDMParams(
        v0=uniform(15.0, 30.0),
        T=uniform(0.8, 2.0),
        a=uniform(0.8, 3.0),
        b=uniform(1.5, 4.5),
        delta=4.0,
        s0=uniform(1.5, 3.0),
    )
    v = uniform(0.0, 0.8) * idm.v0
    spacing = (equilibrium_gap(v, idm) * uniform(1.0, 1.5) + 5.0).reshape(
        num_worlds, lanes, per_lane
    )
    x = (-spacing.cumsum(-1) + spacing[..., :1]).reshape(shape)
    ring_length = spacing.sum(-1).max().item() if ring else None
    # On the ring, each lane's front car gets at least its own spacing ahead of it, around the
    # ring to the lane's last car.
    if ring:
        x = torch.remainder(x, ring_length)
    lane_of = torch.arange(lanes, dtype=F64).repeat_interleave(per_lane)
    y = (lane_of * 4.0 + 2.0).expand(shape).clone()
    return x, y, v, idm, ring_length


@pytest.mark.parametrize("ring", [False, True])
def test_idm_platoons_from_safe_starts_never_collide(make_state, ring) -> None:
    x, y, v, idm, ring_length = random_platoons(8, 2, 11, seed=3 if ring else 4, ring=ring)
    road = Road(2, 4.0, 30.0, ring_length)
    state = make_state(x, y, v)
    neighbors = None
    min_gap, min_speed = math.inf, math.inf
    with torch.no_grad():
        for _ in range(3000):  # 5 minutes at dt = 0.1 s
            result = step(state, road, idm, 0.1, neighbors=neighbors)
            state, neighbors = result.state, result.neighbors
            assert not result.collided.any()
            gap, _ = leader_gap_and_speed(state, neighbors, road)
            min_gap = min(min_gap, gap[neighbors.has_leader].min().item())
            min_speed = min(min_speed, state.v.min().item())
    assert torch.isfinite(state.x).all()
    assert min_gap > 0.5
    assert min_speed >= 0.0
    if ring:
        assert bool(neighbors.has_leader.all())  # every car follows someone, all the time


# --- batching and precision ---------------------------------------------------------------------


def mixed_worlds(make_state, dtype=F64):
    """Three worlds on a 2-lane ring with 2, 5 and 4 active vehicles, an AV in two of them."""
    x = [[50.0, 30.0, 0.0, 0.0, 0.0], [80.0, 62.0, 45.0, 70.0, 20.0], [10.0, 90.0, 66.0, 40.0, 0.0]]
    y = [[2.0, 2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 6.0, 6.0], [6.0, 6.0, 3.5, 2.0, 2.0]]
    v = [[8.0, 9.0, 0.0, 0.0, 0.0], [10.0, 12.0, 0.0, 7.0, 15.0], [5.0, 11.0, 9.0, 10.0, 0.0]]
    state = make_state(
        x,
        y,
        v,
        is_av=[[False] * 5, [True] + [False] * 4, [False, False, True, False, False]],
        active=[[True, True, False, False, False], [True] * 5, [True, True, True, True, False]],
        dtype=dtype,
    )
    idm = IDMParams(
        v0=torch.tensor([[18.0], [22.0], [25.0]], dtype=dtype),
        T=torch.tensor([[1.0], [1.4], [0.9]], dtype=dtype),
    )
    acc = 0.8 * torch.sin(torch.arange(150, dtype=dtype) / 10.0)[:, None, None].expand(150, 3, 5)
    steer = torch.zeros(150, 3, 5, dtype=dtype)
    steer[:20, 2, 2] = -0.02  # world 2's AV drifts from its straddling position toward lane 0
    return state, Road.ring(150.0, num_lanes=2), idm, acc, steer


def test_batched_worlds_equal_separate_runs(make_state) -> None:
    state, road, idm, acc, steer = mixed_worlds(make_state)
    batched, collided = rollout(state, road, idm, 0.1, 150, acc, steer)
    for b in range(3):
        world_idm = IDMParams(
            **{
                n: torch.as_tensor(getattr(idm, n))[b : b + 1]
                if torch.as_tensor(getattr(idm, n)).dim()
                else getattr(idm, n)
                for n in PARAM_NAMES
            }
        )
        alone, alone_collided = rollout(
            state.index_worlds(b), road, world_idm, 0.1, 150, acc[:, b : b + 1], steer[:, b : b + 1]
        )
        for field in ("x", "y", "v", "heading"):
            together = torch.stack([getattr(s, field)[b] for s in batched])
            separate = torch.stack([getattr(s, field)[0] for s in alone])
            torch.testing.assert_close(together, separate, rtol=0.0, atol=1e-12)
        assert torch.equal(collided[:, b], alone_collided[:, 0])
    assert batched[-1].x[0, 2:].tolist() == [0.0, 0.0, 0.0]  # inactive slots untouched


def test_same_inputs_give_identical_rollouts(make_state) -> None:
    first = rollout(*mixed_worlds(make_state)[:3], 0.1, 150, *mixed_worlds(make_state)[3:])
    second = rollout(*mixed_worlds(make_state)[:3], 0.1, 150, *mixed_worlds(make_state)[3:])
    for a, b in zip(first[0], second[0], strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.v, b.v) and torch.equal(a.y, b.y)


def test_float32_and_float64_agree(make_state) -> None:
    runs = {}
    for dtype in (torch.float32, torch.float64):
        state, road, idm, acc, steer = mixed_worlds(make_state, dtype)
        states, collided = rollout(state, road, idm, 0.1, 150, acc, steer)
        assert states[-1].x.dtype == dtype
        runs[dtype] = (states, collided)
    for s32, s64 in zip(runs[torch.float32][0], runs[torch.float64][0], strict=True):
        assert (s32.x.double() - s64.x).abs().max().item() < 1e-3
        assert (s32.v.double() - s64.v).abs().max().item() < 2e-4
        assert (s32.y.double() - s64.y).abs().max().item() < 1e-5
    assert torch.equal(runs[torch.float32][1], runs[torch.float64][1])


def _two_lane_worlds():
    from difftraffic import Road, ScenarioBuilder

    road = Road.straight(num_lanes=2, speed_limit=30.0)
    scenario = (
        ScenarioBuilder(road)
        .platoon(lane=0, count=4, spacing=25.0)
        .vehicle(lane=1, x=50.0, speed=10.0, autonomous=True)
        .build()
    )
    state, drivers = scenario.sample(batch_size=2, seed=0)
    return state, road, drivers


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"av_acceleration": torch.zeros(2, 4)}, r"av_acceleration must match the state: shape"),
        (
            {"av_acceleration": torch.zeros(2, 5, dtype=torch.float64)},
            r"got \(2, 5\), torch.float64",
        ),
        (
            {"av_acceleration": torch.full((2, 5), float("nan"))},
            r"av_acceleration must be finite, got nan",
        ),
        ({"av_steering": torch.full((2, 5), 2.0)}, r"av_steering must be in \(-1.57"),
        ({"dt": 0.0}, r"dt must be in \(0.0, inf\) s, got 0.0"),
        ({"idm_v0": torch.ones(3, 5)}, r"IDMParams.v0 has shape \(3, 5\), not broadcastable"),
    ],
)
def test_validate_step_inputs_names_what_step_would_silently_accept(arguments, message):
    from dataclasses import replace

    from difftraffic import validate_step_inputs

    state, road, drivers = _two_lane_worlds()
    if "idm_v0" in arguments:
        drivers = replace(drivers, v0=arguments.pop("idm_v0"))
    dt = arguments.pop("dt", 0.1)
    with pytest.raises(ValueError, match=message):
        validate_step_inputs(state, road, drivers, dt, **arguments)


def test_validate_step_inputs_accepts_what_the_scenario_samples():
    from difftraffic import validate_step_inputs

    state, road, drivers = _two_lane_worlds()
    zeros = torch.zeros_like(state.x)
    validate_step_inputs(state, road, drivers, 0.1, av_acceleration=zeros, av_steering=zeros)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_stay_finite_through_collisions_over_300_steps(dtype):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from difftraffic.testing import CALIBRATED_DRIVER_RANGES, scenarios

    drivers = CALIBRATED_DRIVER_RANGES  # stiffer drivers: see the test below

    @settings(max_examples=25, deadline=None)
    @given(scenarios(max_per_lane=3, driver_ranges=drivers), st.integers(0, 2**16), st.booleans())
    def check(scenario, seed, full_throttle):
        # AVs at +-8 m/s^2 (full throttle, or a random sign per step) with random steering:
        # rear-end and side collisions are common, as gradient RL meets them.
        state, drivers = scenario.sample(batch_size=2, seed=seed, dtype=dtype)
        generator = torch.Generator().manual_seed(seed)
        shape = (300, *state.x.shape)
        signs = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        if full_throttle:
            signs = torch.ones(shape)
        acceleration = (8.0 * signs).to(dtype).requires_grad_(True)
        steering = (0.3 * (torch.rand(shape, generator=generator) * 2 - 1)).to(dtype)
        steering.requires_grad_(True)
        start_v = state.v.clone().requires_grad_(True)
        state = state.replace(v=start_v)
        total, neighbors = 0.0, None
        for t in range(300):
            result = step(
                state, scenario.road, drivers, scenario.dt, acceleration[t], steering[t], neighbors
            )
            state, neighbors = result.state, result.neighbors
            total = total + state.v.mean() + 0.01 * state.x.mean()
        total.backward()
        assert torch.isfinite(total)
        for grad in (acceleration.grad, steering.grad, start_v.grad):
            assert torch.isfinite(grad).all()

    check()


def test_a_car_passing_through_another_within_one_step_is_flagged(make_state):
    # At 300 m/s and dt = 0.1 s the AV's front goes from 0 to 30 m: it starts 20 m behind a
    # stopped car (body 20..25 m) and ends just past it, overlapping it at neither end.
    road = Road(1, 4.0, 20.0, 230.0)
    state = make_state([0.0, 25.0], [2.0, 2.0], v=[300.0, 0.0], is_av=[True, False])
    result = step(state, road, IDMParams(v0=20.0), 0.1)
    assert result.state.x[0, 0].item() == pytest.approx(30.0)
    assert result.collided[0].tolist() == [True, True]


@pytest.mark.parametrize("path", ["eager", "fused"])
@pytest.mark.parametrize(
    ("start_y", "heading", "lanes_before", "lanes_after"),
    [
        (5.2, -0.1, [[False, True], [True, False]], [[True, False], [True, False]]),  # entering
        (2.8, 0.1, [[True, False], [True, False]], [[False, True], [True, False]]),  # leaving
    ],
)
def test_a_car_passing_through_another_while_changing_lane_is_flagged(
    make_state, path, start_y, heading, lanes_before, lanes_after
):
    # At 300 m/s an AV moves ~30 m along and ~3 m across in one 0.1 s step: it goes from behind
    # a stopped car in the other lane to well past it in that car's lane (or the reverse), so the
    # bodies overlap at neither end; its front crossed the car's front in a lane they share at
    # one end of the step.
    from difftraffic.fused import unavailable_reason
    from difftraffic.neighbors import lane_occupancy

    if path == "fused" and unavailable_reason():
        pytest.skip(unavailable_reason())
    road = Road(2, 4.0, 20.0)
    state = make_state(
        [0.0, 15.0], [start_y, 2.0], v=[300.0, 0.0], heading=[heading, 0.0], is_av=[True, False]
    )
    result = step(state, road, IDMParams(v0=20.0), 0.1, path=path)
    assert lane_occupancy(state, road)[0].tolist() == lanes_before
    assert lane_occupancy(result.state, road)[0].tolist() == lanes_after
    assert result.state.x[0, 0] > 15.0 + 5.0  # ahead of the stopped car, not overlapping it
    assert result.collided[0].tolist() == [True, True]


def test_no_unflagged_overlap_or_overtake_on_rings_and_multi_lane_roads():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from difftraffic.neighbors import leader_gap_and_speed
    from difftraffic.testing import fronts_passed, scenarios, shares_a_lane

    @settings(max_examples=30, deadline=None)
    @given(scenarios(max_per_lane=3), st.integers(0, 2**16), st.floats(0.0, 200.0))
    def check(scenario, seed, av_speed):
        road, dt = scenario.road, scenario.dt
        state, drivers = scenario.sample(batch_size=2, seed=seed, dtype=torch.float64)
        state = state.replace(v=torch.where(state.is_av, av_speed, state.v))
        generator = torch.Generator().manual_seed(seed)
        neighbors = None
        for _ in range(60):
            steering = 0.05 * (
                torch.rand(state.x.shape, generator=generator, dtype=torch.float64) * 2 - 1
            )
            before = neighbors if neighbors is not None else compute_neighbors(state, road)
            result = step(state, road, drivers, dt, torch.zeros_like(state.x), steering, before)
            new, neighbors, collided = result.state, result.neighbors, result.collided
            # No unflagged negative gap.
            gap, _ = leader_gap_and_speed(new, neighbors, road)
            assert collided[neighbors.has_leader & (gap < 0)].all()
            # No vehicle's front passes another's within the step, in a lane they share at
            # either end of it, unless flagged.
            passed = fronts_passed(state, new, road, dt)
            shared = shares_a_lane(state, road) | shares_a_lane(new, road)
            flagged = collided.unsqueeze(2) | collided.unsqueeze(1)
            assert not (passed & shared & ~flagged).any()
            state = new

    check()


def test_a_stiff_driver_at_centimetre_gaps_has_a_geometrically_growing_derivative(make_state):
    # Headway 0.125 s, s0 = 0, a = 5 m/s^2: following a 1 m/s leader at about 0.13 m, the IDM's
    # damping -d acc/dv (about 24 /s) exceeds 2 / dt, so the discrete map oscillates. The
    # trajectory stays bounded, but its derivative with respect to the start grows by a constant
    # factor per step: finite in float64, it overflows float32 within a few hundred steps. This
    # pins the documented limit of the "finite gradients" property (calibrated drivers only).
    road = Road(1, 4.0, 30.0)
    drivers = IDMParams(
        v0=torch.tensor([[2.0, 1.0]], dtype=torch.float64),
        T=torch.tensor([[0.125, 1.0]], dtype=torch.float64),
        a=torch.tensor([[5.0, 1.0]], dtype=torch.float64),
        b=1.0,
        delta=torch.tensor([[3.0, 1.0]], dtype=torch.float64),
        s0=0.0,
    )
    start_v = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    state = make_state([0.0, 7.0], [2.0, 2.0], v=start_v)

    def grad_norm(steps: int) -> float:
        current, neighbors = state, None
        for _ in range(steps):
            result = step(current, road, drivers, 0.1, neighbors=neighbors)
            current, neighbors = result.state, result.neighbors
        (grad,) = torch.autograd.grad(current.x[0, 0], start_v)
        return float(grad.abs().max())

    early, late = grad_norm(100), grad_norm(200)
    assert math.isfinite(late) and late > 1e6 * early
    assert current_speed_is_bounded(state, road, drivers)


def current_speed_is_bounded(state, road, drivers) -> bool:
    current, neighbors = state, None
    for _ in range(300):
        result = step(current, road, drivers, 0.1, neighbors=neighbors)
        current, neighbors = result.state, result.neighbors
    return bool((current.v.detach() < 2.5).all())
