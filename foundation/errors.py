"""The project's exception tree. Every error the project raises on purpose derives from
`DoorbellError`, so loop boundaries can tell our failures from bugs."""


class DoorbellError(Exception):
    """Base of every error this project raises on purpose."""


class TimeFormatError(DoorbellError, ValueError):
    """A time string is not RFC 3339 UTC with a `Z` suffix."""


class RecorderError(DoorbellError):
    """The recorder or the buffer could not do what was asked."""


class NoFootageError(RecorderError):
    """A window holds no recorded frame."""


class BufferLockedError(RecorderError):
    """Another recorder process holds the buffer."""
