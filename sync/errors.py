"""Errors of the sync layer."""

from enum import StrEnum

from foundation.errors import DoorbellError


class ProtocolError(DoorbellError):
    """A message does not follow the wire protocol."""


class EnvelopeFault(StrEnum):
    """What is wrong with a signed envelope (stable tokens, for audit counters)."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"


class EnvelopeError(ProtocolError):
    """A signed envelope is malformed, signed by an unknown key, or its signature is bad."""

    def __init__(self, reason: EnvelopeFault, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SealError(ProtocolError):
    """A sealed message could not be encrypted or decrypted."""


class KeyFileError(DoorbellError):
    """A key file is missing, unreadable or malformed."""


class MqttSettingsError(DoorbellError):
    """The MQTT settings cannot be used (bad URL, unreadable password file, ...)."""
