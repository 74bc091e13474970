"""Talking to the outside world: the MQTT client, checks of requests and decisions,
share building (manifest, signature, encryption) and the resumable uploader."""

from importlib.metadata import PackageNotFoundError, version

try:
    SOFTWARE_VERSION = version("doorbell")
except PackageNotFoundError:  # running from a checkout that was never installed
    SOFTWARE_VERSION = "0.0.0+unknown"

SOFTWARE = f"doorbell {SOFTWARE_VERSION}"
