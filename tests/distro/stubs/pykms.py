"""Stand-in for kms++'s Python binding (`pykms`, the DRM/KMS display library), which
Raspberry Pi OS packages as python3-kms++ and Debian does not. picamera2 imports it for
its on-screen preview only, which a headless doorbell never starts; this stand-in lets
the real picamera2 import in the trixie test tree, and fails loudly if anything uses it.
Only tests/distro/test_picamera2_api.py puts this folder on the path."""

from typing import NoReturn


class _Names(type):
    def __getattr__(cls, name: str) -> str:
        return name


class PixelFormat(metaclass=_Names):
    """Its members are named at import time by picamera2's DRM preview (a table of
    formats); here each is just its name."""


def __getattr__(name: str) -> NoReturn:
    if name.startswith("__"):
        raise AttributeError(name)  # the import system's own questions
    raise RuntimeError(f"pykms.{name}: the DRM preview is not available in this test tree")
