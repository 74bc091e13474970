"""The owner's console: an HTTPS web app on the home network (docs/console.md).

Built on Starlette, served by uvicorn in a thread of the daemon's process. Why these:
both are maintained and small, Starlette's routing, responses (FileResponse answers
Range requests, which the browser's video player uses to seek) and thread pool for
plain functions cover everything here without a framework's worth of dependencies,
and uvicorn runs in a thread (it installs no signal handlers off the main thread), takes
the stdlib `ssl` certificate and key directly and stops on a flag. The daemon already
runs the same pair in its tests (the tus server). Blocking work (SQLite, decoding,
exporting) is written as plain functions, which Starlette runs on its thread pool.

What the console guarantees, whatever is asked of it:
- every path but the sign-in page, its stylesheet and `/login` answers 401 without a
  live session, before reading anything;
- state-changing calls (POST) must carry an `Origin` naming this console, and every
  request a `Host` that the certificate names (DNS rebinding gets nothing);
- a strict Content-Security-Policy (scripts, styles, images and media from here only,
  no inline script), no caching of answers, no referrer;
- nothing of it goes to the broker: the console talks to the request flow, the outbox
  and the buffer directly.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import mimetypes
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from device.audit import read_audit, verify_audit
from device.commands import CommandRefused, ControlCommands
from device.console.auth import SESSION_TTL_MS, ConsoleAuth, Verdict, source_group
from device.console.listener import Listener
from device.console.preview import MAX_CLIP_MS, STRIP_THUMBNAILS, Preview
from device.console.tls import ConsoleCertificate, host_names
from device.console.video import Video, video_routes
from device.flow import RequestFlow
from device.masks import PrivacyMasks
from device.owner_channel import pending_entries
from foundation.clock import Clock
from foundation.display import shown
from foundation.errors import DoorbellError, NoFootageError, TimeFormatError
from foundation.lograte import OncePerInterval, ThrottleFilter, held_note
from foundation.times import Window, format_time, parse_time
from sync.decision import DecisionRejectReason
from sync.geo import distance_m
from sync.models import ConsentMethod
from sync.outbox import ShareJob

logger = logging.getLogger(__name__)

COOKIE = "__Host-doorbell-session"
SESSION_ENDED = (
    "You were signed out: this browser's session was ended on the doorbell, or it "
    "expired. Run doorbellctl console-code on the doorbell and type the new code."
)
MAX_BODY_BYTES = 16 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self' blob:; connect-src 'self'; manifest-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer Chrome sends `Origin: null` even on
    # the sign-in form posted to its own page, which the Origin check must refuse.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
}
STATIC = files("device.console") / "static"
# The web app's manifest (installable on a phone): its registered type, which Python's
# mimetypes does not know (Starlette's StaticFiles asks it).
mimetypes.add_type("application/manifest+json", ".webmanifest")


def security_headers() -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


MAX_TIME_DIGITS = 15  # a time in milliseconds in a path: 15 digits reach the year 33658
_errors = OncePerInterval()  # tracebacks of failed requests: once a minute, with a count


@dataclass(frozen=True)
class ConsoleParts:
    """What the console works with, handed over by the composition root."""

    flow: RequestFlow
    preview: Preview
    auth: ConsoleAuth
    shares: Callable[[], list[dict[str, Any]]]
    commands: ControlCommands  # summary, retry, cancel: as doorbellctl's, called in-process
    audit_path: Path
    audit_key: Ed25519PublicKey
    device_lat: float
    device_lon: float
    clock: Clock
    video: Video | None = None  # the timeline and the player (device/console/video.py)
    share_job: Callable[[str], ShareJob | None] | None = None  # the outbox's job of a share
    masks: PrivacyMasks | None = None  # the privacy masks the owner draws (device/masks.py)


class ApiError(Exception):
    """An API refusal: `message` is for a person (the page shows it as it is), `code`
    the rule's name for scripts."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


# A refused decision, in words for the page (the rule's code goes along as `code`).
_DECISION_WORDS = {
    "not_pending": "This request is no longer waiting for you: it was decided or it expired.",
    "expired": "This request has expired: it can no longer be approved.",
    "window_outside_request": "The times you chose reach outside the requested window: "
    "you can share less than was asked, never more.",
}


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def _host_of(netloc: str) -> str:
    """The host part of a Host header or an origin's netloc, lower case, no brackets
    ("" when it is not one, e.g. an unclosed bracket)."""
    try:
        parsed = urlsplit("//" + netloc)
    except ValueError:
        return ""
    return (parsed.hostname or "").lower()


class Console:
    """The web app itself (a Starlette app in `.app`), without the listener."""

    def __init__(
        self,
        parts: ConsoleParts,
        *,
        hosts: frozenset[str],
        port: int,
        public_routes: Sequence[BaseRoute] = (),  # served without a session (authority.py)
    ) -> None:
        self.parts = parts
        self._hosts = hosts
        self._port = port
        routes = [
            *public_routes,
            Route("/", self.index),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/api/pending", self.api(self.pending)),
            Route("/api/requests/{rfa_id}", self.api(self.request_detail)),
            Route("/api/requests/{rfa_id}/footage", self.api(self.footage)),
            Route("/api/requests/{rfa_id}/thumbnails", self.api(self.thumbnails)),
            Route("/api/requests/{rfa_id}/thumbnails/{at_ms}", self.api(self.thumbnail)),
            Route("/api/requests/{rfa_id}/clip", self.api(self.clip)),
            Route("/api/requests/{rfa_id}/summary", self.api(self.summary)),
            Route("/api/requests/{rfa_id}/decision", self.api(self.decision), methods=["POST"]),
            Route("/api/shares", self.api(self.shares)),
            Route("/api/shares/{rfa_id}/cancel", self.api(self.share_cancel), methods=["POST"]),
            Route("/api/shares/{rfa_id}/retry", self.api(self.share_retry), methods=["POST"]),
            Route("/api/audit", self.api(self.audit)),
            Route("/api/requests-paused", self.api(self.paused), methods=["GET", "POST"]),
            Route("/masks", self.masks_page),
            Route("/api/masks", self.api(self.masks), methods=["GET", "POST"]),
            Route("/api/masks/snapshot", self.api(self.snapshot)),
            # The timeline and the player: HLS of a pending request's window (video.py).
            *video_routes(
                self.api,
                self._video,
                lambda rfa_id: self._pending(rfa_id).rfa.window,
                self._window,
                path_time_ms,
                ApiError,
            ),
            Route("/api/{rest:path}", self.api(self.not_found), methods=["GET", "POST"]),
            Mount("/static", app=StaticFiles(directory=str(STATIC))),
        ]
        self.app = Starlette(routes=routes)
        self.app.add_middleware(_Guard, console=self)

    # ---- checks ------------------------------------------------------------------------

    def host_allowed(self, host_header: str) -> bool:
        return _host_of(host_header) in self._hosts

    def origin_allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        try:
            parts = urlsplit(origin)
            port = parts.port or 443
        except ValueError:
            return False
        return (
            parts.scheme == "https"
            and (parts.hostname or "").lower() in self._hosts
            and port == self._port
        )

    def session_of(self, request: Request) -> Any:
        return self.parts.auth.session(
            request.cookies.get(COOKIE), now_ms=self.parts.clock.wall_ms()
        )

    def api(self, handler: Callable[..., Any]) -> Callable[[Request], Any]:
        """An API endpoint: session first (401 and nothing else without one), then the
        handler on the thread pool; ApiError and bad input become a JSON error."""

        async def endpoint(request: Request) -> Response:
            if await run_in_threadpool(self.session_of, request) is None:
                return _json({"error": "sign in first"}, 401)
            body: Any = None
            if request.method == "POST":
                raw = await _read_body(request)
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return _json({"error": "the body is not JSON"}, 400)
            try:
                result = await run_in_threadpool(handler, request, body)
            except ApiError as exc:
                extra = {} if exc.code is None else {"code": exc.code}
                return _json({"error": exc.message, **extra}, exc.status)
            except (TimeFormatError, ValueError) as exc:
                return _json({"error": str(exc)}, 400)
            except DoorbellError as exc:
                logger.warning("console: %s", shown(exc))
                return _json({"error": str(exc)}, 409)
            return result if isinstance(result, Response) else _json(result)

        return endpoint

    # ---- pages -------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        if await run_in_threadpool(self.session_of, request) is None:
            # A cookie that no longer opens a session: revoked (`console-sessions
            # --revoke`, Sign out elsewhere) or expired. Say so, rather than a bare form.
            ended = COOKIE in request.cookies
            return self._login_response(SESSION_ENDED if ended else "", status=401)
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    async def masks_page(self, request: Request) -> Response:
        """The privacy masks page (static/masks.html): drawn over a live snapshot."""
        if await run_in_threadpool(self.session_of, request) is None:
            return RedirectResponse("/", status_code=303)
        return FileResponse(str(STATIC / "masks.html"), headers={"Cache-Control": "no-store"})

    async def login_page(self, request: Request) -> Response:
        return self._login_response()

    def _login_response(self, message: str = "", status: int = 200) -> HTMLResponse:
        page = (STATIC / "login.html").read_text(encoding="utf-8")
        note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
        return HTMLResponse(
            page.replace("<!--message-->", note),
            status_code=status,
            headers={"Cache-Control": "no-store"},
        )

    async def login(self, request: Request) -> Response:
        try:
            code = login_code(await _read_body(request))
        except ValueError:
            return self._login_response("That form is not the sign-in form.", status=400)
        client = request.headers.get("user-agent", "")
        source = source_group(request.client.host if request.client else "")
        verdict, session = await run_in_threadpool(
            lambda: self.parts.auth.sign_in(
                code, now_ms=self.parts.clock.wall_ms(), client=client, source=source
            )
        )
        if session is None:
            message = {
                Verdict.LOCKED: "Too many wrong codes from here: locked for a minute.",
                Verdict.LOCKED_ALL: "Too many wrong codes: code entry is locked for a minute.",
                Verdict.EXPIRED: "That code has expired: ask the device for a new one.",
                Verdict.USED: "That code was already used: ask the device for a new one.",
            }.get(verdict, "That code is not right (only the newest code works).")
            locked = verdict in (Verdict.LOCKED, Verdict.LOCKED_ALL)
            return self._login_response(message, status=429 if locked else 401)
        logger.info("console: a new session %s signed in", session.id)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            session.token,
            max_age=SESSION_TTL_MS // 1000,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        info = await run_in_threadpool(self.session_of, request)
        if info is None:
            return _json({"error": "sign in first"}, 401)
        now = self.parts.clock.wall_ms()
        await run_in_threadpool(lambda: self.parts.auth.revoke(info.id, now_ms=now))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # ---- the API (plain functions, run on the thread pool) -----------------------------

    def _video(self) -> Video:
        if self.parts.video is None:
            raise ApiError(404, "this console plays no video")
        return self.parts.video

    def not_found(self, request: Request, body: Any) -> Any:
        raise ApiError(404, "no such API path")

    def pending(self, request: Request, body: Any) -> Any:
        entries = pending_entries(self.parts.flow.pending_footage())
        for entry in entries:
            entry["agency_id"] = entry["agency"]["id"]
        return {"requests": entries, "requests_paused": self.parts.flow.requests_paused}

    def _pending(self, rfa_id: str) -> Any:
        for p in self.parts.flow.pending():
            if p.rfa.id == rfa_id:
                return p
        raise ApiError(404, _DECISION_WORDS["not_pending"], "not_pending")

    def _window(self, request: Request, rfa_window: Window) -> Window:
        """The part of the request's window asked for (all of it by default); a part
        reaching outside the request's window is refused."""
        start = request.query_params.get("start")
        end = request.query_params.get("end")
        if start is None and end is None:
            return rfa_window
        if start is None or end is None:
            raise ApiError(400, "give both start and end, or neither")
        s, e = parse_time(start), parse_time(end)
        if s > e:
            raise ApiError(400, "start is after end")
        if s < rfa_window.start_ms or e > rfa_window.end_ms:
            raise ApiError(403, "that is outside the request's window")
        return Window(s, e)

    def request_detail(self, request: Request, body: Any) -> Any:
        rfa_id = request.path_params["rfa_id"]
        pending = self._pending(rfa_id)
        entry = next(
            (e for e in pending_entries(self.parts.flow.pending_footage()) if e["id"] == rfa_id),
            None,
        )
        if entry is None:
            raise ApiError(404, _DECISION_WORDS["not_pending"], "not_pending")
        area = pending.rfa.area
        entry["agency_id"] = entry["agency"]["id"]
        entry["key_id"] = pending.rfa.kid
        entry["camera"] = {
            "distance_m": round(
                distance_m(area.lat, area.lon, self.parts.device_lat, self.parts.device_lon), 1
            ),
            "east_m": round(distance_m(area.lat, area.lon, area.lat, self.parts.device_lon), 1)
            * (1 if self.parts.device_lon >= area.lon else -1),
            "north_m": round(distance_m(area.lat, area.lon, self.parts.device_lat, area.lon), 1)
            * (1 if self.parts.device_lat >= area.lat else -1),
        }
        return entry

    def footage(self, request: Request, body: Any) -> Any:
        pending = self._pending(request.path_params["rfa_id"])
        window = self._window(request, pending.rfa.window)
        found = self.parts.preview.footage(window)
        duration = 0.0
        if found.first_ms is not None and found.last_ms is not None:
            duration = (found.last_ms - found.first_ms) / 1000
        return {
            "window": window.to_json(),
            "frames": found.frames,
            "duration_seconds": duration,
            "first_frame_at": None if found.first_ms is None else format_time(found.first_ms),
            "last_frame_at": None if found.last_ms is None else format_time(found.last_ms),
        }

    def thumbnails(self, request: Request, body: Any) -> Any:
        rfa_id = request.path_params["rfa_id"]
        pending = self._pending(rfa_id)
        part = self._window(request, pending.rfa.window)  # the narrowed part: its own strip
        count = request.query_params.get("count", str(STRIP_THUMBNAILS))
        short = count.isascii() and count.isdigit() and len(count) <= 2
        if not (short and 1 <= int(count) <= STRIP_THUMBNAILS):
            raise ApiError(400, f"count is a number from 1 to {STRIP_THUMBNAILS}")
        times = self.parts.preview.strip(part, int(count))
        return {
            "window": pending.rfa.window.to_json(),
            "part": part.to_json(),
            "thumbnails": [
                {"at": format_time(t), "src": f"/api/requests/{rfa_id}/thumbnails/{t}"}
                for t in times
            ],
        }

    def thumbnail(self, request: Request, body: Any) -> Any:
        at_ms = path_time_ms(request.path_params["at_ms"])
        pending = self._pending(request.path_params["rfa_id"])
        jpeg = self.parts.preview.thumbnail(pending.rfa.window, at_ms)
        if jpeg is None:
            raise ApiError(404, "no keyframe at that time inside the request's window")
        return Response(
            jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )

    def clip(self, request: Request, body: Any) -> Any:
        pending = self._pending(request.path_params["rfa_id"])
        if "start" not in request.query_params or "end" not in request.query_params:
            raise ApiError(400, "give start and end")
        window = self._window(request, pending.rfa.window)
        if window.duration_ms > MAX_CLIP_MS:
            raise ApiError(400, f"a preview clip is at most {MAX_CLIP_MS // 60_000} minutes")
        try:
            info = self.parts.preview.clip(window)
        except NoFootageError as exc:
            raise ApiError(404, str(exc)) from None
        return FileResponse(
            str(info.path),
            media_type="video/mp4",
            headers={
                "Cache-Control": "no-store",
                "X-First-Frame-At": format_time(info.first_frame_ms),
            },
        )

    def decision(self, request: Request, body: Any) -> Any:
        rfa_id = request.path_params["rfa_id"]
        if not isinstance(body, dict) or set(body) - {"decision", "share_contact", "window"}:
            raise ApiError(400, 'expected {"decision", "share_contact", "window"}')
        choice = body.get("decision")
        if choice not in ("approve", "deny"):
            raise ApiError(400, 'decision is "approve" or "deny"')
        share_contact = body.get("share_contact", False)
        if not isinstance(share_contact, bool):
            raise ApiError(400, "share_contact is true or false")
        window = None
        raw = body.get("window")
        if raw is not None:
            if not isinstance(raw, dict) or set(raw) != {"start", "end"}:
                raise ApiError(400, 'window is {"start", "end"}')
            window = Window(parse_time(raw["start"]), parse_time(raw["end"]))
        outcome = self.parts.flow.decide_locally(
            rfa_id,
            approve=choice == "approve",
            method=ConsentMethod.CONSOLE,
            window=window,
            share_contact=share_contact if choice == "approve" else None,
        )
        if not outcome.accepted:
            status = 404 if outcome.reason is DecisionRejectReason.NOT_PENDING else 409
            words = _DECISION_WORDS.get(str(outcome.reason), outcome.detail or "Refused.")
            raise ApiError(status, words, str(outcome.reason))
        return {"ok": True, "outcome": outcome.reason, "rfa_id": rfa_id}

    def summary(self, request: Request, body: Any) -> Any:
        """What approving would send (device/share_summary.py, as `doorbellctl approve`
        prints it): `?start=T&end=T` a narrowed part, `share_contact=false` anonymous."""
        rfa_id = request.path_params["rfa_id"]
        pending = self._pending(rfa_id)
        window = self._window(request, pending.rfa.window)
        named = request.query_params.get("share_contact", "true")
        if named not in ("true", "false"):
            raise ApiError(400, "share_contact is true or false")
        try:
            return self.parts.commands.summary(rfa_id, window, anonymous=named == "false")
        except CommandRefused as refused:
            code = refused.reason or "refused"
            raise ApiError(409, _DECISION_WORDS.get(code, refused.message), code) from None

    def shares(self, request: Request, body: Any) -> Any:
        job_of = self.parts.share_job or (lambda rfa_id: None)
        return {
            "shares": [share_card(entry, job_of(entry["rfa_id"])) for entry in self.parts.shares()]
        }

    def _share_command(self, command: Callable[[str], str], request: Request) -> Any:
        try:
            return {"ok": True, "message": command(request.path_params["rfa_id"])}
        except CommandRefused as refused:
            raise ApiError(409, refused.message) from None

    def share_cancel(self, request: Request, body: Any) -> Any:
        return self._share_command(self.parts.commands.cancel, request)

    def share_retry(self, request: Request, body: Any) -> Any:
        return self._share_command(self.parts.commands.retry, request)

    def audit(self, request: Request, body: Any) -> Any:
        report = verify_audit(self.parts.audit_path, self.parts.audit_key)
        entries = read_audit(self.parts.audit_path)[-500:]
        return {
            "verification": {
                "ok": report.ok,
                "entries": report.entries,
                "first_broken": report.first_broken,
                "problem": report.problem,
            },
            "entries": [
                {"seq": e.seq, "at": e.at, "event": e.event, "fields": e.fields}
                for e in reversed(entries)
            ],
        }

    def paused(self, request: Request, body: Any) -> Any:
        if request.method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("paused"), bool):
                raise ApiError(400, 'expected {"paused": true | false}')
            self.parts.flow.pause_requests(body["paused"])
        return {"paused": self.parts.flow.requests_paused}

    def _masks(self) -> PrivacyMasks:
        if self.parts.masks is None:
            raise ApiError(404, "this console does not manage privacy masks")
        return self.parts.masks

    def masks(self, request: Request, body: Any) -> Any:
        """GET: the masks in force, the config's (fixed here) and the owner's. POST
        {"masks": [{name, points}, ...]}: the owner's new set, in force from the
        recorder's next frame; a bad polygon is a 400 naming its key (masks[i]...)."""
        masks = self._masks()
        if request.method == "POST":
            if not isinstance(body, dict) or set(body) != {"masks"}:
                raise ApiError(400, 'expected {"masks": [{"name": ..., "points": [[x, y], ...]}]}')
            masks.replace(body["masks"])
        return masks.to_json()

    def snapshot(self, request: Request, body: Any) -> Any:
        self._masks()
        found = self.parts.preview.snapshot()
        if found is None:
            raise ApiError(404, "no footage yet: the camera has not recorded anything")
        at_ms, jpeg = found
        return Response(
            jpeg,
            media_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Captured-At": format_time(at_ms)},
        )


def share_card(entry: dict[str, Any], job: ShareJob | None) -> dict[str, Any]:
    """A §6.3 entry with what the owner needs to recognise the share on a card: the
    agency, the case, the window sent, named or anonymous, whether the share is built
    yet and when it last changed (a finished share: when it finished)."""
    if job is None:
        return entry
    return {
        **entry,
        "agency": {"id": job.rfa.agency.id, "name": job.rfa.agency.name},
        "case_number": job.rfa.case_number,
        "window": job.decision.window.to_json(),
        "share_contact": job.decision.share_contact,
        "built": job.built,
        "updated_at": format_time(job.updated_ms) if job.updated_ms else None,
    }


async def _read_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "the body is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def login_code(raw: bytes) -> str:
    """The code from the sign-in form: a urlencoded body in UTF-8 with one field, `code`
    (given once). Anything else raises ValueError (answered 400)."""
    fields = parse_qs(raw.decode("utf-8"), max_num_fields=1, strict_parsing=bool(raw))
    if set(fields) - {"code"} or len(fields.get("code", [])) > 1:
        raise ValueError("not the sign-in form")
    return (fields.get("code") or [""])[0]


def path_time_ms(text: str) -> int:
    """A time in milliseconds written in a path: ASCII digits, at most MAX_TIME_DIGITS
    (int() alone would take other scripts' digits, and refuse 4,301 digits with an
    error of its own)."""
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_TIME_DIGITS):
        raise ApiError(404, "no such thumbnail")
    return int(text)


class _Guard:
    """Checks every request before routing: the Host must be one the certificate
    names, a POST must come from this console's own origin; adds the security headers
    to every answer."""

    def __init__(self, app: Any, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = security_headers()
                message = dict(message, headers=list(message.get("headers", [])) + extra)
            await send(message)

        # Everything below answers with the security headers, whatever goes wrong: this
        # guard sits inside Starlette's own error handler, whose 500 would not have them.
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)  # type: ignore[arg-type]
                return
            await self.app(scope, receive, send_with_headers)
        except ApiError as exc:  # a body over the limit, raised while reading it
            if not started:
                await _json({"error": exc.message}, exc.status)(scope, receive, send_with_headers)  # type: ignore[arg-type]
        except ClientDisconnect:
            pass  # the client went away (or took too long) while sending its body
        except Exception:
            held = _errors.due("request")
            if held is not None:
                logger.exception("console: a request failed%s", held_note(held))
            if not started:
                error = _json({"error": "internal error (see the daemon's log)"}, 500)
                await error(scope, receive, send_with_headers)  # type: ignore[arg-type]

    def _refusal(self, scope: Mapping[str, Any]) -> Response | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self.console.host_allowed(headers.get("host", "")):
            return _json({"error": "unknown host name"}, 421)
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return _json({"error": "method not allowed"}, 405)
        if scope["method"] == "POST" and not self.console.origin_allowed(headers.get("origin")):
            return _json({"error": "the request did not come from this console"}, 403)
        return None


class _Uvicorn(uvicorn.Server):
    """uvicorn, listening through the console's own Listener (listener.py says why)."""

    def __init__(self, config: uvicorn.Config, *, host: str, port: int) -> None:
        super().__init__(config)
        self._where = (host, port)
        self.listener: Listener | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_error)
        self.loop = loop
        host, port = self._where
        assert self.config.ssl is not None  # the console is HTTPS only
        try:
            self.listener = Listener(
                self, self.config.ssl, host=host, port=port, headers=security_headers()
            )
        except OSError as exc:
            logger.error("console: cannot listen on %s:%s: %s", host, port, exc.strerror)
            self.should_exit = True
            return
        self.servers = [self.listener]  # type: ignore[list-item]
        self.listener.start()
        self.started = True


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's reports from the console's loop (a protocol callback that raised, say):
    once a minute each, with a count, as anything a peer can cause."""
    held = _errors.due(f"loop {context.get('message')}")
    if held is not None:
        exc = context.get("exception")
        logger.error(
            "console: %s%s",
            shown(context.get("message", "event loop error")),
            held_note(held),
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )


def quiet_uvicorn_loggers() -> None:
    """uvicorn's loggers go through the daemon's own (escaping) handler, not uvicorn's,
    and what a peer can make them say (an invalid request) once a minute at most."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        one = logging.getLogger(name)
        one.handlers.clear()
        one.propagate = True
        if not any(isinstance(f, ThrottleFilter) for f in one.filters):
            one.addFilter(ThrottleFilter())


class ConsoleServer:
    """The HTTPS listener: uvicorn in a thread, stopped through its exit flag."""

    def __init__(
        self, console: Console, certificate: ConsoleCertificate, *, host: str, port: int
    ) -> None:
        self.console = console
        self.certificate = certificate
        self.host, self.port = host, port
        config = uvicorn.Config(
            console.app,
            host=host,
            port=port,
            ssl_certfile=str(certificate.cert_file),
            ssl_keyfile=str(certificate.key_file),
            log_config=None,  # no handlers of uvicorn's own: the daemon's formatter
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=3,
        )
        quiet_uvicorn_loggers()
        self._server = _Uvicorn(config, host=host, port=port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a name, not a bind
            host = host_names()[0]
        elif ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}/"

    def start(self, timeout_s: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        pause = threading.Event()  # never set: a wait that no signal cuts short
        while not self._server.started:
            if not self._thread.is_alive():
                raise DoorbellError(
                    f"the console could not listen on {self.host}:{self.port} (see the log)"
                )
            if time.monotonic() > deadline:
                raise DoorbellError("the console did not start in time")
            pause.wait(0.02)
        logger.info("console listening at %s", self.url)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def use_certificate(self, certificate: ConsoleCertificate) -> None:
        """Serve a newly issued certificate from the next handshake on; connections
        already open keep theirs. The listener's SSL context is reloaded on its own
        event loop, the thread that makes every TLS connection from it."""
        context, loop = self._server.config.ssl, self._server.loop
        if context is not None and loop is not None:
            loop.call_soon_threadsafe(
                context.load_cert_chain, str(certificate.cert_file), str(certificate.key_file)
            )
        self.certificate = certificate
