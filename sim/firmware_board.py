"""The compact accelerator's firmware run on this computer: a device in software that answers the
protocol with the C sources of ``hw/fw`` (:mod:`mmfree.hw.firmware`), built as a shared library.

:class:`FirmwareBoard` is driven by bytes like :class:`mmfree.driver.GoldenBoard`: :meth:`receive`
takes what a host sends (and runs ``device_service()`` so that every complete frame is answered),
:meth:`transmit` returns what the firmware sent back, :meth:`poll` runs ``device_service()`` once
more, which produces the next token of a running generation. It is also a transport
(``write``/``read``), so ``Device(FirmwareBoard(config))`` talks to it; used that way a token is
produced only when the host reads and nothing else is waiting, as with the golden board.

The library is built once per firmware source, configuration, build hash and token history, into
``<cache>/firmware-<hash>`` (the cache of :func:`mmfree.sim.runner.cache_dir`). Every board loads a
copy of its own, so several boards in one process do not share memory or state.
"""

import ctypes
import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from mmfree import protocol as p
from mmfree.driver.golden_board import OutputQueue

__all__ = ["FirmwareBoard", "build_library"]

_LIBRARY = "firmware_host.so"
_STATUS_LOADED, _STATUS_BUSY, _STATUS_ERROR = 1, 2, 4


def _compiler_version():
    try:
        from importlib.metadata import version
        return version("ziglang")
    except Exception:               # not installed as a distribution: the build reports it
        return "?"


def build_library(config, build_hash=0, token_history=256):
    """The path of the host build of the firmware for ``config`` (a
    :class:`~mmfree.hw.config.HwConfig`), built unless the cache already holds it."""
    from mmfree.hw import firmware as fw
    from mmfree.sim.runner import cache_dir
    header = fw.config_header(config, build_hash, token_history, emulated=True)
    key = hashlib.sha256("\n".join([fw.source_digest(), header, _compiler_version(), *fw.SOURCES,
                                    *fw.HOST_FLAGS, *fw.WARNINGS]).encode()).hexdigest()[:16]
    folder = cache_dir() / f"firmware-{key}"
    lib = folder / _LIBRARY
    if lib.is_file():
        return lib
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        fw.build_host(tmp, config, build_hash, token_history)
        try:
            tmp.rename(folder)
        except OSError:             # another process built the same library first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not lib.is_file():
        raise fw.FirmwareError(f"{folder} exists but holds no {_LIBRARY}: remove it and build again")
    return lib


def _load(lib):
    """``ctypes.CDLL`` of a private copy of ``lib``: a library loaded twice from one path would be
    one library, its static state shared."""
    fd, path = tempfile.mkstemp(prefix="mmfree-firmware-", suffix=".so")
    os.close(fd)
    try:
        shutil.copyfile(lib, path)
        dll = ctypes.CDLL(path)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    u8p = ctypes.POINTER(ctypes.c_uint8)
    for name, res, args in (("host_reset", None, ()), ("device_service", None, ()),
                            ("host_receive", ctypes.c_int, (ctypes.c_char_p, ctypes.c_int)),
                            ("host_transmit", ctypes.c_int, (ctypes.c_char_p, ctypes.c_int)),
                            ("host_rx_capacity", ctypes.c_int, ()), ("host_pending", ctypes.c_int, ()),
                            ("host_tx_lost", ctypes.c_uint32, ()), ("host_status", ctypes.c_uint32, ()),
                            ("host_region", u8p, (ctypes.c_uint,)),
                            ("host_region_size", ctypes.c_uint32, (ctypes.c_uint,))):
        f = getattr(dll, name)
        f.restype = res
        f.argtypes = args
    return dll


class FirmwareBoard(OutputQueue):
    """The firmware of a compact accelerator built for ``config`` (a
    :class:`~mmfree.hw.config.HwConfig`), running in this process.

    ``build_hash`` and ``token_history`` are what INFO reports (the history is a power of two). The
    memory starts zeroed; :attr:`memory` holds the regions as writable ``memoryview`` objects.
    """

    def __init__(self, config, build_hash=0, token_history=256):
        from mmfree.hw.link import info_for
        self.config = config
        self.library = build_library(config, build_hash, token_history)
        self._lib = _load(self.library)
        self._lib.host_reset()
        self._chunk = self._lib.host_rx_capacity()
        base = info_for(config, build_hash, token_history)
        self.info = dataclasses.replace(base, flags=base.flags | p.InfoFlag.EMULATED)
        self.memory = []
        for i in range(len(self.info.regions)):
            size = self._lib.host_region_size(i)
            array = (ctypes.c_uint8 * size).from_address(ctypes.addressof(self._lib.host_region(i).contents))
            self.memory.append(memoryview(array).cast("B"))
        self._out = bytearray()

    # --- byte stream -------------------------------------------------------------------------------

    def _service(self):
        self._lib.device_service()
        n = self._lib.host_pending()
        if n:
            buf = ctypes.create_string_buffer(n)
            got = self._lib.host_transmit(buf, n)
            self._out += buf.raw[:got]
        if self._lib.host_tx_lost():
            raise RuntimeError("the firmware's transmit buffer overflowed")
        return n

    def receive(self, data):
        """Process bytes from the host; replies are queued for :meth:`transmit`. Up to
        ``host_rx_capacity()`` bytes (4 KiB) are taken by one ``device_service()`` call."""
        data = bytes(data)
        for i in range(0, len(data), self._chunk):
            chunk = data[i:i + self._chunk]
            if self._lib.host_receive(chunk, len(chunk)) != len(chunk):
                raise RuntimeError("the firmware's receive queue overflowed")
            self._service()

    @property
    def status_bits(self):
        """The firmware's status lights (hal.h's ``hal_status``): 1 loaded, 2 busy, 4 error."""
        return self._lib.host_status()

    @property
    def generating(self):
        return bool(self._lib.host_status() & _STATUS_BUSY)

    def poll(self):
        """One ``device_service()`` call: the next step of a running generation (a TOKEN, or the final
        DONE); False when it sent nothing."""
        return self._service() > 0

    # transport interface: the host's write is our receive, the host's read our transmit
    def write(self, data):
        self.receive(data)
        return len(data)

    def read(self, size=1):
        if not self._out:
            self.poll()
        return self.transmit(size)
