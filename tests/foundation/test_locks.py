"""A named lock is held by one process at a time and by no dead one; a port someone
listens on is seen as taken, a port left by a stopped server is not."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest

from foundation.errors import LockHeldError
from foundation.locks import NamedLock, port_taken

HOLD = (
    "import sys, time; from foundation.locks import NamedLock; "
    "lock = NamedLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"
)


def test_a_lock_held_by_a_process_refuses_others_and_is_free_once_it_is_killed() -> None:
    name = f"doorbell-test/{uuid.uuid4().hex}"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, name], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(LockHeldError, match="held by another process"):
            NamedLock(name).acquire()
        assert NamedLock(name).holder_pid() == holder.pid
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the kernel frees it
        holder.wait(timeout=10)
        with NamedLock(name) as lock:
            assert lock.held
        assert NamedLock(name).holder_pid() is None
    finally:
        holder.kill()
        holder.wait()


def test_a_listening_port_is_taken_on_its_address_and_the_wildcard() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not port_taken("127.0.0.1", port)  # bound, not listening: not a server yet
        server.listen()
        assert port_taken("127.0.0.1", port) and port_taken("0.0.0.0", port)  # noqa: S104
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: TIME_WAIT on the port
            client.recv(1)
    assert not port_taken("127.0.0.1", port)  # a stopped server's port is free again
