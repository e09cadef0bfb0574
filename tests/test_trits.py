# amaranth: UnusedElaboratable=no
"""TritStream: base-3 TRITS words in, the beats of a row-major pack_trits image out, at full rate."""

import random

import pytest
import torch
from amaranth.hdl import Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from mmfree import memory_map as mm
from mmfree import numerics as nx
from mmfree.hw.trits import TritStream, WordDecoder, decode_logic, decode_lookup, decode_table


def test_decode_table_is_pack_trits_of_base3():
    table = decode_table()
    for b in (0, 1, 2, 3, 121, 200, 242):
        trits = nx.unpack_trits_base3(torch.tensor([b], dtype=torch.uint8), 5)
        assert table[b] == int.from_bytes(nx.pack_trits(trits).numpy().tobytes(), "little")
    # worked by hand from the two formats: byte sum((t_k + 1) * 3**k); word: trit k's two's-complement
    # code (-1: 11, 0: 00, +1: 01) in bits 2k+1 .. 2k
    assert table[121] == 0                     # 121 = 1 + 3 + 9 + 27 + 81: five zero trits
    assert table[0] == 0b11_11_11_11_11        # five -1 trits
    assert table[5] == 0b11_11_11_00_01        # 5 = 2 + 1*3: trits +1, 0, -1, -1, -1
    assert table[242] == 0b01_01_01_01_01      # five +1 trits
    assert table[2 * 81 + 1 * 27] == 0b01_00_11_11_11   # trits -1, -1, -1, 0, +1
    assert nx.pack_trits_base3(torch.tensor([1, 0, -1, -1, -1])).tolist() == [5]


def test_trit_stream_checks_arguments():
    with pytest.raises(ValueError, match="fewer than lanes"):
        TritStream(64, 9, 10)
    with pytest.raises(ValueError, match="depth must be a positive int"):
        TritStream(8, 9, 0)


class _Bench(wiring.Component):
    def __init__(self, lanes, words, latency=1):
        self.wb = mm.trit_word_bytes(lanes)
        self.words = words
        self.lanes = lanes
        self.latency = latency
        super().__init__({"start": In(1), "active": In(1),
                          "o": Out(stream.Signature(2 * lanes))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=8 * self.wb, depth=len(self.words), init=self.words)
        m.submodules.ts = ts = TritStream(self.lanes, self.wb, len(self.words), latency=self.latency)
        rp = mem.read_port()
        data = rp.data
        for _ in range(self.latency - 1):               # the memory's output registered again
            reg = Signal.like(data)
            m.d.sync += reg.eq(data)
            data = reg
        m.d.comb += [rp.addr.eq(ts.rd.addr), ts.rd.data.eq(data), ts.start.eq(self.start),
                     ts.active.eq(self.active)]
        wiring.connect(m, ts.o, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("lanes,latency", [(8, 1), (16, 1), (32, 1), (64, 1), (8, 2), (32, 2), (32, 5)])
@pytest.mark.parametrize("stall", [False, True])
def test_trit_stream_beats(lanes, latency, stall):
    rng = random.Random(lanes * 2 + stall)
    beats = 3 * 45 + 7                                 # not a whole number of words
    trits = torch.tensor([rng.choice((-1, 0, 1)) for _ in range(beats * lanes)])
    wb = mm.trit_word_bytes(lanes)
    size = mm.trit_region_bytes(trits.numel(), lanes)
    padded = torch.cat([trits, trits.new_zeros(5 * size - trits.numel())])
    blob = nx.pack_trits_base3(padded).numpy().tobytes()
    words = [int.from_bytes(blob[k:k + wb], "little") for k in range(0, len(blob), wb)]
    image = int.from_bytes(nx.pack_trits(trits).numpy().tobytes(), "little")
    want = [(image >> (2 * lanes * k)) & ((1 << 2 * lanes) - 1) for k in range(beats)]
    dut = _Bench(lanes, words, latency)
    got, clocks = [], []

    async def bench(ctx):
        for run in range(2):                           # a restart reads the same sequence again
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.active, 1)
            n = 0
            for clk in range(10 * beats):
                ready = rng.random() < 0.6 if stall else True
                ctx.set(dut.o.ready, ready)
                if ctx.get(dut.o.valid) and ready:
                    if run == 0:
                        got.append(ctx.get(dut.o.payload))
                        clocks.append(clk)
                    n += 1
                await ctx.tick()
                if n == beats:
                    break
            ctx.set(dut.active, 0)
            ctx.set(dut.o.ready, 0)
            for _ in range(3):
                assert not ctx.get(dut.o.valid)
                await ctx.tick()
            assert n == beats

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want
    if not stall:                       # one beat every clock from the first_beat-th
        first = TritStream(lanes, wb, len(words), latency=latency).first_beat
        assert clocks == list(range(first, first + beats))


@pytest.mark.synth
def test_trit_stream_decoder_stays_in_logic(tmp_path):
    """Elaborated for a device, the decoder ahead of its register is a sum of products: as a table
    lookup, Yosys turns it and the register into block RAM ROMs (a DP16KD per byte decoded), which the
    demo build has no room for."""
    import subprocess
    from amaranth.back import rtlil
    from mmfree.hw.synth import ECP5_TARGET, yowasp_env
    (tmp_path / "ts.il").write_text(rtlil.convert(TritStream(32, 9, 31858), name="ts", emit_src=False,
                                                  platform=ECP5_TARGET))
    out = subprocess.run([yowasp_env()["YOSYS"], "-q", "-p",
                          "read_rtlil ts.il; synth_ecp5 -dff -top ts; tee -o stat.txt stat"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    stat = (tmp_path / "stat.txt").read_text()
    assert "TRELLIS_FF" in stat and "DP16KD" not in stat


def test_decoders_agree():
    """The sum of products (synthesis) and the table lookup (simulation) give the same trits for every
    byte, and both are decode_table."""
    byte = Signal(8)
    logic, lookup = Signal(10), Signal(10)
    m = Module()
    table = decode_table()
    m.d.comb += [logic.eq(decode_logic(byte, table)), lookup.eq(decode_lookup(byte, table))]
    got = []

    async def bench(ctx):
        for b in range(256):
            ctx.set(byte, b)
            got.append((ctx.get(logic), ctx.get(lookup)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [(v, v) for v in table]


def test_word_decoder():
    """A word of nine base-3 bytes in, its 45 trits in the 2-bit code out two clocks later, a word a
    clock (the decoding of TritStream alone, which ``mmfree report units`` measures)."""
    rng = random.Random(3)
    words = [bytes(rng.randrange(243) for _ in range(9)) for _ in range(20)]
    dut = WordDecoder(9)
    got = []

    async def bench(ctx):
        for k in range(len(words) + 2):
            if k < len(words):
                ctx.set(dut.i, int.from_bytes(words[k], "little"))
            await ctx.tick()
            if k >= 1:
                got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = []
    for w in words:
        trits = nx.unpack_trits_base3(torch.tensor(list(w), dtype=torch.uint8), 45)
        want.append(int.from_bytes(nx.pack_trits(trits).numpy().tobytes(), "little"))
    assert got[:len(words)] == want
    with pytest.raises(ValueError, match="word_bytes must be a positive int"):
        WordDecoder(0)
