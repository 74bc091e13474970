"""What the control socket's commands do: one request in, one reply out.

`doorbellctl` sends `{"cmd": ..., ...}`; the reply is `{"ok": true, ...}` or
`{"ok": false, "error": "..."}` (one line a person reads). The policy lives here, not in
the composition root: a local approval or denial goes through the request flow like the
button's; a retried share pins its footage again (the pin was released when it failed)
for at most `RETRY_PIN_MS`, and unpins it when the retry is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from device.flow import RequestFlow
from device.owner_channel import pending_entries
from device.share_summary import share_summary
from foundation.clock import Clock
from foundation.errors import InvalidValueError
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


def _refused(error: str) -> Reply:
    return {"ok": False, "error": error}


def _window(raw: Any) -> Window | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidValueError("window must be an object with start and end")
    return Window(parse_time(raw.get("start")), parse_time(raw.get("end")))


class ControlCommands:
    def __init__(
        self,
        *,
        flow: RequestFlow,
        outbox: Outbox,
        buffer: RollingBuffer,
        shares: ShareControl,
        clock: Clock,
        status: Callable[[], dict[str, Any]],
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

    def handle(self, request: dict[str, Any]) -> Reply:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self._status()}
        if cmd == "pending":
            return {"ok": True, "requests": pending_entries(self._flow.pending_footage())}
        if cmd == "shares":
            return {"ok": True, "shares": self._outbox.shares(self._clock.wall_ms())}
        if cmd in ("pause", "resume"):
            return self.pause(paused=cmd == "pause")
        if cmd not in ("approve", "deny", "retry", "cancel", "summary"):
            return _refused(f"Unknown command {cmd!r}.")
        rfa_id = request.get("rfa_id")
        if not isinstance(rfa_id, str):
            return _refused("An rfa_id is required.")
        if cmd == "summary":
            return self.summary(rfa_id, request)
        if cmd == "approve" or cmd == "deny":
            return self.decide(rfa_id, request, approve=cmd == "approve")
        if cmd == "retry":
            return self.retry(rfa_id)
        return self.cancel(rfa_id)

    def decide(self, rfa_id: str, request: dict[str, Any], *, approve: bool) -> Reply:
        try:
            window = _window(request.get("window"))
        except InvalidValueError as exc:
            return _refused(f"The window is not valid: {exc}.")
        outcome = self._flow.decide_locally(
            rfa_id,
            approve=approve,
            method=ConsentMethod.CLI,
            window=window,
            share_contact=not request.get("anonymous", False) if approve else None,
        )
        if not outcome.accepted:
            # the sentence for a person; the rule's code for scripts
            return {**_refused(outcome.detail or "Refused."), "reason": str(outcome.reason)}
        verb = "approved: the share is queued" if approve else "declined"
        return {"ok": True, "message": f"{rfa_id} {verb}"}

    def summary(self, rfa_id: str, request: dict[str, Any]) -> Reply:
        """What approving would send (device/share_summary.py), asked before approving:
        `{"cmd": "summary", "rfa_id", "window"?, "anonymous"?}`."""
        try:
            window = _window(request.get("window"))
        except InvalidValueError as exc:
            return _refused(f"The window is not valid: {exc}.")
        rfa = next((p.rfa for p in self._flow.pending() if p.rfa.id == rfa_id), None)
        if rfa is None:
            return {**_refused("There is no such pending request."), "reason": "not_pending"}
        chosen = window or rfa.window
        if not window_within(rfa.window, chosen):
            return {
                **_refused("The window is not inside the request's window."),
                "reason": "window_outside_request",
            }
        segments = self._buffer.segments(chosen)
        footage = measure_footage(chosen, segments, self._buffer.frame_tables)
        summary = share_summary(
            rfa,
            chosen,
            footage,
            share_contact=not request.get("anonymous", False),
            contact=self._contact,
            device_id=self._device_id,
        )
        return {"ok": True, "summary": summary}

    def pause(self, *, paused: bool) -> Reply:
        """The owner's opt-out (protocol.md §4 rule 8), the console's pause switch: the
        same call, so it is audited the same way (`requests_paused`, `requests_resumed`)."""
        if self._flow.requests_paused == paused:
            return {"ok": True, "paused": paused, "message": _PAUSE_MESSAGES[paused, False]}
        self._flow.pause_requests(paused)
        return {"ok": True, "paused": paused, "message": _PAUSE_MESSAGES[paused, True]}

    def retry(self, rfa_id: str) -> Reply:
        job = self._outbox.job(rfa_id)
        if job is None:
            return _refused(f"There is no share {rfa_id}.")
        if job.state is not ShareState.FAILED:  # a queued share's own pin must stay as it is
            return _refused(f"Share {rfa_id} has not failed.")
        self._buffer.pin(rfa_id, job.decision.window, self._clock.wall_ms() + RETRY_PIN_MS)
        if not self._shares.retry(rfa_id):  # it stopped being failed meanwhile
            self._buffer.unpin(rfa_id)
            return _refused(f"Share {rfa_id} has not failed.")
        return {"ok": True, "message": f"share {rfa_id} queued again"}

    def cancel(self, rfa_id: str) -> Reply:
        if not self._shares.cancel(rfa_id):
            return _refused(f"There is no share {rfa_id} to cancel.")
        return {"ok": True, "message": f"share {rfa_id} cancelled"}
