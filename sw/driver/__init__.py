"""The host driver: talk to an mmfree device (a board, a simulated board, or the golden board).

::

    from mmfree.driver import Device
    with Device("/dev/ttyUSB0") as dev:          # or "socket://127.0.0.1:7777", or GoldenBoard()
        dev.upload("model.mfw")
        dev.feed([1, 2, 3])
        for token in dev.generate(50):
            print(token)

Pieces: :mod:`~mmfree.driver.device` (the :class:`Device`), :mod:`~mmfree.driver.transport` (how
bytes move), :mod:`~mmfree.driver.memory_map` and :mod:`~mmfree.driver.upload` (where an image goes),
:mod:`~mmfree.driver.golden_board` (a device in software), :mod:`~mmfree.driver.errors`.
"""

from .errors import (DeviceError, DeviceTimeout, DeviceNak, DeviceBusy, TokenLost, ProtocolError,
                     IncompatibleDevice, IncompatibleImage, VerifyError)
from .transport import SerialTransport, FaultyTransport, open_transport
from .device import Device, Generation, LinkStats
from .memory_map import MemoryMap, Placement, WholeImageMap, AcceleratorMap, DEFAULT_MAP, memory_map_for
from .upload import upload, check_image, UploadReport

__all__ = ["Device", "Generation", "LinkStats", "DeviceError", "DeviceTimeout", "DeviceNak",
           "DeviceBusy", "TokenLost", "ProtocolError", "IncompatibleDevice", "IncompatibleImage",
           "VerifyError", "SerialTransport", "FaultyTransport", "open_transport", "MemoryMap",
           "Placement", "WholeImageMap", "AcceleratorMap", "DEFAULT_MAP", "memory_map_for", "upload", "check_image", "UploadReport",
           "GoldenBoard", "BoardServer", "serve"]


def __getattr__(name):
    # the golden board needs torch (through the golden model); load it only when asked for
    if name in ("GoldenBoard", "BoardServer", "serve"):
        from . import golden_board
        return getattr(golden_board, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
