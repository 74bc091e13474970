"""A real Home Assistant for tests: HA 2025.4.4 as its own process (from the environment
tests/home_assistant/ha_env.sh makes), set up the way an owner sets it up, through HA's
own HTTP API: onboarding makes the owner's account, and the MQTT integration is added
with its config flow, pointed at the home broker. Tests then ask HA what it knows
(states, the device registry through templates, the image proxy) and act as HA's user
does (services).

Nothing here talks to the doorbell: whatever the tests learn, HA learned over MQTT."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cloud.loopback import free_port

HA_ENV_VAR = "DOORBELL_HA_ENV"  # the environment's folder (make ha sets it)
USER = "owner"
PASSWORD = "a long passphrase for the test owner"  # noqa: S105 (a test account's)
START_TIMEOUT_S = 120.0

CONFIGURATION = """\
homeassistant:
  name: Home
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: GB
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
mobile_app:
automation: !include automations.yaml
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: debug
"""


def ha_env() -> Path | None:
    value = os.environ.get(HA_ENV_VAR)
    if not value:
        return None
    path = Path(value)
    return path if (path / "bin" / "hass").exists() else None


class HomeAssistant:
    """HA as a child process with its config folder under `root`. `start()` waits until
    its API answers; the first start onboards the owner and `add_mqtt()` adds the broker;
    `restart()` is a real stop and start (the MQTT integration then sends its birth
    message)."""

    def __init__(self, env: Path, root: Path) -> None:
        self.env = env
        self.root = root
        self.config_dir = root / "config"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = f"{self.url}/"
        self.process: subprocess.Popen[bytes] | None = None
        self._refresh: str | None = None
        self._access: str | None = None
        self._log = None

    # ---- the process -----------------------------------------------------------------

    def start(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        automations = self.config_dir / "automations.yaml"
        if not automations.exists():
            automations.write_text("[]\n")
        log = open(self.root / "hass.out", "ab")  # noqa: SIM115 (open while it runs)
        self.process = subprocess.Popen(
            [
                str(self.env / "bin" / "hass"),
                "--config",
                str(self.config_dir),
                "--skip-pip",  # everything is in the environment; no network at run time
                "--log-no-color",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"Home Assistant exited: {self.log_tail()}")
            try:
                steps = self._request("GET", "/api/onboarding", auth=False)
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
                continue
            if self._refresh is None:
                assert isinstance(steps, list)
                self._onboard()
            else:
                self._access = None
            return
        raise AssertionError(f"Home Assistant did not answer in {START_TIMEOUT_S} s")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # HA saves its storage (accounts, config entries) on the way out
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        path = self.config_dir / "home-assistant.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        out = self.root / "hass.out"
        text += out.read_text(errors="replace") if out.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- set up as the owner does -----------------------------------------------------

    def _onboard(self) -> None:
        made = self._request(
            "POST",
            "/api/onboarding/users",
            {
                "client_id": self.client_id,
                "name": "Owner",
                "username": USER,
                "password": PASSWORD,
                "language": "en",
            },
            auth=False,
        )
        tokens = self._token({"grant_type": "authorization_code", "code": made["auth_code"]})
        self._refresh = tokens["refresh_token"]

    def _token(self, form: dict[str, str]) -> dict[str, Any]:
        body = urllib.parse.urlencode({**form, "client_id": self.client_id}).encode()
        request = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            tokens: dict[str, Any] = json.loads(response.read())
        self._access = tokens["access_token"]
        return tokens

    def _bearer(self) -> str:
        if self._access is None:
            assert self._refresh is not None
            self._token({"grant_type": "refresh_token", "refresh_token": self._refresh})
        assert self._access is not None
        return self._access

    def add_mqtt(self, host: str, port: int) -> dict[str, Any]:
        """The MQTT integration's config flow, as in Settings > Devices > Add integration."""
        flow = self.api("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        assert flow.get("step_id") == "broker", flow
        done = self.api(
            "POST",
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": host, "port": port},
        )
        assert done.get("type") == "create_entry", done
        return done

    def register_phone(self, name: str, push_url: str) -> dict[str, Any]:
        """A phone with the companion app, registered as the app registers itself; HA's
        notifications for it go to `push_url` (the app's push relay, here the test's)."""
        made: dict[str, Any] = self.api(
            "POST",
            "/api/mobile_app/registrations",
            {
                "device_id": "test-phone-1",
                "app_id": "io.robbie.HomeAssistant",
                "app_name": "Home Assistant",
                "app_version": "2025.4",
                "device_name": name,
                "manufacturer": "Test",
                "model": "Phone",
                "os_name": "iOS",
                "os_version": "18.0",
                "supports_encryption": False,
                "app_data": {"push_token": "test-push-token", "push_url": push_url},
            },
        )
        return made

    def install_blueprint(self, source: Path, folder: str) -> str:
        """As HA's blueprint import does: the file under blueprints/automation/<folder>/;
        returns the path automations name it by."""
        target = self.config_dir / "blueprints" / "automation" / folder / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        return f"{folder}/{source.name}"

    def add_automation(self, automation_id: str, config: dict[str, Any]) -> None:
        """Saved as the automation editor saves it (automations.yaml, then a reload)."""
        saved = self.api("POST", f"/api/config/automation/config/{automation_id}", config)
        assert saved == {"result": "ok"}, saved

    # ---- what HA knows, and what its user does ----------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self._request(method, path, body, auth=True)

    def state(self, entity_id: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.api("GET", f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return found

    def template(self, text: str) -> str:
        return str(self.api("POST", "/api/template", {"template": text}))

    def call(self, domain: str, service: str, **data: Any) -> Any:
        return self.api("POST", f"/api/services/{domain}/{service}", data)

    def image(self, entity_id: str) -> bytes:
        """The picture HA shows for an image entity (its image proxy)."""
        request = urllib.request.Request(
            f"{self.url}/api/image_proxy/{entity_id}",
            headers={"Authorization": f"Bearer {self._bearer()}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return bytes(response.read())

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._bearer()}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            raw = response.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")
