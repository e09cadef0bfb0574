"""The stream testbench of :mod:`mmfree.sim.tb_streams`, on Amaranth's own simulator.

Same vector dicts, same rules (a producer holds ``valid`` and the payload until the transfer; random
idle cycles and ``ready`` stalls with probability ``stall``), same exact comparison and the same watch for extra beats, for short tests
that need no external simulator.
"""

import random

from amaranth.sim import Simulator

from mmfree.sim.tb_common import DRAIN_CYCLES

__all__ = ["run_streams"]


def _ints(rows):
    return [int.from_bytes(bytes(r), "little") for r in rows]


def run_streams(dut, vectors, *, vcd=None):
    """Simulate ``dut`` with ``vectors``; returns ``{"cycles", "transfers", "span"}``.

    Raises ``AssertionError`` at the first payload that differs from the expected one.
    """
    stall = float(vectors.get("stall", 0.0))
    rng = random.Random(int(vectors.get("seed", 1)))
    inputs = {k[4:]: _ints(v) for k, v in vectors.items() if k.startswith("in__")}
    expect = {k[5:]: _ints(v) for k, v in vectors.items() if k.startswith("out__")}
    measure = str(vectors["measure"]) if "measure" in vectors else None
    total = sum(map(len, inputs.values())) + sum(map(len, expect.values()))
    limit = 50 + int(40 * total / max(1e-3, 1 - stall))
    stats = {}

    async def bench(ctx):
        sent = {p: 0 for p in inputs}
        holding = {p: False for p in inputs}
        got = {p: [] for p in expect}
        first = last = None
        transfers = 0
        cycle = 0
        while not (all(len(got[p]) >= len(expect[p]) for p in expect) and
                   all(sent[p] == len(inputs[p]) for p in inputs)):
            cycle += 1
            assert cycle <= limit, \
                f"timeout after {cycle} cycles (sent {sent}, got { {p: len(g) for p, g in got.items()} })"
            for p, beats in inputs.items():
                port = getattr(dut, p)
                if not holding[p]:
                    if sent[p] < len(beats) and not (stall and rng.random() < stall):
                        ctx.set(port.payload.as_value(), beats[sent[p]])
                        ctx.set(port.valid, 1)
                        holding[p] = True
                    else:
                        ctx.set(port.valid, 0)
            for p in expect:
                ctx.set(getattr(dut, p).ready, 0 if (stall and rng.random() < stall) else 1)
            for p in inputs:
                if holding[p] and ctx.get(getattr(dut, p).ready):
                    holding[p] = False
                    sent[p] += 1
                    if p == measure:
                        transfers += 1
                        first = cycle if first is None else first
                        last = cycle
            for p in expect:
                port = getattr(dut, p)
                if ctx.get(port.valid) and ctx.get(port.ready):
                    v = ctx.get(port.payload.as_value())
                    i = len(got[p])
                    assert i < len(expect[p]), f"{p}: more than the {len(expect[p])} expected beats"
                    assert v == expect[p][i], f"{p} beat {i}: expected {expect[p][i]:#x}, got {v:#x}"
                    got[p].append(v)
            await ctx.tick()
        # then no output may offer another beat
        for p in inputs:
            ctx.set(getattr(dut, p).valid, 0)
        for p in expect:
            ctx.set(getattr(dut, p).ready, 1)
        for c in range(DRAIN_CYCLES):
            for p in expect:
                assert not ctx.get(getattr(dut, p).valid), \
                    f"{p}: a beat after the {len(expect[p])} expected ones ({c} clocks after them)"
            await ctx.tick()
        stats.update(cycles=cycle, transfers=transfers,
                     span=(last - first + 1) if first is not None else 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return stats
