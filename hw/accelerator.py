"""The accelerator: the token engine, the host link and the UART, as one component for a board.

::

    uart_rx --> UARTReceiver --bytes--> Link --req/res, wr_*/rd_*--> Core
    uart_tx <-- UARTTransmitter <-bytes--'
    status  <-- loaded, busy, error, heartbeat

With ``phy="bytes"`` the UART is left out and the link's byte streams are the ports (``rx``, ``tx``):
the simulated board and the full-system tests move whole bytes per clock instead of bits, and the
UART is verified on its own (tests/test_uart.py).

The configuration (:class:`~mmfree.hw.config.HwConfig`) sizes the core; its ``clk_freq`` is the clock
the design runs at, which sets the UART's bit timing and is reported by INFO.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.protocol import DEFAULT_BAUD

from .config import HwConfig
from .core import Core
from .link import Link, check_arguments, info_for
from .uart import UARTReceiver, UARTTransmitter, baud_fraction

__all__ = ["Accelerator", "make_accelerator", "port_members", "PHYS", "DEFAULT_BAUD"]

PHYS = ("uart", "bytes")
HEARTBEAT_HZ = 1
"""Blink rate of status bit 3 (heartbeat)."""


def port_members(phy):
    """The ports of an accelerator with ``phy`` (:data:`PHYS`): serial pins or byte streams, and
    ``status``."""
    if phy == "uart":
        members = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)}
    else:
        members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
    members["status"] = Out(4)
    return members


class Accelerator(wiring.Component):
    """Core, Link and UART.

    Parameters
    ----------
    config : :class:`~mmfree.hw.config.HwConfig`
    build_hash : int
        32-bit value INFO reports (the build flow passes the hash of the design and tools).
    baud : int
        UART line rate (``phy="uart"`` only); at least 4 clocks of ``config.clk_freq`` per bit.
    phy : ``"uart"`` or ``"bytes"``
        Serial pins, or byte streams for simulation.
    token_history : int
        Tokens held for RESEND (a power of two).

    Members
    -------
    uart_rx : In(1), uart_tx : Out(1)
        8N1 serial, idle high (``phy="uart"``). ``uart_rx`` must be synchronous to ``sync``.
    rx : In(stream.Signature(8)), tx : Out(stream.Signature(8))
        The same byte streams without the UART (``phy="bytes"``).
    status : Out(4)
        Bit 0 ``loaded`` (a model that fits is in memory), 1 ``busy`` (a FEED or GENERATE runs, or
        the core computes), 2 ``error`` (the last reply was a NAK), 3 ``heartbeat`` (blinks at about
        1 Hz).
    """

    def __init__(self, config, build_hash=0, *, baud=DEFAULT_BAUD, phy="uart", token_history=256):
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {config!r}")
        if phy not in PHYS:
            raise ValueError(f"phy must be one of {', '.join(map(repr, PHYS))}, not {phy!r}")
        if phy == "uart":
            baud_fraction(config.clk_freq, baud)        # refuses rates the clock cannot make
        check_arguments(config, build_hash, token_history)
        self.config = config
        self.build_hash = build_hash
        self.baud = baud
        self.phy = phy
        self.token_history = token_history
        super().__init__(port_members(phy))

    @property
    def info(self):
        """The :class:`~mmfree.protocol.Info` this design answers INFO with."""
        return info_for(self.config, self.build_hash, self.token_history)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = Core(self.config)
        m.submodules.link = link = Link(self.config, self.build_hash, token_history=self.token_history)
        wiring.connect(m, link.core, core)

        if self.phy == "uart":
            m.submodules.uart_rx = urx = UARTReceiver(self.config.clk_freq, self.baud)
            m.submodules.uart_tx = utx = UARTTransmitter(self.config.clk_freq, self.baud)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
            wiring.connect(m, urx.o, link.rx)
            wiring.connect(m, link.tx, utx.i)
        else:
            wiring.connect(m, wiring.flipped(self.rx), link.rx)
            wiring.connect(m, link.tx, wiring.flipped(self.tx))

        half = max(1, self.config.clk_freq // (2 * HEARTBEAT_HZ))
        beat = Signal(range(half))
        heartbeat = Signal()
        with m.If(beat == half - 1):
            m.d.sync += [beat.eq(0), heartbeat.eq(~heartbeat)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)
        m.d.comb += self.status.eq(Cat(link.loaded, link.active | core.busy, link.error, heartbeat))
        return m


def make_accelerator(config, build_hash=0, **kwargs):
    """The accelerator that ``config.arch`` names (:data:`~mmfree.hw.config.ARCHS`), built for ``config``:
    :class:`Accelerator` or :class:`~mmfree.hw.soc.CompactAccelerator`. ``kwargs`` (``baud``, ``phy``,
    ``token_history``) go to its constructor; both have the same ports."""
    if not isinstance(config, HwConfig):
        raise TypeError(f"config must be a HwConfig, not {config!r}")
    if config.arch == "compact":
        from .soc import CompactAccelerator
        return CompactAccelerator(config, build_hash, **kwargs)
    return Accelerator(config, build_hash, **kwargs)

