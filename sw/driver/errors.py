"""Exceptions of the host driver. Every one is a :class:`DeviceError` (an ``OSError``) whose message
is one line, fit to print as it is."""

from .. import protocol as p

__all__ = ["DeviceError", "DeviceTimeout", "DeviceNak", "DeviceBusy", "TokenLost", "ProtocolError",
           "IncompatibleDevice", "IncompatibleImage", "VerifyError"]


class DeviceError(OSError):
    """Anything that went wrong talking to a device."""

    def __init__(self, message):
        super().__init__(message)

    def __str__(self):
        return self.args[0]


class DeviceTimeout(DeviceError):
    """No valid reply within the bounded number of attempts (the device stopped answering, the link
    is too noisy, or nothing is connected)."""


class DeviceNak(DeviceError):
    """The device refused a command; ``error`` is a :class:`mmfree.protocol.Err`, ``arg`` its detail."""

    def __init__(self, command, nak):
        self.command = command
        self.error = nak.error
        self.arg = nak.arg
        super().__init__(f"device refused {p.command_name(command)}: {_describe(nak)}")


class DeviceBusy(DeviceNak):
    """The device stayed busy (a generation or prefill running) longer than the driver waits."""


class TokenLost(DeviceError):
    """A generated token was lost on the link and the device no longer holds it."""


class ProtocolError(DeviceError):
    """An intact frame whose contents break the protocol (wrong layout, unexpected code)."""


class IncompatibleDevice(DeviceError):
    """The device speaks another protocol version, or is not an mmfree device."""


class IncompatibleImage(DeviceError):
    """The weight image does not fit the device (versions, dimensions or memory sizes)."""


class VerifyError(DeviceError):
    """The device's memory does not hold what was written, even after writing it again."""


_DESCRIPTIONS = {
    p.Err.BAD_CRC: "frame damaged on the link (bad CRC)",
    p.Err.BAD_FRAME: "malformed frame",
    p.Err.TOO_LONG: "frame too long",
    p.Err.UNKNOWN_COMMAND: "unknown command",
    p.Err.BAD_LENGTH: "wrong payload length",
    p.Err.BAD_REGION: "no memory region {arg}",
    p.Err.BAD_RANGE: "offset or length outside the region (at {arg})",
    p.Err.BUSY: "busy (a generation or prefill is running)",
    p.Err.NOT_LOADED: "no valid model in memory (upload an image first)",
    p.Err.NO_CONTEXT: "nothing fed since RESET_STATE (feed a prompt first)",
    p.Err.BAD_TOKEN: "token id {arg} is outside the model's vocabulary",
    p.Err.GONE: "token {arg} is no longer held",
    p.Err.BAD_ARGUMENT: "unsupported argument value {arg}",
    p.Err.INTERNAL: "internal device fault (code {arg})",
}


def _describe(nak):
    try:
        return _DESCRIPTIONS[p.Err(nak.error)].format(arg=nak.arg)
    except ValueError:
        return f"{p.error_name(nak.error)} (arg {nak.arg})"
