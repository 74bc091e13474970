"""Privacy masks: the polygon checks (hypothesis), the rasteriser's promise that no
pixel inside a polygon escapes, and the proof on real H.264: every frame of a recording
made with three masks, decoded, is the mask colour inside each polygon and matches an
unmasked recording of the same synthetic scene outside; a change of masks starts a
segment and holds from its first frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from foundation.errors import InvalidValueError
from recorder.buffer import RollingBuffer
from recorder.masks import (
    MASK_Y,
    Mask,
    MaskFeed,
    MaskRaster,
    _inside,
    parse_masks,
    self_intersection,
    yuv420_planes,
)
from recorder.synthetic import SyntheticCamera
from tests.fixtures.footage import record_fast
from tests.fixtures.masked import THREE_MASKS, check_masked, decoded_frames, planes

coords = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def as_config(masks: tuple[Mask, ...]) -> list[dict]:
    return [m.to_json() for m in masks]


@st.composite
def convex_polygons(draw: st.DrawFn) -> list[list[float]]:
    """A convex polygon: points on an ellipse inside the frame, in angle order."""
    cx = draw(st.floats(0.2, 0.8))
    cy = draw(st.floats(0.2, 0.8))
    rx = draw(st.floats(0.05, min(cx, 1 - cx)))
    ry = draw(st.floats(0.05, min(cy, 1 - cy)))
    angles = sorted(draw(st.sets(st.integers(0, 359), min_size=3, max_size=24)))
    assume(max(np.diff(angles + [angles[0] + 360])) < 180)  # the centre lies inside
    return [
        [cx + rx * float(np.cos(np.radians(a))), cy + ry * float(np.sin(np.radians(a)))]
        for a in angles
    ]


# ---- validation ------------------------------------------------------------------------


@given(convex_polygons())
@settings(max_examples=150, deadline=None)
def test_any_convex_polygon_inside_the_frame_is_accepted(points):
    (mask,) = parse_masks([{"name": "m", "points": points}])
    assert len(mask.points) == len(points)


@given(convex_polygons(), st.data())
@settings(max_examples=100, deadline=None)
def test_a_point_outside_the_picture_names_its_key(points, data):
    j = data.draw(st.integers(0, len(points) - 1))
    axis = data.draw(st.integers(0, 1))
    points[j][axis] = data.draw(
        st.one_of(
            st.floats(max_value=-1e-9, allow_nan=False),
            st.floats(min_value=1.0 + 1e-9, allow_nan=False),
            st.just(float("nan")),
        )
    )
    words = rf"camera\.masks\[1\]\.points: corner {j + 1} .* is outside the picture"
    with pytest.raises(InvalidValueError, match=words):
        parse_masks([{"name": "ok", "points": [[0, 0], [0.1, 0], [0, 0.1]]}, {"points": points}])


@given(st.lists(st.tuples(coords, coords), max_size=2))
def test_fewer_than_three_points_names_its_key(points):
    with pytest.raises(InvalidValueError, match=r"masks\[0\]\.points: .*at least 3 corners"):
        parse_masks([{"name": "m", "points": [list(p) for p in points]}])


@given(st.floats(0.0, 0.45), st.floats(0.55, 1.0), st.floats(0.0, 0.45), st.floats(0.55, 1.0))
def test_a_bow_tie_crosses_itself(x0, x1, y0, y1):
    bow_tie = [[x0, y0], [x1, y1], [x1, y0], [x0, y1]]
    with pytest.raises(InvalidValueError, match=r"camera\.masks\[0\]\.points: .*crosses itself"):
        parse_masks([{"name": "m", "points": bow_tie}])


@given(convex_polygons(), st.data())
@settings(max_examples=100, deadline=None)
def test_swapping_two_neighbouring_corners_makes_the_outline_cross(points, data):
    """A convex polygon is simple; with two neighbouring corners swapped (four corners
    or more), the edges into and out of the pair cross."""
    n = len(points)
    assume(n >= 4)
    assert self_intersection([tuple(p) for p in points]) is None
    i = data.draw(st.integers(0, n - 1))
    points[i], points[(i + 1) % n] = points[(i + 1) % n], points[i]
    assert self_intersection([tuple(p) for p in points]) is not None
    with pytest.raises(InvalidValueError, match=r"crosses itself"):
        parse_masks([{"name": "m", "points": points}])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([{"points": [[0, 0], [1, 0], [1, 1], [0, 1]]}], r"camera\.masks: .*whole picture"),
        (
            [
                {"name": "a", "points": [[0, 0], [1, 0], [0, 1]]},
                {"name": "b", "points": [[1, 0], [1, 1], [0, 1]]},
            ],
            r"camera\.masks: .*whole picture",
        ),
        ([{"points": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}], r"points: .*crosses itself"),
        ([{"points": [[0.1, 0.1], [0.2, 0.1], [0.15, 0.1001]]}], r"points: .*too small"),
        ([{"points": [[0.1, 0.1], [0.1, 0.1], [0.3, 0.3]]}], r"points: .*crosses itself"),
        ([{"points": [[0.1, 0.1], [0.5, 0.1], [0.3, 0.1], [0.3, 0.5]]}], r"crosses itself"),
        ([{"points": [[0, 0], [1, 0], [True, 1]]}], r"points: corner 3: expected \[x, y\]"),
        ([{"points": [[0, 0], [1, 0], "0,1"]}], r"points: corner 3: expected \[x, y\]"),
        ([{"points": [[0, 0], [0.5, 0], [0, 0.5]], "colour": 1}], r"masks\[0\]\.colour"),
        ([{"name": "", "points": [[0, 0], [0.5, 0], [0, 0.5]]}], r"masks\[0\]\.name"),
        ([{"name": "a\nb", "points": [[0, 0], [0.5, 0], [0, 0.5]]}], r"masks\[0\]\.name"),
        (
            [{"name": "a", "points": [[0, 0], [0.5, 0], [0, 0.5]]}] * 2,
            r"masks\[1\]\.name: 'a' is used twice",
        ),
        ([{"points": [[0, 0], [0.01, 0]] * 40}], r"at most 64 corners"),
        ({"points": []}, r"camera\.masks: expected a list"),
        ([[0, 0]], r"masks\[0\]: expected a mapping"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(InvalidValueError, match=message):
        parse_masks(data)


def test_too_many_masks_are_refused():
    one = {"points": [[0, 0], [0.01, 0], [0, 0.01]]}
    with pytest.raises(InvalidValueError, match=r"at most 32 masks"):
        parse_masks([dict(one, name=str(i)) for i in range(33)])


# ---- rasterising ------------------------------------------------------------------------


@given(convex_polygons(), st.sampled_from([(320, 240), (64, 48), (1920, 1080), (250, 62)]))
@settings(max_examples=60, deadline=None)
def test_no_pixel_centre_inside_a_polygon_escapes_the_mask(points, size):
    width, height = size
    mask = Mask("m", tuple((x, y) for x, y in points))
    raster = MaskRaster((mask,), width, height)
    xs, ys = np.meshgrid((np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height)
    inside = _inside(mask.points, xs, ys)
    assert not (inside & (raster.luma == 0)).any(), "a pixel inside the polygon is not masked"
    # Chroma covers every chroma sample any masked luma pixel shares.
    pooled = raster.luma.reshape(height // 2, 2, width // 2, 2).max(axis=(1, 3))
    assert (raster.chroma >= pooled).all()


def test_painting_a_padded_yuv420_buffer_touches_only_the_masked_picture():
    width, height, stride = 320, 240, 384
    buffer = np.full((height * 3 // 2, stride), 200, np.uint8)
    y, u, v = yuv420_planes(buffer, width, height, stride)
    MaskRaster(THREE_MASKS, width, height).paint(y, u, v)
    raster = MaskRaster(THREE_MASKS, width, height)
    assert (y[raster.luma > 0] == MASK_Y).all() and (y[raster.luma == 0] == 200).all()
    assert (u[raster.chroma > 0] == 128).all() and (v[raster.chroma == 0] == 200).all()
    flat = buffer.reshape(-1)
    padding = np.ones(flat.shape, bool)
    for plane in (y, u, v):
        for row in range(plane.shape[0]):
            start = plane[row].__array_interface__["data"][0] - flat.__array_interface__["data"][0]
            padding[start : start + plane.shape[1]] = False
    assert (flat[padding] == 200).all(), "painting wrote into the stride padding"


# ---- the proof on real H.264 ------------------------------------------------------------


def record(root: Path, masks: MaskFeed | None, **kwargs) -> None:
    record_fast(root, seconds=6.0, segment_seconds=2.0, masks=masks, **kwargs)


@pytest.fixture(scope="module")
def plain_recording(tmp_path_factory: pytest.TempPathFactory) -> dict[int, np.ndarray]:
    root = tmp_path_factory.mktemp("plain")
    record(root, None)
    return {t: picture for _seg, t, picture in decoded_frames(root)}


def test_every_frame_of_a_masked_recording_is_masked_and_the_rest_untouched(
    tmp_path, plain_recording
):
    record(tmp_path, MaskFeed(THREE_MASKS))
    frames = decoded_frames(tmp_path)
    assert len(frames) == len(plain_recording) == 90
    for _seg, t, picture in frames:
        check_masked(picture, plain_recording[t])


def test_new_masks_start_a_segment_and_hold_from_its_first_frame(tmp_path, plain_recording):
    feed = MaskFeed(THREE_MASKS[:1])
    changed_at: list[int] = []

    class Camera(SyntheticCamera):
        def read(self, stop):  # the owner saves new masks while frame 40 is captured
            frame = super().read(stop)
            if frame is not None and self._index == 40:
                feed.set(THREE_MASKS)
                changed_at.append(frame.capture_ms)
            return frame

    record(tmp_path, feed, camera=Camera)
    with RollingBuffer.open(tmp_path, reconcile=False) as buffer:
        segments = buffer.segments()
    frames = decoded_frames(tmp_path)
    assert len(frames) == 90
    (moment,) = changed_at

    def fully_masked(t: int, picture: np.ndarray) -> bool:
        try:
            check_masked(picture, plain_recording[t], THREE_MASKS)
        except AssertionError:
            return False
        return True

    first = min(t for _s, t, picture in frames if fully_masked(t, picture))
    # The recorder took the new masks with the frame it encoded next (the camera runs a
    # few frames ahead of it), and a segment starts exactly there.
    assert first <= moment and first in [s.start_ms for s in segments]
    for _seg, t, picture in frames:
        if t >= first:
            check_masked(picture, plain_recording[t], THREE_MASKS)
        else:
            check_masked(picture, plain_recording[t], THREE_MASKS[:1])
            assert not fully_masked(t, picture)


def test_removing_every_mask_records_the_plain_picture(tmp_path, plain_recording):
    feed = MaskFeed(THREE_MASKS)
    feed.set(())
    record(tmp_path, feed)
    for _seg, t, picture in decoded_frames(tmp_path):
        assert (
            np.abs(
                planes(picture)[0].astype(int) - planes(plain_recording[t])[0].astype(int)
            ).mean()
            < 1.0
        )
