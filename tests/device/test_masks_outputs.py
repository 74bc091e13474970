"""Nothing made from the buffer holds a masked pixel: a thumbnail, a preview clip and a
share (the real build_share, decrypted with the stock `age`) of footage recorded with
three privacy masks are the mask colour inside each polygon and match the same things
made from an unmasked recording of the same synthetic scene outside them."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from device.console.preview import Preview, newest_keyframe_jpeg
from foundation.times import Window
from foundation.wire import read_capture_ms
from recorder.masks import MaskFeed
from tests.fixtures.footage import record_fast
from tests.fixtures.masked import THREE_MASKS, check_masked, planes
from tests.sync.sharekit import open_share
from tests.sync.test_share import build


@pytest.fixture(scope="module")
def buffers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Window]:
    masked = tmp_path_factory.mktemp("masked")
    plain = tmp_path_factory.mktemp("plain")
    first, last = record_fast(masked, seconds=6.0, masks=MaskFeed(THREE_MASKS))
    assert record_fast(plain, seconds=6.0) == (first, last)
    return masked, plain, Window(first, last)


def clip_pictures(path: Path) -> dict[int, np.ndarray]:
    with av.open(str(path)) as container:
        pictures = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
    return {read_capture_ms(planes(p)[0]): p for p in pictures}


def test_thumbnails_hold_no_masked_pixel(tmp_path: Path, buffers) -> None:
    masked_root, plain_root, window = buffers
    masked = Preview(masked_root, tmp_path / "m")
    plain = Preview(plain_root, tmp_path / "p")
    times = masked.strip(window, count=6)
    assert times and times == plain.strip(window, count=6)
    for t in times:
        pictures = []
        for preview in (masked, plain):
            jpeg = preview.thumbnail(window, t)
            assert jpeg is not None
            with av.open(io.BytesIO(jpeg)) as container:
                (frame,) = container.decode(video=0)
            pictures.append(frame.to_ndarray(format="yuvj420p"))
        # A JPEG is full range: the mask's black is 0 there; a 160-pixel thumbnail
        # blurs its edges more than a full-size frame, hence the looser tolerance.
        check_masked(*pictures, black=0, inside_tolerance=12, outside_mean=4)


def test_preview_clips_hold_no_masked_pixel(tmp_path: Path, buffers) -> None:
    masked_root, plain_root, window = buffers
    part = Window(window.start_ms + 1_000, window.start_ms + 4_000)
    masked = clip_pictures(Preview(masked_root, tmp_path / "m").clip(part).path)
    plain = clip_pictures(Preview(plain_root, tmp_path / "p").clip(part).path)
    assert len(masked) == len(plain) >= 44
    for t, picture in masked.items():
        check_masked(picture, plain[t])


def test_shares_hold_no_masked_pixel(tmp_path: Path, buffers) -> None:
    masked_root, plain_root, window = buffers
    approved = Window(window.start_ms + 500, window.end_ms - 500)
    clips = []
    for name, root in (("masked", masked_root), ("plain", plain_root)):
        footage = (root, window.start_ms, window.end_ms)
        agency, _id, _rfa, _decision, built, out = build(
            tmp_path / name, footage, named=False, window=approved
        )
        opened = open_share(agency, built.manifest_path, built.clip_path, out / "agency")
        clips.append(clip_pictures(opened.clip))
    masked, plain = clips
    assert len(masked) == len(plain) >= 70
    for t, picture in masked.items():
        check_masked(picture, plain[t])


def test_snapshots_hold_no_masked_pixel(tmp_path: Path, buffers) -> None:
    """Home Assistant's snapshot (newest_keyframe_jpeg) and the picture the owner draws
    masks on (Preview.snapshot) come from recorded segments, so the masks are in them."""
    masked_root, plain_root, window = buffers
    for take in (
        lambda root, work: newest_keyframe_jpeg(root, window.end_ms),
        lambda root, work: Preview(root, work).snapshot()[1],  # type: ignore[index]
    ):
        pictures = []
        for root, work in ((masked_root, tmp_path / "m"), (plain_root, tmp_path / "p")):
            jpeg = take(root, work)
            assert jpeg is not None
            with av.open(io.BytesIO(jpeg)) as container:
                (frame,) = container.decode(video=0)
            pictures.append(frame.to_ndarray(format="yuvj420p"))
        check_masked(*pictures, black=0, inside_tolerance=12, outside_mean=4)
