"""H.264 encoder options and bitstream plumbing shared by the recorder and the export.

Recording and re-encoding an export's head use one option set (`x264_options`) so that
their SPS/PPS come out byte-identical and a plain `avc1` MP4 stays conformant.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

from foundation.errors import InvalidValueError

if TYPE_CHECKING:
    import av.video.codeccontext

MS = Fraction(1, 1000)


def keyframe_interval(fps: float) -> int:
    """Frames per GOP: one second of video, so a keyframe is never more than 1 s away."""
    return max(1, round(fps))


def x264_options(*, fps: float, preset: str) -> dict[str, str]:
    """libx264 options: no B-frames (dts == pts), a fixed keyframe interval of one second
    (`keyint=min-keyint`, no scene cuts), SPS/PPS repeated on every keyframe so each
    segment plays alone, and no lookahead so a frame leaves the encoder at once."""
    keyint = keyframe_interval(fps)
    params = f"bframes=0:keyint={keyint}:min-keyint={keyint}:scenecut=0:repeat-headers=1"
    return {"preset": preset, "tune": "zerolatency", "x264-params": params}


def open_x264(
    *, width: int, height: int, fps: float, preset: str, threads: int = 0
) -> av.video.codeccontext.VideoCodecContext:
    """An opened libx264 encoder taking yuv420p frames with pts in milliseconds."""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, av.video.codeccontext.VideoCodecContext)
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = MS
    encoder.framerate = Fraction(fps).limit_denominator(1001)
    encoder.options = x264_options(fps=fps, preset=preset)
    encoder.thread_count = threads
    encoder.open()
    return encoder


def annexb_to_avcc(data: bytes) -> bytes:
    """Annex-B (start codes) to MP4 sample form (4-byte big-endian NAL lengths).

    x264 emits Annex-B; an MP4 whose extradata is avcC expects length prefixes, and the
    muxer does not convert when given avcC extradata, so the export converts itself."""
    units = _split_annexb(data)
    out = bytearray()
    for unit in units:
        out += len(unit).to_bytes(4, "big")
        out += unit
    return bytes(out)


def _split_annexb(data: bytes) -> list[bytes]:
    units: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    if i < 0:
        raise InvalidValueError("not an Annex-B H.264 access unit")
    start = i + 3
    while True:
        j = data.find(b"\x00\x00\x01", start)
        if j < 0:
            units.append(data[start:])
            break
        end = j - 1 if data[j - 1] == 0 else j  # a 4-byte start code owns its leading zero
        units.append(data[start:end])
        start = j + 3
    return [u for u in units if u]


def avcc_is_keyframe(data: bytes) -> bool:
    """True when a length-prefixed access unit holds an IDR slice."""
    i = 0
    n = len(data)
    while i + 4 < n:
        size = int.from_bytes(data[i : i + 4], "big")
        if data[i + 4] & 0x1F == 5:
            return True
        i += 4 + size
    return False
