"""The timeline and the player in-process (the real app over ASGI, a real buffer of real
H.264, the pieces decoded by FFmpeg's own HLS reader): a played part of the window holds
exactly its frames, in order, across segments; the coverage matches the index; and
anything asked for outside the pending request's window is refused before a byte of
footage is read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from device.console.auth import ConsoleAuth
from device.console.server import Console
from device.console.video import Video
from foundation.times import Window, format_time, parse_time
from recorder import export, pieces
from recorder.buffer import RollingBuffer
from tests.device.test_console_hostile import HOST, PORT, T0, TestClient, console_parts
from tests.fixtures.footage import FOOTAGE_END_MS, decode_stamps, record_fast

RFA = "rfa-1"


class OnePending:
    """The request flow as far as the player sees it: one pending request."""

    def __init__(self, window: Window) -> None:
        self.window = window

    def pending(self) -> list[Any]:
        return [SimpleNamespace(rfa=SimpleNamespace(id=RFA, window=self.window))]


@pytest.fixture(scope="module")
def gapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    """10 s of footage, a 50-second gap, then 10 s more (320x240@15, 4-second segments)."""
    root = tmp_path_factory.mktemp("gapped") / "buffer"
    first = record_fast(root, seconds=10, end_ms=FOOTAGE_END_MS - 60_000)
    second = record_fast(root, seconds=10, end_ms=FOOTAGE_END_MS)
    return root, [first, second]


def client_for(root: Path, window: Window, tmp_path: Path) -> tuple[TestClient, Video]:
    auth = ConsoleAuth.open(tmp_path / "console.db")
    video = Video(root)
    parts = console_parts(auth, flow=OnePending(window), video=video)
    client = TestClient(Console(parts, hosts=frozenset({HOST}), port=PORT).app)
    code, _ = auth.new_code(T0)
    assert (
        client.post(
            "/login", data={"code": code}, headers={"Origin": f"https://{HOST}:{PORT}"}
        ).status_code
        == 303
    )
    return client, video


def index_times(root: Path, part: Window) -> list[int]:
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments(part)
        tables = buffer.frame_tables([s.id for s in segments])
    return [t for s in segments for t in tables[s.id].times if part.contains(t)]


def fetch_hls(client: TestClient, part: Window, into: Path) -> dict[str, Any]:
    """Play `part` as the page does: ask where, then fetch the playlist and each file it
    names, into `into`."""
    query = f"?start={format_time(part.start_ms)}&end={format_time(part.end_ms)}"
    play = client.get(f"/api/requests/{RFA}/play{query}")
    assert play.status_code == 200, play.text
    info = play.json()
    base = info["playlist"].rsplit("/", 1)[0]
    listing = client.get(info["playlist"])
    assert listing.status_code == 200
    assert listing.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    into.mkdir()
    (into / "index.m3u8").write_bytes(listing.content)
    for line in listing.text.splitlines():
        name = line.split('"')[1] if line.startswith("#EXT-X-MAP") else line
        if name and not name.startswith("#"):
            got = client.get(f"{base}/{name}")
            assert got.status_code == 200, (name, got.text)
            (into / name).write_bytes(got.content)
    return info


def test_a_played_part_holds_exactly_its_frames_across_segments(
    gapped: tuple[Path, list[tuple[int, int]]], tmp_path: Path
) -> None:
    root, [(first, _end1), (_start2, last)] = gapped
    window = Window(first - 5000, last + 5000)
    client, _video = client_for(root, window, tmp_path)
    part = Window(first + 1234, first + 9876)  # mid-GOP start, three segment boundaries
    info = fetch_hls(client, part, tmp_path / "hls")
    stamps = decode_stamps(tmp_path / "hls" / "index.m3u8")
    expected = index_times(root, part)
    assert [capture for _pts, capture in stamps] == expected
    assert info["frames"] == len(expected)
    assert info["first_frame_at"] == format_time(expected[0])
    # the player's clock runs with capture time: what the page shows under the video
    assert [pts for pts, _c in stamps] == [t - expected[0] for t in expected]


def test_a_part_across_the_gap_plays_on_with_the_gap_left_out(
    gapped: tuple[Path, list[tuple[int, int]]], tmp_path: Path
) -> None:
    root, [(first, end1), (start2, last)] = gapped
    client, _video = client_for(root, Window(first, last), tmp_path)
    part = Window(end1 - 2000, start2 + 2000)
    info = fetch_hls(client, part, tmp_path / "hls")
    stamps = decode_stamps(tmp_path / "hls" / "index.m3u8")
    assert [c for _p, c in stamps] == index_times(root, part)
    runs = info["runs"]
    assert [r[:2] for r in runs] == [[stamps[0][1], end1], [start2, stamps[-1][1]]]
    for pts, capture in stamps:  # the runs map the player's clock to capture time
        run = next(r for r in runs if r[0] <= capture <= r[1])
        assert pts == run[2] + capture - run[0]


def test_the_timeline_shows_where_footage_is_and_its_activity(
    gapped: tuple[Path, list[tuple[int, int]]], tmp_path: Path
) -> None:
    root, [(first, end1), (start2, last)] = gapped
    window = Window(first - 30_000, last + 30_000)
    client, _video = client_for(root, window, tmp_path)
    reply = client.get(f"/api/requests/{RFA}/timeline?bins=100")
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["covered_ms"] == [[first, end1], [start2, last]]
    activity = data["activity"]
    assert len(activity) == 100
    span = window.duration_ms / 100
    for n, value in enumerate(activity):
        lo, hi = window.start_ms + n * span, window.start_ms + (n + 1) * span
        has = any(s < hi and e >= lo for s, e in data["covered_ms"])
        assert (value is not None) == has, n
        assert value is None or value > 0
    part = Window(end1 - 1000, start2 + 1000)
    query = f"?start={format_time(part.start_ms)}&end={format_time(part.end_ms)}&bins=10"
    narrowed = client.get(f"/api/requests/{RFA}/timeline{query}").json()
    assert narrowed["covered_ms"] == [[part.start_ms, end1], [start2, part.end_ms]]
    assert narrowed["activity"][5] is None  # the middle of the gap


class Reads:
    """Every sample and every file PyAV opens, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.samples: list[tuple[str, int]] = []
        self.opened: list[Path] = []
        packet, opener = export.Samples.packet, pieces._open

        def counted_packet(samples: Any, name: str, pos: int, size: int) -> Any:
            self.samples.append((name, pos))
            return packet(samples, name, pos, size)

        def counted_open(out: Any, root: Path, file: str) -> Any:
            self.opened.append(root / file)
            return opener(out, root, file)

        monkeypatch.setattr(export.Samples, "packet", counted_packet)
        monkeypatch.setattr(pieces, "_open", counted_open)


def test_anything_outside_the_window_is_refused_before_footage_is_read(
    gapped: tuple[Path, list[tuple[int, int]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, [(first, _end1), (_start2, last)] = gapped
    window = Window(first + 3000, last - 3000)  # footage lies on both sides of it
    client, _video = client_for(root, window, tmp_path)
    reads = Reads(monkeypatch)
    base = f"/api/requests/{RFA}/video"
    w0, w1 = window.start_ms, window.end_ms
    refused = {
        f"{base}/{w0 - 1}/{w1}/index.m3u8": 403,
        f"{base}/{w0}/{w1 + 1}/0.m4s": 403,
        f"{base}/{first}/{w1}/0.m4s": 403,
        f"{base}/{w0}/{last}/init-0.mp4": 403,
        f"{base}/{w1}/{w0}/0.m4s": 403,
        f"{base}/{w0}/{w1}/999.m4s": 404,
        f"{base}/{w0}/{w1}/-1.m4s": 404,
        f"{base}/{w0}/{w1}/init-9.mp4": 404,
        f"{base}/{w0}/{w1}/..%2F..%2Findex.sqlite3": 404,
        f"{base}/{w0}/{w1}/0.m4s.mp4": 404,
        f"{base}/{w0}/{'9' * 400}/0.m4s": 404,
        f"/api/requests/other/video/{w0}/{w1}/0.m4s": 404,
        f"/api/requests/{RFA}/play?start={format_time(first)}&end={format_time(w1)}": 403,
        f"/api/requests/{RFA}/timeline?start={format_time(w0)}&end={format_time(last)}": 403,
        f"/api/requests/{RFA}/timeline?bins=0": 400,
        f"/api/requests/{RFA}/timeline?bins=00000100": 400,
    }
    for path, status in refused.items():
        reply = client.get(path)
        assert reply.status_code == status, (path, reply.status_code, reply.text)
        assert reply.headers["content-type"] == "application/json"
    assert reads.samples == [] and reads.opened == []
    # the whole window plays, and its pieces read nothing but its frames (and the GOP
    # before its first frame, decoded for the re-encoded head, as export does)
    info = fetch_hls(client, window, tmp_path / "hls")
    stamps = decode_stamps(tmp_path / "hls" / "index.m3u8")
    assert [c for _p, c in stamps] == index_times(root, window)
    assert info["frames"] == len(stamps)
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments()
        tables = buffer.frame_tables([s.id for s in segments])
    at = {
        (s.file, pos): t
        for s in segments
        for t, pos in zip(tables[s.id].times, tables[s.id].pos, strict=True)
    }
    read_times = sorted(at[r] for r in reads.samples)
    assert read_times[0] >= window.start_ms - 1000 and read_times[-1] <= window.end_ms
    assert [t for t in read_times if t >= window.start_ms] == index_times(root, window)


def test_a_tap_starts_at_the_keyframe_before_it_but_never_before_the_window(
    gapped: tuple[Path, list[tuple[int, int]]], tmp_path: Path
) -> None:
    root, [(first, _end1), (_start2, last)] = gapped
    window = Window(first + 2500, last)  # starts mid-GOP
    client, _video = client_for(root, window, tmp_path)
    inside = index_times(root, window)

    def tap(at: int) -> dict[str, Any]:
        query = f"?start={format_time(at)}&end={format_time(last)}&from=keyframe"
        reply = client.get(f"/api/requests/{RFA}/play{query}")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    middle = inside[len(inside) // 2] + 10
    started = tap(middle)["first_frame_at"]
    assert middle - 1000 < parse_time(started) <= middle
    with RollingBuffer.open(root, reconcile=False) as buffer:
        tables = buffer.frame_tables([s.id for s in buffer.segments()]).values()
    keys = {t for table in tables for t, k in zip(table.times, table.key, strict=True) if k}
    assert parse_time(started) in keys
    # near the window's start, the keyframe before lies outside it: exactly the tap
    near = inside[2]
    assert tap(near)["first_frame_at"] == format_time(near)
    info = fetch_hls(client, Window(near, last), tmp_path / "hls")
    assert (
        decode_stamps(tmp_path / "hls" / "index.m3u8")[0][1]
        == near
        == parse_time(info["first_frame_at"])
    )
