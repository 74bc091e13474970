"""What another process may already hold, beyond a lock file (foundation.files.FileLock):
a system-wide lock by name, and a TCP port that someone listens on.

Both are asked before a daemon connects anything, so that a second one started by
mistake refuses instead of knocking the first off its broker session or its port.
"""

from __future__ import annotations

import errno
import socket
import struct
from abc import ABC, abstractmethod
from typing import Self

from foundation.errors import LockHeldError, MisuseError

MAX_NAME_BYTES = 107  # sun_path holds 108 bytes, the first is the abstract namespace's NUL


class HeldLock(ABC):
    """What every lock here shares: held from `acquire` (LockHeldError when another
    process holds it) until `release` or this process's death; a context manager."""

    @abstractmethod
    def acquire(self) -> Self: ...

    @property
    @abstractmethod
    def held(self) -> bool: ...

    @abstractmethod
    def _let_go(self) -> None:
        """Close what holds the lock (only called while held)."""

    def release(self) -> None:
        if self.held:
            self._let_go()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class NamedLock(HeldLock):
    """A lock held by binding a Unix socket in Linux's abstract namespace.

    The name is system-wide (per network namespace, so every process that reaches the
    same network), it lives in no directory that could be missing, read-only (systemd's
    ProtectSystem=strict) or differ between two configs, and the kernel frees it the
    moment its holder exits, kill -9 included: a dead process cannot hold it, and there
    is never a stale lock to clean up. The socket is not inherited by child processes.
    It listens, so a process that finds the name taken can ask the kernel who holds it.
    """

    def __init__(self, name: str) -> None:
        if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise MisuseError(f"a lock name is 1 to {MAX_NAME_BYTES} bytes")
        self.name = name
        self._sock: socket.socket | None = None

    def acquire(self) -> Self:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind("\0" + self.name)
            sock.listen(1)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            raise LockHeldError(f"{self.name} is held by another process") from None
        self._sock = sock
        return self

    def holder_pid(self) -> int | None:
        """The pid of the process that holds the name (SO_PEERCRED), if it can be told."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect("\0" + self.name)
                creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            except OSError:
                return None
        pid, _uid, _gid = struct.unpack("3i", creds)
        return pid or None

    @property
    def held(self) -> bool:
        return self._sock is not None

    def _let_go(self) -> None:
        assert self._sock is not None
        self._sock.close()
        self._sock = None


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on TCP `host:port` (a test bind, released at
    once). With SO_REUSEADDR, as servers bind, so a port left in TIME_WAIT by a daemon
    that just stopped counts as free; on Linux a listening socket still refuses it,
    whether it is bound to the same address or to the wildcard."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False  # a name that does not resolve: the server says so when it binds
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:  # other errors (an address not on this machine) are the
            return exc.errno == errno.EADDRINUSE  # server's to report when it binds
    return False
