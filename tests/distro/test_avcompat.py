"""The PyAV compatibility layer, on whatever PyAV this runs with: the newest from PyPI
in the ordinary suite, Debian's python3-av in the distro trees (tests/distro/run.sh)."""

from fractions import Fraction

import av
import numpy as np
import pytest

from foundation.errors import RecorderError
from recorder import avcompat
from recorder.encoding import MS, open_x264


def _encoded(n: int) -> list[tuple[av.Packet, bool]]:
    """The encoder's own packets (they carry FFmpeg's key flag, even on PyAV 10)."""
    encoder = open_x264(width=64, height=48, fps=10, preset="ultrafast")
    out = []
    for i in range(n):
        image = np.full((48, 64, 3), 10 * i, np.uint8)
        frame = avcompat.frame_from_rgb(image).reformat(format="yuv420p")
        frame.pts = i * 100
        out += [(p, bool(p.is_keyframe)) for p in encoder.encode(frame)]
    out += [(p, bool(p.is_keyframe)) for p in encoder.encode(None)]
    return out


def test_version_parsing_and_floor():
    assert avcompat.av_version("10.0.0") == (10, 0)
    assert avcompat.av_version("14.2.0.post1") == (14, 2)
    with pytest.raises(RecorderError):
        avcompat.av_version("dev")
    avcompat.require_supported_av()  # the PyAV this runs with is supported


@pytest.mark.parametrize("keyframe", [True, False])
def test_packets_made_from_bytes_take_key_flag_and_timing(keyframe):
    packet = av.Packet(b"\x00\x00\x00\x01\x65" + bytes(40))
    if avcompat.av_version() < (11, 0):  # read-only flag: refused with a clear error
        if keyframe:
            with pytest.raises(RecorderError, match="needs PyAV 11"):
                avcompat.set_keyframe(packet, keyframe)
        else:
            avcompat.set_keyframe(packet, keyframe)  # already what is wanted
        assert not packet.is_keyframe
        return
    avcompat.set_keyframe(packet, keyframe)
    avcompat.set_timing(packet, pts_ms=500, duration_ms=67)
    assert bool(packet.is_keyframe) is keyframe
    assert (packet.pts, packet.dts, packet.time_base) == (500, 500, MS)
    assert packet.duration == (67 if avcompat.av_version() >= (12, 1) else 0)
    avcompat.set_keyframe(packet, not keyframe)
    assert bool(packet.is_keyframe) is (not keyframe)


def test_access_units_from_bytes_are_marked_on_every_pyav():
    units = _encoded(12)
    packets = [avcompat.packet_from_access_unit(bytes(p), keyframe=key, fps=10) for p, key in units]
    assert [bool(p.is_keyframe) for p in packets] == [key for _p, key in units]
    assert [bytes(p) for p in packets] == [bytes(p) for p, _key in units]
    if avcompat.av_version() < (11, 0):  # the parser's word against the caller's
        with pytest.raises(RecorderError, match="parses as the other"):
            avcompat.packet_from_access_unit(bytes(units[1][0]), keyframe=True, fps=10)


@pytest.mark.parametrize("from_bytes", [False, True])
def test_mux_stream_takes_parameter_sets_from_the_first_packet(tmp_path, from_bytes):
    units = _encoded(12)
    if from_bytes:  # as a camera's hardware encoder hands them over
        units = [
            (avcompat.packet_from_access_unit(bytes(p), keyframe=key, fps=10), key)
            for p, key in units
        ]
    path = tmp_path / "s.mp4"
    container = av.open(str(path), "w", format="mp4", options={"video_track_timescale": "1000"})
    stream = avcompat.add_h264_mux_stream(container, width=64, height=48, time_base=MS, fps=10)
    for i, (packet, key) in enumerate(units):
        avcompat.set_keyframe(packet, key)
        avcompat.set_timing(packet, pts_ms=i * 100, duration_ms=100)
        packet.stream = stream
        container.mux(packet)
    container.close()
    with av.open(str(path)) as result:
        video = result.streams.video[0]
        extradata = bytes(video.codec_context.extradata or b"")
        packets = [p for p in result.demux(video) if p.size]
        assert (video.codec_context.width, video.codec_context.height) == (64, 48)
        # avcC built from the camera's own SPS (in the first access unit), not an encoder's
        sps = bytes(units[0][0]).split(b"\x00\x00\x01")[1].rstrip(b"\x00")
        assert extradata[0] == 1 and sps[:8] in extradata
        assert [bool(p.is_keyframe) for p in packets] == [k for _d, k in units]
        assert [p.pts * p.time_base * 1000 for p in packets] == [i * 100 for i in range(12)]
    with av.open(str(path)) as result:
        assert len(list(result.decode(video=0))) == 12


def test_template_stream_copies_the_template_parameter_sets(tmp_path):
    test_mux_stream_takes_parameter_sets_from_the_first_packet(tmp_path, from_bytes=False)
    source = tmp_path / "s.mp4"
    with av.open(str(source)) as src:
        template = src.streams.video[0]
        out = av.open(
            str(tmp_path / "c.mp4"), "w", format="mp4", options={"video_track_timescale": "1000"}
        )
        stream = avcompat.add_stream_from_template(out, template, time_base=Fraction(1, 1000))
        for packet in src.demux(template):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
        out.close()
        original = bytes(template.codec_context.extradata)
    with av.open(str(tmp_path / "c.mp4")) as copy:
        assert bytes(copy.streams.video[0].codec_context.extradata) == original
        assert len(list(copy.decode(video=0))) == 12


def test_frame_from_rgb_keeps_the_picture():
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    frame = avcompat.frame_from_rgb(np.ascontiguousarray(image))
    assert (frame.width, frame.height, frame.format.name) == (64, 48, "rgb24")
    assert np.array_equal(frame.to_ndarray(), image)
