"""A tus 1.0 client (core + creation, checksum where offered) that only talks to the
addresses protocol.md §4 rule 9 allows.

Why not tuspy: tuspy's uploader opens its own `requests` calls, so it offers no hook to
check the address a socket actually connected to (DNS rebinding), it follows redirects,
it accepts any `Location` the server returns, it has no bandwidth cap, and its resume
keeps state in its own URL storage instead of our durable outbox. Each of those is a
security or durability requirement here, and the protocol is small (OPTIONS, POST, HEAD,
PATCH, DELETE), so this module implements it over `requests` directly.

What it owns:

- `CheckedSession`: a `requests.Session` whose connections resolve the host themselves,
  connect only to addresses `sync.netpolicy.address_allowed` accepts, and check the
  socket's peer address after connecting. No proxies or netrc from the environment
  (`trust_env` off: a proxy would make the checked address the proxy's), no redirects.
- `TusClient`: OPTIONS / create / HEAD / PATCH / DELETE with every response checked, a
  `Location` on another origin refused, chunked uploads with an optional token-bucket
  bandwidth cap and the sha1 `Upload-Checksum` when the server lists `checksum`.

Errors: `TusRefused` is permanent (4xx, a refused address or Location, a redirect,
a malformed answer to a request the server should understand); `TusGone` means the
server no longer has an upload (404/410), so the caller creates it anew; `TusTransient`
is worth retrying later (5xx, 423/429, network failures, time-outs, and a number header
that is not a number: `MalformedNumber`, so a hostile server costs a counted attempt).

Numbers in headers (`Upload-Offset`, `Tus-Max-Size`) go through `header_number` and
nothing else: ASCII digits only, at most `MAX_HEADER_DIGITS` of them. `str.isdigit()`
is no check for `int()`: it accepts `²` and other Unicode digits that `int()` refuses
(or reads), and `int()` refuses a value of more than 4,300 digits outright.

Metadata: besides the keys of protocol.md §6.1 the client sends `filetype`
(`application/octet-stream`): tuspyserver answers HEAD with 400 for an upload created
without it, which would make resuming impossible there. It says nothing about the share.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from foundation.errors import DoorbellError
from foundation.stop import StopSignal
from sync.netpolicy import address_allowed, upload_url_problem
from sync.settings import DEFAULT_CHUNK_BYTES

logger = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
# A pacing slice: small enough that a capped upload is smooth, large enough that an
# uncapped one is not slowed by per-call overhead.
_PACE_SLICE = 256 * 1024


class TusError(DoorbellError):
    """An upload step failed."""


class TusRefused(TusError):
    """Permanent: retrying the same request cannot succeed."""


class TusGone(TusError):
    """The server no longer knows the upload (404/410): create it anew."""


class TusTransient(TusError):
    """Temporary: a network failure, a time-out or a server error."""


class MalformedNumber(TusTransient):
    """A header that must hold a number does not (see `header_number`)."""


# The longest number a header may hold: below 2**63, and more than any size or offset.
MAX_HEADER_DIGITS = 18


def header_number(name: str, value: str | None) -> int:
    """The non-negative integer a header field holds: 1 to `MAX_HEADER_DIGITS` ASCII
    digits, leading zeros allowed, around them only the spaces and tabs HTTP allows
    (RFC 9110 §5.5; http.client keeps trailing ones). Anything else, an absent header
    (`None`) included, raises `MalformedNumber` naming the header, never the value: the
    message is the device's own phrase (protocol.md §6.3), not the server's text."""
    digits = (value or "").strip(" \t")
    if not (0 < len(digits) <= MAX_HEADER_DIGITS and digits.isascii() and digits.isdigit()):
        raise MalformedNumber(f"malformed {name}")
    return int(digits)


class CutShort(StrEnum):
    """Why an exchange's sockets were shut down before it finished (in its TusTransient)."""

    CANCELLED = "cancelled"  # `stop` was set: the share was cancelled or the daemon stops
    TOO_SLOW = "took too long"  # its deadline passed


class AddressRefused(OSError):
    """A host resolved only to addresses the upload policy forbids."""


# --- connections that only reach allowed addresses --------------------------------------


def connect_checked(
    host: str,
    port: int,
    timeout: float | None,
    *,
    allow_loopback: bool,
    socket_options: Any = None,
) -> socket.socket:
    """Resolve `host` ourselves, connect to an allowed address, and check the peer.

    Resolving here (instead of letting the socket library resolve again) means the address
    that was checked is the address that is connected to, so DNS rebinding cannot slip a
    private address in between the check and the connect."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    refused: list[str] = []
    last_error: OSError | None = None
    for family, socktype, proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if not address_allowed(address, allow_loopback=allow_loopback):
            refused.append(address)
            continue
        sock = socket.socket(family, socktype, proto)
        try:
            for level, option, value in socket_options or ():
                sock.setsockopt(level, option, value)
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            peer = str(sock.getpeername()[0])
            if not address_allowed(peer, allow_loopback=allow_loopback):
                raise AddressRefused(f"connected peer {peer} is not an allowed address")
            exchange = getattr(_EXCHANGE, "sockets", None)
            if exchange is not None:
                exchange.append(sock)  # so the exchange's deadline can cut it
            return sock
        except AddressRefused:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last_error = exc
    if last_error is not None:
        raise last_error
    raise AddressRefused(
        f"{host} resolves only to addresses uploads may not reach ({', '.join(refused[:4])})"
    )


# The sockets opened by the HTTP exchange running on this thread (TusClient._request).
_EXCHANGE = threading.local()
# At most this much of any response body is read; tus answers carry their news in headers.
MAX_RESPONSE_BODY = 4096
# The slowest uplink an exchange's deadline allows for (bytes per second of request body).
MIN_UPLOAD_RATE = 32 * 1024


def _cut(sockets: list[socket.socket]) -> None:
    for sock in list(sockets):
        with contextlib.suppress(OSError):  # already closed by the other side
            sock.shutdown(socket.SHUT_RDWR)


def _timeout_value(timeout: Any) -> float | None:
    return timeout if isinstance(timeout, int | float) else None


class _CheckedConnectionMixin:
    allow_loopback = False

    def _new_conn(self) -> socket.socket:
        conn: Any = self
        try:
            return connect_checked(
                conn._dns_host,
                conn.port,
                _timeout_value(conn.timeout),
                allow_loopback=self.allow_loopback,
                socket_options=conn.socket_options,
            )
        except AddressRefused:
            raise
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(conn, f"failed to connect: {exc}") from exc


class _NoReusePoolMixin:
    """A pool that never keeps a connection: one connection per exchange.

    The request says `Connection: close`, but urllib3 reuses a connection unless the
    *answer* says so, and it hands the connection back to its pool as soon as the answer's
    body is read, before `TusClient._request` shuts its sockets down. A server that left
    the header out then had its closed socket handed to the next request, which raised
    "ValueError: file descriptor cannot be a negative integer (-1)" (issue 16).

    Why not keep connections alive instead: the exchange's deadline and cancel cut the
    sockets that exchange opened (`_EXCHANGE`), which a reused connection was not; a
    connection idle in a pool between exchanges could be held open by the server, for
    ever; and a fresh connection is a fresh address check (`connect_checked`). The cost
    is one connection (and TLS handshake) per exchange, that is per chunk of
    `DEFAULT_CHUNK_BYTES` (8 MiB), which is negligible on any uplink.

    urllib3 offers no switch for this; `_put_conn` is the one place every connection goes
    back through (after an answer, and after an error), so it closes the connection and
    returns an empty slot (`None`, as urllib3 itself does for a connection it dropped)."""

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.close()
        super()._put_conn(None)  # type: ignore[misc]


def _pool_classes(allow_loopback: bool) -> dict[str, type]:
    http_conn = type(
        "CheckedHTTPConnection",
        (_CheckedConnectionMixin, HTTPConnection),
        {"allow_loopback": allow_loopback},
    )
    https_conn = type(
        "CheckedHTTPSConnection",
        (_CheckedConnectionMixin, HTTPSConnection),
        {"allow_loopback": allow_loopback},
    )
    return {
        "http": type(
            "CheckedHTTPPool",
            (_NoReusePoolMixin, HTTPConnectionPool),
            {"ConnectionCls": http_conn},
        ),
        "https": type(
            "CheckedHTTPSPool",
            (_NoReusePoolMixin, HTTPSConnectionPool),
            {"ConnectionCls": https_conn},
        ),
    }


class _CheckedAdapter(HTTPAdapter):
    def __init__(self, *, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._allow_loopback)


def checked_session(*, allow_loopback: bool) -> requests.Session:
    """A session that reaches only allowed addresses, ignores proxy/netrc environment."""
    session = requests.Session()
    session.trust_env = False
    adapter = _CheckedAdapter(allow_loopback=allow_loopback)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _refusal_in(exc: BaseException | None, depth: int = 0) -> AddressRefused | None:
    """Find an AddressRefused inside the wrappers urllib3 and requests put around it."""
    if exc is None or depth > 8:
        return None
    if isinstance(exc, AddressRefused):
        return exc
    candidates: list[BaseException | None] = [exc.__cause__, exc.__context__]
    candidates.append(getattr(exc, "reason", None))
    candidates.extend(a for a in getattr(exc, "args", ()) if isinstance(a, BaseException))
    for inner in candidates:
        if isinstance(inner, BaseException):
            found = _refusal_in(inner, depth + 1)
            if found is not None:
                return found
    return None


# --- pacing -------------------------------------------------------------------------------


class TokenBucket:
    """Bytes-per-second cap. Waits with `stop.wait`, so a stop interrupts it at once."""

    def __init__(
        self,
        rate: int,
        *,
        stop: StopSignal,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = float(rate)
        # Burst of at most a quarter second keeps the cap honest over short spans.
        self._capacity = max(self._rate / 4, float(_PACE_SLICE))
        self._tokens = 0.0
        self._stop = stop
        self._monotonic = monotonic
        self._last = monotonic()

    def take(self, n: int) -> bool:
        """Wait until `n` bytes may be sent; False when stopped."""
        while not self._stop.is_set():
            now = self._monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= n or (n > self._capacity and self._tokens >= self._capacity):
                self._tokens -= n
                return True
            need = min(n, self._capacity) - self._tokens
            self._stop.wait(need / self._rate)
        return False


class _PacedBody:
    """A request body that hands out a chunk in slices, each after the bucket allows it.

    `__len__` lets requests send a Content-Length (not chunked encoding)."""

    def __init__(self, data: bytes, bucket: TokenBucket) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._bucket = bucket

    def __len__(self) -> int:
        return len(self._view)

    def read(self, _size: int = -1) -> bytes:
        if self._pos >= len(self._view):
            return b""
        piece = self._view[self._pos : self._pos + _PACE_SLICE]
        if not self._bucket.take(len(piece)):
            raise TusTransient("stopped")
        self._pos += len(piece)
        return bytes(piece)


# --- the client ---------------------------------------------------------------------------


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """tus Upload-Metadata: `key base64(value)` pairs joined by commas."""
    parts = []
    for key, value in metadata.items():
        if not key or any(c in key for c in " ,") or not key.isascii():
            raise ValueError(f"bad metadata key {key!r}")
        parts.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}")
    return ",".join(parts)


def origin_of(url: str) -> tuple[str, str, int]:
    """An upload URL's origin: (scheme, host, port), the port filled in by its scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


@dataclass(frozen=True, kw_only=True)
class TusOptions:
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    bandwidth_bytes_per_s: int | None = None
    allow_plain_http_loopback: bool = False
    timeout_s: float = 60.0


@dataclass(frozen=True)
class ServerInfo:
    extensions: frozenset[str]
    checksum_algorithms: frozenset[str]
    max_size: int | None

    @property
    def sha1_checksum(self) -> bool:
        return "checksum" in self.extensions and "sha1" in self.checksum_algorithms


class TusClient:
    """One client per upload URL's policy; `session` must come from `checked_session`."""

    def __init__(
        self,
        *,
        upload_url: str,
        options: TusOptions,
        session: requests.Session,
        stop: StopSignal,
    ) -> None:
        problem = upload_url_problem(
            upload_url, allow_plain_http_loopback=options.allow_plain_http_loopback
        )
        if problem is not None:
            raise TusRefused(f"upload URL refused: {problem}")
        self.upload_url = upload_url
        self._options = options
        self._session = session
        self._stop = stop
        self._bucket = (
            TokenBucket(options.bandwidth_bytes_per_s, stop=stop)
            if options.bandwidth_bytes_per_s
            else None
        )

    # -- plumbing

    def _request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, data: Any = None
    ) -> requests.Response:
        """One bounded HTTP exchange. requests' timeout bounds each socket read, not the
        exchange, and it would read a body of any size: a hostile or broken server could
        hold the share worker (and every share queued behind it, to other servers) for
        ever, or fill memory. So each exchange opens its own connection (`Connection:
        close`, and a pool that keeps none, `_NoReusePoolMixin`: every socket it uses is
        one it opened), a watcher shuts those sockets down
        at the exchange's deadline or as soon as `stop` is set (cancel), and at most
        `MAX_RESPONSE_BODY` bytes of the answer are read before the connection is dropped.
        The deadline is the timeout plus the body's size at `MIN_UPLOAD_RATE` (or at the
        configured bandwidth cap, if lower)."""
        all_headers = {"Tus-Resumable": TUS_VERSION, "Connection": "close"}
        all_headers.update(headers or {})
        size = len(data) if data is not None else 0
        rate = min(MIN_UPLOAD_RATE, self._options.bandwidth_bytes_per_s or MIN_UPLOAD_RATE)
        deadline = time.monotonic() + self._options.timeout_s + size / rate
        sockets: list[socket.socket] = []
        done = threading.Event()
        cut = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    cut.set()
                    _cut(sockets)
                    return

        watcher = threading.Thread(target=watch, name="tus-deadline", daemon=True)
        _EXCHANGE.sockets = sockets
        watcher.start()
        try:
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=all_headers,
                    data=data,
                    allow_redirects=False,
                    timeout=self._options.timeout_s,
                    stream=True,
                )
                try:
                    response.raw.read(MAX_RESPONSE_BODY, decode_content=False)
                finally:
                    response.close()
            except requests.RequestException as exc:
                refusal = _refusal_in(exc)
                if refusal is not None:
                    raise TusRefused(f"address refused: {refusal}") from exc
                if cut.is_set():
                    raise TusTransient(f"{method} {self._cut_short()}") from exc
                raise TusTransient(f"{method} failed: {type(exc).__name__}") from exc
            except Exception as exc:  # urllib3 errors while reading the capped body
                if cut.is_set() or isinstance(exc, OSError | urllib3_exceptions.HTTPError):
                    raise TusTransient(f"{method} failed: {type(exc).__name__}") from exc
                raise
        finally:
            done.set()
            _EXCHANGE.sockets = None
            _cut(sockets)
            for sock in sockets:
                sock.close()
        if cut.is_set():
            raise TusTransient(f"{method} {self._cut_short()}")
        if 300 <= response.status_code < 400:
            raise TusRefused(f"{method} answered with a redirect ({response.status_code})")
        return response

    def _cut_short(self) -> CutShort:
        return CutShort.CANCELLED if self._stop.is_set() else CutShort.TOO_SLOW

    @staticmethod
    def _raise_for(method: str, response: requests.Response) -> None:
        code = response.status_code
        if code in (404, 410):
            raise TusGone(f"{method}: upload gone ({code})")
        if code in (408, 423, 429) or code >= 500:
            raise TusTransient(f"{method}: server answered {code}")
        raise TusRefused(f"{method}: server answered {code}")

    def _checked_location(self, value: str | None) -> str:
        if not value:
            raise TusRefused("creation answered without a Location")
        location = urljoin(self.upload_url, value)
        try:
            same_origin = origin_of(location) == origin_of(self.upload_url)
        except ValueError:  # a port that is not a number
            raise TusRefused("server returned a malformed Location") from None
        if not same_origin:
            raise TusRefused("server returned a Location on another origin")
        problem = upload_url_problem(
            location, allow_plain_http_loopback=self._options.allow_plain_http_loopback
        )
        if problem is not None:
            raise TusRefused(f"Location refused: {problem}")
        return location

    # -- protocol steps

    def server_info(self) -> ServerInfo:
        response = self._request("OPTIONS", self.upload_url)
        if response.status_code in (404, 410):
            raise TusRefused(f"OPTIONS: server answered {response.status_code}")
        if response.status_code not in (200, 204):
            self._raise_for("OPTIONS", response)

        def tokens(name: str) -> frozenset[str]:
            raw = response.headers.get(name, "")
            return frozenset(t.strip().lower() for t in raw.split(",") if t.strip())

        raw_max = response.headers.get("Tus-Max-Size")
        return ServerInfo(
            extensions=tokens("Tus-Extension"),
            checksum_algorithms=tokens("Tus-Checksum-Algorithm"),
            max_size=None if raw_max is None else header_number("Tus-Max-Size", raw_max),
        )

    def create(self, length: int, metadata: Mapping[str, str]) -> str:
        response = self._request(
            "POST",
            self.upload_url,
            headers={
                "Upload-Length": str(length),
                "Upload-Metadata": encode_metadata(metadata),
                "Content-Length": "0",
            },
        )
        if response.status_code != 201:
            if response.status_code in (404, 410):
                raise TusRefused(f"POST: server answered {response.status_code}")
            self._raise_for("POST", response)
        return self._checked_location(response.headers.get("Location"))

    def offset(self, location: str) -> int:
        self._checked_location(location)
        response = self._request("HEAD", location, headers={"Cache-Control": "no-store"})
        if response.status_code not in (200, 204):
            self._raise_for("HEAD", response)
        return header_number("Upload-Offset", response.headers.get("Upload-Offset"))

    def patch(self, location: str, offset: int, chunk: bytes, *, checksum: bool) -> int:
        headers = {
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(len(chunk)),
        }
        if checksum:
            digest = base64.b64encode(hashlib.sha1(chunk, usedforsecurity=False).digest())
            headers["Upload-Checksum"] = "sha1 " + digest.decode("ascii")
        body: Any = _PacedBody(chunk, self._bucket) if self._bucket else chunk
        response = self._request("PATCH", location, headers=headers, data=body)
        if response.status_code == 460:  # checksum mismatch: the bytes were damaged on the way
            raise TusTransient("PATCH: checksum mismatch (460)")
        if response.status_code == 409:  # our idea of the offset is stale: HEAD again
            raise TusTransient("PATCH: offset conflict (409)")
        if response.status_code not in (200, 204):
            self._raise_for("PATCH", response)
        new_offset = header_number("Upload-Offset", response.headers.get("Upload-Offset"))
        # A server may accept less than was sent: resume from what it says it has, but
        # never move backwards or beyond what was sent.
        if not offset <= new_offset <= offset + len(chunk):
            raise TusTransient("PATCH: server reported an impossible offset")
        return new_offset

    def terminate(self, location: str) -> None:
        self._checked_location(location)
        response = self._request("DELETE", location)
        if response.status_code not in (200, 204, 404, 410):
            self._raise_for("DELETE", response)

    # -- a whole object

    def send_file(
        self,
        path: Path,
        *,
        location: str,
        offset: int,
        length: int,
        checksum: bool,
        on_progress: Callable[[int], None],
        keep_going: Callable[[], bool] = lambda: True,
    ) -> int:
        """PATCH `path` from `offset` to `length` in chunks; `on_progress(new_offset)` runs
        after each acknowledged chunk (the caller persists it). Returns the final offset."""
        with path.open("rb") as handle:
            while offset < length:
                if self._stop.is_set() or not keep_going():
                    raise TusTransient("stopped")
                chunk = _read_at(handle, offset, min(self._options.chunk_bytes, length - offset))
                if not chunk:
                    raise TusRefused("outbox file is shorter than recorded")
                offset = self.patch(location, offset, chunk, checksum=checksum)
                on_progress(offset)
        return offset


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)
