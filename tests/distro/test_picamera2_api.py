"""Our use of picamera2 against the real picamera2 and libcamera bindings, without a
camera. Runs where picamera2 imports (the trixie tree of tests/distro/run.sh: PyPI's
picamera2 over Debian's python3-libcamera); the behaviour tests use a fake
(tests/recorder/test_picamera2_source.py)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Debian has no kms++ binding, which picamera2's display preview imports: a stand-in.
STUBS = Path(__file__).parent / "stubs"
sys.path.append(str(STUBS))
picamera2 = pytest.importorskip("picamera2", reason="picamera2 is not installed here")

from cloud.loopback import DeviceSetup  # noqa: E402
from recorder import picamera2_source  # noqa: E402
from recorder.picamera2_source import load_picamera2  # noqa: E402


def _accepts(func: object, *args: object, **kwargs: object) -> None:
    """Fails with the installed signature when `func` would not take these arguments."""
    signature = inspect.signature(func)  # type: ignore[arg-type]
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        pytest.fail(f"{func} {signature} does not take {args} {kwargs}: {exc}")


def test_the_classes_we_use_take_the_arguments_we_pass():
    api = load_picamera2()
    _accepts(api.picamera2, 0)
    _accepts(api.picamera2.create_video_configuration, None, main={}, controls={})
    _accepts(api.picamera2.configure, None, {})
    _accepts(api.picamera2.start_recording, None, object(), object())
    _accepts(api.picamera2.stop_recording, None)
    _accepts(api.picamera2.close, None)
    _accepts(api.h264_encoder, bitrate=1, repeat=True, iperiod=15)
    _accepts(api.libav_h264_encoder, bitrate=1, repeat=True, iperiod=15, framerate=15.0)


def test_our_output_overrides_what_picamera2_calls():
    from picamera2.outputs import Output

    base = inspect.signature(Output.outputframe)
    ours = inspect.signature(
        picamera2_source._make_output(Output, None).outputframe  # type: ignore[arg-type]
    )
    assert list(ours.parameters) == list(base.parameters)[1:], f"picamera2 has {base}"
    assert hasattr(Output, "_add_stream"), "LibavH264Encoder no longer calls _add_stream"
    assert hasattr(Output, "needs_pacing") or "needs_pacing" in inspect.getsource(Output)


def test_encoders_set_firsttimestamp_and_the_platform_is_known():
    from picamera2.encoders import Encoder

    assert "firsttimestamp" in inspect.getsource(Encoder)
    import picamera2.platform as platform

    assert callable(platform.get_platform) and hasattr(platform.Platform, "PISP")


def test_frame_rate_is_a_control_picamera2_understands():
    source = Path(inspect.getfile(picamera2))
    assert any('"FrameRate"' in p.read_text(errors="ignore") for p in source.parent.glob("*.py"))


def _picamera2_config(tmp_path: Path) -> Path:
    config = DeviceSetup(root=tmp_path / "device", broker_url="mqtt://127.0.0.1:1").write()
    data = yaml.safe_load(config.read_text())
    data["camera"]["source"] = "picamera2"
    data["camera"].pop("device", None)
    config.write_text(yaml.safe_dump(data))
    return config


def test_without_a_camera_record_says_so_in_one_line(tmp_path):
    config = _picamera2_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "device.cli", "--config", str(config), "record", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(STUBS)},
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert any("no camera found: " in line for line in lines), done.stderr


def test_without_a_camera_the_daemon_logs_one_clear_line(tmp_path):
    import signal
    import time

    config = _picamera2_config(tmp_path)
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "device.daemon", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(STUBS)},
        )
    try:
        deadline = time.monotonic() + 60
        while "starting it again" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)  # the daemon and its recorder child
        daemon.wait(10)
    text = log.read_text()
    assert "the recorder stopped: no camera found: " in text, text
    assert "Traceback" not in text, text


def test_the_main_streams_yuv420_array_is_the_layout_the_masks_are_painted_on():
    """picamera2's MappedArray hands a YUV420 main stream over as height*3/2 rows of
    `stride` bytes, shared with the buffer (no copy): the masks paint through
    yuv420_planes into exactly the bytes the encoder reads."""
    import numpy as np
    from picamera2 import MappedArray
    from picamera2.request import Helpers

    from recorder.masks import MASK_Y, MaskRaster, yuv420_planes
    from tests.fixtures.masked import THREE_MASKS

    _accepts(MappedArray, object(), "main")
    width, height, stride = 320, 240, 384
    buffer = np.full(stride * height * 3 // 2, 200, np.uint8)
    helpers = Helpers.__new__(Helpers)  # the layout code uses nothing of the camera
    array = helpers._make_array_shared(
        buffer, {"format": "YUV420", "size": (width, height), "stride": stride}
    )
    assert array.shape == (height * 3 // 2, stride) and np.shares_memory(array, buffer)
    raster = MaskRaster(THREE_MASKS, width, height)
    raster.paint(*yuv420_planes(array, width, height, stride))
    luma = buffer[: stride * height].reshape(height, stride)[:, :width]
    assert (luma[raster.luma > 0] == MASK_Y).all() and (luma[raster.luma == 0] == 200).all()
