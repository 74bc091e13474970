"""Geography of a request: great-circle distance and geohash-5 cells (protocol.md §3, §4 rule 7).

The publisher sends one copy of an RFA to every 5-character geohash cell its circle
touches and a device subscribes to its own cell only, so `cells_covering` must never
miss a cell that holds a point within the radius. It is conservative instead: it returns
every cell that meets the circle's latitude/longitude bounding box, widened by about a
centimetre against rounding, so a few cells near the circle's corners may be extra.

Choices made where docs/protocol.md is silent:

- Distance is the haversine great-circle distance on a sphere of the mean Earth radius
  (IUGG R1 = 6,371,008.8 m). Against the WGS-84 ellipsoid this errs by up to about
  0.5 %, i.e. 4 m at the 805 m limit; every device and publisher must use this same
  formula, so the answer is the same on both sides.
- Geohash cells are the standard ones (python-geohash encodes them; see `cell_of` for
  where we compute the cell ourselves). Latitude 90 belongs to the cell just south of
  it (a cell's latitude range is half-open) and longitude 180 to the cell of -180, as
  python-geohash does.
- `cells_covering` refuses radii above 10 km: near a pole a circle touches every cell
  of its rows (8,192 per row), and no request may exceed 805 m anyway.
"""

from __future__ import annotations

import math
from fractions import Fraction

import geohash

from foundation.errors import InvalidValueError

EARTH_RADIUS_M = 6_371_008.8
CELL_PRECISION = 5
MAX_COVER_RADIUS_M = 10_000.0

# A 5-character geohash is 25 bits: 13 of longitude and 12 of latitude.
_LON_CELLS = 1 << 13
_LAT_CELLS = 1 << 12
_LON_STEP = 360.0 / _LON_CELLS
_LAT_STEP = 180.0 / _LAT_CELLS
_LON_STEP_EXACT = Fraction(360, _LON_CELLS)
_LAT_STEP_EXACT = Fraction(180, _LAT_CELLS)
# About a centimetre of slack on each side of the bounding box, far above float rounding.
_SLACK_DEG = 1e-7


def _check_point(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise InvalidValueError("coordinates must be finite")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InvalidValueError("latitude must lie in [-90, 90] and longitude in [-180, 180]")


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine, sphere of radius EARTH_RADIUS_M)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlam = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    h = min(1.0, max(0.0, h))
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def cell_of(lat: float, lon: float) -> str:
    """The 5-character geohash of the cell holding (lat, lon).

    The cell's row and column are computed in exact rational arithmetic and the library
    then encodes the cell's centre. python-geohash 0.9.2's C encoder picks wrong cells
    for coordinates within about 1e-10 degrees of zero (it returns "s0004" for longitude
    4.7e-175 and "s0000" for (-1e-20, -1e-20)), and float division could round a point
    that sits a hair inside a cell edge across it.
    """
    _check_point(lat, lon)
    row = min(_LAT_CELLS - 1, math.floor((Fraction(lat) + 90) / _LAT_STEP_EXACT))
    col = math.floor((Fraction(lon) + 180) / _LON_STEP_EXACT) % _LON_CELLS
    return _cell_at(row, col)


def _cell_at(row: int, col: int) -> str:
    # Encode the cell's centre: far from every edge, so no rounding can pick a neighbour.
    lat = -90.0 + (row + 0.5) * _LAT_STEP
    lon = -180.0 + (col + 0.5) * _LON_STEP
    return str(geohash.encode(lat, lon, CELL_PRECISION))


def cells_covering(lat: float, lon: float, radius_m: float) -> set[str]:
    """Every geohash-5 cell that a point within `radius_m` of (lat, lon) can lie in."""
    _check_point(lat, lon)
    if not math.isfinite(radius_m) or radius_m < 0 or radius_m > MAX_COVER_RADIUS_M:
        raise InvalidValueError(f"radius must be finite and in [0, {MAX_COVER_RADIUS_M:.0f}] m")
    angle = radius_m / EARTH_RADIUS_M  # radians of arc
    dlat = math.degrees(angle) * (1 + 1e-9) + _SLACK_DEG
    south, north = lat - dlat, lat + dlat
    row_lo = max(0, math.floor((south + 90.0) / _LAT_STEP))
    row_hi = min(_LAT_CELLS - 1, math.floor((north + 90.0) / _LAT_STEP))

    cos_lat = math.cos(math.radians(lat))
    ratio = math.sin(angle) / cos_lat if cos_lat > 0 else math.inf
    if north >= 90.0 or south <= -90.0 or ratio >= 1.0:
        cols: range | list[int] = range(_LON_CELLS)  # the circle holds or nears a pole
    else:
        # Widest longitude offset of any point on the circle (spherical trigonometry).
        dlon = math.degrees(math.asin(ratio)) * (1 + 1e-9) + _SLACK_DEG
        col_lo = math.floor((lon - dlon + 180.0) / _LON_STEP)
        col_hi = math.floor((lon + dlon + 180.0) / _LON_STEP)
        if col_hi - col_lo + 1 >= _LON_CELLS:
            cols = range(_LON_CELLS)
        else:
            # Modulo wraps columns across the antimeridian.
            cols = [c % _LON_CELLS for c in range(col_lo, col_hi + 1)]
    cells = {_cell_at(row, col) for row in range(row_lo, row_hi + 1) for col in cols}
    cells.add(cell_of(lat, lon))
    return cells
