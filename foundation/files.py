"""Small file-system facts every part may need."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import Self

from foundation.errors import LockHeldError
from foundation.locks import HeldLock

logger = logging.getLogger(__name__)

# The daemon's umask: what it creates is its user's alone (files 0600, folders 0700),
# whoever starts it and with whatever umask (systemd's unit sets the same, UMask=0077).
PRIVATE_UMASK = 0o077


def disk_free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def private_dir(path: Path) -> None:
    """Make sure `path` is a folder only its owner can enter: created 0700 (with its
    parents), or, when it exists with group or other permissions (a daemon run by hand
    with umask 022 before this check existed, an upgrade keeps it), tightened to 0700
    with one log line. Its files then cannot be reached by other users whatever their
    own modes."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o700)
        logger.warning("%s was open to other users (mode %04o); now 0700", path, mode)


class FileLock(HeldLock):
    """An exclusive flock on `path`, held until released or the holder dies (the kernel
    drops it even on kill -9, so a stale lock never blocks a restart). The holder's pid
    is written into the file for a person looking at it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeldError(f"{self.path} is held by another process") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _let_go(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
