"""cocotb testbench of the compact accelerator (:class:`mmfree.hw.soc.CompactAccelerator`) running a test
firmware: it sends bytes and records every byte the device sends back.

``soc`` drives the byte port (``phy="bytes"``); ``soc_uart`` drives the serial pins (``phy="uart"``)
with 8N1 frames of ``bit_clocks`` clocks a bit, back to back, and decodes ``uart_tx`` alike (there is
no flow control on a UART: every byte must arrive all the same).

The vector file (``$MMFREE_VECTORS``) holds ``script`` (``uint8``: the bytes to send, all at once, as
fast as ``rx.ready`` takes them), ``reply_len`` (how many bytes to wait for), ``max_cycles`` and
``stall`` (the probability that ``tx.ready`` is low on a clock). The run writes ``soc_run.npz`` next
to the vector file: ``reply`` (the bytes), ``reply_cycle`` (the clock, counted from the end of reset,
at which each was taken), ``reply_status`` (``status`` at that clock) and ``cycles`` (clocks run).
The checks are the pytest side's (tests/test_soc.py). Needs cocotb and numpy only.
"""

import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from mmfree.sim.tb_common import start_clock_and_reset


def _load():
    with np.load(os.environ["MMFREE_VECTORS"], allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@cocotb.test()
async def soc(dut):
    """Send the script, collect the replies (with random ``tx.ready`` stalls), record them."""
    vec = _load()
    script = [int(b) for b in vec["script"]]
    reply_len = int(vec["reply_len"])
    max_cycles = int(vec["max_cycles"])
    rng = random.Random(int(vec.get("seed", 1)))
    stall = float(vec.get("stall", 0.0))
    dut.rx__valid.value = 0
    dut.tx__ready.value = 0
    await start_clock_and_reset(dut)

    reply, when, status = [], [], []
    sent = 0
    cycle = 0
    while len(reply) < reply_len and cycle < max_cycles:
        if sent < len(script):
            dut.rx__payload.value = script[sent]
            dut.rx__valid.value = 1
        else:
            dut.rx__valid.value = 0
        ready = rng.random() >= stall
        dut.tx__ready.value = int(ready)
        await ReadOnly()
        if sent < len(script) and dut.rx__ready.value == 1:
            sent += 1
        if ready and dut.tx__valid.value == 1:
            reply.append(int(dut.tx__payload.value))
            when.append(cycle)
            status.append(int(dut.status.value))
        await RisingEdge(dut.clk)
        cycle += 1
    dut.rx__valid.value = 0
    out = Path(os.environ["MMFREE_VECTORS"]).parent / "soc_run.npz"
    np.savez(out, reply=np.array(reply, dtype=np.uint8), reply_cycle=np.array(when, dtype=np.int64),
             reply_status=np.array(status, dtype=np.int64), cycles=np.int64(cycle), sent=np.int64(sent))
    assert len(reply) == reply_len, f"{len(reply)} of {reply_len} reply bytes in {cycle} cycles " \
                                    f"({sent} of {len(script)} bytes sent): {bytes(reply[-40:])!r}"


@cocotb.test()
async def soc_uart(dut):
    """The same through the UART: frames in back to back, frames out decoded in the middle of each bit."""
    vec = _load()
    script = [int(b) for b in vec["script"]]
    reply_len = int(vec["reply_len"])
    max_cycles = int(vec["max_cycles"])
    bit = int(vec["bit_clocks"])
    frames = []
    for b in script:
        frames += [0] + [(b >> i) & 1 for i in range(8)] + [1]
    line = [v for v in frames for _ in range(bit)]
    dut.uart_rx.value = 1
    await start_clock_and_reset(dut)

    reply, when = [], []
    cycle, start = 0, None
    while len(reply) < reply_len and cycle < max_cycles:
        dut.uart_rx.value = line[cycle] if cycle < len(line) else 1
        await ReadOnly()
        tx = int(dut.uart_tx.value)
        if start is None:
            if tx == 0:
                start, shift = cycle, 0
        else:
            t = cycle - start - bit // 2
            if t >= 0 and t % bit == 0:
                n = t // bit                        # 0: start bit, 1..8: data, 9: stop bit
                if n == 0:
                    assert tx == 0, f"a start bit shorter than half a bit at clock {start}"
                elif n <= 8:
                    shift |= tx << (n - 1)
                else:
                    assert tx == 1, f"a low stop bit after byte {len(reply)}"
                    reply.append(shift)
                    when.append(cycle)
                    start = None
        await RisingEdge(dut.clk)
        cycle += 1
    out = Path(os.environ["MMFREE_VECTORS"]).parent / "soc_run.npz"
    np.savez(out, reply=np.array(reply, dtype=np.uint8), reply_cycle=np.array(when, dtype=np.int64),
             cycles=np.int64(cycle), sent=np.int64(min(len(script), cycle // (10 * bit))))
    assert len(reply) == reply_len, f"{len(reply)} of {reply_len} reply bytes in {cycle} cycles: " \
                                    f"{bytes(reply[-40:])!r}"
