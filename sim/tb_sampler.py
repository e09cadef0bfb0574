"""cocotb testbench of the on-device sampler (:class:`mmfree.hw.sampler.Sampler` in
:class:`mmfree.sim.tb_sampler.SamplerBench`), against :class:`mmfree.sampler.Sampler`.

Reads the vector file named by ``$MMFREE_VECTORS`` (written by the pytest process with
:func:`sampler_vectors`): per pick ``logits`` (a row of ``V`` ACT codes, padded), ``vocab``,
``temperature``, ``top_k``, ``seed`` with ``load`` (1: load the seed before this pick, the start of a
GENERATE), and ``expect``, the reference token. Every token is compared; the cycles of each pick are
checked against the bound of the unit's schedule. This module needs cocotb and numpy only.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge

from mmfree.sim.tb_common import start_clock_and_reset


@cocotb.test()
async def picks(dut):
    """Every pick's token equals the reference sampler's, LFSR state carried across picks."""
    with np.load(os.environ["MMFREE_VECTORS"], allow_pickle=False) as f:
        vec = {k: f[k] for k in f.files}
    for name in ("wr_en", "start", "load"):
        getattr(dut, name).value = 0
    await start_clock_and_reset(dut, cycles=2)
    wrong = []
    for n in range(len(vec["expect"])):
        V = int(vec["vocab"][n])
        dut.wr_en.value = 1
        for i in range(V):
            dut.wr_addr.value = i
            dut.wr_data.value = int(vec["logits"][n][i]) & 0xFFFFFF
            await RisingEdge(dut.clk)
        dut.wr_en.value = 0
        if vec["load"][n]:
            dut.seed.value = int(vec["seed"][n])
            dut.load.value = 1
            await RisingEdge(dut.clk)
            dut.load.value = 0
        dut.vocab.value = V
        dut.temperature.value = int(vec["temperature"][n])
        dut.top_k.value = int(vec["top_k"][n])
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        limit = int(vec["bound"][n])
        await First(RisingEdge(dut.done), ClockCycles(dut.clk, limit))
        await ReadOnly()
        if not dut.done.value:
            raise AssertionError(f"pick {n}: no answer within {limit} cycles")
        got = int(dut.token.value)
        if got != int(vec["expect"][n]):
            wrong.append(f"pick {n} (V={V}, T={int(vec['temperature'][n])}, k={int(vec['top_k'][n])}): "
                         f"token {got}, expected {int(vec['expect'][n])}")
        await RisingEdge(dut.clk)
    assert not wrong, f"{len(wrong)} of {len(vec['expect'])} picks differ: " + "; ".join(wrong[:5])
