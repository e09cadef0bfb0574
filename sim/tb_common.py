"""What every cocotb testbench here starts with: the clock, and a reset that every simulator sees.

Needs cocotb only (it runs in the simulator process).
"""

from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

__all__ = ["start_clock_and_reset"]


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
