"""The recorder in a child process of the daemon, so that nothing else in the daemon (MQTT,
uploads, the GIL they hold) can stall capture and encoding.

Daemon and recorder share nothing a dead peer can leave locked:
- **stop**: the daemon holds the write end of a pipe whose read end only the child holds.
  The daemon closes it to ask for a stop; when the daemon dies, however it dies (kill -9
  included), the kernel closes it. Either way the child reads end-of-file, sets its own
  local `threading.Event`, finishes the open segment and exits, releasing the buffer.
- **SIGTERM** to the child (an operator, or a signal sent to the daemon's whole process
  group by `timeout`, a shell or a supervisor) does the same. The handler does nothing in
  Python; `signal.set_wakeup_fd` writes the signal into a pipe the same watcher reads, so
  no lock is taken inside a signal handler. Ctrl-C reaches the whole group too; the
  daemon coordinates, so the child ignores SIGINT.
- **PR_SET_PDEATHSIG**: the kernel sends the child SIGTERM when the thread that started
  it ends. Belt and braces: it still works if the pipe's write end were ever inherited by
  another process (which would keep the end-of-file from coming).
- **health**: counters in shared memory with one writer and no lock (recorder/health.py).
- **privacy masks**: the daemon sends the masks in force (the config's and the owner's)
  down a second one-way pipe whenever they change; a thread in the child hands them to
  the recorder's `MaskFeed`, and the next frame is painted with them (a new segment
  starts there, recorder/recorder.py). A child started again gets the latest set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from foundation.clock import Clock
from foundation.display import log_to
from foundation.errors import DoorbellError, RecorderError
from foundation.files import disk_free_bytes
from recorder.buffer import RollingBuffer
from recorder.health import HealthCounters, RecorderHealth
from recorder.masks import Mask, MaskFeed, parse_masks
from recorder.recorder import Recorder
from recorder.settings import CameraSettings, StorageSettings
from recorder.sources import make_source

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> bool:
    """Ask for SIGTERM when the parent goes; False if it has already gone."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    return os.getppid() == parent_pid


def _watch_for_stop(stop_reader: multiprocessing.connection.Connection) -> threading.Event:
    """A local event set when the daemon closes the stop pipe (or dies), or SIGTERM lands."""
    stop = threading.Event()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)  # the wakeup fd does it
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        ready = multiprocessing.connection.wait([stop_reader, wake_read])
        if stop_reader in ready:
            logger.info("the daemon asked the recorder to stop (or is gone)")
        else:
            logger.info("signal SIGTERM: the recorder stops")
        stop.set()

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    return stop


def _follow_masks(reader: multiprocessing.connection.Connection, feed: MaskFeed) -> None:
    """Hand each set of masks the daemon sends to `feed`, until the daemon closes the pipe."""

    def follow() -> None:
        while True:
            try:
                data = reader.recv()
            except (EOFError, OSError):
                return
            try:
                feed.set(parse_masks(data))
            except DoorbellError as exc:  # checked by the daemon already; keep the old set
                logger.error("new privacy masks refused: %s", exc)
                continue
            logger.info("privacy masks now: %d", len(feed.current()[1]))

    threading.Thread(target=follow, name="masks", daemon=True).start()


def _child_main(
    camera: CameraSettings,
    storage: StorageSettings,
    stop_reader: multiprocessing.connection.Connection,
    mask_reader: multiprocessing.connection.Connection,
    array: Any,
    clock: Clock,
    fast_seconds: float | None,
    free_space: Callable[[Path], int],
    parent_pid: int,
) -> None:
    log_to(sys.stderr, level=logging.INFO, fmt="%(levelname)s %(name)s: %(message)s")
    stop = _watch_for_stop(stop_reader)
    if not _die_with_parent(parent_pid):
        return  # the daemon died while this process was starting
    masks = MaskFeed(camera.masks)
    _follow_masks(mask_reader, masks)
    source = make_source(camera, clock, fast_seconds=fast_seconds, masks=masks)
    buffer = RollingBuffer.open(storage.dir, reconcile=False)
    try:
        Recorder(
            source,
            buffer,
            storage=storage,
            clock=clock,
            free_space=free_space,
            stop=stop,
            preset=camera.preset,
            counters=HealthCounters(array),
            masks=masks,
        ).run()
    except DoorbellError as exc:  # a known failure (no camera, ...): one line, no traceback
        logger.error("the recorder stopped: %s", exc)
        raise SystemExit(1) from None
    finally:
        buffer.close()


class RecorderProcess:
    """A recorder in a child process (spawned, not forked: the parent has threads).
    `start` and `stop` are the daemon's; `health` reads the child's shared counters."""

    def __init__(
        self,
        *,
        camera: CameraSettings,
        storage: StorageSettings,
        clock: Clock,
        fast_seconds: float | None = None,
        free_space: Callable[[Path], int] = disk_free_bytes,
    ) -> None:
        """`clock` and `free_space` must pickle: the child gets its own copies."""
        self._ctx = multiprocessing.get_context("spawn")
        self._camera = camera
        self._storage = storage
        self._clock = clock
        self._fast_seconds = fast_seconds
        self._free_space = free_space
        self._counters = HealthCounters(self._ctx.RawArray("d", len(HealthCounters.FIELDS)))
        self._counters.set_last_write(-1.0)
        self._process: Any = None
        self._stop_writer: multiprocessing.connection.Connection | None = None
        self._mask_writer: multiprocessing.connection.Connection | None = None

    def start(self) -> None:
        """Start a child (again, after one died). Its stop pipe is new each time. One
        recorder at a time: a previous child still running (a starved one looks dead to
        a health check long before it is) is stopped and reaped first, never left beside
        the new one."""
        if self._process is not None and self._process.exitcode is None:
            self.stop()
            if self._process.exitcode is None:  # killed, not yet reaped (stuck in I/O)
                raise RecorderError(f"the previous recorder (pid {self.pid}) has not exited")
        self._close_stop_pipe()
        reader, writer = self._ctx.Pipe(duplex=False)
        mask_reader, mask_writer = self._ctx.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=_child_main,
            args=(
                self._camera,
                self._storage,
                reader,
                mask_reader,
                self._counters.array,
                self._clock,
                self._fast_seconds,
                self._free_space,
                os.getpid(),
            ),
            name="recorder",
            daemon=True,
        )
        self._process.start()
        reader.close()  # only the child holds the read end: its end-of-file is our stop
        mask_reader.close()
        self._stop_writer = writer
        self._mask_writer = mask_writer

    @property
    def masks(self) -> tuple[Mask, ...]:
        return self._camera.masks

    def set_masks(self, masks: tuple[Mask, ...]) -> None:
        """The masks in force from now on: the running child paints them from its next
        frame (a new segment), and a child started later starts with them."""
        self._camera = replace(self._camera, masks=tuple(masks))  # checks them
        writer = self._mask_writer
        if writer is not None and self.is_alive():
            try:
                writer.send([m.to_json() for m in masks])
            except OSError as exc:  # the child is dying; its successor starts with them
                logger.warning("could not send the privacy masks to the recorder: %s", exc)

    def _close_stop_pipe(self) -> None:
        if self._stop_writer is not None:
            self._stop_writer.close()
            self._stop_writer = None
        if self._mask_writer is not None:
            self._mask_writer.close()
            self._mask_writer = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    def health(self) -> RecorderHealth:
        return self._counters.snapshot()

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ask the child to finish its segment and exit; kill it if it will not."""
        self._close_stop_pipe()
        if self._process is None:
            return None
        self._process.join(timeout)
        if self._process.is_alive():
            logger.error("recorder did not stop in %.0f s; killing it", timeout)
            self._process.kill()
            self._process.join(5)
        return self._process.exitcode
