"""The owner's web console (docs/console.md): sign-in codes and sessions (auth), the
device's certificate authority and the console's certificate (tls; the authority's
download, authority), thumbnails and preview clips (preview), the web app and its HTTPS
listener (server). `ConsoleService` is what the composition root starts and stops."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_config.schema import ConsoleConfig
from foundation.display import shown
from foundation.errors import DoorbellError
from foundation.times import format_time

logger = logging.getLogger(__name__)

CONSOLE_COMMANDS = ("console-code", "console-sessions", "console-revoke")
CERTIFICATE_CHECK_S = 60.0  # how often the device's addresses and the leaf's age are checked


@dataclass
class ConsoleService:
    server: Any  # device.console.server.ConsoleServer
    auth: Any  # device.console.auth.ConsoleAuth
    preview: Any  # device.console.preview.Preview
    config: ConsoleConfig
    state_dir: Path
    _stopping: threading.Event = field(default_factory=threading.Event)
    _checker: threading.Thread | None = None

    @classmethod
    def open(
        cls,
        config: ConsoleConfig,
        *,
        state_dir: Path,
        buffer_dir: Path,
        runtime_dir: Path,
        **parts: Any,
    ) -> ConsoleService:
        """Make the certificate (on first start), open the session store and build the
        app; nothing listens until `start()`. `parts` are ConsoleParts' other fields."""
        # Here, not at the top: the console is off by default, and its web stack
        # (Starlette, uvicorn) loads only when it is on.
        from device.console.auth import ConsoleAuth
        from device.console.authority import authority_routes
        from device.console.preview import Preview
        from device.console.server import Console, ConsoleParts, ConsoleServer
        from device.console.tls import console_certificate, vouchable_host
        from device.console.video import Video

        assert config.listen is not None
        host, port = config.listen
        certificate = console_certificate(
            state_dir, config.cert_file, config.key_file, extra_hosts=[host]
        )
        hosts = set(certificate.hosts)
        if host not in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
            hosts.add(host.lower())
            if certificate.authority is not None and not vouchable_host(host):
                logger.warning(
                    "the console listens on %s, a public address the device's certificate "
                    "authority cannot vouch for: browsers will warn there",
                    shown(host),
                )
        authority = certificate.authority
        auth = ConsoleAuth.open(state_dir / "console.db")
        preview = Preview(buffer_dir, runtime_dir / "console")
        console = Console(
            ConsoleParts(preview=preview, auth=auth, video=Video(buffer_dir), **parts),
            hosts=frozenset(hosts),
            port=port,
            public_routes=[] if authority is None else authority_routes(authority),
        )
        server = ConsoleServer(console, certificate, host=host, port=port)
        return cls(server, auth, preview, config, state_dir)

    def start(self) -> None:
        from device.console.preview import load_pyav  # as Preview is imported: lazily

        load_pyav()
        self.server.start()
        if self.server.certificate.authority is not None:
            self._checker = threading.Thread(
                target=self._keep_certificate, name="console-certificate", daemon=True
            )
            self._checker.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._checker is not None:
            self._checker.join(timeout=10)
        self.server.stop()
        self.preview.close()
        self.auth.close()

    def refresh_certificate(self) -> bool:
        """Issue the console's certificate again when the device's addresses changed or
        it nears its end (the authority stays); True when a new one is served."""
        from device.console.tls import console_certificate

        assert self.config.listen is not None
        current = self.server.certificate
        fresh = console_certificate(self.state_dir, None, None, extra_hosts=[self.config.listen[0]])
        if fresh.fingerprint == current.fingerprint:
            return False
        self.server.use_certificate(fresh)
        return True

    def _keep_certificate(self) -> None:
        while not self._stopping.wait(CERTIFICATE_CHECK_S):
            try:
                self.refresh_certificate()
            except (DoorbellError, OSError, ValueError) as exc:
                logger.warning("console: cannot renew the certificate: %s", shown(exc))

    def info(self) -> dict[str, str | None]:
        """The console's address and what the owner compares: the fingerprint of the
        certificate served and, for the device's own, of the authority to install
        (`ca_url` downloads it)."""
        from device.console.authority import CA_PATH

        certificate = self.server.certificate
        authority = certificate.authority
        return {
            "url": self.server.url,
            "fingerprint": certificate.fingerprint,
            "ca_fingerprint": None if authority is None else authority.fingerprint,
            "ca_url": None if authority is None else self.server.url.rstrip("/") + CA_PATH,
        }

    def command(self, request: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """The control socket's console commands (doorbellctl console-code, -sessions)."""
        cmd = request["cmd"]
        if cmd == "console-code":
            code, expires = self.auth.new_code(now_ms)
            return {"ok": True, "code": code, "expires_at": format_time(expires), **self.info()}
        if cmd == "console-sessions":
            sessions = [
                {
                    "id": s.id,
                    "created_at": format_time(s.created_ms),
                    "expires_at": format_time(s.expires_ms),
                    "last_seen_at": format_time(s.last_seen_ms),
                    "client": s.client,
                }
                for s in self.auth.sessions(now_ms=now_ms)
            ]
            return {"ok": True, "sessions": sessions}
        session_id = request.get("id")
        if not isinstance(session_id, str):
            return {"ok": False, "error": "id is required"}
        if not self.auth.revoke(session_id, now_ms=now_ms):
            return {"ok": False, "error": f"no live session {session_id}"}
        return {"ok": True, "message": f"session {session_id} revoked"}


def console_command(
    service: ConsoleService | None, request: dict[str, Any], now_ms: int
) -> dict[str, Any]:
    if service is None:
        return {"ok": False, "error": "the console is off (set console.listen in the config)"}
    return service.command(request, now_ms)
