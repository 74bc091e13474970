"""The two pages anyone on the home network may fetch before signing in: the device's
certificate authority, to install once on a phone (docs/console.md), and its SHA-256
fingerprint as text, to compare with what the phone and `doorbellctl console-code` show.
Both are public by nature (the authority's certificate holds no secret), and they are
all that is served without a session besides the sign-in page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from device.console.tls import Authority, spaced_fingerprint

CA_PATH = "/ca.crt"
FINGERPRINT_PATH = "/ca.txt"
# The type that makes iOS Safari offer a profile, Firefox its trust dialog, and Android
# keep the file for Settings: DER, so the file's own SHA-256 is the fingerprint.
CA_CONTENT_TYPE = "application/x-x509-ca-cert"


def authority_routes(authority: Authority) -> list[Route]:
    disposition = 'attachment; filename="doorbell-console-ca.crt"'
    text = (
        f"Doorbell console certificate authority ({', '.join(sorted(authority.names))})\n"
        f"SHA-256 {spaced_fingerprint(authority.fingerprint)}\n"
    )

    async def certificate(request: Request) -> Response:
        return Response(
            authority.der,
            media_type=CA_CONTENT_TYPE,
            headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
        )

    async def fingerprint(request: Request) -> Response:
        return Response(text, media_type="text/plain", headers={"Cache-Control": "no-store"})

    return [
        Route(CA_PATH, certificate, methods=["GET"]),
        Route(FINGERPRINT_PATH, fingerprint, methods=["GET"]),
    ]
