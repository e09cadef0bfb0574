"""Transports: how the driver moves bytes. Anything with ``write(bytes)`` and ``read(size)`` works.

The contract a transport meets:

* ``write(data)`` sends all of ``data`` (it may block while a UART drains);
* ``read(size)`` returns at most ``size`` bytes that have arrived, without waiting long: ``b""`` when
  there are none (the driver polls, with its own deadlines);
* ``close()`` is optional.

:func:`open_transport` turns a pyserial URL (``/dev/ttyUSB0``, ``socket://host:port``, ``loop://``) into
one; the golden board (:class:`mmfree.driver.GoldenBoard`) is one itself; :class:`FaultyTransport` wraps
any transport to damage the byte stream for testing.
"""

import random

from ..protocol import DEFAULT_BAUD
from .errors import DeviceError

__all__ = ["SerialTransport", "FaultyTransport", "open_transport"]


class SerialTransport:
    """A pyserial port opened with :func:`serial.serial_for_url`, made non-blocking for reads."""

    def __init__(self, url, baudrate=DEFAULT_BAUD, write_timeout=5.0):
        import serial
        _check_network_url(url)
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=0, write_timeout=write_timeout)
        except (serial.SerialException, ValueError, OSError) as e:
            raise DeviceError(f"cannot open {url}: {_one_line(e)}") from None
        self.url = url

    def write(self, data):
        import serial
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"{self.url}: write failed: {_one_line(e)}") from None

    def read(self, size):
        import serial
        try:
            return self.port.read(size)
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"{self.url}: read failed: {_one_line(e)}") from None

    def close(self):
        self.port.close()


_NETWORK_SCHEMES = ("socket", "rfc2217")


def _check_network_url(url):
    """``socket://`` and ``rfc2217://`` URLs need a host and a port of 1 to 65535; pyserial's own
    messages for a missing or bad one do not say so."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in _NETWORK_SCHEMES:
        return
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or not port:
        raise DeviceError(f"cannot open {url}: a {scheme}:// URL needs a host and a port of 1 to 65535, "
                          f"as in {scheme}://localhost:7000")


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def open_transport(port, baudrate=DEFAULT_BAUD):
    """A transport for ``port``: a pyserial URL or device path (str or path), or an object that already
    has ``read`` and ``write``."""
    if isinstance(port, (str, bytes)) or hasattr(port, "__fspath__"):
        return SerialTransport(str(port), baudrate)
    if hasattr(port, "read") and hasattr(port, "write"):
        return port
    raise TypeError(f"port must be a URL or an object with read and write, not {type(port).__name__}")


class FaultyTransport:
    """Wraps a transport and damages bytes in both directions: each byte, with probability ``rate``, is
    flipped (one random bit), dropped or duplicated (one of the three at random). Seeded, so a test
    is repeatable. ``mute()`` (or ``mute_after=n`` bytes received) makes the device go silent:
    nothing more is delivered in either direction."""

    def __init__(self, inner, rate=1e-3, seed=0, mute_after=None):
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1], not {rate}")
        self.inner = inner
        self.rate = rate
        self.rng = random.Random(seed)
        self.mute_after = mute_after
        self.muted = False
        self.received = 0
        self.faults = 0

    def mute(self):
        self.muted = True

    def _damage(self, data):
        if not self.rate:
            return bytes(data)
        out = bytearray()
        rnd = self.rng.random
        for b in data:
            if rnd() >= self.rate:
                out.append(b)
                continue
            self.faults += 1
            kind = self.rng.randrange(3)
            if kind == 0:
                out.append(b ^ (1 << self.rng.randrange(8)))
            elif kind == 2:
                out += bytes((b, b))
        return bytes(out)

    def write(self, data):
        if self.muted:
            return
        self.inner.write(self._damage(data))

    def read(self, size):
        if self.muted:
            return b""
        data = self.inner.read(size)
        if self.mute_after is not None and self.received + len(data) >= self.mute_after:
            data = data[:max(0, self.mute_after - self.received)]
            self.muted = True
        self.received += len(data)
        return self._damage(data)

    def close(self):
        if hasattr(self.inner, "close"):
            self.inner.close()
