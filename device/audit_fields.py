"""The audit log's field guard: contact details and key material never reach the log.

Field names such as ``email`` or ``key`` are refused (a programming error); values that
look like an email address, an age secret key or a PEM block are replaced by
``"[redacted]"`` (they may come from the network, which must not be able to crash the
log); strings are cut to `MAX_STRING` characters so a line's size is bounded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from foundation.errors import DoorbellError

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
MAX_STRING = 512  # bounds a line's size whatever the network sends

# Field names are split on '_' / '-' and refused if any part is one of these.
FORBIDDEN_FIELD_WORDS = frozenset(
    {"email", "phone", "name", "address", "contact", "key", "secret", "identity", "password"}
)
# Flags that name a forbidden word but hold no contact detail themselves.
ALLOWED_FIELD_NAMES = frozenset({"share_contact"})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


class AuditError(DoorbellError):
    """The audit log cannot be written, or a caller passed a forbidden field."""


def _forbidden_name(name: str) -> bool:
    return any(part in FORBIDDEN_FIELD_WORDS for part in re.split(r"[_\-\s.]+", name.lower()))


def _looks_secret_or_contact(text: str) -> bool:
    upper = text.lstrip().upper()
    return (
        upper.startswith("AGE-SECRET-KEY")
        or "-----BEGIN" in upper
        or _EMAIL.search(text) is not None
    )


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise an entry's fields (see the module docstring)."""
    return {_clean_key(k): _clean_value(v) for k, v in fields.items()}


def _clean_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise AuditError("audit field names must be non-empty strings")
    if key not in ALLOWED_FIELD_NAMES and _forbidden_name(key):
        raise AuditError(f"audit field {key!r} could hold contact details or key material")
    return key


def _clean_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        if _looks_secret_or_contact(value):
            logger.warning("an audit field value looked like contact details or a key; redacted")
            return REDACTED
        return value[:MAX_STRING]
    if isinstance(value, Mapping):
        return clean_fields(value)
    if isinstance(value, list | tuple):
        return [_clean_value(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):  # Window and friends
        return _clean_value(to_json())
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return _clean_value(value.value)
    raise AuditError(f"audit field value of type {type(value).__name__} is not allowed")
