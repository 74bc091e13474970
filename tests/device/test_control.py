"""The control socket: request/reply, hostile input, stale sockets, a live daemon kept."""

import socket
import stat
import threading
from pathlib import Path

import pytest

from device.control import ControlError, ControlServer, DaemonNotRunning, control_request


def start(path: Path, handler) -> tuple[ControlServer, threading.Event, threading.Thread]:
    path.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    server = ControlServer(path, handler, stop)
    server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    return server, stop, thread


def echo(request: dict) -> dict:
    if request["cmd"] == "boom":
        raise RuntimeError("secret detail")
    return {"ok": True, "echo": request}


def test_request_reply_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"
    _, stop, thread = start(path, echo)
    try:
        assert control_request(path, {"cmd": "status", "x": 1}) == {
            "ok": True,
            "echo": {"cmd": "status", "x": 1},
        }
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0, oct(mode)
        reply = control_request(path, {"cmd": "boom"})
        assert reply["ok"] is False and "secret" not in reply["error"]
    finally:
        stop.set()
        thread.join(5)
    assert not path.exists()


def test_hostile_requests_get_errors_not_crashes(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    _, stop, thread = start(path, echo)
    try:
        for raw in [b"not json\n", b"[1,2]\n", b'{"no":"cmd"}\n', b"\xff\xfe\n", b"x" * 70000]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                client.connect(str(path))
                client.sendall(raw)
                client.shutdown(socket.SHUT_WR)
                reply = client.recv(65536)
            assert b'"ok": false' in reply
        assert control_request(path, {"cmd": "still-alive"})["ok"] is True
    finally:
        stop.set()
        thread.join(5)


def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a killed daemon's leftover
    _, stop, thread = start(path, echo)
    try:
        assert control_request(path, {"cmd": "x"})["ok"] is True
        with pytest.raises(ControlError, match="already listening"):
            ControlServer(path, echo, threading.Event()).bind()
        assert control_request(path, {"cmd": "x"})["ok"] is True
    finally:
        stop.set()
        thread.join(5)


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="not running"):
        control_request(tmp_path / "absent.sock", {"cmd": "status"})


def test_bind_never_creates_the_socket_folder(tmp_path: Path) -> None:
    """As root, creating it would make a directory nobody configured."""
    path = tmp_path / "missing" / "control.sock"
    with pytest.raises(ControlError, match="does not exist"):
        ControlServer(path, echo, threading.Event()).bind()
    assert not path.parent.exists()


def test_the_socket_survives_running_out_of_file_descriptors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """EMFILE on accept() (something else holds every descriptor): the socket stays,
    says so once, and answers as soon as descriptors are free again."""
    import json
    import os
    import resource
    import time

    path = tmp_path / "control.sock"
    _, stop, thread = start(path, echo)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(10)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 32, hard))
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        client.connect(str(path))  # queued in the backlog: no descriptor needed to connect
        client.sendall(b'{"cmd": "while-starved"}\n')
        time.sleep(2.0)  # ten accept() attempts, all EMFILE
        assert thread.is_alive() and path.exists()
        warnings = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        reply = json.loads(client.recv(65536))
        assert reply == {"ok": True, "echo": {"cmd": "while-starved"}}
        assert control_request(path, {"cmd": "after"})["ok"] is True
    finally:
        client.close()
        stop.set()
        thread.join(5)
    assert not path.exists()  # the stop event, and only it, removes the socket
