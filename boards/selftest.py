"""The build flow's self-test design: a UART echo with LED status, on the accelerator's ports.

It exists to test the flow (board wrappers, PLLs, pins, reports, caching) and a board (clock, UART,
LEDs) without the accelerator, and it is small enough for CI to place and route in seconds. It has
exactly the ports the flow wraps on every board:

* ``uart_rx: In(1)``, ``uart_tx: Out(1)``: 8N1 serial at ``baud``, idle high;
* ``status: Out(4)``: ``loaded``, ``busy``, ``error``, ``heartbeat`` (bit 0 to 3).

Behaviour: every received byte is sent back, except ENQ (``0x05``), which is answered with the
design's build hash as 8 lowercase hex digits and ``"\\r\\n"`` (the flow's manifest holds the same
hash). ``loaded`` lights once a byte has arrived, ``busy`` while bytes are being sent (stretched to
about 50 ms so that it is visible), ``error`` stays lit after a framing error or an overrun of the
16-byte echo buffer, and ``heartbeat`` blinks (a period of 1 to 2 s) while the clock runs.
"""

from amaranth import *
from amaranth.lib import wiring, stream, fifo, memory
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from mmfree.protocol import DEFAULT_BAUD

__all__ = ["SelfTest", "UARTRx", "UARTTx", "uart_divisor", "ENQ"]

ENQ = 0x05
MAX_BAUD_ERROR = 0.02
"""The largest relative baud error accepted: 8N1 tolerates about 4% between both ends in total."""


def uart_divisor(clock_hz, baud):
    """Clocks per bit for ``baud`` at ``clock_hz``, rounded; refused when the rate would be off by
    more than :data:`MAX_BAUD_ERROR` or a bit would be shorter than 4 clocks."""
    for name, v in (("clock_hz", clock_hz), ("baud", baud)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} must be a positive number, not {v!r}")
    divisor = round(clock_hz / baud)
    if divisor < 4:
        raise ValueError(f"baud {baud:g} is too fast for a {clock_hz / 1e6:g} MHz clock "
                         f"(needs at least 4 clocks per bit)")
    error = abs(clock_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud:g} is {error:.1%} off at {clock_hz / 1e6:g} MHz "
                         f"({clock_hz / baud:.2f} clocks per bit)")
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver. ``rx`` must already be synchronous to ``sync``.

    ``data`` is a stream of received bytes; a byte that is not taken before the next one completes is
    lost and ``overrun`` pulses. ``frame_error`` pulses for a byte whose stop bit is low (the byte is
    dropped). The line is sampled in the middle of each bit, timed from the start bit's falling edge.
    """

    def __init__(self, divisor):
        self.divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        shift = Signal(8)
        bits = Signal(range(9))

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("idle"):
                with m.If(~self.rx):
                    # first sample in the middle of bit 0: one and a half bits from the edge
                    m.d.sync += [timer.eq(self.divisor * 3 // 2 - 1), bits.eq(0)]
                    m.next = "data"
            with m.State("data"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], self.rx)), bits.eq(bits + 1),
                                 timer.eq(self.divisor - 1)]
                    with m.If(bits == 7):
                        m.next = "stop"
            with m.State("stop"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(self.rx):
                        m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1),
                                     self.overrun.eq(self.data.valid & ~self.data.ready)]
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                    m.next = "wait_idle"
            with m.State("wait_idle"):
                # a low stop bit (a break) must end before the next start bit can be seen
                with m.If(self.rx):
                    m.next = "idle"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: sends each byte of ``data`` on ``tx``; ``busy`` while a byte is on the line."""

    def __init__(self, divisor):
        self.divisor = divisor
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shift = Signal(10, init=0x3FF)     # stop, 8 data bits, start: LSB first
        bits = Signal(range(11))

        m.d.comb += [self.tx.eq(shift[0]), self.busy.eq(bits != 0),
                     self.data.ready.eq(bits == 0)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [shift.eq(Cat(C(0, 1), self.data.payload, C(1, 1))), bits.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shift.eq(Cat(shift[1:], C(1, 1))), bits.eq(bits - 1),
                             timer.eq(self.divisor - 1)]
        return m


class SelfTest(wiring.Component):
    """UART echo with status LEDs; answers ENQ with its build hash (see the module docstring).

    Parameters: ``clock_hz`` (the design clock, after the board's PLL), ``baud``, ``build_hash`` (an
    integer below 2**32, set by the build flow; 0 in a design that has not been through it).
    """

    def __init__(self, clock_hz, baud=DEFAULT_BAUD, build_hash=0):
        self.divisor = uart_divisor(clock_hz, baud)
        if isinstance(build_hash, bool) or not isinstance(build_hash, int) or not 0 <= build_hash < 1 << 32:
            raise ValueError(f"build_hash must be an integer in [0, 2**32), not {build_hash!r}")
        self.clock_hz = clock_hz
        self.baud = baud
        self.build_hash = build_hash
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "status": Out(4),
        })

    @property
    def config(self):
        """The hardware configuration, as the build flow's manifest records it."""
        return dict(design="selftest", clock_hz=self.clock_hz, baud=self.baud,
                    clocks_per_bit=self.divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.rx_sync = FFSynchronizer(self.uart_rx, rx.rx, init=1)
        m.d.comb += self.uart_tx.eq(tx.tx)

        # bit 8 marks ENQ, decided as the byte arrives: the FIFO's registered output then feeds the
        # reply logic directly (iCE40 has no LUT RAM; a combinational read is a slow mux)
        m.submodules.echo = echo = fifo.SyncFIFOBuffered(width=9, depth=16)
        m.d.comb += [echo.w_data.eq(Cat(rx.data.payload, rx.data.payload == ENQ)),
                     echo.w_en.eq(rx.data.valid), rx.data.ready.eq(echo.w_rdy)]
        is_enq = echo.r_data[8]

        reply = [ord(c) for c in f"{self.build_hash:08x}\r\n"]
        m.submodules.reply = rom = memory.Memory(shape=8, depth=len(reply), init=reply)
        rom_rd = rom.read_port(domain="comb")
        index = Signal(range(len(reply)))
        m.d.comb += rom_rd.addr.eq(index)

        with m.FSM():
            with m.State("echo"):
                m.d.comb += [tx.data.payload.eq(echo.r_data[:8]),
                             tx.data.valid.eq(echo.r_rdy & ~is_enq),
                             echo.r_en.eq(tx.data.ready | is_enq)]
                with m.If(echo.r_rdy & is_enq):
                    m.d.sync += index.eq(0)
                    m.next = "reply"
            with m.State("reply"):
                m.d.comb += [tx.data.payload.eq(rom_rd.data), tx.data.valid.eq(1)]
                with m.If(tx.data.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == len(reply) - 1):
                        m.next = "echo"

        loaded, error = Signal(), Signal()
        with m.If(rx.data.valid):
            m.d.sync += loaded.eq(1)
        with m.If(rx.frame_error | rx.overrun | (rx.data.valid & ~echo.w_rdy)):
            m.d.sync += error.eq(1)

        # Slow timers count ticks of a prescaler, so that no carry chain is longer than about
        # 14 bits: long chains do not close timing at iCE40 speeds.
        prescale_bits = 12
        prescaler = Signal(prescale_bits)
        tick = Signal()
        m.d.sync += [prescaler.eq(prescaler + 1), tick.eq(prescaler == (1 << prescale_bits) - 1)]

        # the top bit of a counter that wraps every 2**n >= clock_hz clocks: a 1 to 2 s blink
        heartbeat = Signal(max(1, (int(self.clock_hz) - 1).bit_length() - prescale_bits))
        with m.If(tick):
            m.d.sync += heartbeat.eq(heartbeat + 1)

        # LED-visible busy: lit for the window of 2**k ticks (50 to 100 ms) after any busy clock
        k = max(0, min(len(heartbeat), (int(self.clock_hz / 20) >> prescale_bits).bit_length()))
        window_end = Signal()
        m.d.comb += window_end.eq(tick & (heartbeat[:k] == (1 << k) - 1) if k else tick)
        busy_seen, busy_led = Signal(), Signal()
        with m.If(window_end):
            m.d.sync += [busy_led.eq(busy_seen | tx.busy), busy_seen.eq(tx.busy)]
        with m.Elif(tx.busy):
            m.d.sync += [busy_seen.eq(1), busy_led.eq(1)]

        m.d.comb += self.status.eq(Cat(loaded, busy_led, error, heartbeat[-1]))
        return m
