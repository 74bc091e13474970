"""What the owner's commands do, for `doorbellctl` (through the control socket) and the
console (in-process).

`ControlCommands` has one typed method per command; a refusal is a `CommandRefused`
naming what went wrong in one line a person reads (and, where scripts need it, the
rule's code). Only `handle` speaks JSON: `doorbellctl` sends `{"cmd": ..., ...}` over
the control socket, the reply is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
The policy lives here, not in the composition root: a local approval or denial goes
through the request flow like the button's; a retried share pins its footage again
(the pin was released when it failed) for at most `RETRY_PIN_MS`, and unpins it when
the retry is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from device.flow import RequestFlow
from device.owner_channel import pending_entries
from device.share_summary import share_summary
from device.status import Status
from foundation.clock import Clock
from foundation.errors import DoorbellError, InvalidValueError
from foundation.times import Window, parse_time
from foundation.wire import ShareState
from recorder.buffer import RollingBuffer
from recorder.timeline import measure_footage
from sync.decision import window_within
from sync.models import ConsentMethod
from sync.outbox import Outbox

RETRY_PIN_MS = 7 * 24 * 3_600_000  # footage of a retried share is kept this long at most

Reply = dict[str, Any]

_PAUSE_MESSAGES = {  # (paused, changed now)
    (True, True): "Requests are paused: every new request is refused until "
    "`doorbellctl resume` (those already pending stay).",
    (True, False): "Requests were already paused; `doorbellctl resume` accepts them again.",
    (False, True): "Requests are accepted again.",
    (False, False): "Requests were not paused; nothing changed.",
}


class ShareControl(Protocol):
    """The share worker, as far as commands go (sync.uploader.ShareWorker)."""

    def retry(self, rfa_id: str) -> bool: ...

    def cancel(self, rfa_id: str) -> bool: ...


class CommandRefused(DoorbellError):
    """A command that changed nothing: `message` for a person, `reason` (a rule's code,
    e.g. `not_pending`) for scripts when there is one."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason

    def reply(self) -> Reply:
        out: Reply = {"ok": False, "error": self.message}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _window(raw: Any) -> Window | None:
    """A request's `window` (JSON), refused in one line when it is not one."""
    if raw is None:
        return None
    try:
        if not isinstance(raw, dict):
            raise InvalidValueError("window must be an object with start and end")
        return Window(parse_time(raw.get("start")), parse_time(raw.get("end")))
    except InvalidValueError as exc:
        raise CommandRefused(f"The window is not valid: {exc}.") from None


class ControlCommands:
    def __init__(
        self,
        *,
        flow: RequestFlow,
        outbox: Outbox,
        buffer: RollingBuffer,
        shares: ShareControl,
        clock: Clock,
        status: Callable[[], Status],
        contact: Mapping[str, Any] | None = None,  # what a named share adds (sync.share)
        device_id: str = "",
    ) -> None:
        self._flow = flow
        self._outbox = outbox
        self._buffer = buffer
        self._shares = shares
        self._clock = clock
        self._status = status
        self._contact = contact
        self._device_id = device_id

    # -- the control socket's JSON

    def handle(self, request: Mapping[str, Any]) -> Reply:
        """One request of the control socket's protocol, one reply."""
        try:
            return self._handle(request)
        except CommandRefused as refused:
            return refused.reply()

    def _handle(self, request: Mapping[str, Any]) -> Reply:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self._status().to_json()}
        if cmd == "pending":
            return {"ok": True, "requests": self.pending()}
        if cmd == "shares":
            return {"ok": True, "shares": self.shares()}
        if cmd in ("pause", "resume"):
            paused = cmd == "pause"
            return {"ok": True, "paused": paused, "message": self.pause(paused=paused)}
        if cmd not in ("approve", "deny", "retry", "cancel", "summary"):
            raise CommandRefused(f"Unknown command {cmd!r}.")
        rfa_id = request.get("rfa_id")
        if not isinstance(rfa_id, str):
            raise CommandRefused("An rfa_id is required.")
        if cmd == "retry":
            return {"ok": True, "message": self.retry(rfa_id)}
        if cmd == "cancel":
            return {"ok": True, "message": self.cancel(rfa_id)}
        window = _window(request.get("window"))
        anonymous = bool(request.get("anonymous", False))
        if cmd == "summary":
            return {"ok": True, "summary": self.summary(rfa_id, window, anonymous=anonymous)}
        approve = cmd == "approve"
        message = self.decide(rfa_id, approve=approve, window=window, anonymous=anonymous)
        return {"ok": True, "message": message}

    # -- the commands

    def pending(self) -> list[dict[str, Any]]:
        return pending_entries(self._flow.pending_footage())

    def shares(self) -> list[dict[str, Any]]:
        return self._outbox.shares(self._clock.wall_ms())

    def decide(self, rfa_id: str, *, approve: bool, window: Window | None, anonymous: bool) -> str:
        outcome = self._flow.decide_locally(
            rfa_id,
            approve=approve,
            method=ConsentMethod.CLI,
            window=window,
            share_contact=not anonymous if approve else None,
        )
        if not outcome.accepted:
            raise CommandRefused(outcome.detail or "Refused.", str(outcome.reason))
        verb = "approved: the share is queued" if approve else "declined"
        return f"{rfa_id} {verb}"

    def summary(self, rfa_id: str, window: Window | None, *, anonymous: bool) -> dict[str, Any]:
        """What approving would send (device/share_summary.py), asked before approving."""
        rfa = next((p.rfa for p in self._flow.pending() if p.rfa.id == rfa_id), None)
        if rfa is None:
            raise CommandRefused("There is no such pending request.", "not_pending")
        chosen = window or rfa.window
        if not window_within(rfa.window, chosen):
            raise CommandRefused(
                "The window is not inside the request's window.", "window_outside_request"
            )
        segments = self._buffer.segments(chosen)
        footage = measure_footage(chosen, segments, self._buffer.frame_tables)
        return share_summary(
            rfa,
            chosen,
            footage,
            share_contact=not anonymous,
            contact=self._contact,
            device_id=self._device_id,
        )

    def pause(self, *, paused: bool) -> str:
        """The owner's opt-out (protocol.md §4 rule 8), the console's pause switch: the
        same call, so it is audited the same way (`requests_paused`, `requests_resumed`).
        Returns what changed, in words."""
        if self._flow.requests_paused == paused:
            return _PAUSE_MESSAGES[paused, False]
        self._flow.pause_requests(paused)
        return _PAUSE_MESSAGES[paused, True]

    def retry(self, rfa_id: str) -> str:
        job = self._outbox.job(rfa_id)
        if job is None:
            raise CommandRefused(f"There is no share {rfa_id}.")
        if job.state is not ShareState.FAILED:  # a queued share's own pin must stay as it is
            raise CommandRefused(f"Share {rfa_id} has not failed.")
        self._buffer.pin(rfa_id, job.decision.window, self._clock.wall_ms() + RETRY_PIN_MS)
        if not self._shares.retry(rfa_id):  # it stopped being failed meanwhile
            self._buffer.unpin(rfa_id)
            raise CommandRefused(f"Share {rfa_id} has not failed.")
        return f"share {rfa_id} queued again"

    def cancel(self, rfa_id: str) -> str:
        if not self._shares.cancel(rfa_id):
            raise CommandRefused(f"There is no share {rfa_id} to cancel.")
        return f"share {rfa_id} cancelled"
