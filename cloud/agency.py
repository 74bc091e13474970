"""`doorbell-agency`: the agency's reference tool (protocol.md §4, §6).

It owns the agency's side of the protocol: making the agency's keys, building, signing
and publishing a Request for Assistance to every geohash-5 cell its circle touches, and
verifying a share that came back (the checks themselves live in `cloud.verify`).

An RFA that a device would refuse is refused here first, with every broken rule named,
so an investigator learns of a mistake before the request goes out rather than from
silence.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyrage import x25519

from cloud.broker import Outgoing, publish_messages
from cloud.tus_storage import StoredShare, find_shares
from cloud.verify import MAX_MANIFEST_BYTES, verify_share
from foundation import wire
from foundation.arguments import duration_arg, time_arg
from foundation.cli import EXIT_CODES_EPILOG, ExitCode, ToolParser, run_tool
from foundation.errors import DoorbellError, UsageError
from foundation.times import Window, format_time
from sync import geo
from sync.envelope import make_envelope
from sync.keys import (
    SigningKey,
    create_key_pair,
    load_identity,
    load_signing_key,
    public_key_from_b64,
)
from sync.rfa import DeviceFacts, Rejected, TrustedAgencyKey, check_rfa

logger = logging.getLogger(__name__)

SIGNING_FILE = "agency-signing.pem"
IDENTITY_FILE = "agency-age.txt"
PUBLIC_FILE = "agency.json"


class RfaInputError(DoorbellError):
    """The request's inputs break the protocol's rules; `problems` names each one."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


# ---------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class AgencyPublic:
    """The public halves a device owner and the agency's own tools need."""

    public_key: str  # base64url raw Ed25519: rfa.trusted_agencies[].public_key
    kid: str
    recipient: str  # age recipient for RFAs
    agency_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "agency_id": self.agency_id,
            "public_key": self.public_key,
            "kid": self.kid,
            "recipient": self.recipient,
        }


def generate_agency_keys(out: Path, *, agency_id: str | None = None) -> AgencyPublic:
    """Make the agency's signing key and age identity in `out` (0600). Refuses to overwrite."""
    key, identity = create_key_pair(out / SIGNING_FILE, out / IDENTITY_FILE)
    public = AgencyPublic(
        public_key=key.public_b64,
        kid=key.kid,
        recipient=str(identity.to_public()),
        agency_id=agency_id,
    )
    (out / PUBLIC_FILE).write_text(json.dumps(public.to_json(), indent=2) + "\n")
    return public


def recipient_beside(key_path: Path) -> str:
    """The age recipient of the identity that keygen wrote next to `key_path`."""
    return str(load_identity(key_path.parent / IDENTITY_FILE).to_public())


# ---------------------------------------------------------------------------- RFA


@dataclass(frozen=True, slots=True, kw_only=True)
class RfaSpec:
    """What an investigator asks for; times in epoch ms."""

    agency_id: str
    agency_name: str
    case_number: str
    investigator_name: str
    email: str | None = None
    phone: str | None = None
    description: str
    lat: float
    lon: float
    radius_m: float
    window: Window
    expires_at_ms: int
    recipient: str
    upload_url: str


@dataclass(frozen=True, slots=True)
class SignedRfa:
    id: str
    payload: dict[str, Any]
    envelope: bytes
    cells: tuple[str, ...]
    expires_at_ms: int

    @property
    def topics(self) -> list[str]:
        return [wire.rfa_topic(cell) for cell in self.cells]


def rfa_problems(
    spec: RfaSpec,
    *,
    now_ms: int,
    allow_plain_http_loopback: bool = False,
    key: SigningKey | None = None,
) -> list[str]:
    """The rule of protocol.md §4 these inputs break, judged by the device's own rules
    (sync.rfa.check_rfa) on the request as it would be signed; empty when none.

    The device-only facts are taken as favourable (a device at the area's centre, requests
    on, nothing pending, no earlier request of the case): the agency cannot know them."""
    key = key or SigningKey.generate()
    rid = str(uuid.uuid4())
    try:
        envelope = make_envelope(rfa_payload(spec, rfa_id=rid, now_ms=now_ms), key)
    except ValueError as exc:  # NaN or infinite numbers
        return [f"the request cannot be written as JSON: {exc}"]
    if len(envelope) > wire.MAX_MESSAGE_BYTES:
        return [f"the signed request is {len(envelope)} bytes; devices drop > 16 KiB"]
    facts = DeviceFacts(
        device_id="any",
        lat=spec.lat if math.isfinite(spec.lat) else 0.0,
        lon=spec.lon if math.isfinite(spec.lon) else 0.0,
        requests_enabled=True,
        allow_plain_http_loopback=allow_plain_http_loopback,
    )
    trusted = {key.kid: TrustedAgencyKey(agency_id=spec.agency_id, public_key=key.public)}
    result = check_rfa(envelope, facts, trusted, set(), now_ms, pending_count=0, case_count=0)
    if isinstance(result, Rejected):
        return [f"{result.reason}: {result.detail}"]
    return []


def rfa_payload(spec: RfaSpec, *, rfa_id: str, now_ms: int) -> dict[str, Any]:
    investigator: dict[str, str] = {"name": spec.investigator_name}
    if spec.email:
        investigator["email"] = spec.email
    if spec.phone:
        investigator["phone"] = spec.phone
    return {
        "type": "rfa",
        "id": rfa_id,
        "agency": {"id": spec.agency_id, "name": spec.agency_name},
        "case_number": spec.case_number,
        "investigator": investigator,
        "description": spec.description,
        "area": {"lat": spec.lat, "lon": spec.lon, "radius_m": spec.radius_m},
        "window": spec.window.to_json(),
        # Whole milliseconds: a device refuses sub-millisecond times.
        "issued_at": format_time(now_ms),
        "expires_at": format_time(spec.expires_at_ms),
        "recipient": spec.recipient,
        "upload_url": spec.upload_url,
    }


def build_rfa(
    spec: RfaSpec,
    key: SigningKey,
    *,
    now_ms: int,
    rfa_id: str | None = None,
    allow_plain_http_loopback: bool = False,
) -> SignedRfa:
    """Check the inputs, then sign the RFA and work out the cells it goes to."""
    problems = rfa_problems(
        spec, now_ms=now_ms, allow_plain_http_loopback=allow_plain_http_loopback, key=key
    )
    if problems:
        raise RfaInputError(problems)
    rid = rfa_id or str(uuid.uuid4())
    payload = rfa_payload(spec, rfa_id=rid, now_ms=now_ms)
    envelope = make_envelope(payload, key)
    cells = tuple(sorted(geo.cells_covering(spec.lat, spec.lon, spec.radius_m)))
    return SignedRfa(
        id=rid, payload=payload, envelope=envelope, cells=cells, expires_at_ms=spec.expires_at_ms
    )


def expiry_seconds(expires_at_ms: int, now_ms: int) -> int:
    """MQTT 5 message expiry: whole seconds until expires_at, rounded up, at least 1."""
    return max(1, -(-(expires_at_ms - now_ms) // 1000))


def publish_rfa(
    rfa: SignedRfa, broker_url: str, *, now_ms: int, timeout_s: float = 10.0
) -> list[str]:
    """Publish one copy per covering cell (QoS 1, not retained, with message expiry)."""
    if rfa.expires_at_ms <= now_ms:
        raise RfaInputError(["the request has already expired"])
    expiry = expiry_seconds(rfa.expires_at_ms, now_ms)
    messages = [Outgoing(topic=t, payload=rfa.envelope, expiry_s=expiry) for t in rfa.topics]
    publish_messages(broker_url, messages, timeout_s=timeout_s)
    return rfa.topics


# ---------------------------------------------------------------------------- CLI


@dataclass
class _Printer:
    out: Any = field(default_factory=lambda: sys.stdout)

    def __call__(self, text: str = "") -> None:
        print(text, file=self.out)


def _cmd_keygen(args: argparse.Namespace, say: _Printer) -> int:
    public = generate_agency_keys(Path(args.out), agency_id=args.agency_id)
    say(f"signing key:   {Path(args.out) / SIGNING_FILE} (0600)")
    say(f"age identity:  {Path(args.out) / IDENTITY_FILE} (0600)")
    say(f"public_key:    {public.public_key}")
    say(f"kid:           {public.kid}")
    say(f"recipient:     {public.recipient}")
    say("device config (rfa.trusted_agencies):")
    say(f"  - agency_id: {public.agency_id or '<your agency id>'}")
    say(f"    public_key: {public.public_key}")
    return 0


def _stored_agency_id(key_path: Path) -> str | None:
    try:
        data = json.loads((key_path.parent / PUBLIC_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = data.get("agency_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _cmd_rfa(args: argparse.Namespace, say: _Printer, now_ms: int) -> int:
    if not args.publish and not args.out:
        raise RfaInputError(["give --publish mqtt://... and/or --out FILE"])
    key_path = Path(args.key)
    key = load_signing_key(key_path)
    agency_id = args.agency_id or _stored_agency_id(key_path)
    if not agency_id:
        raise RfaInputError(["give --agency-id (keygen --agency-id stores a default)"])
    if args.expires is not None and args.expires_in is not None:
        raise RfaInputError(["give --expires or --expires-in, not both"])
    if args.expires is not None:
        expires = args.expires
    else:
        expires = now_ms + (args.expires_in if args.expires_in is not None else 7 * 86_400_000)
    if args.start >= args.end:
        raise RfaInputError(["window start must be before its end"])
    spec = RfaSpec(
        agency_id=agency_id,
        agency_name=args.agency_name,
        case_number=args.case,
        investigator_name=args.investigator_name,
        email=args.email,
        phone=args.phone,
        description=args.description,
        lat=args.lat,
        lon=args.lon,
        radius_m=args.radius_m,
        window=Window(args.start, args.end),
        expires_at_ms=expires,
        recipient=args.recipient or recipient_beside(key_path),
        upload_url=args.upload_url,
    )
    rfa = build_rfa(
        spec, key, now_ms=now_ms, allow_plain_http_loopback=args.allow_plain_http_loopback
    )
    if args.out:
        Path(args.out).write_bytes(rfa.envelope)
        say(f"wrote {args.out}")
    if args.publish:
        publish_rfa(rfa, args.publish, now_ms=now_ms, timeout_s=args.timeout)
        say(f"published to {len(rfa.cells)} cell(s)")
    say(f"id: {rfa.id}")
    say(f"cells: {' '.join(rfa.cells)}")
    return 0


def _cmd_verify(args: argparse.Namespace, say: _Printer) -> int:
    identity = load_identity(Path(args.identity))
    agency_keys = [public_key_from_b64(text) for text in args.trust_key or ()]
    if args.key:
        agency_keys.append(load_signing_key(Path(args.key)).public)
    if not agency_keys:
        raise UsageError("give the agency's signing key (--key FILE or --trust-key B64)")
    owner_keys = [public_key_from_b64(text) for text in args.owner_key or ()]
    anchors = _c2pa_authorities(args.c2pa_authority or ())
    if args.storage is not None:
        if args.objects:
            raise UsageError("give --storage DIR or the two objects, not both")
        shares = find_shares(Path(args.storage), args.rfa)
    elif len(args.objects) == 2:
        manifest, clip = _manifest_first(Path(args.objects[0]), Path(args.objects[1]), identity)
        shares = [StoredShare(rfa_id="", manifest=manifest, clip=clip)]
    else:
        raise UsageError("give the share's two objects (in any order), or --storage DIR")
    all_ok = True
    for share in shares:
        if share.rfa_id:
            say(f"share of request {share.rfa_id}: {share.manifest.name}, {share.clip.name}")
        report = verify_share(
            share.manifest,
            share.clip,
            identity=identity,
            agency_keys=agency_keys,
            owner_keys=owner_keys,
            stamps=not args.no_stamps,
            c2pa_anchors=anchors,
        )
        say(report.render())
        all_ok = all_ok and report.ok
    return ExitCode.OK if all_ok else ExitCode.REFUSED


def _c2pa_authorities(files: Sequence[str]) -> str | None:
    """The PEM certificates of the C2PA authorities given with --c2pa-authority, checked
    to be certificates (PEM or DER), as one PEM text; None when none was given."""
    pems = []
    for name in files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(f"--c2pa-authority {name}: {exc.strerror}") from exc
        try:
            certs = (
                x509.load_pem_x509_certificates(data)
                if b"-----BEGIN" in data
                else [x509.load_der_x509_certificate(data)]
            )
        except ValueError as exc:
            raise UsageError(f"--c2pa-authority {name}: not a certificate (PEM or DER)") from exc
        pems += [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]
    return "".join(pems) or None


def _manifest_first(a: Path, b: Path, identity: x25519.Identity) -> tuple[Path, Path]:
    """Which of two received objects is the manifest: tus servers name them at random.
    The smaller is decrypted (a manifest is at most MAX_MANIFEST_BYTES): an MP4 file
    has its `ftyp` box at byte 4, a manifest envelope is JSON. When neither can be told
    (it does not decrypt), the order given stands and the verification says why."""
    small, large = sorted((a, b), key=lambda p: p.stat().st_size)
    if small.stat().st_size > MAX_MANIFEST_BYTES:
        return a, b
    try:
        head = bytes(pyrage.decrypt(small.read_bytes(), [identity]))[:8]
    except Exception:  # pyrage.DecryptError and malformed headers: the report says so
        return a, b
    return (large, small) if head[4:8] == b"ftyp" else (small, large)


def _parser() -> argparse.ArgumentParser:
    parser = ToolParser(
        prog="doorbell-agency",
        description="An agency's reference tool for the doorbell protocol.",
        epilog=EXIT_CODES_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kg = sub.add_parser("keygen", help="make the agency's signing key and age identity")
    kg.add_argument("--out", required=True, help="directory for the key files")
    kg.add_argument("--agency-id", help="remembered as the default for `rfa`")

    rfa = sub.add_parser("rfa", help="build, sign and publish a Request for Assistance")
    rfa.add_argument("--key", required=True, help="the agency's signing key (from keygen)")
    rfa.add_argument("--agency-id", help="the agency's id (default: the one keygen remembered)")
    rfa.add_argument("--agency-name", required=True, help="shown to the owner")
    rfa.add_argument("--case", required=True, help="case number")
    rfa.add_argument("--investigator-name", required=True, help="shown to the owner")
    rfa.add_argument("--email", help="the investigator's email, shown to the owner")
    rfa.add_argument("--phone", help="the investigator's phone, shown to the owner")
    rfa.add_argument("--description", required=True, help="what happened, for the owner")
    rfa.add_argument("--lat", type=float, required=True, help="area centre, degrees")
    rfa.add_argument("--lon", type=float, required=True, help="area centre, degrees")
    rfa.add_argument("--radius-m", type=float, required=True, help="area radius, at most 805")
    rfa.add_argument("--start", type=time_arg, required=True, help="RFC 3339 UTC")
    rfa.add_argument("--end", type=time_arg, required=True, help="RFC 3339 UTC")
    rfa.add_argument("--expires", type=time_arg, help="RFC 3339 UTC")
    rfa.add_argument("--expires-in", type=duration_arg, help="e.g. 7d (default: 7d)")
    rfa.add_argument("--recipient", help="age recipient (default: the keygen directory's)")
    rfa.add_argument(
        "--upload-url", required=True, help="the agency's tus server (https://.../files/)"
    )
    rfa.add_argument("--publish", metavar="MQTT_URL", help="mqtt://host:port")
    rfa.add_argument("--out", help="also write the signed envelope to this file")
    rfa.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    rfa.add_argument(
        "--allow-plain-http-loopback",
        action="store_true",
        help="testing only: accept http://127.0.0.1 upload URLs",
    )

    ver = sub.add_parser("verify", help="decrypt and verify a received share")
    ver.add_argument("--identity", required=True, help="the agency's age identity file")
    ver.add_argument("--key", help="the agency's signing key (its public half is trusted)")
    ver.add_argument("--trust-key", action="append", help="agency public key, base64url")
    ver.add_argument(
        "--owner-key", action="append", help="owner public key (base64url) to check the decision"
    )
    ver.add_argument("--no-stamps", action="store_true", help="real camera: no time stamps")
    ver.add_argument(
        "--c2pa-authority",
        action="append",
        metavar="CERT",
        help="a device's C2PA authority certificate (from its owner: doorbellctl "
        "c2pa-authority); a named share signed under it reads Trusted",
    )
    ver.add_argument(
        "--storage",
        metavar="DIR",
        help="the tus server's storage folder: find each share's manifest and clip there "
        "by their Upload-Metadata (tuspyserver's and tusd's .info files)",
    )
    ver.add_argument("--rfa", metavar="RFA_ID", help="with --storage: only this request's share")
    ver.add_argument(
        "objects",
        nargs="*",
        metavar="OBJECT",
        help="the share's two received objects, the manifest and the clip, in any order",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, now_ms: int | None = None) -> int:
    def body() -> int:
        args = _parser().parse_args(argv)
        say = _Printer()
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        try:
            if args.command == "keygen":
                return _cmd_keygen(args, say)
            if args.command == "rfa":
                return _cmd_rfa(args, say, now)
            return _cmd_verify(args, say)
        except RfaInputError as exc:
            for problem in exc.problems:
                print(f"doorbell-agency: {problem}", file=sys.stderr)
            return ExitCode.USAGE
        except ValueError as exc:  # a key or file that does not parse
            raise DoorbellError(str(exc)) from exc

    return run_tool("doorbell-agency", body)


if __name__ == "__main__":
    sys.exit(main())
