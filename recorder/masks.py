"""Privacy masks: polygons burned into every frame before the encoder sees it.

A mask is a named polygon in normalised coordinates (0-1, x to the right, y down), so it
fits any resolution. What is inside is painted black (Y 16, U and V 128: limited-range
black, which H.264 keeps within a few levels) on the frame's own YUV 4:2:0 planes, so no
stored segment, and nothing made from segments (thumbnails, preview clips, snapshots,
shares), ever holds a masked pixel.

Costs: the polygons are rasterised once per resolution (`MaskRaster`), into a luma mask
and a chroma mask that covers every chroma sample touching a masked luma pixel (so no
colour leaks from the edge of a mask); masks grow by up to a pixel, never shrink. Each
frame then costs one `cv2.copyTo` per plane over the masks' bounding box, a SIMD copy
through a byte mask (about 0.05 ms for a 1080p luma plane). Filling an RGB frame
through a boolean index costs a hundred times that, which is why the planes are
painted, not the picture.

Who reads the masks: the recorder for cameras that hand over raw frames (synthetic,
OpenCV), and the picamera2 source in its `pre_callback`, on the camera's own buffer.
Both take them from a `MaskFeed`, which the recorder process updates when the owner
changes them in the console (recorder/process.py).

Validation is pure Python (`check_masks`): at least 3 and at most `MAX_POINTS` corners,
each within 0-1, a polygon that does not cross itself and has an area, at most
`MAX_MASKS` masks, and masks that together leave some of the frame visible. Errors
name the key and the corner (`camera.masks[1].points: corner 3 [1.5, 0.2] is outside
the picture ...`) so a config error points at its line.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from foundation.errors import InvalidValueError

if TYPE_CHECKING:
    import numpy as np

MAX_MASKS = 32
MAX_POINTS = 64
MAX_NAME = 40
MIN_AREA = 1e-5  # of the frame: a mask smaller than this hides nothing a pixel could show
# The colour of a mask on the YUV planes: limited-range black.
MASK_Y, MASK_U, MASK_V = 16, 128, 128
# Whole-frame check: the centres of a COVER_GRID x COVER_GRID grid all hidden = refused.
COVER_GRID = 64

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Mask:
    """One privacy mask: its owner-chosen name and its polygon (normalised)."""

    name: str
    points: tuple[Point, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "points": [[x, y] for x, y in self.points]}


def parse_masks(data: object, key: str = "camera.masks") -> tuple[Mask, ...]:
    """Masks from config or console JSON (`[{name, points: [[x, y], ...]}, ...]`),
    checked; InvalidValueError names the key of the first problem."""
    if data is None:
        return ()
    if not isinstance(data, list | tuple):
        raise InvalidValueError(f"{key}: expected a list of masks")
    if len(data) > MAX_MASKS:
        raise InvalidValueError(f"{key}: at most {MAX_MASKS} masks")
    masks = []
    for i, item in enumerate(data):
        here = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise InvalidValueError(f"{here}: expected a mapping with name and points")
        unknown = set(item) - {"name", "points"}
        if unknown:
            raise InvalidValueError(f"{here}.{sorted(map(str, unknown))[0]}: unknown key")
        try:
            name = mask_name(item.get("name", f"mask {i + 1}"))
        except InvalidValueError as exc:
            raise InvalidValueError(f"{here}.name: {exc}") from None
        try:
            points = parse_points(item.get("points"))
        except InvalidValueError as exc:
            raise InvalidValueError(f"{here}.points: {exc}") from None
        masks.append(Mask(name, points))
    check_masks(masks, key)
    return tuple(masks)


def mask_name(value: object) -> str:
    """A mask's name: text of 1 to MAX_NAME characters, no control characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise InvalidValueError(f"expected text of 1 to {MAX_NAME} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidValueError("no control characters")
    return value.strip()


def parse_points(raw: object) -> tuple[Point, ...]:
    """A polygon's corners from JSON or YAML (`[[x, y], ...]`), checked (check_polygon)."""
    if not isinstance(raw, list | tuple):
        raise InvalidValueError("expected a list of [x, y] corners")
    points = []
    for j, point in enumerate(raw[: MAX_POINTS + 1]):
        if (
            not isinstance(point, list | tuple)
            or len(point) != 2
            or not all(_is_number(v) for v in point)
        ):
            raise InvalidValueError(f"corner {j + 1}: expected [x, y], two numbers")
        points.append((float(point[0]), float(point[1])))
    problem = polygon_problem(points)
    if problem is not None:
        raise InvalidValueError(problem)
    return tuple(points)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_masks(masks: Sequence[Mask], key: str = "camera.masks") -> None:
    """Raise InvalidValueError (naming the key) unless every mask is a usable polygon
    and the masks together leave part of the frame visible."""
    if len(masks) > MAX_MASKS:
        raise InvalidValueError(f"{key}: at most {MAX_MASKS} masks")
    names: set[str] = set()
    for i, mask in enumerate(masks):
        here = f"{key}[{i}]"
        if mask.name in names:
            raise InvalidValueError(f"{here}.name: {mask.name!r} is used twice")
        names.add(mask.name)
        check_polygon(mask.points, f"{here}.points")
    if masks and covers_whole_frame(masks):
        raise InvalidValueError(
            f"{key}: the masks hide the whole picture; leave some of it visible"
        )


def check_polygon(points: Sequence[Point], key: str) -> None:
    """Raise InvalidValueError (naming the key) unless `points` is a simple polygon."""
    problem = polygon_problem(points)
    if problem is not None:
        raise InvalidValueError(f"{key}: {problem}")


def polygon_problem(points: Sequence[Point]) -> str | None:
    """What is wrong with `points` as a mask's outline, in words, or None."""
    if len(points) < 3:
        return "a mask needs at least 3 corners"
    if len(points) > MAX_POINTS:
        return f"a mask has at most {MAX_POINTS} corners"
    for j, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return f"corner {j + 1} {[x, y]} is outside the picture (x and y run from 0 to 1)"
    crossing = self_intersection(points)
    if crossing is not None:
        a, b = crossing
        return (
            f"the outline crosses itself (edge {a + 1} meets edge {b + 1}); "
            "draw it without crossing lines"
        )
    if abs(polygon_area(points)) < MIN_AREA:
        return "the mask is too small or thin to hide anything"
    return None


def polygon_area(points: Sequence[Point]) -> float:
    """Signed area (shoelace), in units of the whole frame."""
    n = len(points)
    return 0.5 * sum(
        points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
        for i in range(n)
    )


def self_intersection(points: Sequence[Point]) -> tuple[int, int] | None:
    """The first two edges of the closed outline that meet where they should not (touch,
    cross or overlap), or None for a simple polygon. Exact arithmetic (Fractions of the
    floats), so a point on an edge is never rounded to either side. Written here because
    the check is a dozen lines and a geometry library would be a large dependency."""
    pts = [(Fraction(x), Fraction(y)) for x, y in points]
    n = len(pts)
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        a, b = edges[i]
        if a == b:
            return (i, i)  # a repeated point: a zero-length edge
        for j in range(i + 1, n):
            c, d = edges[j]
            adjacent = j == i + 1 or (i == 0 and j == n - 1)
            if adjacent:
                # Neighbours share one end; they fail only when they fold back on
                # each other (collinear and overlapping beyond that shared point).
                shared, other_i, other_j = (b, a, d) if j == i + 1 else (a, b, c)
                if _orient(shared, other_i, other_j) == 0 and _dot(shared, other_i, other_j) > 0:
                    return (i, j)
                continue
            if _segments_meet(a, b, c, d):
                return (i, j)
    return None


_P = tuple[Fraction, Fraction]


def _orient(p: _P, q: _P, r: _P) -> int:
    value = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    return (value > 0) - (value < 0)


def _dot(origin: _P, p: _P, q: _P) -> Fraction:
    return (p[0] - origin[0]) * (q[0] - origin[0]) + (p[1] - origin[1]) * (q[1] - origin[1])


def _on_segment(p: _P, q: _P, r: _P) -> bool:
    """r collinear with p-q lies within its bounding box."""
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def _segments_meet(a: _P, b: _P, c: _P, d: _P) -> bool:
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def covers_whole_frame(masks: Iterable[Mask], grid: int = COVER_GRID) -> bool:
    """Do the masks together hide every centre of a grid x grid sampling of the frame?"""
    import numpy as np  # here: config loading should not pay for numpy until masks exist

    centres = (np.arange(grid, dtype=np.float64) + 0.5) / grid
    xs, ys = np.meshgrid(centres, centres)
    hidden = np.zeros(xs.shape, dtype=bool)
    for mask in masks:
        hidden |= _inside(mask.points, xs, ys)
        if hidden.all():
            return True
    return False


def _inside(points: Sequence[Point], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for arrays of points (a ray to the right)."""
    import numpy as np  # see covers_whole_frame

    inside = np.zeros(xs.shape, dtype=bool)
    n = len(points)
    for i in range(n):
        (x1, y1), (x2, y2) = points[i], points[(i - 1) % n]
        if y1 == y2:
            continue
        spans = (y1 > ys) != (y2 > ys)
        cross_x = (x2 - x1) * (ys - y1) / (y2 - y1) + x1
        inside ^= spans & (xs < cross_x)
    return inside


class MaskRaster:
    """The masks rasterised for one picture size: a byte mask per 4:2:0 plane (luma at
    full size, chroma at half size covering every chroma sample that touches a masked
    luma pixel), cut to the masks' bounding box, with a fill of the mask colour beside
    each. Built once per mask set and size; `paint` is then three SIMD copies."""

    def __init__(self, masks: Sequence[Mask], width: int, height: int) -> None:
        import cv2  # here: OpenCV loads in ~0.3 s; only a recorder with masks pays for it
        import numpy as np

        if width % 2 or height % 2:
            raise InvalidValueError("masks need even picture dimensions (4:2:0 video)")
        self.width = width
        self.height = height
        self.masks = tuple(masks)
        luma = np.zeros((height, width), np.uint8)
        if self.masks:
            # Fixed point (8 fractional bits) keeps the polygon's exact outline; pixel
            # centres sit at integer coordinates, so 0 and 1 map half a pixel outside.
            scale = np.array([width, height], np.float64)
            polygons = [
                np.round((np.array(m.points, np.float64) * scale - 0.5) * 256).astype(np.int32)
                for m in self.masks
            ]
            cv2.fillPoly(luma, polygons, 255, lineType=cv2.LINE_8, shift=8)
            # OpenCV's edge walk rounds: grow the mask by a pixel so that no pixel whose
            # centre lies inside a polygon is ever left out (tests/recorder/test_masks.py).
            cv2.dilate(luma, np.ones((3, 3), np.uint8), dst=luma)
        chroma = luma.reshape(height // 2, 2, width // 2, 2).max(axis=(1, 3))
        self.luma = luma
        self.chroma = chroma
        self._planes = [
            _PlanePaint.of(luma, MASK_Y),
            _PlanePaint.of(chroma, MASK_U),
            _PlanePaint.of(chroma, MASK_V),
        ]

    @property
    def empty(self) -> bool:
        return self._planes[0].mask is None

    def paint(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        """Paint the masks into the three planes (2-D views, written in place)."""
        import cv2  # see __init__

        for plane, paint in zip((y, u, v), self._planes, strict=True):
            if paint.mask is not None and paint.fill is not None:
                top, bottom, left, right = paint.box
                cv2.copyTo(paint.fill, paint.mask, plane[top:bottom, left:right])


@dataclass(frozen=True, slots=True)
class _PlanePaint:
    box: tuple[int, int, int, int]  # top, bottom, left, right
    mask: np.ndarray | None
    fill: np.ndarray | None

    @classmethod
    def of(cls, full: np.ndarray, value: int) -> _PlanePaint:
        import numpy as np  # see MaskRaster

        rows = np.flatnonzero(full.any(axis=1))
        cols = np.flatnonzero(full.any(axis=0))
        if rows.size == 0:
            return cls((0, 0, 0, 0), None, None)
        top, bottom = int(rows[0]), int(rows[-1]) + 1
        left, right = int(cols[0]), int(cols[-1]) + 1
        mask = np.ascontiguousarray(full[top:bottom, left:right])
        return cls((top, bottom, left, right), mask, np.full(mask.shape, value, np.uint8))


def yuv420_planes(
    buffer: np.ndarray, width: int, height: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of a planar YUV420 (I420) buffer whose luma rows
    are `stride` bytes apart and chroma rows stride/2, as libcamera lays it out (and as
    picamera2's MappedArray hands it over: height*3/2 rows of `stride` bytes)."""
    flat = buffer.reshape(-1)
    luma_bytes = stride * height
    chroma_stride = stride // 2
    chroma_bytes = chroma_stride * (height // 2)
    y = flat[:luma_bytes].reshape(height, stride)[:, :width]
    u = flat[luma_bytes : luma_bytes + chroma_bytes].reshape(height // 2, chroma_stride)
    v = flat[luma_bytes + chroma_bytes : luma_bytes + 2 * chroma_bytes].reshape(
        height // 2, chroma_stride
    )
    return y, u[:, : width // 2], v[:, : width // 2]


def frame_planes(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable views of the Y, U and V planes of a PyAV yuv420p VideoFrame."""
    import numpy as np  # see MaskRaster

    views = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        views.append(rows[:, : plane.width])
    y, u, v = views
    return y, u, v


class MaskFeed:
    """The masks in force, shared between the thread that learns of a change (the
    recorder process's pipe reader) and the one that paints frames. `current` is one
    attribute read of an immutable pair (atomic under the GIL), so painting takes no
    lock; `set` bumps the version so a painter knows to rasterise again."""

    def __init__(self, masks: Sequence[Mask] = ()) -> None:
        self._lock = threading.Lock()
        self._state: tuple[int, tuple[Mask, ...]] = (0, tuple(masks))

    def set(self, masks: Sequence[Mask]) -> None:
        with self._lock:
            version, _old = self._state
            self._state = (version + 1, tuple(masks))

    def current(self) -> tuple[int, tuple[Mask, ...]]:
        return self._state


class MaskPainter:
    """Paints a feed's masks into frames of one size, rasterising again only when the
    feed's version moves. `paint` returns True on the first frame of a new mask set, so
    the recorder can start a segment there."""

    def __init__(self, feed: MaskFeed, width: int, height: int) -> None:
        self._feed = feed
        self._width = width
        self._height = height
        self._version = -1
        self._raster: MaskRaster | None = None

    def prepare(self) -> None:
        """Rasterise the set in force now (loading OpenCV), before frames arrive: the
        first frame then costs no more than the others (a camera thread must not stall)."""
        version, masks = self._feed.current()
        if version != self._version:
            self._raster = MaskRaster(masks, self._width, self._height) if masks else None
            self._version = version

    def paint(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> bool:
        version, masks = self._feed.current()
        changed = version != self._version
        if changed:
            first = self._version == -1
            self._raster = MaskRaster(masks, self._width, self._height) if masks else None
            self._version = version
            changed = not first
        if self._raster is not None:
            self._raster.paint(y, u, v)
        return changed
