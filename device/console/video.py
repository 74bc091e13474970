"""The owner's timeline and player: a pending request's window as coverage, activity and
HLS, served from the buffer's own segments (docs/console.md).

- `GET .../timeline?start=T&end=T&bins=N`: where footage is (runs, epoch ms) and the
  activity strip (recorder/timeline.py) of a part of the window, from the index alone.
- `GET .../play?start=T&end=T[&from=keyframe]`: the playlist's address for that part,
  and the runs that map the player's clock to capture time. `from=keyframe` (a tap on
  the timeline) starts at the keyframe at or before `start` instead, inside the window
  still: up to a second earlier, and nothing to re-encode.
- `GET .../video/{start_ms}/{end_ms}/index.m3u8`, `init-K.mp4`, `N.m4s`: HLS with
  fragmented-MP4 pieces (recorder/pieces.py), one piece per segment, stream copy, the
  first piece's partial GOP re-encoded as export does: exactly the frames a share of
  that part would hold (export's own plan), in order.

Why HLS: it is what NVRs use to play recordings in a browser; the page plays it with
hls.js (Media Source Extensions; static/vendor/), Safari natively. Nothing is
transcoded but that head, and nothing written to disk: the index digest of a window
(its playback plan and per-second activity, ~30 bytes a second) is kept in memory, and
no piece: a piece asked for again is remuxed again (a stream copy, about 10 ms), which
keeps the daemon's memory while a phone plays to the piece being made.

Every address carries its part as capture times; each is checked against the pending
request's window before anything is read (403 outside, 404 for no footage or a piece
that is not in the playlist), and a piece checks its frames against the window again
before reading them. Deciding on the request (it stops being pending) ends it all: the
next piece is a 404. One thing is read outside the window: the head's GOP from its
keyframe (at most one second before the start), decoded to re-encode the frames
inside it and never sent, as export does.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foundation.errors import RecorderError
from foundation.heap import give_back
from foundation.times import Window, format_time
from recorder.buffer import connect_index, query_segments, query_tables, read_tables
from recorder.export import plan_parts
from recorder.pieces import init_bytes, piece_bytes
from recorder.segment_file import FrameTable
from recorder.timeline import Digest, Playback, edge_segments, narrowed, playlist

MAX_BINS = 2000
DIGESTS_KEPT = 2  # windows: the request open on a phone, and one more
PLAYBACKS_KEPT = 8  # parts of them played (taps, the selected range)
HLS = "application/vnd.apple.mpegurl"
DIGEST_BATCH = 256  # segments' frame tables read at a time (17 minutes of 4-second ones)


class Video:
    """Timelines and HLS of the buffer at `buffer_root`, with small in-memory caches."""

    def __init__(self, buffer_root: Path) -> None:
        self._root = buffer_root
        self._lock = threading.Lock()
        self._digest_lock = threading.Lock()  # one window's tables read at a time
        self._digests: OrderedDict[Window, Digest] = OrderedDict()
        self._playbacks: OrderedDict[tuple[Window, Window], Playback | None] = OrderedDict()

    def _tables(self, ids: list[int]) -> dict[int, FrameTable]:
        return read_tables(self._root, ids)

    def digest(self, window: Window) -> Digest:
        with self._digest_lock:
            with self._lock:
                found = self._digests.get(window)
                if found is not None:
                    self._digests.move_to_end(window)
                    return found
            made = Digest(window)
            try:
                conn = connect_index(self._root, readonly=True)
            except RecorderError:
                pass  # no index yet: no footage
            else:
                try:
                    segments = query_segments(conn, window)
                    last_ms = None
                    for at in range(0, len(segments), DIGEST_BATCH):
                        batch = segments[at : at + DIGEST_BATCH]
                        tables = query_tables(conn, [s.id for s in batch])
                        parts = plan_parts(window, batch, tables, last_ms)
                        made.add(parts)
                        if parts:
                            last_ms = parts[-1].table.times[parts[-1].frames.stop - 1]
                finally:
                    conn.close()
            with self._lock:
                self._digests[window] = made
                while len(self._digests) > DIGESTS_KEPT:
                    self._digests.popitem(last=False)
            return made

    def playback(self, window: Window, part: Window) -> Playback | None:
        """The playback of `part` (inside `window`): the window's, cut to it."""
        key = (window, part)
        with self._lock:
            if key in self._playbacks:
                self._playbacks.move_to_end(key)
                return self._playbacks[key]
        whole = self.digest(window).playback
        made = None
        if whole is not None:
            made = narrowed(whole, part, self._tables(edge_segments(whole, part)))
        with self._lock:
            self._playbacks[key] = made
            while len(self._playbacks) > PLAYBACKS_KEPT:
                self._playbacks.popitem(last=False)
        return made

    def keyframe_before(self, window: Window, at_ms: int) -> int:
        """The capture time of the keyframe at or before `at_ms` in the playback of
        `window`, but not before the window's first frame: where a tap plays from
        without re-encoding anything. `at_ms` itself when it lies in no piece."""
        whole = self.digest(window).playback
        if whole is None:
            return at_ms
        n = bisect.bisect_left([p.last_ms for p in whole.pieces], at_ms)
        if n == len(whole.pieces) or whole.pieces[n].first_ms > at_ms:
            return at_ms
        piece = whole.pieces[n]
        table = self._tables([piece.segment.id]).get(piece.segment.id)
        if table is None:
            return at_ms
        i = bisect.bisect_right(table.times, at_ms) - 1
        key = table.key.rfind(1, piece.frames.start, i + 1)
        return at_ms if key < 0 else int(table.times[key])

    def media(self, window: Window, part: Window, name: str) -> tuple[bytes, str] | None:
        """A file of the HLS of `part`: (bytes, media type), None when there is none."""
        playback = self.playback(window, part)
        if playback is None:
            return None
        if name == "index.m3u8":
            return playlist(playback).encode(), HLS
        number = _number(name, "init-", ".mp4")
        if number is not None and number < len(playback.inits):
            data = init_bytes(self._root, playback, number)
        else:
            number = _number(name, "", ".m4s")
            if number is None or number >= len(playback.pieces):
                return None
            table = self._tables([playback.pieces[number].segment.id]).get(
                playback.pieces[number].segment.id
            )
            if table is None:
                return None  # deleted by retention since
            data = piece_bytes(self._root, playback, number, table, window)
        give_back()  # the muxer's (and a head's coder's) buffers, freed by now
        return data, "video/mp4"


def _number(name: str, prefix: str, suffix: str) -> int | None:
    """N from `prefix` N `suffix`, N at most 6 ASCII digits, else None."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    digits = name[len(prefix) : len(name) - len(suffix)]
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 6):
        return None
    return int(digits)


# ---- the routes (registered by server.py; its `api` wrapper checks the session) --------


def video_routes(
    api: Callable[[Callable[..., Any]], Any],
    video: Callable[[], Video],
    window_of: Callable[[str], Window],
    part_of: Callable[[Any, Window], Window],
    time_of: Callable[[str], int],
    error: Callable[[int, str], Exception],
) -> list[Any]:
    """The timeline's and the player's routes. `window_of(rfa_id)`: the pending
    request's window (its own error when not pending); `part_of(request, window)`: the
    part in `start`/`end` (403 outside); `time_of`: a time in a path; `error`: the
    console's API error."""
    from starlette.responses import Response
    from starlette.routing import Route

    def checked_part(request: Any) -> tuple[str, Window, Window]:
        rfa_id = request.path_params["rfa_id"]
        window = window_of(rfa_id)
        return rfa_id, window, part_of(request, window)

    def timeline(request: Any, body: Any) -> Any:
        _rfa_id, window, part = checked_part(request)
        bins = request.query_params.get("bins", "100")
        if not (
            bins.isascii() and bins.isdigit() and len(bins) <= 4 and 1 <= int(bins) <= MAX_BINS
        ):
            raise error(400, f"bins is a number from 1 to {MAX_BINS}")
        digest = video().digest(window)
        runs = () if digest.playback is None else digest.playback.runs
        covered = [[max(r.start_ms, part.start_ms), min(r.end_ms, part.end_ms)] for r in runs]
        covered = [c for c in covered if c[0] <= c[1]]
        return {
            "window": window.to_json(),
            "part": part.to_json(),
            "covered_ms": covered,
            "footage_seconds": round(sum(e - s for s, e in covered) / 1000, 1),
            "activity": digest.activity.bins(part, int(bins)),
        }

    def play(request: Any, body: Any) -> Any:
        rfa_id, window, part = checked_part(request)
        if request.query_params.get("from") == "keyframe":  # a tap: no re-encoded head
            part = Window(video().keyframe_before(window, part.start_ms), part.end_ms)
        playback = video().playback(window, part)
        if playback is None:
            raise error(404, "there is no footage in that part of the window")
        base = f"/api/requests/{rfa_id}/video/{part.start_ms}/{part.end_ms}"
        return {
            "playlist": base + "/index.m3u8",
            "runs": [[r.start_ms, r.end_ms, r.media_ms] for r in playback.runs],
            "frames": playback.frames,
            "first_frame_at": format_time(playback.first_ms),
            "last_frame_at": format_time(playback.last_ms),
        }

    def media(request: Any, body: Any) -> Any:
        window = window_of(request.path_params["rfa_id"])
        start = time_of(request.path_params["start_ms"])
        end = time_of(request.path_params["end_ms"])
        if start > end or start < window.start_ms or end > window.end_ms:
            raise error(403, "that is outside the request's window")
        found = video().media(window, Window(start, end), request.path_params["name"])
        if found is None:
            raise error(404, "no such piece of this window")
        data, media_type = found
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})

    prefix = "/api/requests/{rfa_id}"
    return [
        Route(prefix + "/timeline", api(timeline)),
        Route(prefix + "/play", api(play)),
        Route(prefix + "/video/{start_ms}/{end_ms}/{name}", api(media)),
    ]
