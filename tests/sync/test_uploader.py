"""The share worker end to end against a real tus server (tuspyserver under uvicorn):
named and anonymous shares, the server killed mid-upload, the worker process killed
with SIGKILL mid-upload, failures that must end a share and failures that must not."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloud.loopback import TusServer
from device.identity import load_device_identity
from foundation.clock import SystemClock
from foundation.times import Window, parse_time
from sync.attempt import error_phrase
from sync.outbox import Outbox
from sync.settings import ShareSettings
from sync.uploader import ShareWorker
from tests.sync.factories import AgencyKeys
from tests.sync.hostile import LooseTusServer, SlowTusServer
from tests.sync.sharekit import (
    CONTACT,
    RequestLog,
    ShiftedClock,
    decode_capture_times,
    make_decision,
    make_identity,
    make_rfa,
    open_share,
    openssl_verify,
    record_footage,
    run_worker_until,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    root = tmp_path_factory.mktemp("buffer")
    first, last = record_footage(root, 12)
    return root, first, last


class Rig:
    """An outbox, a worker and what it reported, wired like the daemon wires them."""

    def __init__(
        self,
        tmp_path: Path,
        footage: Any,
        *,
        clock: Any = None,
        outbox: type[Outbox] = Outbox,
        session_factory: Any = None,
        **settings: Any,
    ) -> None:
        self.root, self.first, self.last = footage
        self.outbox = outbox.open(tmp_path / "outbox")
        self.clock = clock or SystemClock(assume_synchronized=True)
        self.identity = make_identity()
        self.agency = AgencyKeys.generate()
        self.stop = threading.Event()
        self.states: list[tuple[str, str, str | None]] = []
        self.log = RequestLog()
        options: dict[str, Any] = {
            "chunk_bytes": 64 * 1024,
            "allow_plain_http_loopback": True,
            "retry_base_s": 0.05,
            "max_attempts": 4,
            "timeout_s": 10,
        }
        options.update(settings)
        self.worker = ShareWorker(
            outbox=self.outbox,
            buffer_root=self.root,
            identity=self.identity,
            contact=CONTACT,
            clock=self.clock,
            settings=ShareSettings(**options),
            on_state=lambda *a: self.states.append(a),
            stop=self.stop,
            session_factory=session_factory or self.log.session_factory,
        )

    def enqueue(
        self,
        url: str,
        *,
        named: bool = True,
        window: Window | None = None,
        through_worker: bool = False,
        **kw: Any,
    ) -> str:
        """Queue a share: straight into the outbox (a share queued before the worker
        runs), or `through_worker` as the daemon's request flow does."""
        requested = Window(self.first, self.last)
        rfa = make_rfa(self.agency, upload_url=url, window=requested, now_ms=self.last, **kw)
        decision = make_decision(rfa, named=named, now_ms=self.last, window=window or requested)
        queue = self.worker if through_worker else self.outbox
        queue.enqueue(rfa, decision, now_ms=self.clock.wall_ms())
        return rfa.id

    def run(self, rfa_id: str, timeout: float = 120) -> str:
        self.stop.clear()
        return run_worker_until(self.worker, self.outbox, rfa_id, self.stop, timeout=timeout)


def check_uploaded_share(rig: Rig, server: TusServer, rfa_id: str, tmp: Path, *, named: bool):
    manifest_up = server.upload_of("manifest")
    clip_up = server.upload_of("clip")
    assert manifest_up.complete and clip_up.complete
    for up, kind in ((manifest_up, "manifest"), (clip_up, "clip")):
        assert up.metadata["rfa_id"] == rfa_id
        assert up.metadata["kind"] == kind
        assert up.metadata["case_number"] == "2026-004512"
        assert up.metadata["filename"].startswith(rfa_id)
        if named:
            assert up.metadata["device_id"] == rig.identity.device_id
        else:
            assert "device_id" not in up.metadata
    opened = open_share(rig.agency, manifest_up.path, clip_up.path, tmp / "agency")
    assert openssl_verify(opened.envelope, tmp / "agency")
    m = opened.manifest
    clip = opened.clip.read_bytes()
    assert m["clip"]["sha256"] == hashlib.sha256(clip).hexdigest()
    assert m["clip"]["bytes"] == len(clip)
    approved = Window(
        parse_time(m["window_approved"]["start"]), parse_time(m["window_approved"]["end"])
    )
    times = decode_capture_times(opened.clip)
    assert len(times) == m["frames"] > 0
    assert all(approved.contains(t) for t in times)
    (entry,) = rig.outbox.shares(rig.last + 1)
    assert entry["state"] == "done"
    assert entry["bytes_sent"] == entry["bytes_total"] == manifest_up.size + clip_up.size
    assert entry["manifest_sha256"] == hashlib.sha256(opened.envelope_bytes).hexdigest()
    assert not rig.outbox.job_dir(rfa_id).exists()  # outbox files removed
    return m


@pytest.mark.parametrize("named", [True, False], ids=["named", "anonymous"])
def test_share_end_to_end(tmp_path: Path, footage, tus_server: TusServer, named: bool):
    rig = Rig(tmp_path, footage, clock=ShiftedClock())
    window = Window(rig.first + 1500, rig.first + 6500)
    rfa_id = rig.enqueue(tus_server.url, named=named, window=window)
    if not named:  # its drawn moment has come (tests/sync/test_start_delay.py: not before)
        job = rig.outbox.job(rfa_id)
        assert job is not None
        rig.clock.advance(job.start_delay_ms / 1000)
    assert rig.run(rfa_id) == "done"
    assert [s for _id, s, _e in rig.states] == ["uploading", "done"]
    m = check_uploaded_share(rig, tus_server, rfa_id, tmp_path, named=named)
    assert m["anonymous"] is (not named)
    assert (m["contact"] == CONTACT) is named
    # one POST per object; the done share is not touched again
    assert rig.log.methods().count("POST") == 2
    before = len(rig.log.entries)
    rig.worker.wake()
    assert rig.worker.run_once() is not None  # nothing to do
    assert len(rig.log.entries) == before


def test_server_killed_mid_upload_resumes_the_same_upload(
    tmp_path: Path, footage, tus_server: TusServer
):
    rig = Rig(tmp_path, footage, bandwidth_bytes_per_s=150_000, max_attempts=50)
    rfa_id = rig.enqueue(tus_server.url)
    thread = threading.Thread(target=rig.worker.run, daemon=True)
    thread.start()
    try:
        offset_before = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = rig.outbox.job(rfa_id)
            clip = job.object("clip") if job else None
            if clip is not None and clip.offset >= 128 * 1024:
                offset_before = clip.offset
                break
            time.sleep(0.02)
        assert offset_before > 0, "the clip upload never started"
        tus_server.kill()
        time.sleep(0.3)  # the worker meets a dead server and backs off
        tus_server.start()
        deadline = time.monotonic() + 90
        while rig.outbox.state(rfa_id) not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rig.stop.set()
        thread.join(timeout=30)
    assert rig.outbox.state(rfa_id) == "done", rig.outbox.shares(rig.last)
    check_uploaded_share(rig, tus_server, rfa_id, tmp_path, named=True)
    assert len(tus_server.uploads()) == 2  # one upload per object, no new upload
    assert rig.log.methods().count("POST") == 2
    heads = [e for e in rig.log.entries if e[0] == "HEAD"]
    assert heads, "the worker must ask the server for the offset after the cut"
    clip_url = tus_server.url + tus_server.upload_of("clip").uid
    resumed = [int(o) for m, u, o in rig.log.entries if m == "PATCH" and u == clip_url and o]
    assert 0 in resumed and resumed == sorted(resumed)
    # after the cut the upload went on from where the server was, not from zero
    assert resumed.count(0) == 1


def _db_offsets(outbox_dir: Path) -> dict[str, tuple[int, int, str | None]]:
    db = sqlite3.connect(f"file:{outbox_dir / 'outbox.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT kind, offset, size, upload_url FROM objects").fetchall()
    finally:
        db.close()
    return {k: (o, s, u) for k, o, s, u in rows}


def _start_worker(tmp_path: Path, rig: Rig, log: Path, *, bandwidth: int) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.sync.share_worker_proc",
            str(tmp_path / "outbox"),
            str(rig.root),
            str(tmp_path / "state"),
            "porch-cam-01",
            str(log),
            "--bandwidth",
            str(bandwidth),
        ],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_worker_killed_mid_upload_resumes_from_the_server_offset(
    tmp_path: Path, footage, tus_server: TusServer
):
    rig = Rig(tmp_path, footage)
    rig.identity = load_device_identity(tmp_path / "state", "porch-cam-01")
    rfa_id = rig.enqueue(tus_server.url)
    rig.outbox.close()
    log = tmp_path / "requests.jsonl"
    first = _start_worker(tmp_path, rig, log, bandwidth=120_000)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (tmp_path / "outbox" / "outbox.sqlite").exists():
                clip = _db_offsets(tmp_path / "outbox").get("clip")
                if clip and clip[0] >= 128 * 1024:
                    break
            time.sleep(0.02)
        else:
            raise AssertionError("the clip upload never got going")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    offset_at_kill, size, url = _db_offsets(tmp_path / "outbox")["clip"]
    assert 0 < offset_at_kill < size and url is not None
    held = tus_server.upload_of("clip").offset
    assert held >= offset_at_kill  # the server may hold a chunk the outbox never heard of

    manifest_sha_before = Outbox.open(tmp_path / "outbox").shares(rig.last)[0]["manifest_sha256"]
    second = _start_worker(tmp_path, rig, log, bandwidth=0)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out
    assert f"{rfa_id} done None" in out.decode()

    rig.outbox = Outbox.open(tmp_path / "outbox")
    m = check_uploaded_share(rig, tus_server, rfa_id, tmp_path, named=True)
    assert len(tus_server.uploads()) == 2  # one upload per object on the server
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["method"] for e in entries].count("POST") == 2  # never created anew
    clip_url = url
    second_run = entries[[e["method"] for e in entries].index("HEAD") :]
    clip_patches = [
        int(e["offset"]) for e in second_run if e["method"] == "PATCH" and e["url"] == clip_url
    ]
    assert clip_patches[0] == held  # continued from the server's offset, not from zero
    assert rig.outbox.shares(rig.last)[0]["manifest_sha256"] == manifest_sha_before  # built once
    assert m["device_id"] == "porch-cam-01"


def test_full_disk_fails_one_share_and_not_the_next(tmp_path: Path, footage, tus_server):
    small = tmp_path / "outbox"
    small.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(small)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    try:
        rig = Rig(tmp_path, footage)
        big = rig.enqueue(tus_server.url)  # 12 s of footage does not fit in what is left
        short = Window(rig.first + 1000, rig.first + 2000)
        assert rig.run(big) == "failed"
        small_id = rig.enqueue(tus_server.url, window=short)
        assert rig.run(small_id) == "done"
        entries = {e["rfa_id"]: e for e in rig.outbox.shares(rig.last)}
        assert entries[big]["error"].startswith("disk full")
        assert entries[small_id]["state"] == "done"
        assert sorted(os.listdir(small / "objects")) == []  # no half files
        assert [u.metadata["rfa_id"] for u in tus_server.uploads()] == [small_id] * 2
        rig.outbox.close()
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=False)  # even while files are open


def test_permanent_failures_end_the_share_at_once(tmp_path: Path, footage, tus_server_factory):
    server = tus_server_factory()
    tiny = tus_server_factory(max_size=1000)
    rig = Rig(tmp_path, footage)
    cases = {
        rig.enqueue(server.url, recipient="age1qqqqqqqq"): "bad recipient",
        rig.enqueue(server.url.replace("/files/", "/wrong/")): "server answered 404",
        rig.enqueue(tiny.url): "larger than the server accepts",
        rig.enqueue(server.url, window=Window(rig.first - 5000, rig.first - 10)): "no footage",
    }
    for rfa_id, error in cases.items():
        assert rig.run(rfa_id) == "failed"
        job = rig.outbox.job(rfa_id)
        assert job is not None and job.error is not None and error in job.error, job.error
        assert job.attempts == 0  # not retried
        # a share that failed before it was built leaves nothing; one the server refused
        # keeps its encrypted objects so `--retry` need not rebuild (`--cancel` deletes them)
        built = error not in ("bad recipient", "no footage")
        assert rig.outbox.job_dir(rfa_id).exists() is built
    assert server.uploads() == [] and tiny.uploads() == []


def test_plain_http_is_refused_unless_allowed(tmp_path: Path, footage, tus_server: TusServer):
    rig = Rig(tmp_path, footage, allow_plain_http_loopback=False)
    rfa_id = rig.enqueue(tus_server.url)
    assert rig.run(rfa_id) == "failed"
    job = rig.outbox.job(rfa_id)
    assert job is not None and "plain http" in (job.error or "")
    assert tus_server.uploads() == [] and rig.log.entries == []


def test_unreachable_server_is_retried_then_failed_and_retry_works(tmp_path: Path, footage):
    server = TusServer(tmp_path / "late-storage")  # not started yet: connections refused
    rig = Rig(tmp_path, footage, max_attempts=3)
    rfa_id = rig.enqueue(server.url)
    assert rig.run(rfa_id) == "failed"
    job = rig.outbox.job(rfa_id)
    assert job is not None and "gave up after 3 attempts" in (job.error or "")
    assert rig.outbox.job_dir(rfa_id).exists()  # kept, so a retry need not rebuild
    server.start()
    try:
        assert rig.worker.retry(rfa_id)
        assert rig.run(rfa_id) == "done"
        check_uploaded_share(rig, server, rfa_id, tmp_path, named=True)
    finally:
        server.kill()
    assert [s for _i, s, _e in rig.states] == ["uploading", "failed", "queued", "uploading", "done"]


def test_cancel_mid_upload_stops_and_deletes(tmp_path: Path, footage, tus_server: TusServer):
    rig = Rig(tmp_path, footage, bandwidth_bytes_per_s=100_000)
    rfa_id = rig.enqueue(tus_server.url)
    thread = threading.Thread(target=rig.worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = rig.outbox.job(rfa_id)
            clip = job.object("clip") if job else None
            if clip is not None and clip.offset > 0:
                break
            time.sleep(0.02)
        assert rig.worker.cancel(rfa_id)
        # the cancel cuts the exchange under way and asks the server to drop the upload
        deadline = time.monotonic() + 30
        while "DELETE" not in rig.log.methods() and time.monotonic() < deadline:
            time.sleep(0.05)
        while rig.worker.lanes() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rig.stop.set()
        thread.join(timeout=30)
    assert rig.outbox.state(rfa_id) == "cancelled"
    assert not rig.outbox.job_dir(rfa_id).exists()
    # the server offers termination, so the partial upload was deleted there too: no
    # clip bytes are left. (tuspyserver's DELETE does not wait for the PATCH the cancel
    # cut, which may write the upload's .info back afterwards, without its data.)
    assert [u.metadata["kind"] for u in tus_server.uploads() if u.path.exists()] == ["manifest"]
    assert "DELETE" in rig.log.methods()
    assert "cancelled" in [s for _i, s, _e in rig.states]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def test_a_slow_server_does_not_hold_back_a_share_to_another_origin(
    tmp_path: Path, footage, tus_server: TusServer
):
    """Origin B answers every exchange just before its deadline and takes one byte per
    PATCH, so its share never ends; the share to origin A, queued after it, is uploaded
    in full meanwhile (as A's server stores it), while B's server holds a few bytes."""
    slow = SlowTusServer(delay_s=1.5)  # the deadline of an exchange is >= timeout_s = 2 s
    rig = Rig(tmp_path, footage, timeout_s=2, max_attempts=1000)
    stuck = rig.enqueue(slow.url)  # older: first in the queue
    quick = rig.enqueue(tus_server.url)
    thread = threading.Thread(target=rig.worker.run, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        _wait(lambda: rig.outbox.state(quick) in ("done", "failed"), 90, "the share to A")
        took = time.monotonic() - started
        at_b = (dict(slow.offsets), list(slow.exchanges), slow.received)
        stuck_state = rig.outbox.state(stuck)
    finally:
        rig.stop.set()
        thread.join(timeout=30)
        slow.close()
    assert not thread.is_alive()
    print(f"share to A done in {took:.1f} s while B dripped; B: {at_b[1]}, {at_b[2]} bytes in")
    assert rig.outbox.state(quick) == "done"
    assert tus_server.upload_of("manifest").complete and tus_server.upload_of("clip").complete
    entries = {e["rfa_id"]: e for e in rig.outbox.shares(rig.last + 1)}
    assert entries[quick]["bytes_sent"] == entries[quick]["bytes_total"]
    stored = tus_server.upload_of("manifest").size + tus_server.upload_of("clip").size
    assert stored == entries[quick]["bytes_total"]  # measured at A's server
    acknowledged, exchanges, _received = at_b
    assert exchanges and exchanges[0] == "OPTIONS"  # B's share was under way first
    assert stuck_state == "uploading"  # and still is
    assert sum(acknowledged.values()) < entries[stuck]["bytes_total"]  # B holds a few bytes
    assert [s for i, s, _e in rig.states if i == quick] == ["uploading", "done"]
    assert "failed" not in [s for i, s, _e in rig.states if i == stuck]


def test_cancel_cuts_a_share_in_the_middle_of_an_exchange(tmp_path: Path, footage):
    """A cancel while the server holds a PATCH's answer back (for less than the exchange's
    deadline) hangs up on it at once, then asks the server to drop the upload."""
    slow = SlowTusServer(delay_s=0.05)
    rig = Rig(tmp_path, footage, timeout_s=60)
    rfa_id = rig.enqueue(slow.url)
    thread = threading.Thread(target=rig.worker.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: "PATCH" in slow.exchanges, 60, "a first PATCH")
        slow.delay_s = 50.0  # the next answer comes 50 s late: well inside the 60 s deadline
        _wait(lambda: 50.0 in slow.holding and slow.exchanges[-1] == "PATCH", 30, "a held PATCH")
        slow.delay_s = 0.05  # what comes after the cancel is answered at once
        cancelled_at = time.monotonic()
        assert rig.worker.cancel(rfa_id)
        _wait(lambda: slow.hung_up > 0, 20, "the device to hang up")  # not the 50 s answer
        cut_after = time.monotonic() - cancelled_at
        _wait(lambda: "DELETE" in slow.exchanges, 20, "the DELETE of the partial upload")
        _wait(lambda: rig.worker.lanes() == 0, 20, "the lane to end")
    finally:
        rig.stop.set()
        thread.join(timeout=30)
        slow.close()
    print(f"cancel cut the exchange after {cut_after:.2f} s")
    assert rig.outbox.state(rfa_id) == "cancelled"
    assert not rig.outbox.job_dir(rfa_id).exists()
    assert [s for _i, s, _e in rig.states] == ["uploading", "cancelled"]


# --- hostile upload servers end a share after max_attempts (issue 16) -------------------

HOSTILE_UPLOAD_SERVERS = {
    "Tus-Max-Size: ²": ({"max_size": "²".encode("latin-1")}, "malformed Tus-Max-Size"),
    "5,000-digit Tus-Max-Size": ({"max_size": b"9" * 5000}, "malformed Tus-Max-Size"),
    "Upload-Offset: ²": ({"offset": "²".encode("latin-1")}, "malformed Upload-Offset"),
    "5,000-digit Upload-Offset": ({"offset": b"1" * 5000}, "malformed Upload-Offset"),
    "keeps connections open": ({"keep": "open", "post_status": 503}, "POST: server answered 503"),
    "closes without saying so": (
        {"keep": "silent", "post_status": 503},
        "POST: server answered 503",
    ),
}


@pytest.mark.parametrize(
    ("server_kind", "expected"),
    HOSTILE_UPLOAD_SERVERS.values(),
    ids=HOSTILE_UPLOAD_SERVERS.keys(),
)
def test_a_hostile_upload_server_fails_the_share_after_max_attempts(
    tmp_path: Path, footage, caplog: pytest.LogCaptureFixture, server_kind, expected: str
):
    """Each of these made an endless loop (23 attempts in 46 s with max_attempts 3, a
    traceback every 2 s, the share "uploading" for ever). Each attempt starts with an
    OPTIONS, so the server counts the attempts."""
    server = LooseTusServer(**server_kind)
    rig = Rig(tmp_path, footage, max_attempts=3, retry_base_s=0.05)
    rfa_id = rig.enqueue(server.url)
    caplog.set_level(logging.DEBUG, logger="sync")
    try:
        assert rig.run(rfa_id, timeout=60) == "failed"
    finally:
        server.close()
    assert server.requests.count("OPTIONS") == 3  # exactly max_attempts, at the server
    if "keep" in server_kind:  # the exchange after each OPTIONS reached the server, on a
        assert server.requests.count("POST") == 3  # connection of its own
        assert server.connections == len(server.requests)
    job = rig.outbox.job(rfa_id)
    assert job is not None and job.error == f"{expected} (gave up after 3 attempts)"
    # "failed" reaches the daemon's on_state, which unpins the window (the daemon's test)
    assert [s for _i, s, _e in rig.states] == ["uploading", "failed"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in caplog.text and "²" not in caplog.text


def test_an_unexpected_error_in_an_attempt_is_a_counted_failure(
    tmp_path: Path, footage, caplog: pytest.LogCaptureFixture
):
    """A bug (here: the session factory raises) is counted like a transient failure and
    backed off: max_attempts ends the share. One line per attempt names the exception's
    type; its traceback only at the debug level."""
    calls: list[bool] = []

    def broken_session(loopback: bool) -> Any:
        calls.append(loopback)
        raise ZeroDivisionError("a bug")

    rig = Rig(tmp_path, footage, max_attempts=3, retry_base_s=0.05, session_factory=broken_session)
    rfa_id = rig.enqueue("http://127.0.0.1:9/files/")
    caplog.set_level(logging.INFO, logger="sync")
    assert rig.run(rfa_id, timeout=60) == "failed"
    assert len(calls) == 3
    job = rig.outbox.job(rfa_id)
    assert job is not None
    assert job.error == "unexpected ZeroDivisionError (gave up after 3 attempts)"
    assert not [r for r in caplog.records if r.exc_info]
    lines = [r.getMessage() for r in caplog.records if rfa_id in r.getMessage()]
    assert len([m for m in lines if "unexpected ZeroDivisionError" in m]) == 3, lines
    assert all("a bug" not in m for m in lines)


def test_a_share_error_is_a_short_printable_phrase():
    assert error_phrase("POST: server answered 503") == "POST: server answered 503"
    long = error_phrase("x" * 100, " (gave up after 12 attempts)")
    assert len(long) == 64 and long.endswith(" (gave up after 12 attempts)")
    assert error_phrase("a\x1b[2Jé\u202e") == "a?[2J??"
    assert len(error_phrase("y" * 100)) == 64
