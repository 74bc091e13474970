"""The README's first command must keep working: run the demo as a person would."""

import subprocess
import sys


def test_demo_tells_the_whole_story_and_ends_verified() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloud.demo"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for step in ("Local services", "Pairing", "Request for Assistance", "approves", "uploads"):
        assert step in out
    assert "share VERIFIED" in out
    assert "sign-in code" in out and "https://127.0.0.1:" in out  # the console
    assert out.rstrip().splitlines()[-1].startswith("share verified")
    assert "100.0 %" in out
