"""UART 8N1 receiver and transmitter with a fractional baud generator.

Both ends time bits with a phase accumulator instead of an integer divider: every clock adds
``baud / g`` to a counter that wraps at ``clock_hz / g`` (``g = gcd(clock_hz, baud)``), and each wrap
is a bit edge. Bit edges are therefore never more than one clock away from their ideal times, and the
rate is exact on average at any clock: 3 Mbaud from 25 MHz is 8 1/3 clocks per bit, sent as bits of
8, 8 and 9 clocks. At least 4 clocks per bit are required (12 MHz gives exactly 4 at 3 Mbaud).

* :class:`UARTTransmitter`: bytes from the stream ``i`` onto the line ``tx``, LSB first, one start
  and one stop bit, back to back at the exact rate while ``i`` has data.
* :class:`UARTReceiver`: bytes from the line ``rx`` onto the stream ``o``. The start bit's falling
  edge restarts the receiver's accumulator half a bit ahead, so every bit is sampled in its middle;
  a start bit that is no longer low there is ignored (a glitch); a low stop bit is a framing error.

``rx`` must be synchronous to ``sync`` (the board wrappers in :mod:`mmfree.boards` synchronise the pin).
"""

from math import gcd
from numbers import Integral

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["baud_fraction", "UARTReceiver", "UARTTransmitter", "MIN_CLOCKS_PER_BIT"]

MIN_CLOCKS_PER_BIT = 4
"""The shortest bit the receiver samples reliably in its middle, in clocks."""


def baud_fraction(clock_hz, baud):
    """``(inc, mod)``, the accumulator step and modulus for ``baud`` at ``clock_hz``: a bit lasts
    ``mod / inc`` clocks, exactly ``clock_hz / baud``.

    Both must be positive integers (an integer-valued float is accepted), and a bit must last at
    least :data:`MIN_CLOCKS_PER_BIT` clocks.
    """
    values = {}
    for name, v in (("clock_hz", clock_hz), ("baud", baud)):
        if isinstance(v, bool) or not isinstance(v, (Integral, float)):
            raise TypeError(f"{name} must be an integer, not {v!r}")
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError(f"{name} must be a whole number of Hz, not {v!r}")
            v = int(v)
        if v <= 0:
            raise ValueError(f"{name} must be positive, not {v}")
        values[name] = int(v)
    clock_hz, baud = values["clock_hz"], values["baud"]
    if clock_hz < MIN_CLOCKS_PER_BIT * baud:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz / 1e6:g} MHz clock: "
                         f"{clock_hz / baud:.2f} clocks per bit, at least {MIN_CLOCKS_PER_BIT} needed")
    g = gcd(clock_hz, baud)
    return baud // g, clock_hz // g


class _Accumulator:
    """A phase accumulator in ``m``: ``tick`` is high on the clocks where a bit edge falls."""

    def __init__(self, m, inc, mod, run=1, name="baud"):
        self.inc, self.mod = inc, mod
        self.acc = Signal(range(mod), name=f"{name}_acc")
        self.tick = Signal(name=f"{name}_tick")
        nxt = self.acc + inc
        m.d.comb += self.tick.eq(run & (nxt >= mod))
        with m.If(run):
            m.d.sync += self.acc.eq(nxt - (self.tick * mod))


class UARTTransmitter(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    clock_hz, baud : int
        The ``sync`` clock and the line rate (see :func:`baud_fraction`).

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send. ``ready`` is high while no byte is waiting for the line (also during the
        previous byte's stop bit, so that bytes follow each other without a gap).
    tx : Out(1)
        The line, idle high.
    busy : Out(1)
        High from the transfer of a byte on ``i`` until its stop bit has begun.

    The bit clock runs freely, so a byte's start bit begins at the next bit edge after the byte was
    taken: up to one bit of latency, in exchange for an exact average rate.
    """

    def __init__(self, clock_hz, baud):
        self.inc, self.mod = baud_fraction(clock_hz, baud)
        self.clock_hz, self.baud = int(clock_hz), int(baud)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bit = _Accumulator(m, self.inc, self.mod, name="tx")
        shift = Signal(10)                  # start bit, 8 data bits, stop bit: LSB first
        left = Signal(range(11))            # bits still to put on the line
        line = Signal(init=1)

        m.d.comb += [self.tx.eq(line), self.i.ready.eq(left == 0), self.busy.eq(left != 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))), left.eq(10)]
        with m.If(bit.tick):
            with m.If(left != 0):
                m.d.sync += [line.eq(shift[0]), shift.eq(shift >> 1), left.eq(left - 1)]
            with m.Else():
                m.d.sync += line.eq(1)
        return m


class UARTReceiver(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    clock_hz, baud : int
        The ``sync`` clock and the line rate (see :func:`baud_fraction`).

    Members
    -------
    rx : In(1)
        The line, idle high, synchronous to ``sync``.
    o : Out(stream.Signature(8))
        Received bytes. A byte is offered from the middle of its stop bit; ``valid`` and the payload
        hold until the transfer. A byte that completes while the previous one is still offered is
        dropped (``overrun`` pulses).
    frame_error : Out(1)
        Pulses for one clock when a stop bit is low; that byte is dropped, and the receiver waits
        for the line to go high before it looks for the next start bit.
    overrun : Out(1)
        Pulses for one clock when a byte is dropped because ``o`` was not taken in time.
    """

    def __init__(self, clock_hz, baud):
        self.inc, self.mod = baud_fraction(clock_hz, baud)
        self.clock_hz, self.baud = int(clock_hz), int(baud)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        inc, mod = self.inc, self.mod
        run = Signal()
        bit = _Accumulator(m, inc, mod, run=run, name="rx")
        shift = Signal(8)
        count = Signal(range(8))

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~self.rx):
                    # The edge fell within the last clock, half a clock ago on average: the first
                    # tick then comes about half a bit after the edge, in the middle of the start bit.
                    m.d.sync += bit.acc.eq((mod + inc) // 2)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += run.eq(1)
                with m.If(bit.tick):
                    with m.If(self.rx):
                        m.next = "IDLE"             # too short for a start bit
                    with m.Else():
                        m.d.sync += count.eq(0)
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += run.eq(1)
                with m.If(bit.tick):
                    m.d.sync += [shift.eq(Cat(shift[1:], self.rx)), count.eq(count + 1)]
                    with m.If(count == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.comb += run.eq(1)
                with m.If(bit.tick):
                    with m.If(self.rx):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        m.next = "IDLE"             # mid stop bit: ready for the next start edge
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(self.rx):
                    m.next = "IDLE"
        return m
