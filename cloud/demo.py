"""The whole story on one machine, with real parts on loopback: `make demo`.

A Mosquitto broker, a tus upload server, `doorbelld` on the synthetic camera, an agency
publishing a signed request, the owner's app approving a narrower window, the upload
with its progress, and the agency verifying what it received. Every step runs the same
command-line tools a person would, and says what it does. Exit status 0 only if the
agency's verification passed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from cloud.loopback import (
    DaemonProcess,
    DeviceSetup,
    MosquittoBroker,
    TusServer,
    free_port,
    script,
)
from foundation.cli import ExitCode, ToolParser
from foundation.errors import DoorbellError
from foundation.times import format_time
from foundation.wire import FINAL_SHARE_STATES, ShareState

BOLD, DIM, GREEN, RED, END = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"


class Story:
    def __init__(self, root: Path, *, color: bool) -> None:
        self.root = root
        self.color = color
        self.step_no = 0
        self.started = time.monotonic()

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{END}" if self.color else text

    def step(self, title: str) -> None:
        self.step_no += 1
        elapsed = time.monotonic() - self.started
        print(
            f"\n{self._c(BOLD, f'[{self.step_no}] {title}')}  {self._c(DIM, f'+{elapsed:.0f}s')}",
            flush=True,
        )

    def say(self, text: str) -> None:
        print(f"    {text}", flush=True)

    def show_command(self, name: str, *args: str) -> None:
        """The command as a person types it (the installed name, `--opt=value` so that a
        value starting with `-`, like one base64url key in 64, is never an option)."""
        shown = " ".join([name, *(a if len(a) < 60 else a[:57] + "..." for a in args)])
        print(f"    {self._c(DIM, '$ ' + shown)}", flush=True)

    def run(self, name: str, *args: str, stdin: str | None = None, show: bool = True) -> str:
        self.show_command(name, *args)
        result = subprocess.run(
            [*script(name), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise DoorbellError(
                f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        if show:
            for line in result.stdout.rstrip().splitlines():
                print(f"      {line}")
        return result.stdout


class _Stopped(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so that everything started is stopped."""


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(prog="doorbell-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--footage-seconds",
        type=float,
        default=14.0,
        help="how long the camera films before the request",
    )
    args = parser.parse_args(argv)
    if args.footage_seconds < 8:
        parser.error("--footage-seconds: at least 8 (the request asks for part of it)")
    root = Path(tempfile.mkdtemp(prefix="doorbell-demo-"))
    story = Story(root, color=sys.stdout.isatty())
    ok = False
    code = ExitCode.REFUSED
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stopped)
    # Ctrl-C always stops it, even when started from a shell that ignores SIGINT for
    # background jobs (Python then leaves SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Whatever is started is pushed here at once, so that success, a failed step, Ctrl-C
    # and SIGTERM all stop it, in reverse order.
    with contextlib.ExitStack() as started:
        started.callback(_cleanup_dir, root, keep=args.keep)
        try:
            ok = _tell(story, started, args.footage_seconds)
            code = ExitCode.OK if ok else ExitCode.REFUSED
        except (DoorbellError, RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"\n{story._c(RED, 'demo failed:')} {exc}", flush=True)
        except (KeyboardInterrupt, _Stopped) as exc:
            print(f"\ndemo interrupted ({exc or 'SIGINT'}): stopping what it started", flush=True)
            code = ExitCode.INTERRUPTED
        finally:
            # a second Ctrl-C must not cut the clean-up short and leave processes behind
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
    return code


def _cleanup_dir(root: Path, *, keep: bool) -> None:
    if keep:
        print(f"\nworking directory kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def _stop_daemon(daemon: DaemonProcess, story: Story) -> None:
    if daemon.proc is not None and daemon.proc.poll() is not None and daemon.proc.returncode:
        print("doorbelld's log, last lines:\n" + daemon.log_tail())
    daemon.stop()


def _tell(story: Story, started: contextlib.ExitStack, footage_s: float) -> bool:
    root = story.root
    story.step("Local services: an MQTT broker and the agency's tus upload server")
    broker = MosquittoBroker(root / "broker")
    uploads = TusServer(root / "agency-uploads")
    broker.root.mkdir(parents=True, exist_ok=True)
    started.callback(broker.stop)
    broker.start()
    started.callback(uploads.stop)
    uploads.start()
    story.say(f"broker  {broker.url}   (mosquitto)")
    story.say(f"uploads {uploads.url}")
    story.show_command(
        "doorbell-tus-server", f"--storage={uploads.storage}", f"--port={uploads.port}"
    )

    story.step("Keys: the agency and the owner's phone app make theirs")
    agency_dir, owner_home = root / "agency", root / "owner-app"
    story.run("doorbell-agency", "keygen", f"--out={agency_dir}", "--agency-id=sfpd")
    story.run("doorbell-owner", f"--home={owner_home}", "keygen")
    agency_public = json.loads((agency_dir / "agency.json").read_text())
    owner_public = json.loads((owner_home / "owner.json").read_text())

    story.step("The doorbell: config, then doorbelld on the synthetic camera")
    setup = DeviceSetup(
        root=root / "doorbell",
        broker_url=broker.url,
        agencies=[("sfpd", agency_public["public_key"])],
        owner_keys=[owner_public["public_key"]],
        owner_recipients=[owner_public["recipient"]],
        width=640,
        height=360,
        chunk_bytes="64KiB",
        # a doorbell shares its owner's uplink: cap it, which also makes progress visible
        extra={
            "share": {"bandwidth_bytes_per_s": "150KB"},
            "console": {"listen": f"127.0.0.1:{free_port()}"},  # the owner's web console
        },
    )
    config = setup.write()
    story.say(f"config {config} (the owner trusts agency 'sfpd' and enrolled the app's keys)")
    story.run("doorbelld", f"--config={config}", "--check-config")
    daemon = DaemonProcess(config)
    started.callback(_stop_daemon, daemon, story)
    story.show_command("doorbelld", f"--config={config}", "--assume-clock-synchronized")
    daemon.start()
    t0 = int(time.time() * 1000)
    story.say(f"recording since {format_time(t0)}; letting the porch be filmed for a while")
    time.sleep(footage_s)

    story.step("Pairing: the owner's app pins the device's keys, read from the device itself")
    story.show_command("doorbellctl", f"--config={config}", "pair")
    pairing = daemon.ctl("pair").stdout
    story.run("doorbell-owner", f"--home={owner_home}", "pair", "--from-json=-", stdin=pairing)
    # the owner gives the agency the device's C2PA authority once (docs/c2pa.md): its
    # named shares' Content Credentials then read "Trusted"
    authority = agency_dir / "doorbell-c2pa-authority.pem"
    story.show_command("doorbellctl", f"--config={config}", "c2pa-authority", f"--out={authority}")
    daemon.ctl("c2pa-authority", f"--out={authority}")

    story.step("The agency publishes a signed Request for Assistance")
    start, end = t0 + 1000, t0 + int(footage_s * 1000) - 2000
    out = story.run(
        "doorbell-agency", "rfa",
        f"--key={agency_dir / 'agency-signing.pem'}",
        "--agency-id=sfpd", "--agency-name=San Francisco Police Department",
        "--case=2026-004512", "--investigator-name=Det. A. Rivera",
        "--email=a.rivera@example.gov",
        "--description=Package theft from porches on Elm St.",
        "--lat=37.7752", "--lon=-122.4190", "--radius-m=800",
        f"--start={format_time(start)}", f"--end={format_time(end)}", "--expires-in=7d",
        f"--upload-url={uploads.url}", "--allow-plain-http-loopback",
        f"--publish={broker.url}",
    )  # fmt: skip
    rfa_id = _rfa_id(out)

    story.step("The doorbell checked it on the device; the owner's app shows it (sealed channel)")
    _wait_for(lambda: rfa_id in daemon.ctl("pending", "--json").stdout, 20, "request pending")
    watched = ""
    deadline = time.monotonic() + 30
    while rfa_id not in watched and time.monotonic() < deadline:
        watched = story.run(
            "doorbell-owner", f"--home={owner_home}", "watch",
            f"--broker={broker.url}", "--once", "--timeout=15", show=False,
        )  # fmt: skip
    if rfa_id not in watched:
        raise DoorbellError("the owner's app never saw the request")
    for line in watched.rstrip().splitlines():
        print(f"      {line}")

    story.step("The owner approves a narrower window than asked (share less, never more)")
    trim = (end - start) // 5  # a fifth off each end
    narrow_start, narrow_end = start + trim, end - trim
    story.run(
        "doorbell-owner", f"--home={owner_home}", "decide", f"--rfa={rfa_id}", "approve",
        f"--start={format_time(narrow_start)}", f"--end={format_time(narrow_end)}",
        f"--publish={broker.url}",
    )  # fmt: skip

    story.step("The doorbell cuts exactly that window, signs, encrypts and uploads it")
    share = _follow_upload(story, daemon, rfa_id)
    story.say(f"receipt: manifest sha256 {share.get('manifest_sha256')}")

    story.step("The agency finds the share's two uploads by their metadata, decrypts, verifies")
    verify = (
        "doorbell-agency", "verify",
        f"--identity={agency_dir / 'agency-age.txt'}",
        f"--key={agency_dir / 'agency-signing.pem'}",
        f"--owner-key={owner_public['public_key']}",
        f"--c2pa-authority={authority}",
        f"--storage={uploads.storage}", f"--rfa={rfa_id}",
    )  # fmt: skip
    story.show_command(*verify)
    verification = subprocess.run(
        [*script(verify[0]), *verify[1:]], capture_output=True, text=True, timeout=120
    )
    for line in verification.stdout.rstrip().splitlines():
        print(f"      {line}")
    if verification.returncode != 0:
        raise DoorbellError(f"verification failed:\n{verification.stderr}")

    story.step("On the device: the share's receipt and the audit log, hash-chained and signed")
    for args in (("shares",), ("audit",), ("audit", "--verify")):
        story.show_command("doorbellctl", f"--config={config}", *args)
        for line in daemon.ctl(*args).stdout.rstrip().splitlines():
            print(f"      {line}")

    story.step("A starting template: the demo doorbell's config (docs/walkthrough.md explains it)")
    for line in config.read_text().rstrip().splitlines():
        print(f"      {line}")
    story.say("For a real porch: your device id and location, a camera source, a storage dir,")
    story.say("your broker's mqtts:// URL, and the agencies you trust; drop")
    story.say("allow_plain_http_loopback. Start from firmware_config/doorbell.example.yaml.")

    story.step("The owner's console: open it in a browser on this machine")
    story.show_command("doorbellctl", f"--config={config}", "console-code")
    console = json.loads(daemon.ctl("console-code", "--json").stdout)
    story.say(f"{console['url']}  sign-in code {console['code']} (one use, 10 minutes)")
    story.say(f"certificate SHA-256 {console['fingerprint']} (self-made: compare, then accept)")
    if sys.stdin.isatty():
        input("    press Enter to stop the demo ")

    elapsed = time.monotonic() - story.started
    print(
        f"\n{story._c(GREEN, 'share verified')}: the agency holds exactly the approved window "
        f"({elapsed:.0f} s).",
        flush=True,
    )
    return True


def _rfa_id(output: str) -> str:
    for word in output.replace(",", " ").split():
        if len(word) == 36 and word.count("-") == 4:
            return word
    raise DoorbellError(f"no request id in the agency tool's output:\n{output}")


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise DoorbellError(f"timed out waiting for: {what}")


def _follow_upload(story: Story, daemon: DaemonProcess, rfa_id: str) -> dict:
    deadline = time.monotonic() + 90
    last = None
    while time.monotonic() < deadline:
        shares = json.loads(daemon.ctl("shares", "--json").stdout)
        share = next((s for s in shares if s["rfa_id"] == rfa_id), None)
        if share is not None:
            sent, total = share["bytes_sent"], share["bytes_total"] or 0
            percent = f"{100 * sent / total:5.1f} %" if total else "      "
            line = f"{share['state']:<10} {percent} {sent:>9} / {total:>9} ciphertext bytes"
            if line != last:
                story.say(line)
                last = line
            if share["state"] == ShareState.DONE:
                return share
            if share["state"] in FINAL_SHARE_STATES:
                raise DoorbellError(f"the share ended {share['state']}: {share.get('error')}")
        time.sleep(0.3)
    raise DoorbellError("the upload did not finish in 90 s")


if __name__ == "__main__":
    sys.exit(main())
