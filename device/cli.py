"""`doorbellctl`: the owner's and operator's command line.

Commands that change or read the live daemon's state (pending requests, decisions,
shares) go through the control socket; `record`, `clip`, `audit` and `owner keygen` work
on the files directly and need no broker and no daemon.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from device.audit import read_entries, render_audit_table, render_report, verify_audit
from device.console.tls import spaced_fingerprint
from device.control import DaemonNotRunning, control_request
from device.identity import read_device_identity
from device.paths import StatePaths
from device.share_summary import render_summary
from device.status import BufferFacts, Status
from firmware_config import Config, load_config
from foundation.arguments import time_arg
from foundation.cli import EXIT_CODES_EPILOG, ExitCode, ToolParser, run_tool
from foundation.clock import SystemClock, sync_evidence
from foundation.display import agency_label, shown
from foundation.errors import DoorbellError, TimeFormatError, UsageError
from foundation.times import Window, format_time, parse_time
from foundation.wire import ShareState
from recorder.commands import clip, record
from sync import SOFTWARE_VERSION
from sync.credentials import AUTHORITY_CERT
from sync.keys import create_key_pair

if TYPE_CHECKING:
    from recorder.recorder import RecordSummary

DEFAULT_CONFIG = Path(os.environ.get("DOORBELL_CONFIG", "/etc/doorbell/doorbell.yaml"))


def _parser() -> argparse.ArgumentParser:
    parser = ToolParser(
        prog="doorbellctl",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES_EPILOG,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="the device's doorbell.yaml ($DOORBELL_CONFIG overrides the default)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = sub.add_parser("status", help="recording, buffer, broker, requests, keys")
    status.add_argument("--json", action="store_true", help="machine-readable (for pairing)")

    pair = sub.add_parser(
        "pair",
        help="show the pairing data for the owner's app, with a QR code; "
        "`doorbellctl pair | doorbell-owner pair --from-json -` pairs the reference app",
    )
    pair.add_argument("--json", action="store_true", help="the JSON only, without the QR code")

    pending = sub.add_parser("pending", help="requests waiting for your decision")
    pending.add_argument("--json", action="store_true", help="machine-readable")

    approve = sub.add_parser("approve", help="approve a pending request")
    approve.add_argument("rfa_id", help="the request's id (from `doorbellctl pending`)")
    approve.add_argument("--start", type=time_arg, help="share less: window start (RFC 3339, Z)")
    approve.add_argument("--end", type=time_arg, help="share less: window end (RFC 3339, Z)")
    approve.add_argument(
        "--anonymous", action="store_true", help="share without your name, contact or device id"
    )
    approve.add_argument(
        "--yes", action="store_true", help="do not ask before approving (on a terminal)"
    )
    # Accepted so that older scripts still parse; the device now refuses an approval
    # that would send nothing, whatever is passed.
    approve.add_argument("--without-footage", action="store_true", help=argparse.SUPPRESS)

    sub.add_parser("pause", help="refuse every new request until `resume` (pending ones stay)")
    sub.add_parser("resume", help="accept new requests again after `pause`")

    deny = sub.add_parser("deny", help="decline a pending request (nothing is sent anywhere)")
    deny.add_argument("rfa_id", help="the request's id (from `doorbellctl pending`)")

    shares = sub.add_parser("shares", help="shares of the last 7 days and their progress")
    group = shares.add_mutually_exclusive_group()
    group.add_argument("--retry", metavar="RFA_ID", help="retry a failed share")
    group.add_argument("--cancel", metavar="RFA_ID", help="cancel a share still in flight")
    shares.add_argument("--json", action="store_true", help="machine-readable")

    console_code = sub.add_parser(
        "console-code", help="a one-time code to sign in to the web console (10 minutes)"
    )
    console_code.add_argument("--json", action="store_true", help="machine-readable")
    console_code.add_argument(
        "--ca",
        action="store_true",
        help="show the QR code of the device's certificate authority, to install once "
        "on a phone (docs/console.md), instead of the console's",
    )
    c2pa_authority = sub.add_parser(
        "c2pa-authority",
        help="the certificate that vouches for your named shares' Content Credentials "
        "(give it to an agency once: docs/c2pa.md)",
    )
    c2pa_authority.add_argument("--out", metavar="FILE", help="write it to FILE (PEM)")
    console_sessions = sub.add_parser(
        "console-sessions", help="the web console's signed-in sessions"
    )
    console_sessions.add_argument("--revoke", metavar="ID", help="sign a session out")
    console_sessions.add_argument("--json", action="store_true", help="machine-readable")

    audit = sub.add_parser("audit", help="the local audit log")
    audit.add_argument("--verify", action="store_true", help="prove the chain and its signature")

    clip = sub.add_parser("clip", help="export a frame-exact clip from the buffer")
    clip.add_argument(
        "--start", required=True, type=time_arg, help="RFC 3339 UTC, e.g. 2026-11-28T10:00:00Z"
    )
    clip.add_argument("--end", required=True, type=time_arg, help="RFC 3339 UTC")
    clip.add_argument("--out", required=True, type=Path, help="the MP4 file to write")

    record = sub.add_parser("record", help="record into the buffer without the daemon")
    record.add_argument("--seconds", required=True, type=float, help="how long to record")
    record.add_argument(
        "--fast", action="store_true", help="synthetic camera: as fast as the encoder allows"
    )

    owner = sub.add_parser("owner", help="the owner's keys (for a phone app or tests)")
    owner_sub = owner.add_subparsers(dest="owner_command", required=True, metavar="COMMAND")
    keygen = owner_sub.add_parser("keygen", help="make an owner signing key and age identity")
    keygen.add_argument("--out", required=True, type=Path, help="directory for the key files")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("doorbellctl", lambda: _run(_parser().parse_args(argv)))


def _run(args: argparse.Namespace) -> int:
    if args.command == "owner":
        return _owner_keygen(args.out)
    config = load_config(args.config)
    return _COMMANDS[args.command](config, args)


def _window(command: str, start_ms: int, end_ms: int) -> Window:
    if start_ms > end_ms:
        raise UsageError(f"{command}: --start is after --end")
    return Window(start_ms, end_ms)


def _ask(config: Config, request: dict[str, Any]) -> dict[str, Any]:
    reply = control_request(config.control.socket, request)
    if not reply.get("ok"):
        raise DoorbellError(str(reply.get("error", "the daemon refused")))
    return reply


def _current_status(config: Config) -> Status:
    """From the daemon when it runs (it can read its own keys whoever asks), else from
    the files."""
    try:
        return Status.from_json(_ask(config, {"cmd": "status"})["status"])
    except DaemonNotRunning:
        return _offline_status(config)


def _status(config: Config, args: argparse.Namespace) -> int:
    status = _current_status(config)
    if args.json:
        print(json.dumps(status.to_json(), indent=2, sort_keys=True))
        return 0
    print(render_status(status))
    return 0


def _offline_status(config: Config) -> Status:
    """What can be told without the daemon, reading files only (a CLI run as root must
    not create files that the service user then cannot use)."""
    paths = StatePaths.of(config)
    identity = read_device_identity(paths.state_dir, config.device.id)
    if identity is None:
        raise DoorbellError(
            "the device has no keys yet: start the daemon once (it makes them on first start)"
        )
    return Status(
        device_id=identity.device_id,
        device_key=identity.signing.public_b64,
        recipient=identity.recipient,
        version=SOFTWARE_VERSION,
        key_id=identity.signing.kid,
        recording=False,
        clock_synchronized=SystemClock().synchronized(),
        clock_evidence=sync_evidence(),
        buffer=BufferFacts.read(paths.buffer_dir),
    )


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def render_status(status: Status) -> str:
    span = status.buffer.span
    lines = [
        f"device        {status.device_id}  (doorbell {status.version})",
        f"daemon        {'running' if status.running else 'stopped'}",
        f"recording     {'yes' if status.recording else 'no'}",
        f"buffer        {span_text(span) if span else 'empty'}  ({_size(status.buffer.bytes)})",
        f"disk free     {_size(status.buffer.disk_free_bytes)}",
        f"clock         {render_clock(status)}",
    ]
    live = status.live
    if live is not None:
        dropped = {
            "offline": live.publishes_dropped_offline,
            "unacknowledged": live.publishes_dropped_unacknowledged,
        }
        held = ", ".join(f"{n} {why}" for why, n in dropped.items() if n)
        broker = "connected" if live.broker_connected else "disconnected"
        if live.broker_url:
            broker += f" to {live.broker_url} (MQTT {live.mqtt_version})"
        lines.append(f"broker        {broker}" + (f"  (not sent: {held})" if held else ""))
        lines.append(f"pending       {live.pending} request(s)")
        if live.requests_paused:
            lines.append("requests      PAUSED: new requests are refused (`doorbellctl resume`)")
        else:
            lines.append("requests      accepted (`doorbellctl pause` refuses new ones)")
        lines.append(f"shares        {live.shares_in_flight} in flight")
        problems = live.health.lines()
        lines.append("health        " + ("; ".join(problems) if problems else "no problems"))
        if problems:
            lines[-1] += "  (since the daemon started)"
        bell = live.bell or {}
        if bell.get("wired"):
            last = f", the last at {bell['last_ring']}" if bell.get("last_ring") else ""
            lines.append(f"porch bell    {bell.get('rings', 0)} ring(s) since the start{last}")
        lines.append(f"nudge         {render_nudge(live.nudge)}")
        home = live.home_assistant
        if home is not None:
            problem = home.get("problem")
            lines.append(f"home asst.    {home['broker']}" + (f"  ({problem})" if problem else ""))
        if live.console is not None:
            console = live.console
            which = "authority" if console.get("ca_fingerprint") else "certificate"
            lines.append(
                f"console       {console['url']}"
                f"  ({which} SHA-256 {console.get('ca_fingerprint') or console['fingerprint']})"
            )
    lines += [
        f"device key    {status.device_key}  (kid {status.key_id})",
        f"recipient     {status.recipient}",
    ]
    return "\n".join(lines)


def render_nudge(nudge: Mapping[str, Any] | None) -> str:
    """The nudge in plain words: off, or per channel what it sent and whether it fails."""
    if not nudge:
        return "off (no channel in nudge:)"
    parts = []
    for name, channel in sorted((nudge.get("channels") or {}).items()):
        said = f"{name} {channel.get('sent', 0)} sent"
        if channel.get("failing"):
            said += f", FAILING ({channel.get('last_error')})"
        parts.append(said)
    every = f"{nudge.get('every_minutes', 0):g}"
    waiting = "; one is due at the next slot" if nudge.get("waiting") else ""
    return f"every {every} min: " + "; ".join(parts) + waiting


def span_text(span: Window) -> str:
    text = span.to_json()
    return f"{text['start']} .. {text['end']}"


def render_clock(status: Status) -> str:
    """Whether the wall clock is synchronized, and what says so: footage recorded while
    it is not is marked unsynchronized in every share's manifest."""
    evidence = status.clock_evidence
    says = []
    if evidence.get("timesyncd"):
        says.append("systemd-timesyncd has synchronized it (NTP)")
    if evidence.get("kernel_ntp"):
        says.append("the kernel reports NTP synchronization")
    elif evidence.get("kernel_ntp") is False:
        says.append("the kernel reports no NTP synchronization")
    rtc = evidence.get("rtc")
    says.append(f"RTC {rtc} present" if rtc else "no RTC")
    how = "; ".join(says)
    if status.clock_synchronized:
        if not (evidence.get("timesyncd") or evidence.get("kernel_ntp")):
            how = "assumed by --assume-clock-synchronized; " + how
        return f"synchronized  ({how})"
    return f"NOT synchronized: footage recorded now is marked so in shares  ({how})"


def _pair(config: Config, args: argparse.Namespace) -> int:
    status = _current_status(config)
    info = {
        "device_id": status.device_id,
        "device_key": status.device_key,
        "recipient": status.recipient,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    import segno  # ~0.2 s to load: only pair and console-code draw QR codes

    text = json.dumps(info, separators=(",", ":"))
    segno.make(text, error="m").terminal(compact=True)
    print(json.dumps(info, indent=2))
    print("Scan the code with the owner's app; for the reference app, run:")
    print(f"  doorbellctl --config {config.source_path} pair | doorbell-owner pair --from-json -")
    return 0


def _pending(config: Config, args: argparse.Namespace) -> int:
    requests = _ask(config, {"cmd": "pending"})["requests"]
    return _print_list(
        requests,
        as_json=args.json,
        empty="No request is waiting for your decision.",
        line=lambda entry: render_pending(entry) + "\n",
    )


def _print_list(
    items: list[dict[str, Any]],
    *,
    as_json: bool,
    empty: str,
    line: Callable[[dict[str, Any]], str],
) -> int:
    """A list the daemon answered with: as JSON, or a sentence when it is empty, or a
    line (or block) per item."""
    if as_json:
        print(json.dumps(items, indent=2))
    elif not items:
        print(empty)
    else:
        for item in items:
            print(line(item))
    return 0


def render_pending(entry: dict[str, Any]) -> str:
    """One pending request for a person to read: every string from the network escaped
    (foundation.display), the key-bound agency id beside the agency's own name."""
    inv = entry.get("investigator", {})
    contact = ", ".join(shown(v) for v in (inv.get("email"), inv.get("phone")) if v)
    rfa_id = shown(entry["id"])
    return "\n".join(
        [
            f"request      {rfa_id}",
            f"agency       {agency_label(entry['agency']['id'], entry['agency']['name'])},"
            f" case {shown(entry['case_number'])}",
            f"investigator {shown(inv.get('name'))} <{contact}>",
            f"window       {shown(entry['window']['start'])} .. {shown(entry['window']['end'])}"
            f"  ({entry['footage_seconds']:.0f} s of footage here)",
            f"decide by    {shown(entry['decide_by'])}",
            f"description  {shown(entry['description'])}",
            f"approve:     doorbellctl approve {rfa_id} [--start T --end T] [--anonymous]",
            f"decline:     doorbellctl deny {rfa_id}",
        ]
    )


def _approve(config: Config, args: argparse.Namespace) -> int:
    """Say what would be sent (the console's summary, device/share_summary.py), refuse
    an approval that would send nothing before anything is recorded, and on a terminal
    ask before approving (--yes does not ask; a script's stdin is no terminal)."""
    if (args.start is None) != (args.end is None):
        raise UsageError("give both --start and --end, or neither")
    window = None if args.start is None else _window("approve", args.start, args.end)
    request: dict[str, Any] = {"rfa_id": args.rfa_id, "anonymous": bool(args.anonymous)}
    if window is not None:
        request["window"] = window.to_json()
    summary = _ask(config, {"cmd": "summary", **request})["summary"]
    print(render_summary(summary))
    if summary["problem"] is not None:
        raise DoorbellError(
            f"not approved: {summary['problem']['message']} Decline it with `doorbellctl deny "
            f"{shown(args.rfa_id)}`, or approve a part that holds footage (--start, --end)."
        )
    if not args.yes and sys.stdin.isatty():
        try:
            answer = input("Approve and send this? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Not approved: nothing was recorded or sent.")
            return ExitCode.REFUSED
    reply = _ask(config, {"cmd": "approve", **request})
    print(reply.get("message", "approved"))
    return 0


def _deny(config: Config, args: argparse.Namespace) -> int:
    reply = _ask(config, {"cmd": "deny", "rfa_id": args.rfa_id})
    print(reply.get("message", "declined"))
    return 0


def _pause(config: Config, args: argparse.Namespace) -> int:
    """`pause` and `resume`: the console's pause switch, through the control socket."""
    print(_ask(config, {"cmd": args.command})["message"])
    return 0


def _shares(config: Config, args: argparse.Namespace) -> int:
    if args.retry or args.cancel:
        cmd = "retry" if args.retry else "cancel"
        rfa_id = args.retry or args.cancel
        try:
            reply = _ask(config, {"cmd": cmd, "rfa_id": rfa_id})
        except DoorbellError:
            if cmd == "cancel":
                _explain_uncancellable(config, rfa_id)
            raise
        print(reply.get("message", "done"))
        return 0
    shares = _ask(config, {"cmd": "shares"})["shares"]
    if args.json:
        print(json.dumps(shares, indent=2))
        return 0
    render_shares(shares, sys.stdout)
    return 0


def render_shares(entries: list[dict[str, Any]], stream: TextIO) -> None:
    """Print §6.3 entries for `doorbellctl shares`: one line each, a progress bar for
    shares under way (tqdm's bar, so it looks like every other progress bar)."""
    from tqdm import tqdm  # only `doorbellctl shares` draws bars: no import cost for others

    if not entries:
        stream.write("no shares in the last 7 days\n")
        return
    for entry in entries:
        total = int(entry.get("bytes_total") or 0)
        sent = int(entry.get("bytes_sent") or 0)
        label = f"{entry['rfa_id']} {entry['state']:<9}"
        if total > 0:
            bar = tqdm.format_meter(
                n=sent,
                total=total,
                elapsed=0,
                ncols=100,
                prefix=label,
                unit="B",
                unit_scale=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}",
            )
            stream.write(bar + "\n")
        else:
            stream.write(f"{label} (not built yet)\n")
        if entry.get("starts_at"):
            stream.write(f"    {starts_in(entry['starts_at'], SystemClock().wall_ms())}\n")
        if entry.get("error"):
            stream.write(f"    error: {entry['error']}\n")
        if entry.get("manifest_sha256"):
            stream.write(f"    manifest sha256: {entry['manifest_sha256']}\n")


def starts_in(starts_at: str, now_ms: int) -> str:
    """When a waiting anonymous share's upload starts (protocol.md §6.2), for a person."""
    try:
        minutes = max(0, parse_time(starts_at) - now_ms) / 60_000
    except TimeFormatError:
        return f"upload starts at {shown(starts_at)}"
    return f"upload starts at {starts_at} (in {minutes:.0f} min; anonymous shares wait)"


_FINISHED = {
    ShareState.DONE: "finished: the agency has it",
    ShareState.FAILED: "failed",
    ShareState.CANCELLED: "was cancelled",
}


def _explain_uncancellable(config: Config, rfa_id: str) -> None:
    """The daemon cancels only shares in flight; say what became of a finished one."""
    shares = _ask(config, {"cmd": "shares"})["shares"]
    share = next((s for s in shares if s.get("rfa_id") == rfa_id), None)
    if share is not None and share.get("state") in _FINISHED:
        raise DoorbellError(
            f"share {rfa_id} already {_FINISHED[share['state']]}; nothing to cancel"
        )


def _console_code(config: Config, args: argparse.Namespace) -> int:
    reply = _ask(config, {"cmd": "console-code"})
    keys = ("code", "url", "fingerprint", "ca_fingerprint", "ca_url", "expires_at")
    info: dict[str, Any] = {k: reply.get(k) for k in keys}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if args.ca and info["ca_url"] is None:
        raise DoorbellError("the console uses your own certificate: there is no authority")
    import segno  # ~0.2 s to load: only pair and console-code draw QR codes

    segno.make(info["ca_url"] if args.ca else info["url"], error="m").terminal(compact=True)
    code = info["code"]
    print(f"console      {info['url']}")
    print(f"code         {code[:4]} {code[4:]}  (one sign-in, until {info['expires_at']})")
    if info["ca_fingerprint"] is None:
        print(f"certificate  SHA-256 {spaced_fingerprint(info['fingerprint'])}")
        print("Check that your browser shows this fingerprint before typing the code.")
        return 0
    print(f"authority    {info['ca_url']}")
    print(f"             SHA-256 {spaced_fingerprint(info['ca_fingerprint'])}")
    if args.ca:
        print("Scan the code, install the authority once (docs/console.md), and check that")
        print("the phone shows this SHA-256 fingerprint before trusting it.")
    else:
        print("First time on this phone? Run `doorbellctl console-code --ca` and install the")
        print("authority once, checking this fingerprint (docs/console.md); then no warnings.")
    return 0


def _c2pa_authority(config: Config, args: argparse.Namespace) -> int:
    """The device's C2PA authority certificate (public), read from the state directory."""
    path = StatePaths.of(config).state_dir / "keys" / AUTHORITY_CERT
    try:
        pem = path.read_bytes()
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except FileNotFoundError:
        raise DoorbellError(
            "the device has no C2PA authority yet: start the daemon once (it makes it on first "
            "start)"
        ) from None
    except (OSError, ValueError) as exc:
        raise DoorbellError(f"cannot read {path}: {exc}") from exc
    notes = sys.stdout
    if args.out:
        Path(args.out).write_bytes(pem)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(pem.decode("ascii"))
        notes = sys.stderr  # the PEM alone on stdout, for `> file`
    print(f"SHA-256 {spaced_fingerprint(hashlib.sha256(der).hexdigest())}", file=notes)
    print("An agency given this certificate sees your named shares' clips as Trusted.", file=notes)
    return 0


def _console_sessions(config: Config, args: argparse.Namespace) -> int:
    if args.revoke is not None:
        reply = _ask(config, {"cmd": "console-revoke", "id": args.revoke})
        print(reply.get("message", "revoked"))
        return 0
    sessions = _ask(config, {"cmd": "console-sessions"})["sessions"]
    return _print_list(
        sessions,
        as_json=args.json,
        empty="No one is signed in to the console.",
        line=lambda s: (
            f"{s['id']}  since {s['created_at']}  last seen {s['last_seen_at']}  "
            f"{shown(s['client'], limit=120)}"  # the browser's User-Agent: anyone's text
        ),
    )


def _audit(config: Config, args: argparse.Namespace) -> int:
    paths = StatePaths.of(config)
    if not paths.audit_log.exists():
        raise DoorbellError(f"no audit log at {paths.audit_log} yet")
    if args.verify:
        identity = read_device_identity(paths.state_dir, config.device.id)
        if identity is None:
            raise DoorbellError("the device's keys are missing: cannot check the signed head")
        report = verify_audit(paths.audit_log, identity.signing.public)
        print(render_report(report))
        return 0 if report.ok else 1
    print(render_audit_table(read_entries(paths.audit_log)))
    return 0


def _clip(config: Config, args: argparse.Namespace) -> int:
    window = _window("clip", args.start, args.end)
    info = clip(storage_dir=config.buffer_dir, window=window, out=args.out, progress=None)
    print(
        f"wrote {args.out}: {info.frames} frames, {format_time(info.first_frame_ms)} .. "
        f"{format_time(info.last_frame_ms)}, {_size(info.bytes)}"
        + ("" if info.synchronized else " (clock was NOT synchronized for part of it)")
    )
    return 0


def _record(config: Config, args: argparse.Namespace) -> int:
    summary = record(
        camera=config.camera,
        storage=config.storage,
        seconds=args.seconds,
        fast=args.fast,
        clock=SystemClock(),
    )
    print(render_record(summary))
    return 0


def render_record(summary: RecordSummary) -> str:
    if summary.first_ms is None or summary.last_ms is None:
        span = "no frames"
    else:
        span = f"{format_time(summary.first_ms)} .. {format_time(summary.last_ms)}"
    return "\n".join(
        [
            f"recorded      {span}",
            f"frames        {summary.frames} ({summary.frames_dropped} dropped)",
            f"segments      {summary.segments}, {_size(summary.bytes)}",
            "clock         "
            + ("synchronized" if summary.synchronized else "NOT synchronized for part of it"),
        ]
    )


def _owner_keygen(out: Path) -> int:
    key, identity = create_key_pair(out / "owner-signing.pem", out / "owner-age.txt")
    print("Add these to the device's config (owner.keys and owner.recipients):")
    print(f"  owner.keys:       [{key.public_b64}]")
    print(f"  owner.recipients: [{identity.to_public()}]")
    return 0


_COMMANDS = {
    "status": _status,
    "pair": _pair,
    "pending": _pending,
    "approve": _approve,
    "deny": _deny,
    "pause": _pause,
    "resume": _pause,
    "shares": _shares,
    "console-code": _console_code,
    "console-sessions": _console_sessions,
    "c2pa-authority": _c2pa_authority,
    "audit": _audit,
    "clip": _clip,
    "record": _record,
}

if __name__ == "__main__":
    sys.exit(main())
