# amaranth: UnusedElaboratable=no
"""The on-device sampler (:mod:`mmfree.hw.sampler`) against :class:`mmfree.sampler.Sampler`, token for
token: on Amaranth's simulator, and on the generated Verilog under cocotb (Verilator and Icarus)."""

import random

import pytest
from amaranth.sim import Simulator

from mmfree.hw.sampler import Sampler, cycle_bound
from mmfree.sim.unit_vectors import SamplerBench, sampler_cases, sampler_vectors


def _pysim_picks(max_vocab, vec):
    dut = SamplerBench(max_vocab)
    got, cycles = [], []

    async def tb(ctx):
        for n in range(len(vec["expect"])):
            V = int(vec["vocab"][n])
            ctx.set(dut.wr_en, 1)
            for i in range(V):
                ctx.set(dut.wr_addr, i)
                ctx.set(dut.wr_data, int(vec["logits"][n][i]) & 0xFFFFFF)
                await ctx.tick()
            ctx.set(dut.wr_en, 0)
            if vec["load"][n]:
                ctx.set(dut.seed, int(vec["seed"][n]))
                ctx.set(dut.load, 1)
                await ctx.tick()
                ctx.set(dut.load, 0)
            ctx.set(dut.vocab, V)
            ctx.set(dut.temperature, int(vec["temperature"][n]))
            ctx.set(dut.top_k, int(vec["top_k"][n]))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            c = 1
            while not ctx.get(dut.done):
                assert ctx.get(dut.busy)
                assert c <= int(vec["bound"][n]), f"pick {n}: no answer in {c} cycles"
                await ctx.tick()
                c += 1
            got.append(ctx.get(dut.token))
            cycles.append(c)
            await ctx.tick()
            assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got, cycles


def test_sampler_pysim():
    """Seeded GENERATEs of several picks (LFSR carried), every temperature class, top-k on and off,
    ties, ACT extremes, V from 1 to the maximum."""
    vec = sampler_vectors(sampler_cases(random.Random(7), 40, 16), 16)
    got, _ = _pysim_picks(16, vec)
    assert got == [int(t) for t in vec["expect"]]
    assert any(0 < k < v for k, v in zip(vec["top_k"], vec["vocab"]))


def test_sampler_cycles():
    """The schedule of the module documentation: about 3V clocks, 27V with top-k."""
    V = 64
    rng = random.Random(3)
    logits = [rng.randrange(-(1 << 20), 1 << 20) for _ in range(V)]
    cases = [(True, 9, V, 256, 0, logits), (True, 9, V, 256, 10, logits)]
    vec = sampler_vectors(cases, V)
    got, cycles = _pysim_picks(V, vec)
    assert got == [int(t) for t in vec["expect"]]
    assert 3 * V <= cycles[0] <= cycle_bound(V, 0)
    assert 27 * V <= cycles[1] <= cycle_bound(V, 10)


def test_sampler_arguments():
    with pytest.raises(ValueError, match="max_vocab must be an integer from 1 to 65536, not 0"):
        Sampler(0, 16)
    with pytest.raises(ValueError, match=r"depth must be an integer of at least max_vocab \(256\), not 100"):
        Sampler(256, 100)


@pytest.mark.sim
@pytest.mark.parametrize("simulator,generations,arch", [("verilator", 600, "generic"), ("icarus", 80, "generic"),
                                                        ("verilator", 200, "ecp5"), ("icarus", 40, "ecp5")])
def test_sampler_cocotb(simulator, generations, arch):
    """Thousands of picks on the generated Verilog (V up to 256), every token compared; on the ECP5
    the product ``d * beta`` is four DSP blocks with their own registers (through the block's
    simulation model)."""
    from mmfree.sim import runner

    reason = runner.missing(simulator)
    if reason is not None:
        pytest.skip(reason)
    vec = sampler_vectors(sampler_cases(random.Random(2024), generations, 256), 256)
    num, _ = runner.run_cocotb(SamplerBench(256, arch), simulator=simulator, test_module="mmfree.sim.tb_sampler",
                               name="sampler", vectors=vec,
                               sources=[runner.ecp5_cell_models()] if arch == "ecp5" else ())
    assert num == 1
