"""The owner's web console (docs/console.md): sign-in codes and sessions (auth), the
certificate (tls), thumbnails and preview clips (preview), the web app and its HTTPS
listener (server). `ConsoleService` is what the composition root starts and stops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_config.schema import ConsoleConfig
from foundation.times import format_time

CONSOLE_COMMANDS = ("console-code", "console-sessions", "console-revoke")


@dataclass
class ConsoleService:
    server: Any  # device.console.server.ConsoleServer
    auth: Any  # device.console.auth.ConsoleAuth
    preview: Any  # device.console.preview.Preview

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
        from device.console.preview import Preview
        from device.console.server import Console, ConsoleParts, ConsoleServer
        from device.console.tls import console_certificate

        assert config.listen is not None
        host, port = config.listen
        certificate = console_certificate(
            state_dir, config.cert_file, config.key_file, extra_hosts=[host]
        )
        hosts = set(certificate.hosts)
        if host not in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
            hosts.add(host.lower())
        auth = ConsoleAuth.open(state_dir / "console.db")
        preview = Preview(buffer_dir, runtime_dir / "console")
        console = Console(
            ConsoleParts(preview=preview, auth=auth, **parts),
            hosts=frozenset(hosts),
            port=port,
        )
        return cls(ConsoleServer(console, certificate, host=host, port=port), auth, preview)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.preview.close()
        self.auth.close()

    def info(self) -> dict[str, str]:
        return {"url": self.server.url, "fingerprint": self.server.certificate.fingerprint}

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
