"""Errors of the sync layer."""

from foundation.errors import DoorbellError


class ProtocolError(DoorbellError):
    """A message does not follow the wire protocol."""


class EnvelopeError(ProtocolError):
    """A signed envelope is malformed, signed by an unknown key, or its signature is bad.

    `reason` is a short stable token for audit counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SealError(ProtocolError):
    """A sealed message could not be encrypted or decrypted."""


class KeyFileError(DoorbellError):
    """A key file is missing, unreadable or malformed."""
