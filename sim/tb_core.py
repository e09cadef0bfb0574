"""cocotb testbench of the token engine (:class:`mmfree.hw.core.Core`): load a model, run a request
script, compare every answer with the golden model's.

The vectors come from the file named by ``$MMFREE_VECTORS`` (written by the pytest process); this module
needs cocotb and numpy only. File contents:

``region__<name>``
    ``uint8 [words, bytes]``: the words of region ``<name>`` (``trits``, ``params``, ``gates``,
    ``scalars``), little-endian, written through the port ``wr_<name>`` one per clock.
``commands``
    ``int64 [n, 2]``: ``(cmd, token)`` requests in order; ``cmd`` 0 is STEP, 1 RESET_STATE.
``expect``
    ``int64 [steps, 2]``: ``(token, logit)`` expected for every STEP, in order.
``logits``, ``logits_latency``
    ``int64 [steps, V]``: every STEP's whole row of logits (ACT codes), read back through
    ``rd_logits`` after the answer and compared bit for bit; the port's latency in clocks.
``weights_per_token``, ``lanes``
    for the lane utilisation figure.

The run writes ``core_report.json`` next to the vector file (only when every answer and every row of
logits matched): tokens, cycles of every token,
mean cycles per token and utilisation (``weights_per_token / (lanes * cycles)``).
"""

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from mmfree.sim.tb_common import start_clock_and_reset

STEP, RESET_STATE = 0, 1


def _load():
    with np.load(os.environ["MMFREE_VECTORS"], allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _signed(value, bits):
    return value - (1 << bits) if value >> (bits - 1) else value


async def _write_region(dut, name, rows):
    addr, data, en = (getattr(dut, f"wr_{name}__{f}") for f in ("addr", "data", "en"))
    en.value = 1
    for a, row in enumerate(rows):
        addr.value = a
        data.value = int.from_bytes(bytes(row), "little")
        await RisingEdge(dut.clk)
    en.value = 0


async def _request(dut, cmd, token):
    """Offer one request and hold it until the edge that transfers it."""
    dut.req__payload.value = (token << 1) | cmd          # {cmd: 1 bit, token}
    dut.req__valid.value = 1
    while True:
        await ReadOnly()
        taken = dut.req__ready.value == 1
        await RisingEdge(dut.clk)
        if taken:
            break
    dut.req__valid.value = 0


async def _read_logits(dut, vocab, latency):
    """The ``vocab`` logits left in ``Y``, one address held for ``latency`` clocks at a time."""
    addr, data = dut.rd_logits__addr, dut.rd_logits__data
    row = []
    for v in range(vocab):
        addr.value = v
        for _ in range(latency):
            await RisingEdge(dut.clk)
        await ReadOnly()
        row.append(data.value.to_signed())
        await RisingEdge(dut.clk)
    return row


async def _result(dut, limit):
    """Wait (polling each clock) for an answer; take it. Returns ``(payload, cycles)``."""
    for _ in range(limit):
        await ReadOnly()
        if dut.res__valid.value == 1:
            break
        await RisingEdge(dut.clk)
    else:
        raise AssertionError(f"no answer within {limit} cycles")
    payload = dut.res__payload.value.to_unsigned()
    cycles = dut.cycles.value.to_unsigned()
    await RisingEdge(dut.clk)
    dut.res__ready.value = 1
    await RisingEdge(dut.clk)
    dut.res__ready.value = 0
    return payload, cycles


@cocotb.test()
async def core(dut):
    """Load the regions, run the script, compare every answer."""
    vec = _load()
    token_bits = len(dut.res__payload) - 24 - 1
    dut.req__valid.value = 0
    dut.res__ready.value = 0
    for name in ("trits", "params", "gates", "scalars"):
        getattr(dut, f"wr_{name}__en").value = 0
    await start_clock_and_reset(dut)
    await RisingEdge(dut.clk)

    for name in ("trits", "params", "gates", "scalars"):
        await _write_region(dut, name, vec[f"region__{name}"])
    dut._log.info("model loaded")

    expect = [tuple(int(v) for v in row) for row in vec["expect"]]
    want_logits = vec["logits"].tolist()
    vocab, latency = vec["logits"].shape[1], int(vec["logits_latency"])
    got, cycles = [], []
    for cmd, token in vec["commands"]:
        cmd, token = int(cmd), int(token)
        await _request(dut, cmd, token)
        if cmd != STEP:
            continue
        payload, n = await _result(dut, int(vec.get("limit", 10_000_000)))
        tok = payload & ((1 << token_bits) - 1)
        logit = _signed((payload >> token_bits) & ((1 << 24) - 1), 24)
        error = payload >> (token_bits + 24)
        i = len(got)
        got.append((tok, logit))
        cycles.append(n)
        dut._log.info(f"step {i}: token {token} -> {tok} (logit {logit}), {n} cycles")
        assert error == 0, f"step {i}: the core answered with its error flag"
        assert (tok, logit) == expect[i], f"step {i}: got {(tok, logit)}, golden {expect[i]}"
        row = await _read_logits(dut, vocab, latency)
        wrong = [v for v in range(vocab) if row[v] != want_logits[i][v]]
        assert not wrong, (f"step {i}: {len(wrong)} of {vocab} logits differ from the golden model's, "
                           f"first at {wrong[0]}: {row[wrong[0]]} != {want_logits[i][wrong[0]]}")

    mean = sum(cycles) / len(cycles)
    weights = int(vec["weights_per_token"])
    lanes = int(vec["lanes"])
    report = dict(tokens=len(got), cycles=cycles,
                  cycles_per_token=mean, weights_per_token=weights, lanes=lanes,
                  utilisation=weights / (lanes * mean))
    with open(os.path.join(os.path.dirname(os.environ["MMFREE_VECTORS"]), "core_report.json"), "w") as f:
        json.dump(report, f)
    dut._log.info(f"{len(got)} tokens match; {mean:.0f} cycles per token, utilisation "
                  f"{100 * report['utilisation']:.1f}%")
