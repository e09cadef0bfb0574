# amaranth: UnusedElaboratable=no
"""The UART (:mod:`mmfree.hw.uart`) on its own, in the Amaranth simulator: loopback at several
clock/baud ratios (3 Mbaud at 25 MHz and at 12 MHz among them), the exact average rate, a line model
whose rate is off by up to 2%, framing errors, glitches and random gaps."""

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.sim import Simulator

from mmfree.hw.uart import UARTReceiver, UARTTransmitter, baud_fraction

pytestmark = pytest.mark.sim


def test_baud_fraction():
    assert baud_fraction(25_000_000, 3_000_000) == (3, 25)
    assert baud_fraction(12_000_000, 3_000_000) == (1, 4)
    assert baud_fraction(50e6, 115200) == (36, 15625)
    with pytest.raises(ValueError, match="baud 3000000 is too fast for a 10 MHz clock: 3.33 clocks per bit"):
        baud_fraction(10_000_000, 3_000_000)
    with pytest.raises(ValueError, match="baud must be positive, not 0"):
        baud_fraction(10_000_000, 0)
    with pytest.raises(TypeError, match="clock_hz must be an integer, not '12'"):
        baud_fraction("12", 3)
    with pytest.raises(ValueError, match="clock_hz must be a whole number of Hz, not 1.5"):
        baud_fraction(1.5, 1)


class _Loopback(Elaboratable):
    def __init__(self, clock_hz, baud):
        self.tx = UARTTransmitter(clock_hz, baud)
        self.rx = UARTReceiver(clock_hz, baud)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


def _run(dut, *benches, cycles=None):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for b in benches:
        sim.add_testbench(b)
    sim.run()


@pytest.mark.parametrize("clock_hz, baud", [
    (25_000_000, 3_000_000),        # 8 1/3 clocks per bit
    (12_000_000, 3_000_000),        # exactly 4
    (50_000_000, 3_000_000),        # 16 2/3
    (10_000_000, 1_500_000),        # 6 2/3
    (48_000_000, 115_200),          # 416 2/3
])
def test_loopback(clock_hz, baud):
    """Every byte arrives, in order, with random gaps on both sides; back-to-back bytes take exactly
    ten bits each on average."""
    dut = _Loopback(clock_hz, baud)
    rng = random.Random(clock_hz ^ baud)
    data = [rng.randrange(256) for _ in range(40 if baud > 1_000_000 else 6)] + [0x00, 0xFF, 0x55]
    got, starts = [], []
    bit = clock_hz / baud

    async def send(ctx):
        for i, byte in enumerate(data):
            if i >= len(data) // 2 and rng.random() < 0.5:
                await ctx.tick().repeat(rng.randrange(1, 3 * int(bit) + 2))
            ctx.set(dut.tx.i.payload, byte)
            ctx.set(dut.tx.i.valid, 1)
            await ctx.tick().until(dut.tx.i.ready)
            ctx.set(dut.tx.i.valid, 0)

    async def line(ctx):
        # start-bit edges of the first (back-to-back) half: exact rate on average
        cycle, last = 0, 1
        while len(starts) < len(data) // 2:
            await ctx.tick()
            cycle += 1
            v = ctx.get(dut.tx.tx)
            if last and not v:
                starts.append(cycle)
                await ctx.tick().repeat(int(bit * 9.5))      # skip to the stop bit
                cycle += int(bit * 9.5)
                v = 1
            last = v

    async def receive(ctx):
        ctx.set(dut.rx.o.ready, 1)
        while len(got) < len(data):
            await ctx.tick()
            assert not ctx.get(dut.rx.frame_error) and not ctx.get(dut.rx.overrun)
            if ctx.get(dut.rx.o.valid):
                got.append(ctx.get(dut.rx.o.payload))
                if rng.random() < 0.3:                       # a slow consumer, but in time
                    ctx.set(dut.rx.o.ready, 0)
                    await ctx.tick().repeat(int(bit))
                    ctx.set(dut.rx.o.ready, 1)

    _run(dut, send, line, receive)
    assert got == data
    span = starts[-1] - starts[0]
    assert abs(span - 10 * bit * (len(starts) - 1)) <= 1


async def _drive_line(ctx, rx, bits, period, start_phase=0.0):
    """Drive ``rx`` with ``bits`` (a list of 0/1), each ``period`` clocks long (fractional)."""
    t = start_phase
    cycle = 0
    for b in bits:
        t += period
        ctx.set(rx, b)
        while cycle < int(t):
            await ctx.tick()
            cycle += 1


def _frame(byte, stop=1):
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


@pytest.mark.parametrize("skew", [-0.02, 0.0, 0.02])
@pytest.mark.parametrize("clock_hz, baud", [(25_000_000, 3_000_000), (12_000_000, 3_000_000)])
def test_receiver_against_line_model(clock_hz, baud, skew):
    """A sender whose rate is off by up to 2% and whose edges fall between clocks is received."""
    dut = UARTReceiver(clock_hz, baud)
    rng = random.Random(7)
    data = [rng.randrange(256) for _ in range(24)]
    got = []
    period = clock_hz / baud * (1 + skew)

    async def line(ctx):
        bits = [1, 1]
        for byte in data:
            bits += _frame(byte) + [1] * rng.choice([0, 0, 1, 3])
        await _drive_line(ctx, dut.rx, bits + [1] * 4, period, start_phase=rng.random())

    async def receive(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(int(period * 11 * (len(data) + 2) * 1.5)):
            await ctx.tick()
            assert not ctx.get(dut.frame_error)
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            if len(got) == len(data):
                break

    _run(dut, line, receive)
    assert got == data


def test_receiver_framing_error_glitch_and_overrun():
    clock_hz, baud = 12_000_000, 3_000_000
    dut = UARTReceiver(clock_hz, baud)
    events = []

    async def line(ctx):
        # one entry per clock, 4 clocks per bit
        clocks = [1] * 8 + [b for b in _frame(0xA5, stop=0) for _ in range(4)]   # framing error
        clocks += [0] * 40 + [1] * 8                                             # a break
        clocks += [0] + [1] * 12                              # a glitch of one clock: no start bit
        for byte in (0x3C, 0xC3):                             # overrun: the first is not taken
            clocks += [b for b in _frame(byte) for _ in range(4)] + [1] * 4
        for v in clocks + [1] * 8:
            ctx.set(dut.rx, v)
            await ctx.tick()

    async def watch(ctx):
        ctx.set(dut.o.ready, 0)
        for cycle in range(200):
            await ctx.tick()
            if ctx.get(dut.frame_error):
                events.append("frame_error")
            if ctx.get(dut.overrun):
                events.append("overrun")
        assert ctx.get(dut.o.valid)
        events.append(ctx.get(dut.o.payload))
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    _run(dut, line, watch)
    # the break and the glitch produce nothing; of the two bytes only the first is kept
    assert events == ["frame_error", "overrun", 0x3C]
