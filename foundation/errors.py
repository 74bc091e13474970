"""The project's exception tree. Every error the project raises on purpose derives from
`DoorbellError`, so loop boundaries and commands can tell our failures from bugs, and a
command can turn any of them into one clear line instead of a traceback.

    DoorbellError
    ├── InvalidValueError (also a ValueError): a value given to us is malformed or out
    │   │                 of range (config, command line, network, a caller's argument)
    │   ├── TimeFormatError   not RFC 3339 UTC
    │   ├── WindowError       a window whose start is after its end
    │   ├── KeyFormatError    not a key or recipient of the expected kind
    │   └── StampError        a frame too small for, or a value too big for, a stamp
    ├── MisuseError (also a RuntimeError): a part called against its contract (a bug in
    │                 the caller, not bad input)
    └── RecorderError: the recorder or the buffer could not do what was asked
        ├── NoFootageError
        └── BufferLockedError

Other parts root their own errors here too (sync.errors, firmware_config.ConfigError,
device.control.ControlError, ...). The ValueError and RuntimeError bases keep the
standard library's conventions (argparse, json hooks) working."""


class DoorbellError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidValueError(DoorbellError, ValueError):
    """A value is malformed or out of range."""


class TimeFormatError(InvalidValueError):
    """A time string is not RFC 3339 UTC with a `Z` suffix."""


class WindowError(InvalidValueError):
    """A window's start is after its end."""


class KeyFormatError(InvalidValueError):
    """Text that should be a key or an age recipient is not one."""


class StampError(InvalidValueError):
    """A frame cannot carry (or does not carry) a frame stamp."""


class MisuseError(DoorbellError, RuntimeError):
    """A part was called in a way its contract forbids."""


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
