"""Pixels of rendered frames: vehicles where their positions map, lane markings on their rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difftraffic.render import RenderConfig, Renderer, palette
from difftraffic.road import Road

WIDTH, HEIGHT, ZOOM = 640, 360, 10.0
ROAD = Road.straight(num_lanes=3)
AV_X, AV_Y = 50.0, 6.0
HUMANS = [(30.0, 2.0), (70.0, 10.0)]


@pytest.fixture
def state(make_state):
    xs = [AV_X] + [x for x, _ in HUMANS]
    ys = [AV_Y] + [y for _, y in HUMANS]
    return make_state(xs, ys, v=[8.0, 0.0, 20.0], is_av=[True, False, False])


def renderer(**options) -> Renderer:
    config = RenderConfig(width=WIDTH, height=HEIGHT, zoom=ZOOM, overlay=False, **options)
    return Renderer(ROAD, config)


def pixel_of(x_body_center: float, y: float) -> tuple[int, int]:
    """(row, column) of a road point for a camera centred on the AV's body, road centre line
    on the middle row."""
    column = WIDTH / 2 + (x_body_center - (AV_X - 2.5)) * ZOOM
    row = HEIGHT / 2 - (y - ROAD.width / 2) * ZOOM
    return round(row), round(column)


def patch(frame: np.ndarray, row: int, column: int) -> np.ndarray:
    """The 5 x 5 pixels around (row, column), as ``[25, 3]``."""
    return frame[row - 2 : row + 3, column - 2 : column + 3].reshape(-1, 3)


def test_frame_is_height_width_rgb_uint8(state) -> None:
    frame = renderer().render(state)
    assert frame.shape == (HEIGHT, WIDTH, 3)
    assert frame.dtype == np.uint8


def test_followed_autonomous_vehicle_is_blue_at_the_image_centre(state) -> None:
    frame = renderer().render(state)
    assert pixel_of(AV_X - 2.5, AV_Y) == (HEIGHT // 2 - 0, WIDTH // 2)
    assert (patch(frame, *pixel_of(AV_X - 2.5, AV_Y)) == palette.AUTONOMOUS).all()


def test_humans_are_yellow_where_their_positions_map(state) -> None:
    frame = renderer().render(state)
    for x, y in HUMANS:
        assert (patch(frame, *pixel_of(x - 2.5, y)) == palette.HUMAN).all()
    # A point of the same lanes with no vehicle is asphalt, not yellow.
    assert (patch(frame, *pixel_of(40.0, 2.0)) == palette.ASPHALT).all()


def test_vehicles_are_drawn_at_their_length_and_width(state) -> None:
    frame = renderer().render(state)
    row, column = pixel_of(AV_X - 2.5, AV_Y)
    blue_columns = np.flatnonzero((frame[row] == palette.AUTONOMOUS).all(axis=1))
    blue_rows = np.flatnonzero((frame[:, column] == palette.AUTONOMOUS).all(axis=1))
    # 5 m x 2 m at 10 px/m, less the 1 px outline on each side.
    assert abs(len(blue_columns) - 5.0 * ZOOM) <= 3
    assert abs(len(blue_rows) - 2.0 * ZOOM) <= 3


def test_heading_rotates_the_body(make_state) -> None:
    turned = make_state([AV_X], [AV_Y], heading=[math.pi / 2], is_av=[True])
    frame = renderer().render(turned)
    # Pointing up the screen: 5 m tall and 2 m wide, centred on the followed front bumper's x.
    row, _ = pixel_of(0.0, AV_Y - 2.5)
    blue_rows = np.flatnonzero((frame[:, WIDTH // 2] == palette.AUTONOMOUS).all(axis=1))
    blue_columns = np.flatnonzero((frame[row] == palette.AUTONOMOUS).all(axis=1))
    assert abs(len(blue_rows) - 5.0 * ZOOM) <= 3
    assert abs(len(blue_columns) - 2.0 * ZOOM) <= 3


def marking_fraction(frame: np.ndarray, row: int) -> float:
    """Largest fraction of marking-coloured pixels over the rows within one of ``row``."""
    rows = frame[row - 1 : row + 2]
    return float((rows == palette.MARKING).all(axis=2).mean(axis=1).max())


def test_lane_markings_solid_at_the_edges_and_dashed_between_lanes(state) -> None:
    frame = renderer().render(state)
    for boundary in range(ROAD.num_lanes + 1):
        row, _ = pixel_of(0.0, boundary * ROAD.lane_width)
        fraction = marking_fraction(frame, row)
        if boundary in (0, ROAD.num_lanes):
            assert fraction > 0.99
        else:
            assert 0.15 < fraction < 0.4  # 3 m dashes every 12 m
    for lane in range(ROAD.num_lanes):
        row, _ = pixel_of(0.0, ROAD.lane_center(lane))
        assert marking_fraction(frame, row) == 0.0


def test_collided_vehicles_are_red(make_state) -> None:
    overlapping = make_state([AV_X, 40.0, 43.0], [AV_Y, 2.0, 2.0], is_av=[True, False, False])
    frame = renderer().render(overlapping)
    assert (patch(frame, *pixel_of(36.0, 2.0)) == palette.COLLIDED).all()
    flags = torch.tensor([[False, False, False]])
    frame = renderer().render(overlapping, collided=flags)
    assert (patch(frame, *pixel_of(36.0, 2.0)) == palette.HUMAN).all()


def test_speed_colours_map_slow_and_fast_humans_to_the_ends_with_a_legend(state) -> None:
    frame = renderer(color_by_speed=True).render(state)
    slow, fast = palette.SPEED_MAP_STOPS[0], palette.SPEED_MAP_STOPS[-1]
    assert (patch(frame, *pixel_of(HUMANS[0][0] - 2.5, HUMANS[0][1])) == slow).all()
    assert (patch(frame, *pixel_of(HUMANS[1][0] - 2.5, HUMANS[1][1])) == fast).all()
    legend_row = frame[HEIGHT - 15]
    assert (legend_row[10] == slow).all() and (legend_row[189] == fast).all()


def test_ring_road_places_vehicles_on_the_circle(make_state) -> None:
    ring = Road.ring(200.0, num_lanes=2)
    ring_state = make_state([30.0, 120.0], [6.0, 2.0], is_av=[True, False])
    config = RenderConfig(width=WIDTH, height=HEIGHT, camera="road", overlay=False)
    frame = Renderer(ring, config).render(ring_state)
    inner_radius = 200.0 / (2 * math.pi)
    zoom = HEIGHT / (2 * (inner_radius + ring.width + 5.0))
    for (x, y), color in [((27.5, 6.0), palette.AUTONOMOUS), ((117.5, 2.0), palette.HUMAN)]:
        radius, angle = inner_radius + ring.width - y, 2 * math.pi * x / 200.0
        column = round(WIDTH / 2 + radius * math.cos(angle) * zoom)
        row = round(HEIGHT / 2 - radius * math.sin(angle) * zoom)
        assert (frame[row, column] == color).all()
    assert (frame[HEIGHT // 2, WIDTH // 2] == palette.BACKGROUND).all()


def test_overlay_shows_text_that_depends_on_the_values(state) -> None:
    config = RenderConfig(width=WIDTH, height=HEIGHT, zoom=ZOOM)
    first = Renderer(ROAD, config).render(state, time=1.0, reward=0.5, target_speed=10.0)
    second = Renderer(ROAD, config).render(state, time=1.0, reward=-0.5, target_speed=10.0)
    bare = renderer().render(state)
    corner = (slice(0, 90), slice(0, 250))
    assert (first[corner] == palette.TEXT).all(axis=2).any()
    assert not (bare[corner] == palette.TEXT).all(axis=2).any()
    assert not np.array_equal(first[corner], second[corner])


def test_rendering_is_deterministic_and_leaves_the_state_alone(state) -> None:
    x = state.x.clone().requires_grad_(True)
    state = state.replace(x=x)
    view = renderer()
    first = view.render(state)
    view.render(state.replace(x=x.detach() + 7.0))
    again = view.render(state)
    assert np.array_equal(first, again)
    assert np.array_equal(first, renderer().render(state))
    assert x.grad is None and torch.is_grad_enabled()
    assert torch.equal(state.x, x)


def test_chosen_world_of_a_batch_is_drawn(make_state) -> None:
    batch = make_state(
        [[AV_X, 30.0], [AV_X, 60.0]], [[AV_Y, 2.0], [AV_Y, 2.0]], is_av=[True, False]
    )
    frame = renderer().render(batch, world=1)
    assert (patch(frame, *pixel_of(57.5, 2.0)) == palette.HUMAN).all()
    assert (patch(frame, *pixel_of(27.5, 2.0)) == palette.ASPHALT).all()


def test_bad_world_and_follow_name_the_valid_range(state) -> None:
    with pytest.raises(ValueError, match=r"world must be an integer in \[0, 0\], got 3"):
        renderer().render(state, world=3)
    with pytest.raises(ValueError, match=r"follow must be .* in \[0, 2\], got 9"):
        renderer(follow=9).render(state)
    with pytest.raises(ValueError, match="zoom must be finite and > 0"):
        RenderConfig(zoom=-1.0)


def test_a_lane_end_is_grass_beyond_it_with_solid_edges(make_state) -> None:
    # Lane 2 of 3 ends at x = 60 m, on screen (the camera shows x from about 15 to 79 m).
    ending = Road.straight(num_lanes=3, lane_ends=(math.inf, math.inf, 60.0))
    frame = Renderer(
        ending, RenderConfig(width=WIDTH, height=HEIGHT, zoom=ZOOM, overlay=False)
    ).render(make_state([AV_X], [AV_Y], is_av=[True]))
    top_lane = ending.lane_center(2)
    assert (patch(frame, *pixel_of(70.0, top_lane)) == palette.BACKGROUND).all()
    assert (patch(frame, *pixel_of(30.0, top_lane)) == palette.ASPHALT).all()
    # The line between lanes 1 and 2: dashed before the end, solid (the road's edge) after it.
    row, before = pixel_of(20.0, 2 * ending.lane_width)
    _, after = pixel_of(63.0, 2 * ending.lane_width)
    _, far = pixel_of(76.0, 2 * ending.lane_width)
    solid_after = (frame[row - 1 : row + 2, after:far] == palette.MARKING).all(axis=2).any(0)
    assert solid_after.all()
    dashed_before = (frame[row - 1 : row + 2, before : after - 40] == palette.MARKING).all(axis=2)
    assert 0.1 < dashed_before.any(0).mean() < 0.5


def test_lane_markings_follow_the_lane_ends() -> None:
    from difftraffic.render.renderer import lane_markings

    plain = lane_markings(Road.straight(num_lanes=2))
    assert plain == [
        (0.0, -math.inf, math.inf, False),
        (4.0, -math.inf, math.inf, True),
        (8.0, -math.inf, math.inf, False),
    ]
    ending = lane_markings(Road.straight(num_lanes=2, lane_ends=(math.inf, 100.0)))
    assert ending == [
        (0.0, -math.inf, math.inf, False),
        (4.0, -math.inf, 100.0, True),
        (4.0, 100.0, math.inf, False),
        (8.0, -math.inf, 100.0, False),
    ]
