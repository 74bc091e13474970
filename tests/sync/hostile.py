"""Hostile upload servers for the tests: real sockets on loopback, speaking just enough
HTTP to be believed.

- `HostileServer("drip")`: a status line, then one header byte a second, for ever.
- `HostileServer("huge")`: a valid OPTIONS answer with a 512 MiB body sent as fast as
  the socket takes it.
- `SlowTusServer`: a tus server that answers every exchange correctly but only just
  before the client's deadline, and acknowledges one byte per PATCH, so a share to it
  never finishes and never fails. It counts the request-body bytes it received (what an
  upload has cost the device) and notices when the device hangs up on an answer it is
  still holding back.
- `InjectingServer`: a tus server whose reason phrases, headers and bodies hold terminal
  escapes, C1 controls, bidi overrides, carriage returns and backspaces (and one header
  line that does not parse, which urllib3 logs): the first creation answers 503, every
  later one 400, so a share to it is retried once and then fails.
- `LooseTusServer`: a working tus server whose answers can carry a hostile
  `Tus-Max-Size` or `Upload-Offset` value (bytes, e.g. a latin-1 `²` or 5,000 digits),
  that can answer every creation 503, and that can leave `Connection: close` out of its
  answers and then keep the connection open for further requests (`keep="open"`) or
  close it without having said so (`keep="silent"`). It counts the requests and the
  connections it saw.
- `HostileBroker`: enough MQTT 5 to accept every CONNECT; once `attack` is set, it sends
  on every connection one QoS 1 PUBLISH whose remaining length announces `size` bytes,
  then its payload as fast as the socket takes it, and records how each one ended.
"""

from __future__ import annotations

import select
import socket
import threading
import time


class _LoopbackServer:
    """Accepts connections on a free loopback port; `_answer(conn)` serves each one."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            threading.Thread(target=self._guarded, args=(conn,), daemon=True).start()

    def _guarded(self, conn: socket.socket) -> None:
        try:
            self._answer(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class HostileServer(_LoopbackServer):
    """`mode` is "drip" or "huge" (see the module's doc); `sent` counts what it sent."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        conn.recv(65536)
        if self.mode == "drip":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n")
            while not self._stop.is_set():  # headers that never end
                conn.sendall(b"X")
                self.sent += 1
                time.sleep(1)
            return
        size = 512 * 1024 * 1024
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTus-Resumable: 1.0.0\r\nTus-Extension: creation\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        block = b"x" * 65536
        while self.sent < size and not self._stop.is_set():
            conn.sendall(block)
            self.sent += len(block)


class SlowTusServer(_LoopbackServer):
    """Holds every answer back for `delay_s` (set it just under the client's deadline)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.received = 0  # request-body bytes read from the device
        self.exchanges: list[str] = []  # methods, in the order they arrived
        self.hung_up = 0  # exchanges the device abandoned while the answer was held back
        self.holding: list[float] = []  # the delays of the answers being held back now
        self.offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__()

    def _read_request(self, conn: socket.socket) -> tuple[str, str, dict[str, str]] | None:
        request = read_request(conn)
        if request is None:
            return None
        method, path, headers, body = request
        with self._lock:
            self.received += len(body)
            self.exchanges.append(method)
        return method, path, headers

    def _hold_back(self, conn: socket.socket) -> bool:
        """Wait `delay_s`; False as soon as the device hangs up."""
        delay = self.delay_s
        deadline = time.monotonic() + delay
        with self._lock:
            self.holding.append(delay)
        try:
            while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                readable, _, _ = select.select([conn], [], [], min(left, 0.05))
                if readable and not _peek(conn):
                    with self._lock:
                        self.hung_up += 1
                    return False
            return True
        finally:
            with self._lock:
                self.holding.remove(delay)

    def _answer(self, conn: socket.socket) -> None:
        request = self._read_request(conn)
        if request is None or not self._hold_back(conn):
            return
        method, path, headers = request
        lines = ["Tus-Resumable: 1.0.0", "Connection: close", "Content-Length: 0"]
        if method == "OPTIONS":
            status = "204 No Content"
            lines += ["Tus-Version: 1.0.0", "Tus-Extension: creation,termination"]
        elif method == "POST":
            with self._lock:
                name = f"/files/{len(self.offsets) + 1}"
                self.offsets[name] = 0
            status = "201 Created"
            lines.append(f"Location: {name}")
        elif method in ("HEAD", "PATCH") and path in self.offsets:
            with self._lock:
                if method == "PATCH":  # takes one byte of whatever was sent
                    self.offsets[path] = int(headers.get("upload-offset", "0")) + 1
                offset = self.offsets[path]
            status = "200 OK" if method == "HEAD" else "204 No Content"
            lines.append(f"Upload-Offset: {offset}")
        elif method == "DELETE":
            status = "204 No Content"
        else:
            status = "404 Not Found"
        head = "".join(f"{line}\r\n" for line in lines)
        conn.sendall(f"HTTP/1.1 {status}\r\n{head}\r\n".encode())


def read_request(conn: socket.socket) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request (method, path, lower-cased headers, body), or None when the
    peer hung up before its headers ended; a body cut short is returned as it arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        piece = conn.recv(min(65536, length - len(body)))
        if not piece:
            break
        body += piece
    return method, path, headers, body


class LooseTusServer(_LoopbackServer):
    """See the module's doc. `requests` lists the methods in the order they arrived."""

    def __init__(
        self,
        *,
        keep: str = "close",
        max_size: bytes | None = None,
        offset: bytes | None = None,
        post_status: int = 201,
    ) -> None:
        assert keep in ("close", "open", "silent")
        self.keep = keep
        self.max_size = max_size
        self.offset = offset
        self.post_status = post_status
        self.requests: list[str] = []
        self.connections = 0
        self.offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        while (request := read_request(conn)) is not None:
            conn.sendall(self._response(*request))
            if self.keep != "open":
                return  # closed, whether or not the answer said so
            # "open": wait for the next request on this connection, as a keep-alive server

    def _response(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        with self._lock:
            self.requests.append(method)
            lines = [b"Tus-Resumable: 1.0.0", b"Content-Length: 0"]
            if self.keep == "close":
                lines.append(b"Connection: close")
            if method == "OPTIONS":
                status = b"204 No Content"
                lines += [b"Tus-Version: 1.0.0", b"Tus-Extension: creation,termination"]
                if self.max_size is not None:
                    lines.append(b"Tus-Max-Size: " + self.max_size)
            elif method == "POST" and self.post_status != 201:
                status = b"%d Busy" % self.post_status
            elif method == "POST":
                name = f"/files/{len(self.offsets) + 1}"
                self.offsets[name] = 0
                status = b"201 Created"
                lines.append(b"Location: " + name.encode())
            elif method in ("HEAD", "PATCH") and path in self.offsets:
                if method == "PATCH":
                    self.offsets[path] = int(headers["upload-offset"]) + len(body)
                status = b"200 OK" if method == "HEAD" else b"204 No Content"
                value = self.offset if self.offset is not None else b"%d" % self.offsets[path]
                lines.append(b"Upload-Offset: " + value)
            elif method == "DELETE":
                status = b"204 No Content"
            else:
                status = b"404 Not Found"
        return b"HTTP/1.1 " + status + b"\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n"


# What a hostile peer writes wherever it chooses text: ANSI clear-screen and set-title, a
# C1 CSI, a right-to-left override, a carriage return and backspaces.
EVIL = "\x1b[2J\x1b]0;pwned\x07\u009b31m\u202eKO\r\x08\x08ok"


class InjectingServer(_LoopbackServer):
    """See the module's doc; `answered` lists the (method, status) it sent."""

    def __init__(self) -> None:
        self.answered: list[tuple[str, int]] = []
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return
            data += piece
        method = data.split(b" ", 1)[0].decode("latin-1")
        evil = EVIL.encode()  # UTF-8: read as latin-1 by http.client, C1 bytes and all
        body = b"<h1>" + evil + b"</h1>"
        if method == "OPTIONS":
            status = b"204 " + evil
            lines = [b"Tus-Version: 1.0.0", b"Tus-Extension: creation", b"Content-Length: 0"]
            body = b""
        else:
            status = b"503 " + evil if ("POST", 503) not in self.answered else b"400 " + evil
            lines = [b"Content-Type: text/html", b"Content-Length: %d" % len(body)]
        lines += [b"Tus-Resumable: 1.0.0", b"Connection: close", b"X-Error: " + evil]
        lines.append(evil + b" a header line without a colon")  # urllib3 warns of it
        self.answered.append((method, int(status[:3])))
        conn.sendall(b"HTTP/1.1 " + status + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + body)


def _peek(conn: socket.socket) -> bytes:
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except OSError:  # reset: hung up as well
        return b""


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


CONNACK_V5 = bytes([0x20, 3, 0, 0, 0])  # session not present, success, no properties


class HostileBroker(_LoopbackServer):
    def __init__(self, size: int, topic: str = "rfa/v1/cell/9q8yy") -> None:
        self.size = size
        self.topic = topic.encode()
        self.attack = threading.Event()
        self.connections = 0
        self.publishes: list[tuple[str, int]] = []  # (how it ended, payload bytes sent)
        super().__init__()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _answer(self, conn: socket.socket) -> None:
        if not conn.recv(65536):  # CONNECT
            return
        conn.sendall(CONNACK_V5)
        self.connections += 1
        conn.settimeout(0.2)
        while not self.attack.is_set() and not self._stop.is_set():
            try:  # SUBSCRIBE, the status PUBLISH, PINGREQ: read and ignored
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
        variable = len(self.topic).to_bytes(2, "big") + self.topic + b"\x00\x01" + b"\x00"
        head = bytes([0x32]) + remaining_length(self.size) + variable
        conn.settimeout(10)  # a client that neither reads nor hangs up ends as "timeout"
        sent = 0
        block = b"x" * 65536
        try:
            conn.sendall(head)
            while sent < self.size - len(variable) and not self._stop.is_set():
                conn.sendall(block)
                sent += len(block)
            ended = "complete"
        except TimeoutError:
            ended = "timeout"
        except OSError:
            ended = "hung up"
        self.publishes.append((ended, sent))
