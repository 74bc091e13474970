"""The composition root: every part of the daemon is made and wired here, and nowhere else.

`Doorbell.start()` reads as the list of steps the service goes through; `stop()` undoes
them in reverse. Collaborators that touch the world (clock, free-space probe, GPIO pin
factory, systemd notifier) come in through the constructor so tests can replace them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from device.audit import AuditLog
from device.bell import Bell, Rings
from device.commands import ControlCommands
from device.console import CONSOLE_COMMANDS, ConsoleService, console_command
from device.control import ControlError, ControlServer, refuse_if_answering
from device.flow import RequestFlow
from device.home_assistant import DeviceState, HomeAssistantLink, HomeAssistantNudge
from device.identity import DeviceIdentity, load_device_identity
from device.intake import Intake
from device.masks import PrivacyMasks
from device.notify import SystemdNotifier
from device.nudge import NudgeChannel, NudgeScheduler, WebhookChannel
from device.owner_channel import OwnerChannel, pending_views
from device.panel import Panel
from device.paths import StatePaths
from device.state import StateStore
from device.status import BufferFacts, Health, Live, Status
from device.supervisor import RestartBudget, Supervisor
from firmware_config import Config
from foundation import wire
from foundation.clock import Clock, sync_evidence
from foundation.errors import (
    AlreadyRunningError,
    BufferLockedError,
    LockHeldError,
    RecorderError,
)
from foundation.files import FileLock, disk_free_bytes, private_dir
from foundation.locks import NamedLock, port_taken
from foundation.times import format_time
from foundation.wire import ShareState
from recorder.buffer import BufferLock, RollingBuffer, read_summary
from recorder.process import RecorderProcess
from sync import SOFTWARE_VERSION
from sync.geo import cell_of
from sync.keys import key_id, parse_recipient, public_key_from_b64, raw_public
from sync.models import ConsentMethod
from sync.mqtt import MqttLink
from sync.outbox import Outbox
from sync.rfa import DeviceFacts, TrustedAgencyKey
from sync.uploader import ShareWorker

logger = logging.getLogger(__name__)

WATCHDOG_STALL_S = 10.0  # no frame written for this long: stop pinging, let systemd act
FIRST_FRAME_WAIT_S = 30.0
DAEMON_LOCK_NAME = "daemon.lock"  # in the state directory, held while the daemon runs


@dataclass(frozen=True)
class Hooks:
    """What tests replace: the clock, the free-space probe and the GPIO pin factory."""

    clock: Clock
    free_space: Callable[[Path], int] = disk_free_bytes  # must pickle: the recorder gets it
    pin_factory: Any = None
    notifier: SystemdNotifier | None = None


class Doorbell:
    def __init__(self, config: Config, hooks: Hooks) -> None:
        self.config = config
        self.hooks = hooks
        self.stop_event = threading.Event()
        self.paths = StatePaths.of(config)
        self.notifier = hooks.notifier or SystemdNotifier()
        self.supervisor = Supervisor(self.stop_event, clock=hooks.clock.monotonic)
        # What start() closes again, in reverse order, however far it got.
        self._resources = contextlib.ExitStack()
        # The parts, made by the start steps below in this order.
        self.daemon_lock: FileLock | None = None
        self.identity: DeviceIdentity
        self.store: StateStore
        self.audit: AuditLog
        self.outbox: Outbox
        self.buffer: RollingBuffer
        self.recorder: RecorderProcess
        self.masks: PrivacyMasks
        self.recorder_budget = RestartBudget()
        self.recorder_restarts = 0  # doorbellctl status
        self.trusted_agencies: dict[str, TrustedAgencyKey] = {}
        self.flow: RequestFlow
        self.share_worker: ShareWorker
        self.commands: ControlCommands
        self.intake: Intake
        self.mqtt: MqttLink
        self.owner_channel: OwnerChannel
        self.panel: Panel | None = None
        # Rings are heard here whether or not a bell is wired, so listeners (Home
        # Assistant) subscribe once; the bell, when configured, announces them.
        self.rings = Rings()
        self.bell: Bell | None = None
        self.nudge: NudgeScheduler | None = None
        self.control: ControlServer
        self.console: ConsoleService | None = None
        self.home_assistant: HomeAssistantLink | None = None

    # -- start-up, in order -------------------------------------------------------------
    def claim(self) -> None:
        """Refuse to start, before anything is written or connected, when this device is
        already running: a daemon speaks for this device id on this broker (from any
        state directory), something listens on the console's port, a daemon holds its
        state directory, a process holds its buffer, or a daemon answers on its control
        socket. (A second daemon that got as far as the broker would take the running
        one's client id and knock it off.)"""
        session = NamedLock(self.session_lock_name())
        try:
            session.acquire()
        except LockHeldError:
            host, port, _tls = self.config.mqtt.endpoint()
            pid = session.holder_pid()
            raise AlreadyRunningError(
                f"doorbelld{f' (pid {pid})' if pid else ''} is already running as device "
                f"{self.config.device.id} on the broker {host}:{port}, perhaps with another "
                "state directory; stop it first"
            ) from None
        self._resources.callback(session.release)
        if self.config.console.listen is not None and port_taken(*self.config.console.listen):
            host, port = self.config.console.listen
            raise AlreadyRunningError(
                f"the console's port {host}:{port} is already in use (another doorbelld "
                "or another program); stop it first, or choose another console.listen"
            )
        self.paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = FileLock(self.paths.state_dir / DAEMON_LOCK_NAME)
        try:
            lock.acquire()
        except LockHeldError:
            raise AlreadyRunningError(
                f"doorbelld is already running for {self.paths.state_dir}; stop it first"
            ) from None
        self.daemon_lock = lock
        self._resources.callback(lock.release)
        try:
            refuse_if_answering(self.config.control.socket)
            BufferLock(self.paths.buffer_dir).acquire().release()
        except (ControlError, BufferLockedError) as exc:
            raise AlreadyRunningError(str(exc)) from None
        # Only now that this daemon is the one: folders an older version left open to
        # others are tightened (a refused start changes nothing).
        private_dir(self.paths.state_dir)  # keys, requests, decisions: the daemon's alone
        private_dir(self.paths.buffer_dir)  # footage (RollingBuffer.open says the same)

    def session_lock_name(self) -> str:
        """The system-wide name a daemon holds while it may speak for its device id on
        its broker: one MQTT session per client id and broker, so two daemons for one
        device on one broker would knock each other off. The broker is part of the key
        (hashed, to fit the name's 107 bytes) because the same id on another broker is
        another session, as with every test world on this machine."""
        host, port, _tls = self.config.mqtt.endpoint()
        broker = hashlib.sha256(f"{host.lower()}:{port}".encode()).hexdigest()[:16]
        return f"doorbell/{self.config.device.id}/{broker}"

    def start(self) -> None:
        if self.daemon_lock is None:
            self.claim()
        self.init_state()
        self.start_recorder()
        self.init_flow()
        self.start_uploader()
        self.start_mqtt()
        self.start_owner_channel()
        self.start_panel()
        self.start_bell()
        self.start_control()
        self.start_console()
        self.start_home_assistant()
        self.start_nudge()
        self.start_housekeeping()
        self.wait_for_first_frame()
        self.notifier.ready(self.status_line())
        logger.info("doorbell %s running as %s", SOFTWARE_VERSION, self.config.device.id)

    def _on_stop(self, close: Callable[[], object]) -> None:
        """Close `close` at stop; an error there is logged, and the others still run."""

        def quietly() -> None:
            try:
                close()
            except Exception:
                logger.exception("error while stopping")

        self._resources.callback(quietly)

    def init_state(self) -> None:
        self.identity = load_device_identity(self.paths.state_dir, self.config.device.id)
        self.store = StateStore.open(self.paths.state_db)
        self._on_stop(self.store.close)
        self.audit = AuditLog.open(
            self.paths.audit_log, self.identity.signing, clock=self.hooks.clock
        )
        self._on_stop(lambda: self.audit.close(self.hooks.clock.wall_ms()))
        self.outbox = Outbox.open(
            self.paths.outbox_dir, anonymous_delay=self.config.share.anonymous_delay
        )
        self._on_stop(self.outbox.close)
        self.buffer = RollingBuffer.open(self.paths.buffer_dir, reconcile=False)
        self._on_stop(self.buffer.close)

    def start_recorder(self) -> None:
        camera = self.config.camera
        self.masks = PrivacyMasks(config_masks=camera.masks, store=self.store, audit=self.audit)
        self.masks.audit_start()
        self.recorder = RecorderProcess(
            camera=replace(camera, masks=self.masks.in_force),
            storage=self.config.storage,
            clock=self.hooks.clock,
            free_space=self.hooks.free_space,
        )
        self.masks.follow(self.recorder.set_masks)
        self.recorder.start()
        self._on_stop(lambda: self.recorder.stop(timeout=10))

    def init_flow(self) -> None:
        config = self.config
        trusted: dict[str, TrustedAgencyKey] = {}
        for agency in config.rfa.trusted_agencies:
            key = TrustedAgencyKey(
                agency_id=agency.agency_id, public_key=public_key_from_b64(agency.public_key)
            )
            trusted[key.kid] = key
        owner_keys = {}
        for text in config.owner.keys:
            owner_key = public_key_from_b64(text)
            owner_keys[key_id(raw_public(owner_key))] = owner_key
        self.trusted_agencies = trusted
        # The flow hands approvals to the share worker, which queues them in the outbox
        # and wakes its dispatcher; the worker runs from start_uploader on.
        self.share_worker = ShareWorker(
            outbox=self.outbox,
            buffer_root=self.paths.buffer_dir,
            identity=self.identity,
            contact=self.named_share_contact(),
            clock=self.hooks.clock,
            settings=config.share,
            on_state=self._share_state_changed,
            stop=self.stop_event,
        )
        self.flow = RequestFlow(
            store=self.store,
            audit=self.audit,
            buffer=self.buffer,
            outbox=self.share_worker,
            facts=DeviceFacts(
                device_id=config.device.id,
                lat=config.device.lat,
                lon=config.device.lon,
                requests_enabled=config.rfa.enabled,
                allow_plain_http_loopback=config.rfa.allow_plain_http_loopback,
            ),
            trusted_agencies=trusted,
            owner_keys=owner_keys,
            identity=self.identity,
            clock=self.hooks.clock,
            decide_within_ms=round(config.rfa.decide_within_hours * 3_600_000),
            share_contact_by_default=config.owner.share_contact_by_default,
        )
        self.flow.recover()

    def _share_state_changed(self, rfa_id: str, state: ShareState, error: str | None) -> None:
        self.flow.on_share_state(rfa_id, state, error)

    def start_uploader(self) -> None:
        self.supervisor.start("uploader", self.share_worker.run)

    def start_mqtt(self) -> None:
        device_id = self.config.device.id
        rfa_topic = wire.rfa_topic(cell_of(self.config.device.lat, self.config.device.lon))
        decision_topic = wire.owner_topic(device_id, "decision")
        self.intake = Intake(
            flow=self.flow,
            audit=self.audit,
            seen=self.store.seen_ids,
            trusted_agencies=self.trusted_agencies,
            rfa_topic=rfa_topic,
            decision_topic=decision_topic,
            clock=self.hooks.clock,
            stop=self.stop_event,
        )
        self.supervisor.start("intake", self.intake.run)
        self.mqtt = MqttLink(
            self.config.mqtt,
            client_id=device_id,
            status_topic=wire.status_topic(device_id),
            version=SOFTWARE_VERSION,
            subscriptions=[rfa_topic, decision_topic],
            on_message=self.intake.on_message,
            stop=self.stop_event,
        )
        self.mqtt.start()
        self._on_stop(self.mqtt.stop)

    def start_owner_channel(self) -> None:
        recipients = [parse_recipient(text) for text in self.config.owner.recipients]
        self.owner_channel = OwnerChannel(
            publish=self._publish_retained,
            device_id=self.config.device.id,
            recipients=recipients,
            identity=self.identity,
            pending=lambda: pending_views(self.flow.pending_footage()),
            shares=lambda: self.outbox.shares(self.hooks.clock.wall_ms()),
            audit_head=self.audit.head,
            clock=self.hooks.clock,
            period_s=self.config.owner.sync_seconds,
            stop=self.stop_event,
        )
        self.supervisor.start("owner-channel", self.owner_channel.run)

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        # Dropped while offline or while the topic's last message awaits its PUBACK
        # (protocol.md §3): counted by the link and shown in the status, not an error.
        self.mqtt.publish_latest(topic, payload)

    def start_panel(self) -> None:
        owner = self.config.owner
        if owner.button_pin is None and owner.led_pin is None:
            return
        self.panel = Panel(
            button_pin=owner.button_pin,
            led_pin=owner.led_pin,
            pin_factory=self.hooks.pin_factory,
            pending_ids=lambda: [p.rfa.id for p in self.flow.pending()],
            decide=lambda rfa_id, approve: self.flow.decide_locally(
                rfa_id,
                approve=approve,
                method=ConsentMethod.BUTTON,
            ),
            stop=self.stop_event,
        )
        self.supervisor.start("panel", self.panel.run)

    def start_bell(self) -> None:
        """The porch bell and its chime (off unless bell.button_pin or chime_pin). A ring
        is an event for `self.rings`' listeners, never a decision."""
        settings = self.config.bell
        if settings.button_pin is None and settings.chime_pin is None:
            return
        self.bell = Bell(
            settings,
            rings=self.rings,
            pin_factory=self.hooks.pin_factory,
            wall_ms=self.hooks.clock.wall_ms,
            stop=self.stop_event,
        )
        self.supervisor.start("bell", self.bell.run)

    def named_share_contact(self) -> dict[str, Any]:
        """What a named share tells the agency besides the device id (sync.share)."""
        contact = self.config.device.contact
        return {
            "name": contact.name,
            "email": contact.email,
            "address": contact.address,
            "lat": self.config.device.lat,
            "lon": self.config.device.lon,
        }

    def start_control(self) -> None:
        self.commands = ControlCommands(
            flow=self.flow,
            outbox=self.outbox,
            buffer=self.buffer,
            shares=self.share_worker,
            clock=self.hooks.clock,
            status=self.status,
            contact=self.named_share_contact(),
            device_id=self.identity.device_id,
        )
        self.control = ControlServer(
            self.config.control.socket, self.handle_control, self.stop_event
        )
        self.control.bind()
        self.supervisor.start("control", self.control.serve)

    def start_console(self) -> None:
        """The owner's web console on the home network (off unless console.listen)."""
        if self.config.console.listen is None:
            return
        self.console = ConsoleService.open(
            self.config.console,
            state_dir=self.paths.state_dir,
            buffer_dir=self.paths.buffer_dir,
            runtime_dir=self.config.control.socket.parent,
            flow=self.flow,
            shares=lambda: self.outbox.shares(self.hooks.clock.wall_ms()),
            share_job=self.outbox.job,
            commands=self.commands,
            audit_path=self.audit.path,
            audit_key=self.identity.signing.public,
            device_lat=self.config.device.lat,
            device_lon=self.config.device.lon,
            clock=self.hooks.clock,
            masks=self.masks,
        )
        self._on_stop(self.console.stop)
        self.console.start()

    def nudge_channels(self) -> list[tuple[str, NudgeChannel]]:
        """The channels the owner enabled (none by default: no nudge)."""
        channels: list[tuple[str, NudgeChannel]] = []
        webhook = self.config.nudge.webhook
        if webhook is not None:
            console_url = None if self.console is None else self.console.info()["url"]
            channel = WebhookChannel(webhook, console_url=console_url)
            self._on_stop(channel.close)
            channels.append(("webhook", channel))
        if self.config.nudge.home_assistant and self.home_assistant is not None:
            channels.append(("home_assistant", HomeAssistantNudge(self.home_assistant)))
        return channels

    def waiting_for_owner(self) -> set[str]:
        """One key per thing that waits for the owner: a pending request, a failed share
        (which the owner may retry). Only new keys cause a nudge."""
        waiting = {f"request:{p.rfa.id}" for p in self.flow.pending()}
        for share in self.outbox.shares(self.hooks.clock.wall_ms()):
            if share["state"] == wire.ShareState.FAILED:
                waiting.add(f"share:{share['rfa_id']}")
        return waiting

    def start_nudge(self) -> None:
        """The content-free nudge to the owner's phone, on the grid (device/nudge.py)."""
        channels = self.nudge_channels()
        if not channels:
            return
        self.nudge = NudgeScheduler(
            every_minutes=self.config.nudge.every_minutes,
            channels=channels,
            waiting=self.waiting_for_owner,
            wall_ms=self.hooks.clock.wall_ms,
            stop=self.stop_event,
        )
        self.supervisor.start("nudge", self.nudge.run)

    def start_home_assistant(self) -> None:
        """The device in the owner's Home Assistant, over the home's own broker (off
        unless home_assistant.enabled). Its own connection and thread: whatever that
        broker does never reaches recording or the request flow."""
        settings = self.config.home_assistant
        if settings.broker is None:
            return
        self.home_assistant = HomeAssistantLink(
            settings,
            device_id=self.config.device.id,
            version=SOFTWARE_VERSION,
            console_url=None if self.console is None else self.console.info()["url"],
            read_state=self.home_assistant_state,
            take_snapshot=self.snapshot,
            set_requests_paused=lambda paused: self.handle_control(
                {"cmd": "pause" if paused else "resume"}
            ),
            stop=self.stop_event,
        )
        self.rings.subscribe(self.home_assistant.on_ring)
        self._on_stop(self.home_assistant.stop)
        self.home_assistant.start()

    def home_assistant_state(self) -> DeviceState:
        span = read_summary(self.paths.buffer_dir).span
        try:
            free: int | None = self.hooks.free_space(self.paths.buffer_dir)
        except OSError:
            free = None
        return DeviceState(
            recording=self.recorder_healthy(),
            footage_ms=None if span is None else span[1] - span[0],
            free_bytes=free,
            pending=len(self.flow.pending()),
            paused=self.flow.requests_paused,
        )

    def snapshot(self) -> bytes | None:
        """The newest keyframe as a JPEG (Home Assistant's snapshot), None without one."""
        # lazily, as the console does: the preview's imports are heavy, and a daemon
        # without Home Assistant never needs them
        from device.console.preview import newest_keyframe_jpeg

        try:
            return newest_keyframe_jpeg(self.paths.buffer_dir, self.hooks.clock.wall_ms())
        except (RecorderError, OSError) as exc:
            logger.warning("could not take a snapshot: %s", exc)
            return None

    def start_housekeeping(self) -> None:
        self.supervisor.start("housekeeping", self.housekeeping)

    def wait_for_first_frame(self) -> None:
        """READY=1 means "recording": give the camera a moment to deliver. A camera that
        never does is the watchdog's business (no frames, no pings, a restart)."""
        self.notifier.status("starting the camera")
        deadline = self.hooks.clock.monotonic() + FIRST_FRAME_WAIT_S
        while not self.recorder_healthy() and self.hooks.clock.monotonic() < deadline:
            if self.stop_event.wait(0.1):
                return

    # -- running --------------------------------------------------------------------------
    def housekeeping(self) -> None:
        """Once a second: watchdog and status line. (The intake worker expires undecided
        requests and flushes the coalesced rejection counters.)"""
        while not self.stop_event.wait(1.0):
            self.keep_recorder_running()
            if self.recorder_healthy():
                self.notifier.watchdog()
            self.notifier.status(self.status_line())

    def keep_recorder_running(self) -> None:
        """The recorder is a process, not one of the supervisor's threads: restart it
        within the same kind of budget when it dies, else stop (systemd restarts us)."""
        if self.recorder.is_alive() or self.stop_event.is_set():
            return
        if self.recorder_budget.allow(self.hooks.clock.monotonic()):
            logger.error("the recorder exited with %s; starting it again", self.recorder.exitcode)
            self.recorder_restarts += 1
            self.recorder.start()
        else:
            self.supervisor.fail("recorder")

    def recorder_healthy(self) -> bool:
        health = self.recorder.health()
        last = health.last_write_monotonic
        return last is not None and self.hooks.clock.monotonic() - last < WATCHDOG_STALL_S

    def status_line(self) -> str:
        pending = len(self.flow.pending())
        broker = "connected" if self.mqtt.connected else "disconnected"
        recording = "recording" if self.recorder_healthy() else "camera stalled"
        return f"{recording}; broker {broker}; {pending} request(s) pending"

    def status(self) -> Status:
        dropped = self.mqtt.dropped
        return Status(
            device_id=self.identity.device_id,
            device_key=self.identity.signing.public_b64,
            recipient=self.identity.recipient,
            version=SOFTWARE_VERSION,
            key_id=self.identity.signing.kid,
            recording=self.recorder_healthy(),
            clock_synchronized=self.hooks.clock.synchronized(),
            clock_evidence=sync_evidence(),
            buffer=BufferFacts.read(self.paths.buffer_dir),
            live=Live(
                frames_dropped=self.recorder.health().frames_dropped,
                broker_connected=self.mqtt.connected,
                # which node of the cluster, and which MQTT version (sync.brokers)
                broker_url=(self.mqtt.broker or (None, None))[0],
                mqtt_version=(self.mqtt.broker or (None, None))[1],
                publishes_dropped_offline=dropped.offline,
                publishes_dropped_unacknowledged=dropped.unacknowledged,
                pending=len(self.flow.pending()),
                requests_paused=self.flow.requests_paused,
                shares_in_flight=self.outbox.active_count(),
                health=Health(
                    broker_reconnects=max(0, self.mqtt.connections - 1),
                    refused_packets=self.mqtt.refused_packets,
                    upload_retries=self.share_worker.counts.retried,
                    shares_failed=self.share_worker.counts.failed,
                    owner_messages_unpublished=self.owner_channel.failures,
                    recorder_restarts=self.recorder_restarts,
                ),
                console=None if self.console is None else self.console.info(),
                bell=self.rings.status(wired=self.bell is not None),
                nudge=None if self.nudge is None else self.nudge.status(),
                home_assistant=None
                if self.home_assistant is None
                else self.home_assistant.status(),
            ),
        )

    def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's requests: the console's to the console, the rest to the
        commands (device/commands.py)."""
        if request.get("cmd") in CONSOLE_COMMANDS:
            return console_command(self.console, request, self.hooks.clock.wall_ms())
        return self.commands.handle(request)

    def wait(self) -> None:
        self.stop_event.wait()

    # -- shut-down, in reverse ------------------------------------------------------------
    def stop(self) -> int:
        """Stop every part in reverse order; returns the exit status for the process."""
        self.notifier.stopping()
        self.stop_event.set()
        stuck = self.supervisor.join(timeout_s=10)
        if stuck:
            logger.warning("parts still running at shutdown: %s", ", ".join(stuck))
        self._resources.close()
        failed = self.supervisor.failed_part
        if failed:
            logger.error("stopped because part %s kept failing", failed)
            return 1
        logger.info("stopped at %s", format_time(self.hooks.clock.wall_ms()))
        return 0
