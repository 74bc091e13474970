"""The protocol.md §8 stamp: drawn exactly, read back through real H.264 compression."""

from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import StampError
from foundation.wire import STAMP_BLOCK as BLOCK
from foundation.wire import read_capture_ms, stamp_cells
from recorder.encoding import open_x264
from recorder.synthetic import draw_frame

stamps = st.integers(min_value=0, max_value=(1 << 48) - 1)
sizes = st.sampled_from([(320, 240), (256, 48), (64, 192), (1280, 720), (336, 64)])


@given(stamps, sizes, st.integers(min_value=0, max_value=10_000))
@settings(max_examples=60, deadline=None)
def test_stamp_round_trips_on_raw_frames(ms, size, index):
    width, height = size
    frame = draw_frame(ms, width, height, index)
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    assert read_capture_ms(frame) == ms
    assert read_capture_ms(frame[:, :, 1]) == ms  # gray input works too


def test_stamp_layout_is_msb_first_left_to_right_wrapping():
    ms = 1 << 47 | 1  # first and last bit set
    frame = draw_frame(ms, 320, 240, 0)
    cells = stamp_cells(320)
    assert cells[0] == (0, 0) and cells[1] == (0, BLOCK) and cells[20] == (BLOCK, 0)
    y, x = cells[0]
    assert (frame[y : y + BLOCK, x : x + BLOCK] == 255).all()
    y, x = cells[1]
    assert (frame[y : y + BLOCK, x : x + BLOCK] == 0).all()
    y, x = cells[47]
    assert (frame[y : y + BLOCK, x : x + BLOCK] == 255).all()


def test_content_moves_between_frames():
    a = draw_frame(0, 320, 240, 1).astype(int)
    b = draw_frame(0, 320, 240, 2).astype(int)
    assert np.abs(a - b)[64:].mean() > 5


@pytest.mark.parametrize("bad", [-1, 1 << 48])
def test_out_of_range_stamp_refused(bad):
    with pytest.raises(StampError):
        draw_frame(bad, 320, 240, 0)


def test_too_small_frame_refused():
    with pytest.raises(StampError):
        draw_frame(0, 64, 32, 0)
    with pytest.raises(StampError):
        read_capture_ms(np.zeros((32, 64), np.uint8))


def test_stamp_survives_lossy_h264():
    rng = np.random.default_rng(7)
    times = [int(t) for t in rng.integers(1_600_000_000_000, 1 << 47, size=20)]
    encoder = open_x264(width=320, height=240, fps=15, preset="ultrafast")
    encoder.options = {**encoder.options}
    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for i, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(draw_frame(t, 320, 240, i), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i * 67
        frame.time_base = Fraction(1, 1000)
        for packet in encoder.encode(frame):
            decoded.extend(decoder.decode(packet))
    for packet in encoder.encode(None):
        decoded.extend(decoder.decode(packet))
    decoded.extend(decoder.decode(None))
    assert [read_capture_ms(f.to_ndarray(format="rgb24")) for f in decoded] == times
