"""The clock, behind a small interface so tests can move time.

`wall_ms` is the capture time stamped on frames; `monotonic` paces loops; `synchronized`
tells whether the wall clock is known to be right (NTP has synced). A Pi without a
real-time clock boots with a wrong wall clock, so footage recorded before sync must not
be shared as if its timestamps were certain.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def wall_ms(self) -> int: ...

    def monotonic(self) -> float: ...

    def synchronized(self) -> bool: ...


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; only `status` is read, the rest is padding room.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


_STA_UNSYNC = 0x0040
_TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


def _kernel_says_synchronized() -> bool | None:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    # TIME_ERROR (5) or STA_UNSYNC means the kernel does not consider the clock disciplined.
    return state != 5 and not (timex.status & _STA_UNSYNC)


_RTC_DIR = Path("/sys/class/rtc")


def sync_evidence() -> dict[str, object]:
    """How this machine's clock synchronization is decided, for `doorbellctl status`:
    systemd-timesyncd's flag file, the kernel's NTP status (adjtimex, set by any NTP
    daemon: timesyncd, chrony, ntpd) and whether a battery-backed RTC exists (one keeps
    the time across power cuts; it does not make the clock synchronized)."""
    rtcs = sorted(p.name for p in _RTC_DIR.iterdir()) if _RTC_DIR.is_dir() else []
    return {
        "timesyncd": _TIMESYNCD_FLAG.exists(),
        "kernel_ntp": _kernel_says_synchronized(),
        "rtc": rtcs[0] if rtcs else None,
    }


class SystemClock:
    """The machine's clocks. Synchronization is what the kernel or timesyncd reports;
    `assume_synchronized` is for machines whose clock is disciplined some other way
    (a laptop running the demo, a container)."""

    def __init__(self, *, assume_synchronized: bool = False) -> None:
        self._assume = assume_synchronized

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def synchronized(self) -> bool:
        if self._assume or _TIMESYNCD_FLAG.exists():
            return True
        return bool(_kernel_says_synchronized())


class FakeClock:
    """A clock tests can move: wall time can jump either way, monotonic time only forward."""

    def __init__(self, wall_ms: int, *, synchronized: bool = True) -> None:
        self._lock = threading.Lock()
        self._wall_ms = wall_ms
        self._mono = 1000.0
        self._synchronized = synchronized

    def wall_ms(self) -> int:
        with self._lock:
            return self._wall_ms

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def synchronized(self) -> bool:
        with self._lock:
            return self._synchronized

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall_ms += round(seconds * 1000)

    def jump_wall(self, delta_ms: int) -> None:
        with self._lock:
            self._wall_ms += delta_ms

    def set_synchronized(self, value: bool) -> None:
        with self._lock:
            self._synchronized = value


class SteeredClock:
    """The system clock, steered from a small JSON file that tests write:
    `{"offset_ms": -3600000, "synchronized": false}` (either key optional).

    It lets an integration test jump the wall clock of a real daemon and its recorder
    process (both read the same file) without privileges. Enabled only by the daemon's
    test hook (`DOORBELL_TEST_CLOCK_FILE`); it pickles, so the recorder child gets one too.
    """

    def __init__(self, control: Path, *, assume_synchronized: bool = False) -> None:
        self._control = control
        self._base = SystemClock(assume_synchronized=assume_synchronized)
        self._stamp: int | None = None
        self._offset_ms = 0
        self._synchronized: bool | None = None

    def _refresh(self) -> None:
        import json

        try:
            stamp = self._control.stat().st_mtime_ns
        except OSError:
            self._stamp, self._offset_ms, self._synchronized = None, 0, None
            return
        if stamp == self._stamp:
            return
        try:
            doc = json.loads(self._control.read_text())
            offset = int(doc.get("offset_ms", 0))
            synced = doc.get("synchronized")
        except (OSError, ValueError, TypeError, AttributeError):
            return  # a half-written file: keep the last good steering
        self._stamp, self._offset_ms = stamp, offset
        self._synchronized = synced if isinstance(synced, bool) else None

    def wall_ms(self) -> int:
        self._refresh()
        return self._base.wall_ms() + self._offset_ms

    def monotonic(self) -> float:
        return self._base.monotonic()

    def synchronized(self) -> bool:
        self._refresh()
        if self._synchronized is not None:
            return self._synchronized
        return self._base.synchronized()
