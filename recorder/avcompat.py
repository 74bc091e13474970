"""The PyAV calls whose spelling differs between the releases the daemon runs on.

A Raspberry Pi runs the distribution's PyAV and numpy (picamera2 is built against them,
see systemd/venv.sh), so the recorder meets PyAV 10.0 (Debian 12 "bookworm"), 14.2
(Debian 13 "trixie") and whatever PyPI serves on a development machine. Every call that
is not the same across that range goes through this module, which takes the newest
(fastest) spelling where it exists and the older one otherwise; the rest of the code
calls PyAV directly. The suite runs against each of these versions (tests/distro).

    call                      PyAV >= 17             12 - 16                  10 - 11
    H.264 stream to mux into  add_mux_stream         add_stream + closed flag  same
    stream copying a template add_stream_from_...    same (14-16: opaque)      add_stream(template=)
    RGB array -> VideoFrame   from_numpy_buffer      same                      from_ndarray
    mark a packet key         is_keyframe = ...      same                      (10: read-only)
    packet duration           duration = ...         12.1+ (12.0: muxer's)    the muxer's
    key packet from bytes     is_keyframe = ...      same                     (10: H.264 parser)
"""

from __future__ import annotations

import functools
import io
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from foundation.errors import RecorderError
from recorder.encoding import MS

if TYPE_CHECKING:
    import av
    import numpy as np

# The oldest PyAV the suite runs against (Debian 12's python3-av); setup.cfg says the same.
OLDEST_AV = (10, 0)


def av_version(text: str | None = None) -> tuple[int, int]:
    """PyAV's (major, minor), from `text` or the installed `av.__version__`."""
    if text is None:
        import av  # PyAV is heavy to load: only code that codes frames pays for it

        text = av.__version__
    match = re.match(r"(\d+)\.(\d+)", text)
    if match is None:
        raise RecorderError(f"cannot read the PyAV version {text!r}")
    return int(match.group(1)), int(match.group(2))


def require_supported_av() -> None:
    """A clear error when the installed PyAV is older than any the suite has run."""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    if av_version() < OLDEST_AV:
        oldest = ".".join(map(str, OLDEST_AV))
        raise RecorderError(
            f"PyAV {av.__version__} (from {av.__file__}) is too old: this program needs "
            f"PyAV {oldest} or newer"
        )


def add_h264_mux_stream(
    container: av.container.OutputContainer,
    *,
    width: int,
    height: int,
    time_base: Fraction,
    fps: float,
) -> Any:
    """A video stream that takes already-encoded H.264 access units (Annex-B) as they
    are, with no encoder behind it. The muxer takes the SPS/PPS from the first packet.
    Where PyAV cannot set a packet's duration (< 12.1), the muxer gives a packet without
    one the frame time of `fps`: the last sample's duration, as set_timing would."""
    add_mux_stream = getattr(container, "add_mux_stream", None)
    if add_mux_stream is not None:  # PyAV 17: a stream without a codec context
        return add_mux_stream("h264", width=width, height=height, time_base=time_base)
    # Older PyAV opens an encoder for every output stream when the header is written,
    # so give it a cheap libx264 that never sees a frame, and no global header: the
    # muxer must not take the SPS/PPS from that encoder (they differ from the camera's)
    # but, as with add_mux_stream, from the first packet.
    stream: Any = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    ctx = stream.codec_context
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = time_base
    ctx.options = {"preset": "ultrafast", "threads": "1"}
    _clear_global_header(ctx)
    stream.time_base = time_base
    return stream


def _clear_global_header(ctx: Any) -> None:
    if hasattr(ctx, "global_header"):  # PyAV <= 13: one boolean property per flag
        ctx.global_header = False
        return
    from av.codec.context import Flags  # PyAV 14+ only (older ones have no Flags)

    ctx.flags = int(ctx.flags) & ~int(Flags.global_header)


def add_stream_from_template(
    container: av.container.OutputContainer, template: Any, *, time_base: Fraction
) -> Any:
    """A stream with the template stream's codec parameters, for remuxing its packets
    with pts in `time_base`.

    PyAV 17 opens no codec for such a stream. PyAV 10 to 16 open every output stream's
    codec when the header is written, and with an encoder (14's default for video)
    libx264 would replace the template's SPS/PPS with its own: so these get the
    template's decoder (`opaque=True`), whose time base cannot be set; the MP4 muxer's
    track timescale (the caller's `video_track_timescale`) then decides it."""
    if av_version() >= (17, 0):
        stream: Any = container.add_stream_from_template(template)
        stream.time_base = time_base
        return stream
    from_template = getattr(container, "add_stream_from_template", None)
    if from_template is not None:  # PyAV 14
        return from_template(template, opaque=True)
    legacy: Any = container  # PyAV 10's add_stream(template=...), gone from the stubs
    return legacy.add_stream(template=template)


def frame_from_rgb(image: np.ndarray) -> av.VideoFrame:
    """An rgb24 VideoFrame over a C-contiguous (height, width, 3) uint8 array.

    PyAV 12 wraps the array without copying it (from_numpy_buffer), which saves about
    as much time as the colour conversion that follows; older PyAV copies it. Either
    way the caller must keep the array alive while the frame is used."""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    from_buffer = getattr(av.VideoFrame, "from_numpy_buffer", None)
    if from_buffer is not None:
        return from_buffer(image, format="rgb24")
    return av.VideoFrame.from_ndarray(image, format="rgb24")


@functools.cache
def can_set_keyframe() -> bool:
    """Whether this PyAV can set a packet's key flag (11 and newer)."""
    return av_version() >= (11, 0)


def set_keyframe(packet: av.Packet, keyframe: bool) -> None:
    """Set a packet's key flag (the MP4 muxer writes its sync-sample table from it).

    PyAV 11 made `Packet.is_keyframe` settable. PyAV 10 can only read it: a packet from
    its encoder or demuxer already carries FFmpeg's flag, which is accepted when it is
    the one wanted; anything else is refused with a clear error rather than reaching
    into FFmpeg's structures behind PyAV's back."""
    try:
        packet.is_keyframe = keyframe
    except AttributeError:  # PyAV 10: the property has no setter
        if bool(packet.is_keyframe) != keyframe:
            raise RecorderError(
                f"PyAV {_installed()} cannot mark a packet as a "
                f"{'keyframe' if keyframe else 'non-keyframe'}: this needs PyAV 11 or newer"
            ) from None


def set_timing(packet: av.Packet, *, pts_ms: int, duration_ms: int) -> None:
    """Give a packet (no B-frames: dts == pts) its time and duration in milliseconds.

    PyAV 12.1 made `Packet.duration` settable. Older PyAV keeps the duration the
    packet's encoder or demuxer gave it, in the packet's own time base, so the time is
    written in that time base too; a packet without one is put in milliseconds and the
    MP4 muxer gives it the stream's frame time (add_h264_mux_stream). Only a track's
    last sample takes its duration from the packet: the others' come from the next
    sample's time, which is always exact."""
    time_base = MS
    try:
        packet.duration = duration_ms
    except AttributeError:  # PyAV < 12.1: the property has no setter
        time_base = packet.time_base or MS
    ticks = Fraction(pts_ms, 1000) / time_base
    if ticks.denominator != 1:
        raise RecorderError(f"a packet's time base {time_base} cannot hold {pts_ms} ms")
    packet.time_base = time_base
    packet.pts = packet.dts = int(ticks)


def packet_from_access_unit(data: bytes, *, keyframe: bool, fps: float) -> av.Packet:
    """A packet holding one H.264 access unit (Annex-B bytes), marked key or not.

    PyAV 10 cannot mark a packet made from bytes, so there FFmpeg's raw H.264 demuxer
    reads the unit and its parser marks it (an IDR picture is key), which must agree
    with `keyframe`; its duration is then the frame time of `fps` (set_timing)."""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    if can_set_keyframe():
        packet = av.Packet(data)
        packet.is_keyframe = keyframe
        return packet
    rate = str(Fraction(fps).limit_denominator(1001))
    with av.open(io.BytesIO(data), "r", format="h264", options={"framerate": rate}) as raw:
        packets = [p for p in raw.demux(video=0) if p.size]
    if len(packets) != 1 or packets[0].size != len(data):
        raise RecorderError("an H.264 access unit did not parse as one picture")
    if bool(packets[0].is_keyframe) != keyframe:
        raise RecorderError(
            f"an access unit said to be a {'keyframe' if keyframe else 'non-keyframe'} "
            "parses as the other"
        )
    return packets[0]


def _installed() -> str:
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    return str(av.__version__)
