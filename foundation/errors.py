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


class UsageError(DoorbellError):
    """The command was given bad arguments or a bad config (exit code 2)."""


class UnavailableError(DoorbellError):
    """What the command needs is not there: the daemon is not running, a broker or a
    server cannot be reached (exit code 3)."""
