"""Driving :class:`mmfree.hw.core.Core` in Amaranth's simulator: writing its regions, stepping tokens.

Used by the core's tests and by ``mmfree profile`` (:mod:`mmfree.sim.profile`), in an Amaranth
testbench (``ctx``, the core ``dut``): :func:`write_regions` and :func:`request` are coroutines,
:func:`preload_regions` sets the memories at once.
"""

from mmfree.hw.core import Command, REGION_PORTS

__all__ = ["write_regions", "preload_regions", "request"]


async def write_regions(ctx, dut, words, progress=None):
    """Write ``words`` (region -> list of words, :func:`mmfree.hw.core.region_words`) through the
    core's write ports, a word a clock; ``progress(n)`` (if given) is told of every 1,024 words."""
    for region, ws in words.items():
        port = getattr(dut, "wr_" + REGION_PORTS[region])
        ctx.set(port.en, 1)
        for addr, word in enumerate(ws):
            ctx.set(port.addr, addr)
            ctx.set(port.data, word)
            await ctx.tick()
            if progress is not None and addr % 1024 == 1023:
                progress(1024)
        if progress is not None:
            progress(len(ws) % 1024)
        ctx.set(port.en, 0)


def preload_regions(ctx, dut, words, progress=None):
    """Put ``words`` (as :func:`write_regions` takes them) straight into the core's memories, as a
    write through the ports leaves them, with no clock passing: for a core elaborated for Amaranth's
    simulator (inferred memories), after reset. ``progress(n)`` is told of every 1,024 words."""
    regions = dut.probe["regions"]
    for region, ws in words.items():
        parts = regions[region]
        for rp in parts:
            if not rp.memories:
                raise ValueError("the core's memories are not inferred ones (an ECP5 build): write "
                                 "through the ports instead")
        widths = [len(rp.data) for rp in parts]
        for addr, word in enumerate(ws):
            for rp, width in zip(parts, widths):
                memory, index = rp.cell(addr)
                ctx.set(memory.data[index], word & ((1 << width) - 1))
                word >>= width
            if progress is not None and addr % 1024 == 1023:
                progress(1024)
        if progress is not None:
            progress(len(ws) % 1024)


async def request(ctx, dut, cmd, token=0, limit=100_000):
    """Send one request; for ``STEP`` return ``(token, logit, error, cycles)`` once the answer is
    taken (``AssertionError`` if none comes within ``limit`` clocks)."""
    ctx.set(dut.req.payload.cmd, cmd)
    ctx.set(dut.req.payload.token, token)
    ctx.set(dut.req.valid, 1)
    await ctx.tick().until(dut.req.ready)
    ctx.set(dut.req.valid, 0)
    if cmd == Command.RESET_STATE:
        return None
    for _ in range(limit):
        await ctx.tick()
        if ctx.get(dut.res.valid):
            break
    else:
        raise AssertionError(f"no result within {limit:,} cycles")
    assert ctx.get(dut.busy) == 0, "an answer offered while still busy"
    res = ctx.get(dut.res.payload)
    ctx.set(dut.res.ready, 1)
    await ctx.tick()
    ctx.set(dut.res.ready, 0)
    return int(res.token), int(res.logit), int(res.error), ctx.get(dut.cycles)
