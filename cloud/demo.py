"""The whole story on one machine, with real parts on loopback: `make demo`.

A Mosquitto broker, a tus upload server, `doorbelld` on the synthetic camera, an agency
publishing a signed request, the owner's app approving a narrower window, the upload
with its progress, and the agency verifying what it received. Every step runs the same
command-line tools a person would, and says what it does. Exit status 0 only if the
agency's verification passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloud.loopback import DaemonProcess, DeviceSetup, MosquittoBroker, TusServer, free_port
from foundation.errors import DoorbellError
from foundation.times import format_time

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
        print(f"\n{self._c(BOLD, f'[{self.step_no}] {title}')}  {self._c(DIM, f'+{elapsed:.0f}s')}")

    def say(self, text: str) -> None:
        print(f"    {text}")

    def run(self, *args: str, stdin: str | None = None, show: bool = True) -> str:
        shown = " ".join(a if len(a) < 60 else a[:57] + "..." for a in args)
        print(f"    {self._c(DIM, '$ ' + shown)}")
        result = subprocess.run(
            [sys.executable, "-m", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise DoorbellError(
                f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        if show:
            for line in result.stdout.rstrip().splitlines():
                print(f"      {line}")
        return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doorbell-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--footage-seconds", type=float, default=14.0)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="doorbell-demo-"))
    story = Story(root, color=sys.stdout.isatty())
    broker = MosquittoBroker(root / "broker")
    uploads = TusServer(root / "agency-uploads")
    daemon: DaemonProcess | None = None
    try:
        ok, daemon = _tell(story, broker, uploads, args.footage_seconds)
    except (DoorbellError, subprocess.TimeoutExpired) as exc:
        print(f"\n{story._c(RED, 'demo failed:')} {exc}")
        if daemon is not None:
            print("doorbelld's log, last lines:\n" + daemon.log_tail())
        ok = False
    finally:
        if daemon is not None:
            daemon.stop()
        uploads.stop()
        broker.stop()
        if args.keep:
            print(f"\nworking directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def _tell(
    story: Story, broker: MosquittoBroker, uploads: TusServer, footage_s: float
) -> tuple[bool, DaemonProcess | None]:
    root = story.root
    story.step("Local services: an MQTT broker and the agency's tus upload server")
    broker.root.mkdir(parents=True, exist_ok=True)
    broker.start()
    uploads.start()
    story.say(f"broker  {broker.url}")
    story.say(f"uploads {uploads.url}")

    story.step("Keys: the agency and the owner's phone app make theirs")
    agency_dir, owner_home = root / "agency", root / "owner-app"
    story.run("cloud.agency", "keygen", "--out", str(agency_dir), "--agency-id", "sfpd")
    story.run("cloud.owner", "--home", str(owner_home), "keygen")
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
    daemon = DaemonProcess(config)
    daemon.start()
    t0 = int(time.time() * 1000)
    story.say(f"recording since {format_time(t0)}; letting the porch be filmed for a while")
    time.sleep(footage_s)

    story.step("Pairing: the owner's app pins the device's keys, read from the device itself")
    pairing = daemon.ctl("status", "--json").stdout
    story.run("cloud.owner", "--home", str(owner_home), "pair", "--from-json", "-", stdin=pairing)

    story.step("The agency publishes a signed Request for Assistance")
    start, end = t0 + 1000, t0 + int(footage_s * 1000) - 2000
    out = story.run(
        "cloud.agency", "rfa",
        "--key", str(agency_dir / "agency-signing.pem"),
        "--agency-id", "sfpd", "--agency-name", "San Francisco Police Department",
        "--case", "2026-004512", "--investigator-name", "Det. A. Rivera",
        "--email", "a.rivera@example.gov",
        "--description", "Package theft from porches on Elm St.",
        "--lat", "37.7752", "--lon", "-122.4190", "--radius-m", "800",
        "--start", format_time(start), "--end", format_time(end), "--expires-in", "7d",
        "--upload-url", uploads.url, "--allow-plain-http-loopback",
        "--publish", broker.url,
    )  # fmt: skip
    rfa_id = _rfa_id(out)

    story.step("The doorbell checked it on the device; the owner's app shows it (sealed channel)")
    _wait_for(lambda: rfa_id in daemon.ctl("pending", "--json").stdout, 20, "request pending")
    watched = ""
    deadline = time.monotonic() + 30
    while rfa_id not in watched and time.monotonic() < deadline:
        watched = story.run(
            "cloud.owner", "--home", str(owner_home), "watch",
            "--broker", broker.url, "--once", "--timeout", "15", show=False,
        )  # fmt: skip
    if rfa_id not in watched:
        raise DoorbellError("the owner's app never saw the request")
    for line in watched.rstrip().splitlines():
        print(f"      {line}")

    story.step("The owner approves a narrower window than asked (share less, never more)")
    narrow_start, narrow_end = start + 2000, end - 3000
    story.run(
        "cloud.owner", "--home", str(owner_home), "decide", "--rfa", rfa_id, "approve",
        "--start", format_time(narrow_start), "--end", format_time(narrow_end),
        "--publish", broker.url,
    )  # fmt: skip

    story.step("The doorbell cuts exactly that window, signs, encrypts and uploads it")
    share = _follow_upload(story, daemon, rfa_id)
    story.say(f"receipt: manifest sha256 {share.get('manifest_sha256')}")

    story.step("The agency decrypts and verifies what it received")
    manifest = uploads.upload_of("manifest").path
    clip = uploads.upload_of("clip").path
    verification = subprocess.run(
        [
            sys.executable, "-m", "cloud.agency", "verify",
            "--identity", str(agency_dir / "agency-age.txt"),
            "--key", str(agency_dir / "agency-signing.pem"),
            "--owner-key", owner_public["public_key"],
            str(manifest), str(clip),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    for line in verification.stdout.rstrip().splitlines():
        print(f"      {line}")
    if verification.returncode != 0:
        raise DoorbellError(f"verification failed:\n{verification.stderr}")

    story.step("On the device: the share's receipt and the audit log, hash-chained and signed")
    for args in (("shares",), ("audit",), ("audit", "--verify")):
        print(f"    {story._c(DIM, '$ doorbellctl ' + ' '.join(args))}")
        for line in daemon.ctl(*args).stdout.rstrip().splitlines():
            print(f"      {line}")

    story.step("The owner's console: open it in a browser on this machine")
    console = json.loads(daemon.ctl("console-code", "--json").stdout)
    story.say(f"{console['url']}  sign-in code {console['code']} (one use, 10 minutes)")
    story.say(f"certificate SHA-256 {console['fingerprint']} (self-made: compare, then accept)")
    if sys.stdin.isatty():
        input("    press Enter to stop the demo ")

    elapsed = time.monotonic() - story.started
    print(
        f"\n{story._c(GREEN, 'share verified')}: the agency holds exactly the approved window "
        f"({elapsed:.0f} s)."
    )
    return True, daemon


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
            if share["state"] == "done":
                return share
            if share["state"] in ("failed", "cancelled"):
                raise DoorbellError(f"the share ended {share['state']}: {share.get('error')}")
        time.sleep(0.3)
    raise DoorbellError("the upload did not finish in 90 s")


if __name__ == "__main__":
    sys.exit(main())
