"""The local control socket: how `doorbellctl` talks to a running daemon.

One JSON object per line each way over a Unix stream socket. The socket file is 0660
(root and the service's group, via the runtime directory); anything else on the machine
cannot connect. A socket left behind by a killed daemon is replaced; one that still
answers belongs to a live daemon and is never stolen.

The socket lives as long as the daemon: when `accept()` fails (no file descriptor left,
EMFILE, because something else holds them all) the loop pauses and tries again, logging
that once a minute with a count; only the stop event closes and unlinks it. A control
socket that closed itself on EMFILE could not be bound again in the same process and
would take the daemon down with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foundation.errors import DoorbellError, UnavailableError
from foundation.lograte import OncePerInterval, held_note

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
ACCEPT_PAUSE_S = 0.2  # after a failed accept(): the listener stays readable, don't spin

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(DoorbellError):
    """The control socket could not be used."""


class DaemonNotRunning(ControlError, UnavailableError):
    """Nothing is listening on the control socket."""


def _read_line(conn: socket.socket, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > limit:
            break
    data = b"".join(chunks)
    if size > limit:
        raise ControlError("request too large")
    return data.split(b"\n", 1)[0]


def refuse_if_answering(path: Path) -> bool:
    """Raise ControlError when a live daemon answers on the socket `path`. Returns
    whether a stale socket file (left by a killed daemon) is there instead."""
    if not path.exists() and not path.is_symlink():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    except OSError as exc:
        raise ControlError(f"cannot check the control socket {path}: {exc.strerror}") from exc
    finally:
        probe.close()
    raise ControlError(f"another daemon is already listening on {path}")


def _claim_path(path: Path) -> None:
    """Remove a stale socket file, refusing if a live daemon still answers on it."""
    if refuse_if_answering(path):
        logger.info("replacing stale control socket %s", path)
        path.unlink(missing_ok=True)


class ControlServer:
    """Serves requests on the control socket until `stop` is set."""

    def __init__(self, path: Path, handler: Handler, stop: threading.Event) -> None:
        self._path = path
        self._handler = handler
        self._stop = stop
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        # The folder is not created here: as root that would make a directory nobody
        # configured (doorbelld's start check refuses a missing one first).
        if not self._path.parent.is_dir():
            raise ControlError(f"the control socket's folder {self._path.parent} does not exist")
        _claim_path(self._path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Born under the daemon's umask 077 (0600), then opened to the group that may use
        # doorbellctl. Not by switching the umask around bind(): the umask is the whole
        # process's, and a file another thread created in that instant would take it.
        sock.bind(str(self._path))
        os.chmod(self._path, 0o660)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock

    def serve(self) -> None:
        """Accept loop, for a thread. Each connection is one request and one reply."""
        if self._sock is None:
            raise ControlError("bind() first")
        errors = OncePerInterval()
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ECONNABORTED...
                    self._note(errors, f"cannot accept a request: {exc.strerror or exc}")
                    self._stop.wait(ACCEPT_PAUSE_S)
                    continue
                try:
                    threading.Thread(
                        target=self._serve_one, args=(conn,), name="control-conn", daemon=True
                    ).start()
                except RuntimeError as exc:  # no thread to be had: refuse this one
                    conn.close()
                    self._note(errors, f"cannot answer a request: {exc}")
        finally:
            if self._stop.is_set():
                self.close()

    @staticmethod
    def _note(errors: OncePerInterval, message: str) -> None:
        held = errors.due(message)
        if held is not None:
            logger.warning("control socket: %s%s", message, held_note(held))

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                line = _read_line(conn, MAX_REQUEST_BYTES)
                request = json.loads(line)
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    raise ControlError("a request is a JSON object with a 'cmd'")
                reply = self._handler(request)
            except (ValueError, ControlError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            except DoorbellError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception:
                logger.exception("control request failed")
                reply = {"ok": False, "error": "internal error (see the daemon's log)"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode("utf-8") + b"\n")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()


def control_request(path: Path, request: dict[str, Any], *, timeout: float = 30.0) -> dict:
    """Send one request to the daemon and return its reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunning(
                f"the doorbell daemon is not running (no answer on {path})"
            ) from exc
        except PermissionError as exc:
            raise ControlError(
                f"permission denied on {path}: run as root or a member of the service's group"
            ) from exc
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        line = _read_line(sock, 16 * 1024 * 1024)
    finally:
        sock.close()
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise ControlError("the daemon sent a malformed reply") from exc
    if not isinstance(reply, dict):
        raise ControlError("the daemon sent a malformed reply")
    return reply
