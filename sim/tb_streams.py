"""cocotb testbench for any component whose ports are ``amaranth.lib.stream`` interfaces.

The vectors come from the file named by ``$MMFREE_VECTORS`` (an ``.npz`` written by the pytest
process through :func:`mmfree.sim.runner.run_cocotb`); this module needs cocotb and numpy only.

File contents:

``in__<port>``
    ``uint8 [beats, bytes]``: the payloads to send on input stream ``<port>``, little-endian.
``out__<port>``
    ``uint8 [beats, bytes]``: the payloads expected on output stream ``<port>``, compared bit for bit;
    a beat after them (watched for :data:`~mmfree.sim.tb_common.DRAIN_CYCLES` clocks) fails the test.
``fields__<port>`` (optional)
    strings ``"name:offset:width:s|u"`` used to print a mismatching payload field by field.
``stall``
    probability that a producer inserts an idle cycle before a beat, and that a consumer holds
    ``ready`` low in a cycle (0 for a stall-free run).
``seed``
    seed of the stall pattern.
``measure`` (optional)
    name of an input port whose transfers are counted: the test then reports the transfers and the
    cycles from the first transfer to the last, and with ``full_rate`` set fails unless they are equal.

Ports follow Amaranth's naming: ``<port>__payload``, ``<port>__valid``, ``<port>__ready``, ``clk``,
``rst``. A producer keeps ``valid`` and the payload until the transfer, as the stream rules demand,
and every output stream is checked for the same: once ``valid`` is high it stays high, with the same
payload, until the transfer.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from mmfree.sim.tb_common import expect_no_extra_beats, start_clock_and_reset


def _load():
    path = os.environ["MMFREE_VECTORS"]
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _ints(rows):
    return [int.from_bytes(bytes(r), "little") for r in rows]


def _describe(value, fields):
    if fields is None:
        return hex(value)
    parts = []
    for spec in fields:
        name, off, width, kind = str(spec).split(":")
        off, width = int(off), int(width)
        v = (value >> off) & ((1 << width) - 1)
        if kind == "s" and v >> (width - 1):
            v -= 1 << width
        parts.append(f"{name}={v}")
    return " ".join(parts)


async def _run(dut, vec):
    stall = float(vec.get("stall", 0.0))
    rng = random.Random(int(vec.get("seed", 1)))
    inputs = {k[4:]: _ints(v) for k, v in vec.items() if k.startswith("in__")}
    expect = {k[5:]: _ints(v) for k, v in vec.items() if k.startswith("out__")}
    fields = {k[8:]: list(v) for k, v in vec.items() if k.startswith("fields__")}
    measure = str(vec["measure"]) if "measure" in vec else None

    h = {p: (getattr(dut, f"{p}__payload"), getattr(dut, f"{p}__valid"), getattr(dut, f"{p}__ready"))
         for p in list(inputs) + list(expect)}
    for p in inputs:
        h[p][1].value = 0
    for p in expect:
        h[p][2].value = 0

    await start_clock_and_reset(dut)

    sent = {p: 0 for p in inputs}
    holding = {p: False for p in inputs}
    # the levels last written: a signal is written only when it changes (each write is a simulator call)
    valid_now = {p: 0 for p in inputs}
    ready_now = {p: 0 for p in expect}
    held = {p: None for p in expect}        # payload offered and not taken at the last edge
    got = {p: [] for p in expect}
    first = last = None
    transfers = 0
    total_beats = sum(len(v) for v in inputs.values()) + sum(len(v) for v in expect.values())
    limit = 50 + int(40 * total_beats / max(1e-3, 1 - stall))
    cycle = 0

    while True:
        await RisingEdge(dut.clk)
        cycle += 1
        if all(len(got[p]) >= len(expect[p]) for p in expect) and \
                all(sent[p] == len(inputs[p]) for p in inputs):
            break
        if cycle > limit:
            status = ", ".join([f"{p}: sent {sent[p]}/{len(inputs[p])}" for p in inputs] +
                               [f"{p}: got {len(got[p])}/{len(expect[p])}" for p in expect])
            raise AssertionError(f"timeout after {cycle} cycles ({status})")
        for p, beats in inputs.items():
            payload, valid, _ = h[p]
            if not holding[p]:
                if sent[p] < len(beats) and not (stall and rng.random() < stall):
                    payload.value = beats[sent[p]]
                    holding[p] = True
                    if not valid_now[p]:
                        valid.value = valid_now[p] = 1
                elif valid_now[p]:
                    valid.value = valid_now[p] = 0
        for p in expect:
            r = 0 if (stall and rng.random() < stall) else 1
            if r != ready_now[p]:
                h[p][2].value = ready_now[p] = r

        await ReadOnly()
        for p in inputs:
            if holding[p] and h[p][2].value == 1:
                holding[p] = False
                sent[p] += 1
                if p == measure:
                    transfers += 1
                    first = cycle if first is None else first
                    last = cycle
        for p in expect:
            payload, valid, ready = h[p]
            is_valid = valid.value == 1
            if held[p] is not None:
                if not is_valid:
                    raise AssertionError(f"{p}: valid fell before the transfer (cycle {cycle})")
                v = payload.value.to_unsigned()
                if v != held[p]:
                    raise AssertionError(f"{p}: payload changed before the transfer (cycle {cycle}): "
                                         f"{_describe(held[p], fields.get(p))} -> {_describe(v, fields.get(p))}")
            held[p] = None
            if is_valid and not ready_now[p]:
                held[p] = payload.value.to_unsigned()
            if ready_now[p] and is_valid:
                v = payload.value.to_unsigned()
                i = len(got[p])
                if i >= len(expect[p]):
                    raise AssertionError(f"{p}: more than the {len(expect[p])} expected beats")
                if v != expect[p][i]:
                    raise AssertionError(
                        f"{p} beat {i}: expected {_describe(expect[p][i], fields.get(p))}, "
                        f"got {_describe(v, fields.get(p))}")
                got[p].append(v)

    await expect_no_extra_beats(dut, expect, inputs)
    for p in expect:
        dut._log.info(f"{p}: {len(got[p])} beats match, and no more")
    if measure is not None:
        span = last - first + 1
        dut._log.info(f"{measure}: {transfers} transfers in {span} cycles ({transfers / span:.4f} per cycle)")
        with open(os.path.join(os.path.dirname(os.environ["MMFREE_VECTORS"]), "measure.txt"), "w") as f:
            f.write(f"{transfers} {span}\n")
        if int(vec.get("full_rate", 0)):
            assert transfers == span, \
                f"{measure}: {transfers} transfers in {span} cycles, expected one per cycle"


@cocotb.test()
async def streams(dut):
    """Drive every input stream, check every output stream against the vector file."""
    await _run(dut, _load())
