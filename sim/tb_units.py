"""cocotb testbench of the non-ternary compute units: every stream of :class:`mmfree.sim.unit_vectors.UnitsBench`.

Reads the vector file named by ``$MMFREE_VECTORS`` (the format of :mod:`mmfree.sim.tb_streams`:
``in__<port>`` / ``out__<port>`` payload rows, ``fields__<port>``, ``stall``, ``seed``), written by the
pytest process from :mod:`mmfree.numerics`; this module needs cocotb and numpy only.

Every input stream gets its payloads with a random idle cycle before each (probability ``stall``),
every output stream a random ``ready`` (low with probability ``stall``); all streams run at once.
Every output payload is compared bit for bit, in order, and every output stream is checked for the
stream rules: once ``valid`` is high it stays high, with the same payload, until the transfer; after
the expected beats none may come for :data:`~mmfree.sim.tb_common.DRAIN_CYCLES` clocks.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from mmfree.sim.tb_common import expect_no_extra_beats, start_clock_and_reset


def _load():
    with np.load(os.environ["MMFREE_VECTORS"], allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _ints(rows):
    return [int.from_bytes(bytes(r), "little") for r in rows]


def _describe(value, specs):
    parts = []
    for spec in specs:
        name, off, width, kind = str(spec).split(":")
        off, width = int(off), int(width)
        v = (value >> off) & ((1 << width) - 1)
        if kind == "s" and v >> (width - 1):
            v -= 1 << width
        parts.append(f"{name}={v}")
    return " ".join(parts) or hex(value)


@cocotb.test()
async def units(dut):
    """All units at once, random stalls on every stream, exact comparison, stream rules."""
    vec = _load()
    stall = float(vec.get("stall", 0.0))
    rng = random.Random(int(vec.get("seed", 1)))
    inputs = {k[4:]: _ints(v) for k, v in vec.items() if k.startswith("in__")}
    expect = {k[5:]: _ints(v) for k, v in vec.items() if k.startswith("out__")}
    fields = {k[8:]: list(v) for k, v in vec.items() if k.startswith("fields__")}
    port = {p: (getattr(dut, f"{p}__payload"), getattr(dut, f"{p}__valid"),
                getattr(dut, f"{p}__ready")) for p in list(inputs) + list(expect)}

    for p in inputs:
        port[p][1].value = 0
    for p in expect:
        port[p][2].value = 0
    await start_clock_and_reset(dut)

    sent = dict.fromkeys(inputs, 0)
    offering = dict.fromkeys(inputs, False)
    got = dict.fromkeys(expect, 0)
    held = dict.fromkeys(expect)            # payload offered and not taken at the last edge
    # the levels last written: a signal is written only when it changes (each write is a simulator call)
    valid_now = dict.fromkeys(inputs, 0)
    ready_now = dict.fromkeys(expect, 0)
    longest = max([len(v) for v in inputs.values()] + [len(v) for v in expect.values()])
    limit = 2000 + int(10 * longest / max(1e-3, 1 - stall))
    idle_limit = 5000                       # cycles without any transfer: something is stuck
    cycle = idle = 0
    while any(sent[p] < len(inputs[p]) for p in inputs) or \
            any(got[p] < len(expect[p]) for p in expect):
        await RisingEdge(dut.clk)
        cycle += 1
        idle += 1
        if cycle > limit or idle > idle_limit:
            status = ", ".join([f"{p}: sent {sent[p]}/{len(inputs[p])}" for p in inputs] +
                               [f"{p}: got {got[p]}/{len(expect[p])}" for p in expect])
            why = f"no transfer for {idle_limit} cycles" if idle > idle_limit else "timeout"
            raise AssertionError(f"{why} after {cycle} cycles ({status})")
        for p, beats in inputs.items():
            payload, valid, _ = port[p]
            if not offering[p]:
                if sent[p] < len(beats) and not (stall and rng.random() < stall):
                    payload.value = beats[sent[p]]
                    offering[p] = True
                    if not valid_now[p]:
                        valid.value = valid_now[p] = 1
                elif valid_now[p]:
                    valid.value = valid_now[p] = 0
        for p in expect:
            r = 0 if (stall and rng.random() < stall) else 1
            if r != ready_now[p]:
                port[p][2].value = ready_now[p] = r

        await ReadOnly()
        for p in inputs:
            if offering[p] and port[p][2].value == 1:
                offering[p] = False
                sent[p] += 1
                idle = 0
        for p, beats in expect.items():
            payload, valid, _ = port[p]
            is_valid = valid.value == 1
            value = payload.value.to_unsigned() if is_valid else None
            if held[p] is not None:
                assert is_valid, f"{p}: valid fell before the transfer (cycle {cycle})"
                assert value == held[p], (f"{p}: payload changed before the transfer (cycle {cycle}): "
                                          f"{_describe(held[p], fields.get(p, []))} -> "
                                          f"{_describe(value, fields.get(p, []))}")
            held[p] = None
            if not is_valid:
                continue
            if not ready_now[p]:
                held[p] = value
                continue
            i = got[p]
            assert i < len(beats), f"{p}: more than the {len(beats)} expected beats"
            assert value == beats[i], (f"{p} beat {i}: expected {_describe(beats[i], fields.get(p, []))}, "
                                       f"got {_describe(value, fields.get(p, []))}")
            got[p] += 1
            idle = 0

    await expect_no_extra_beats(dut, expect, inputs)
    for p in expect:
        dut._log.info(f"{p}: {got[p]} beats match, and no more")
    dut._log.info(f"{cycle} cycles")
