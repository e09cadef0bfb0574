"""What every cocotb testbench here starts with: the clock, and a reset that every simulator sees.

Needs cocotb only (it runs in the simulator process).
"""

from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["start_clock_and_reset", "expect_no_extra_beats", "DRAIN_CYCLES"]

DRAIN_CYCLES = 32
"""Clocks the stream testbenches keep every output's ``ready`` high after its last expected beat: a
beat offered in that time is one too many (its ``valid`` stays high until it is taken)."""


async def start_clock_and_reset(dut, *, period_ns=10, cycles=3):
    """Start ``dut.clk`` and hold ``dut.rst`` for ``cycles`` rising edges; returns after the edge at
    which ``rst`` falls.

    ``rst`` rises only after the first edge: Icarus misses a value set at time 0 in the combinational
    blocks that compute reset values, and a register whose next state does not change during reset
    would then stay X.
    """
    Clock(dut.clk, period_ns, unit="ns").start()
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def expect_no_extra_beats(dut, outputs, inputs=(), cycles=DRAIN_CYCLES):
    """After the expected beats: the ``inputs`` streams idle, every one of ``outputs`` ready, and
    none of them may offer a beat for ``cycles`` clocks. Starts at the next rising edge."""
    await RisingEdge(dut.clk)
    for p in inputs:
        getattr(dut, f"{p}__valid").value = 0
    for p in outputs:
        getattr(dut, f"{p}__ready").value = 1
    for c in range(cycles):
        await RisingEdge(dut.clk)
        await ReadOnly()
        for p in outputs:
            if getattr(dut, f"{p}__valid").value == 1:
                raise AssertionError(f"{p}: a beat after the expected ones ({c + 1} clocks after them)")
