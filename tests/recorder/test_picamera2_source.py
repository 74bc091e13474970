"""The Pi camera source against a fake picamera2 that behaves like one: it really
encodes H.264 (keyframe every `iperiod`, headers repeated) and reports sensor
timestamps rebased to the first frame, as picamera2's encoders do."""

import dataclasses
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

import recorder.picamera2_source as pisrc
from foundation.clock import FakeClock
from foundation.errors import RecorderError
from recorder.buffer import RollingBuffer
from recorder.masks import MaskFeed
from recorder.picamera2_source import Picamera2Api, Picamera2Camera
from recorder.recorder import Recorder
from recorder.settings import CameraSettings, StorageSettings
from recorder.synthetic import draw_frame
from tests.fixtures.footage import decode_stamps
from tests.fixtures.masked import THREE_MASKS, check_masked, decoded_frames, planes

START_MS = 1_800_000_000_000


class FakeOutput:
    def __init__(self, pts=None):
        self.recording = False

    def start(self):
        self.recording = True

    def stop(self):
        self.recording = False


class FakeEncoder:
    made: list = []

    def __init__(self, bitrate=None, repeat=False, iperiod=None, framerate=None):
        self.kwargs = {"bitrate": bitrate, "repeat": repeat, "iperiod": iperiod}
        self.firsttimestamp = None
        FakeEncoder.made.append(self)


class FakeLibavEncoder(FakeEncoder):
    pass


def av_planes(frame):
    """Writable (rows, width) views of a yuv420p VideoFrame's planes."""
    return [
        np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        for p in frame.planes
    ]


class FakeRequest:
    """A completed request whose main stream is libcamera's YUV420 layout: the Y rows,
    then the U rows and the V rows at half the stride, in one buffer with padding."""

    def __init__(self, frame, stride):
        width, height = frame.width, frame.height
        self.buffer = np.full(stride * height * 3 // 2, 77, np.uint8)
        self.stride = stride
        self.size = (width, height)
        for plane, (offset, rows, step) in zip(av_planes(frame), self._layout(), strict=True):
            grid = self.buffer[offset : offset + rows * step].reshape(rows, step)
            grid[:, : plane.shape[1]] = plane

    def _layout(self):
        width, height = self.size
        luma = self.stride * height
        chroma = self.stride // 2 * (height // 2)
        return [
            (0, height, self.stride),
            (luma, height // 2, self.stride // 2),
            (luma + chroma, height // 2, self.stride // 2),
        ]

    def to_frame(self):
        width, height = self.size
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, (offset, rows, step) in zip(av_planes(frame), self._layout(), strict=True):
            grid = self.buffer[offset : offset + rows * step].reshape(rows, step)
            plane[:] = grid[:, : plane.shape[1]]
        return frame


class FakeMappedArray:
    """picamera2.MappedArray: for YUV420, the buffer as height*3/2 rows of `stride`."""

    def __init__(self, request, stream, reshape=True, write=True):
        assert stream == "main"
        self.request = request

    def __enter__(self):
        width, height = self.request.size
        self.array = self.request.buffer.reshape(height * 3 // 2, self.request.stride)
        return self

    def __exit__(self, *exc):
        return None


class FakePicamera2:
    """Runs a capture thread on a FakeClock: each frame moves the clock 1/fps on. A
    `pre_callback`, when set, gets each frame as a padded YUV420 request before the
    encoder does, and what it leaves in the buffer is what gets encoded."""

    clock: FakeClock
    events: dict = {}
    pre_callback = None

    def __init__(self, camera_num=0):
        self.camera_num = camera_num
        self._stop = threading.Event()
        self._thread = None
        self.closed = False

    def create_video_configuration(self, main, controls):
        return {"main": main, "controls": controls}

    def configure(self, config):
        self.size = config["main"]["size"]
        self.fps = config["controls"]["FrameRate"]
        assert config["main"]["format"] == "YUV420"

    def start_recording(self, encoder, output):
        assert encoder.kwargs["repeat"] is True, "headers must be in-band"
        self._encoder, self._output = encoder, output
        output.start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        width, height = self.size
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        gop = self._encoder.kwargs["iperiod"]
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1",
        }
        clock, i = self.clock, 0
        while not self._stop.is_set() and i < 400:
            if i:
                clock.advance(1 / self.fps)
            if i in self.events:
                self.events[i](clock)
            sensor_us = round(clock.monotonic() * 1e6)
            if self._encoder.firsttimestamp is None:
                self._encoder.firsttimestamp = sensor_us
            image = draw_frame(clock.wall_ms(), width, height, i)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            if self.pre_callback is not None:
                request = FakeRequest(frame, stride=(width + 127) // 128 * 128)
                self.pre_callback(request)
                frame = request.to_frame()
            frame.pts = sensor_us - self._encoder.firsttimestamp
            for packet in ctx.encode(frame):
                self._output.outputframe(bytes(packet), packet.is_keyframe, packet.pts)
            i += 1
            # Ten times real time: fast, yet slow enough that a segment's start (which
            # opens an idle encoder on PyAV < 17) never overflows the recorder's queue.
            self._stop.wait(0.01)

    def stop_recording(self):
        self._stop.set()
        self._thread.join(10)
        self._output.stop()

    def close(self):
        self.closed = True


def fake_api(clock, *, hardware=True, events=None):
    FakePicamera2.clock = clock
    FakePicamera2.events = events or {}
    FakeEncoder.made = []
    return Picamera2Api(
        FakePicamera2, FakeEncoder, FakeLibavEncoder, FakeOutput, hardware, FakeMappedArray
    )


def record_pi(tmp_path, api, clock, seconds, masks=None):
    settings = CameraSettings(source="picamera2", device=0, width=320, height=240, fps=10)
    source = Picamera2Camera(
        settings=settings, clock=clock, api=api, queue_frames=1000, masks=masks
    )
    storage = StorageSettings(dir=tmp_path / "b", segment_seconds=2)
    with RollingBuffer.open(storage.dir) as buffer:
        summary = Recorder(
            source,
            buffer,
            storage=storage,
            clock=clock,
            free_space=lambda _p: 1 << 40,
            stop=threading.Event(),
            # room for a loaded machine's stalls: these tests are about times, not drops
            queue_frames=200,
        ).run(max_seconds=seconds)
        return summary, buffer.segments()


@pytest.mark.parametrize("hardware", [True, False])
def test_pi_camera_frames_are_segmented_with_sensor_times(tmp_path, hardware):
    clock = FakeClock(START_MS)
    api = fake_api(clock, hardware=hardware)
    summary, segments = record_pi(tmp_path, api, clock, seconds=7)
    (encoder,) = FakeEncoder.made
    assert isinstance(encoder, FakeLibavEncoder) is (not hardware)
    assert encoder.kwargs["iperiod"] == 10 and encoder.kwargs["repeat"]
    assert summary.frames == 70 and len(segments) == 4
    for seg in segments:
        stamps = decode_stamps(tmp_path / "b" / seg.file)
        # the time drawn by the "sensor" equals the time the index derived from it
        assert all(p == t - seg.start_ms for p, t in stamps)
        assert seg.synchronized
    assert segments[0].start_ms == START_MS


def test_pi_camera_clock_jump_lands_on_a_keyframe(tmp_path):
    clock = FakeClock(START_MS)
    api = fake_api(clock, events={25: lambda c: c.jump_wall(-60_000)})
    _summary, segments = record_pi(tmp_path, api, clock, seconds=6)
    after = [s for s in segments if s.start_ms < START_MS]
    before = [s for s in segments if s.start_ms >= START_MS]
    # both sides of the jump are uncertain; footage further away is not
    assert not after[0].synchronized and not before[-1].synchronized
    assert before[0].synchronized and after[-1].synchronized
    # the jump took effect at the first keyframe after it (frame 30)
    assert after[0].start_ms == START_MS + 3000 - 60_000
    for seg in segments:
        times = [p for p, _t in decode_stamps(tmp_path / "b" / seg.file)]
        assert times == sorted(set(times))


def test_wall_anchor_ignores_jitter_but_follows_jumps():
    clock = FakeClock(START_MS)
    anchor = pisrc.WallAnchor(clock)
    base = round(clock.monotonic() * 1e6)
    assert anchor.capture_ms(base, True) == START_MS
    clock.jump_wall(200)  # within tolerance: ignored
    assert anchor.capture_ms(base + 100_000, True) == START_MS + 100
    clock.jump_wall(5000)
    assert anchor.capture_ms(base + 200_000, False) == START_MS + 200  # only at keyframes
    assert anchor.capture_ms(base + 300_000, True) == START_MS + 5200 + 300


def test_missing_picamera2_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_picamera2(name, *args, **kwargs):
        if name.startswith("picamera2"):
            raise ImportError("No module named 'picamera2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_picamera2)
    with pytest.raises(RecorderError, match="python3-picamera2"):
        pisrc.load_picamera2()


def decoded_pictures(root):
    """{capture time drawn in the picture: yuv420p picture} of every recorded frame."""
    return {t: picture for _seg, t, picture in decoded_frames(root)}


def test_masks_are_painted_on_the_main_stream_before_the_encoder(tmp_path):
    """Three masks painted in pre_callback on the camera's own padded YUV420 buffer:
    every decoded frame is black inside them and the same as an unmasked recording of
    the same scene outside; the owner's change of masks reaches the frames after it."""
    clock = FakeClock(START_MS)
    record_pi(tmp_path / "plain", fake_api(clock), clock, seconds=4)
    plain = decoded_pictures(tmp_path / "plain" / "b")

    clock = FakeClock(START_MS)
    feed = MaskFeed(THREE_MASKS[:2])
    events = {25: lambda _c: feed.set(THREE_MASKS)}
    record_pi(tmp_path / "masked", fake_api(clock, events=events), clock, 4, masks=feed)
    masked = decoded_pictures(tmp_path / "masked" / "b")
    assert len(masked) == len(plain) == 40
    change = START_MS + 2500  # frame 25 at 10 fps
    for t, picture in masked.items():
        check_masked(picture, plain[t], THREE_MASKS if t >= change else THREE_MASKS[:2])
    with pytest.raises(AssertionError):
        check_masked(masked[change - 100], plain[change - 100], THREE_MASKS)


def test_a_buffer_that_cannot_be_painted_is_blacked_out_not_recorded(tmp_path):
    class OddMappedArray(FakeMappedArray):
        def __enter__(self):  # a main stream in a layout the painter does not know
            super().__enter__()
            self.array = self.request.buffer.reshape(-1, self.request.stride // 2)
            return self

    clock = FakeClock(START_MS)
    api = fake_api(clock)
    api = Picamera2Api(*[*dataclasses.astuple(api)[:5], OddMappedArray])
    record_pi(tmp_path, api, clock, seconds=1, masks=MaskFeed(THREE_MASKS))
    with RollingBuffer.open(tmp_path / "b", reconcile=False) as buffer:
        (segment,) = buffer.segments()
    with av.open(str(tmp_path / "b" / segment.file)) as container:
        lumas = [planes(f.to_ndarray(format="yuv420p"))[0] for f in container.decode(video=0)]
    assert len(lumas) == 10 and all(int(np.abs(y.astype(int) - 16).max()) <= 6 for y in lumas)
