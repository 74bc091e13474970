"""Distance and geohash cover: a device anywhere inside a request's circle must find its
own cell among the cells the publisher sends to (protocol.md §3)."""

from __future__ import annotations

import math

import geohash
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from foundation.errors import InvalidValueError
from sync.geo import (
    EARTH_RADIUS_M,
    MAX_COVER_RADIUS_M,
    cell_of,
    cells_covering,
    distance_m,
)
from tests.sync.factories import destination

LAT_STEP = 180.0 / 4096
LON_STEP = 360.0 / 8192


# --- distance ---------------------------------------------------------------------------


def test_distance_known_values() -> None:
    assert distance_m(0, 0, 0, 0) == 0
    # a quarter of a great circle
    assert distance_m(0, 0, 0, 90) == pytest.approx(math.pi / 2 * EARTH_RADIUS_M)
    assert distance_m(90, 0, -90, 0) == pytest.approx(math.pi * EARTH_RADIUS_M)
    # one degree of latitude on this sphere
    assert distance_m(10, 20, 11, 20) == pytest.approx(111_195.08, abs=0.01)
    # across the antimeridian is short
    assert distance_m(0, 179.999, 0, -179.999) == pytest.approx(222.39, abs=0.01)
    # all meridians meet at the pole
    assert distance_m(90, 0, 90, 123) == pytest.approx(0, abs=1e-6)


@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.floats(-90, 90),
    st.floats(-180, 180),
)
def test_distance_symmetric_and_bounded(a: float, b: float, c: float, d: float) -> None:
    x = distance_m(a, b, c, d)
    assert x == pytest.approx(distance_m(c, d, a, b), abs=1e-6)
    assert 0 <= x <= math.pi * EARTH_RADIUS_M + 1e-6


@given(st.floats(-89, 89), st.floats(-180, 180), st.floats(0, 360), st.floats(0, 2000))
def test_destination_helper_agrees_with_distance(
    lat: float, lon: float, bearing: float, d: float
) -> None:
    lat2, lon2 = destination(lat, lon, bearing, d)
    assert distance_m(lat, lon, lat2, lon2) == pytest.approx(d, abs=1e-6)


# --- cells ------------------------------------------------------------------------------


def test_cell_of_matches_library_and_edges() -> None:
    assert cell_of(37.7749, -122.4194) == geohash.encode(37.7749, -122.4194, 5) == "9q8yy"
    assert cell_of(90.0, 0.0) == geohash.encode(math.nextafter(90.0, 0), 0.0, 5)
    assert cell_of(0.0, 180.0) == cell_of(0.0, -180.0)
    assert len(cell_of(-90.0, -180.0)) == 5


@pytest.mark.parametrize(
    ("lat", "lon"), [(91, 0), (-90.0001, 0), (0, 180.5), (0, -181), (math.nan, 0), (0, math.inf)]
)
def test_cell_of_refuses_impossible_points(lat: float, lon: float) -> None:
    with pytest.raises(InvalidValueError):
        cell_of(lat, lon)


@pytest.mark.parametrize("radius", [-1.0, math.nan, math.inf, MAX_COVER_RADIUS_M + 1])
def test_cells_covering_refuses_bad_radius(radius: float) -> None:
    with pytest.raises(InvalidValueError):
        cells_covering(0, 0, radius)


def test_cover_of_a_circle_inside_one_cell_is_that_cell() -> None:
    # the centre of a cell is 2.4 km from its nearest edge at the equator
    lat, lon = -90 + 2048.5 * LAT_STEP, -180 + 4096.5 * LON_STEP
    assert cells_covering(lat, lon, 805) == {cell_of(lat, lon)}


def test_cover_of_a_cell_corner_is_the_four_cells() -> None:
    lat, lon = -90 + 2100 * LAT_STEP, -180 + 4200 * LON_STEP
    cover = cells_covering(lat, lon, 100)
    expected = {
        cell_of(lat + d_lat, lon + d_lon) for d_lat in (-0.001, 0.001) for d_lon in (-0.001, 0.001)
    }
    assert cover == expected and len(cover) == 4


def test_cover_across_the_antimeridian_has_both_sides() -> None:
    cover = cells_covering(10.0, 180.0, 805)
    assert cell_of(10.0, 179.999) in cover and cell_of(10.0, -179.999) in cover
    cover = cells_covering(-10.0, -179.9999, 805)
    assert cell_of(-10.0, 179.999) in cover


def test_cover_near_a_pole_is_whole_rows() -> None:
    cover = cells_covering(89.999, 42.0, 805)
    top_row = {cell_of(89.99, -180 + (c + 0.5) * LON_STEP) for c in range(8192)}
    assert top_row <= cover
    assert cell_of(-90.0, 0.0) in cells_covering(-90.0, 0.0, 1)


@given(st.floats(-60, 60), st.floats(-180, 180), st.floats(0, 805))
def test_cover_is_small_away_from_the_poles(lat: float, lon: float, r: float) -> None:
    # 805 m circles fit in 2x2 cells at the equator and 3 columns at 60 degrees
    assert 1 <= len(cells_covering(lat, lon, r)) <= 6


def _near_edge(steps: int, step: float, origin: float) -> st.SearchStrategy[float]:
    """Values within a few metres of a cell edge, including exactly on it."""
    return st.builds(
        lambda k, off: origin + k * step + off,
        st.integers(0, steps),
        st.one_of(st.just(0.0), st.floats(-1e-4, 1e-4), st.floats(-1e-12, 1e-12)),
    )


_lat_any = st.floats(-90, 90)
_lon_any = st.floats(-180, 180)
device_points = st.one_of(
    st.tuples(_lat_any, _lon_any),
    st.tuples(_near_edge(4096, LAT_STEP, -90.0), _lon_any),
    st.tuples(_lat_any, _near_edge(8192, LON_STEP, -180.0)),
    st.tuples(_near_edge(4096, LAT_STEP, -90.0), _near_edge(8192, LON_STEP, -180.0)),
    st.tuples(_lat_any, st.one_of(st.floats(179.98, 180), st.floats(-180, -179.98))),
    st.tuples(st.one_of(st.floats(89.95, 90), st.floats(-90, -89.95)), _lon_any),
).filter(lambda p: -90 <= p[0] <= 90 and -180 <= p[1] <= 180)


@settings(max_examples=600, deadline=None)
@given(
    device_points,
    st.floats(0, 360),
    st.one_of(st.floats(0, 805), st.just(805.0)),
    st.floats(0, 1),
)
@example((45.0, 180.0), 90.0, 805.0, 1.0)
@example((90.0, 0.0), 0.0, 805.0, 1.0)
@example((-90.0, 0.0), 180.0, 805.0, 1.0)
@example((-90 + 2100 * LAT_STEP, -180 + 4200 * LON_STEP), 45.0, 805.0, 1.0)
def test_device_inside_the_circle_finds_its_cell(
    device: tuple[float, float], bearing: float, radius: float, frac: float
) -> None:
    """Place the circle's centre up to `radius` away from the device, in any direction."""
    lat, lon = device
    c_lat, c_lon = destination(lat, lon, bearing, radius * frac)
    assume(-90 <= c_lat <= 90 and -180 <= c_lon <= 180)
    # the device's own rule is the one that decides: if it thinks it is inside, it must hear
    assume(distance_m(c_lat, c_lon, lat, lon) <= radius)
    assert cell_of(lat, lon) in cells_covering(c_lat, c_lon, radius)


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(_near_edge(4096, LAT_STEP, -90.0), _near_edge(8192, LON_STEP, -180.0)).filter(
        lambda p: -90 <= p[0] <= 90 and -180 <= p[1] <= 180
    ),
    st.floats(0, 360),
    st.floats(1, 805),
)
def test_device_on_the_rim_finds_its_cell(
    centre: tuple[float, float], bearing: float, radius: float
) -> None:
    """Centre on a cell corner, device exactly on the circle's rim (or just inside it)."""
    c_lat, c_lon = centre
    lat, lon = destination(c_lat, c_lon, bearing, radius)
    if distance_m(c_lat, c_lon, lat, lon) > radius:
        lat, lon = destination(c_lat, c_lon, bearing, radius * (1 - 1e-12))
    assume(distance_m(c_lat, c_lon, lat, lon) <= radius)
    assert cell_of(lat, lon) in cells_covering(c_lat, c_lon, radius)


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [
        (0.0, 4.6919437754711955e-175, "s0000"),
        (-1e-20, -1e-20, "7zzzz"),
        (-1e-17, 1e-17, "kpbpb"),
        (1e-300, -1e-300, "ebpbp"),
    ],
)
def test_cell_of_is_exact_near_zero_where_the_c_encoder_errs(
    lat: float, lon: float, expected: str
) -> None:
    assert cell_of(lat, lon) == expected


@given(
    st.floats(-90, 90).filter(lambda x: abs(x) > 1e-6),
    st.floats(-180, 180).filter(lambda x: abs(x) > 1e-6),
)
def test_cell_of_agrees_with_python_geohash_away_from_zero(lat: float, lon: float) -> None:
    ref = geohash.encode(math.nextafter(90.0, 0) if lat == 90 else lat, lon, 5)
    # exact arithmetic may differ from the library only a rounding error from an edge
    if cell_of(lat, lon) != ref:
        row_edge = abs(((lat + 90) / LAT_STEP) - round((lat + 90) / LAT_STEP))
        col_edge = abs(((lon + 180) / LON_STEP) - round((lon + 180) / LON_STEP))
        assert min(row_edge, col_edge) < 1e-9
