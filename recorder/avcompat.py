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
"""

from __future__ import annotations

import ctypes
import os
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation.errors import RecorderError

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
    container: av.container.OutputContainer, *, width: int, height: int, time_base: Fraction
) -> Any:
    """A video stream that takes already-encoded H.264 access units (Annex-B) as they
    are, with no encoder behind it. The muxer takes the SPS/PPS from the first packet."""
    add_mux_stream = getattr(container, "add_mux_stream", None)
    if add_mux_stream is not None:  # PyAV 17: a stream without a codec context
        return add_mux_stream("h264", width=width, height=height, time_base=time_base)
    # Older PyAV opens an encoder for every output stream when the header is written,
    # so give it a cheap libx264 that never sees a frame, and no global header: the
    # muxer must not take the SPS/PPS from that encoder (they differ from the camera's)
    # but, as with add_mux_stream, from the first packet.
    stream: Any = container.add_stream("libx264", rate=None)
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
        return from_buffer(image, format="rgb24")  # type: ignore[no-any-return]
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def set_keyframe(packet: av.Packet, keyframe: bool) -> None:
    """Set a packet's key flag (the MP4 muxer writes its sync-sample table from it)."""
    try:
        packet.is_keyframe = keyframe
    except AttributeError:  # PyAV 10: the property has no setter
        flags = ctypes.c_int.from_address(_avpacket(packet) + _AVPACKET_FLAGS)
        flags.value = (flags.value | _AV_PKT_FLAG_KEY) if keyframe else (flags.value & ~1)
        if bool(packet.is_keyframe) != keyframe:
            raise RecorderError("cannot set a packet's key flag with this PyAV") from None


def set_duration(packet: av.Packet, duration: int) -> None:
    """Set a packet's duration (in its time base)."""
    try:
        packet.duration = duration
    except AttributeError:  # PyAV 10: the property has no setter
        ctypes.c_int64.from_address(_avpacket(packet) + _AVPACKET_DURATION).value = duration
        if packet.duration != duration:
            raise RecorderError("cannot set a packet's duration with this PyAV") from None


# FFmpeg's AVPacket starts {AVBufferRef *buf; int64_t pts, dts; uint8_t *data; int size;
# int stream_index; int flags; AVPacketSideData *side_data; int side_data_elems;
# int64_t duration; ...} in every FFmpeg PyAV 10 builds against (4.x to 6.x).
_AVPACKET_DATA, _AVPACKET_SIZE, _AVPACKET_FLAGS, _AVPACKET_DURATION = 24, 32, 40, 64
_AV_PKT_FLAG_KEY = 1
_ptr_offset: int | None = None  # where the AVPacket pointer sits in a Packet object


def _avpacket(packet: Any) -> int:
    """The address of a PyAV 10 packet's AVPacket, for the two setters PyAV 10 lacks
    (the camera's and the export's packets are made from bytes, so no one else sets
    them). The pointer is the word in the Python object that points at an AVPacket
    whose `data` and `size` are this packet's buffer. It is looked for once, reading
    through /proc/self/mem so that no wrong guess can fault, and checked every time;
    the callers then read the value back through PyAV's getter."""
    global _ptr_offset  # noqa: PLW0603 - found once per process, then fixed

    size = packet.size
    if size <= 0:
        raise RecorderError("cannot set the flags of an empty packet")
    data = np.frombuffer(packet, np.uint8).ctypes.data
    if _ptr_offset is not None:
        pointer = ctypes.c_void_p.from_address(id(packet) + _ptr_offset).value or 0
        if (
            ctypes.c_void_p.from_address(pointer + _AVPACKET_DATA).value == data
            and ctypes.c_int.from_address(pointer + _AVPACKET_SIZE).value == size
        ):
            return pointer
        raise RecorderError("this PyAV's packets are not laid out as expected")
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for offset in range(16, 80, 8):
            pointer = int.from_bytes(os.pread(fd, 8, id(packet) + offset), "little")
            if pointer < 4096 or pointer % 8:
                continue
            try:
                head = os.pread(fd, _AVPACKET_SIZE + 4, pointer)
            except OSError:
                continue  # not a mapped address: not the pointer
            if (
                len(head) == _AVPACKET_SIZE + 4
                and int.from_bytes(head[_AVPACKET_DATA : _AVPACKET_DATA + 8], "little") == data
                and int.from_bytes(head[_AVPACKET_SIZE:], "little") == size
            ):
                _ptr_offset = offset
                return pointer
    finally:
        os.close(fd)
    raise RecorderError("cannot find this PyAV's packet structure")
