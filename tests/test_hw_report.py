"""``mmfree report units``: the plan of units, argument errors, and the real flow on the smallest units."""

import json

import pytest

from mmfree.cli import main
from mmfree.hw import report
from mmfree.hw.ternary import TernaryMatVec
from mmfree.hw.trits import TritStream
from conftest import unused


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    (["report"], "required: REPORT"),
    (["report", "units", "--unit", "nothing"], "invalid choice: 'nothing'"),
    (["report", "units", "--lanes", "0"], "--lanes must be between 1 and 1024, not 0"),
    (["report", "units", "--lanes", "2048"], "--lanes must be between 1 and 1024, not 2048"),
    (["report", "units", "--lanes", "four"], "expected an integer, not 'four'"),
    (["report", "units", "--lanes", "3"], "--max-k 4096 is not a multiple of --lanes 3"),
    (["report", "units", "--max-k", "0"], "--max-k must be between 1 and"),
    (["report", "units", "--shape", "7B"], "invalid choice: '7B'"),
])
def test_argument_errors(capsys, argv, needle):
    """Bad arguments: one line on stderr, exit status 2, nothing synthesised."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmfree: error:") and needle in lines[0], err


def test_plan_defaults():
    """Every unit once, the matrix-vector unit at 64, 256 and 1024 lanes; 1024 lanes partly in LUT RAM
    and with spread_control."""
    rows = report.plan()
    assert [r.unit for r in rows] == ["ternary_matvec"] * 3 + list(report.UNITS[1:])
    mv = rows[:3]
    assert [r.lanes for r in mv] == [64, 256, 1024]
    assert [r.params for r in mv] == ["P=64 max_k=4096", "P=256 max_k=4096",
                                      "P=1024 max_k=4096 lut_lanes=128 spread_control"]
    assert mv[2].note == ("the codes of 128 lanes in LUT RAM, 896 in block RAM (200 DP16KD): all in "
                          "block RAM would need 228 DP16KD, the LFE5U-85F has 208")
    unit = mv[2].factory()
    assert isinstance(unit, TernaryMatVec) and unit.act_lut_lanes == 128 and unit.max_k == 4096
    assert unused(unit).spread_control
    for row in mv[:2]:
        unit = unused(row.factory())
        assert unit.act_lut_lanes == 0 and not unit.spread_control and row.note is None
    # a row unit's weight stream and its word decoder, as the demo preset builds them
    stream, decoder = rows[3:5]
    assert (stream.unit, stream.params, stream.lanes) == ("trit_stream", "P=32 word_bytes=9 depth=7965 (demo)", 32)
    assert (decoder.unit, decoder.params, decoder.lanes) == ("trit_decode", "word_bytes=8 (demo: a beat of 32 trits)", 32)
    unit = unused(stream.factory())
    assert isinstance(unit, TritStream) and (unit.lanes, unit.word_bytes, unit.depth) == (32, 9, 7965)
    assert unused(decoder.factory()).word_bytes == 8 == unit.window_bytes
    assert rows[5].params == "acc_width=21 (max_k=4096)"
    from mmfree.hw.config import DEMO_SHAPE
    assert next(r for r in rows if r.unit == "mlgru").params == \
        f"hidden={DEMO_SHAPE.hidden_size} layers={DEMO_SHAPE.num_layers} (demo)"
    for r in rows:
        unused(r.factory())


def test_plan_shapes_and_selection():
    rows = report.plan(["glu", "rmsnorm", "glu"], shape="370M")
    assert [(r.unit, r.params) for r in rows] == [("rmsnorm", "lengths=1024,2816 (370M)"),
                                                  ("glu", "intermediate=2816 (370M)")]
    assert set(report.SHAPES) == set(report._shapes())
    for r in rows:
        unused(r.factory())


def test_act_lut_lanes_for():
    """Lanes move to LUT RAM only where the block RAM would not fit, 64 at a time, whatever max_k."""
    assert [report.act_lut_lanes_for(p, 4096) for p in (1, 64, 256, 512, 896)] == [0] * 5
    assert report.act_lut_lanes_for(1024, 4096) == report.act_lut_lanes_for(1024, 1024) == 128
    assert report.act_lut_lanes_for(960, 960 * 4) == 64


def test_dp16kd_count():
    assert report.dp16kd_for(8 * 256, 32) == 57          # 36-bit wide blocks, however shallow
    assert report.dp16kd_for(8 * 1024, 2) == 228
    assert report.dp16kd_for(8, 4096) == 2               # 4 bits x 4096 each
    assert report.dp16kd_for(1, 16384) == 1


@pytest.mark.synth
@pytest.mark.slow
def test_report_units_real_flow(capsys, tmp_path, monkeypatch):
    """The whole flow (Yosys, nextpnr) on the two smallest units, then the same from the cache as JSON."""
    monkeypatch.setenv("MMFREE_SYNTH_CACHE", str(tmp_path))
    argv = ["report", "units", "--unit", "lb_blend", "ternary_matvec", "--lanes", "4", "--max-k", "8"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["unit", "parameters", "LUT4", "LUT4/lane", "FF", "BRAM", "DSP", "Fmax",
                                "MHz", "limited", "by", "goals"]
    assert set(lines[1]) <= {"-", " "}
    mv, lb = lines[2].split(), lines[3].split()
    assert mv[:3] == ["ternary_matvec", "P=4", "max_k=8"] and lb[0] == "lb_blend"
    lut4, per_lane = int(mv[3]), float(mv[4])
    assert lut4 > 0 and per_lane == round(lut4 / 4, 1) and mv[7] == "0"       # no DSP
    assert lb[1] == "-" and int(lb[5]) >= 1                                   # a DSP multiplier
    assert any(line.startswith("goals: every unit >= 100 MHz") for line in lines)
    # progress on stderr: both units, both tools
    assert "[1/2] ternary_matvec P=4 max_k=8: yosys" in err and "[2/2] lb_blend: nextpnr-ecp5" in err

    code, out, err = run(capsys, *argv, "--json")
    assert code == 0 and "cached" in err
    doc = json.loads(out)
    assert doc["device"] == "LFE5U-85F" and doc["speed"] == 6
    u = {r["unit"]: r for r in doc["units"]}
    assert u["ternary_matvec"]["lut4"] == lut4 and u["ternary_matvec"]["lut4_per_lane"] == per_lane
    assert u["ternary_matvec"]["lanes"] == 4 and u["lb_blend"]["lanes"] is None
    assert all(r["cached"] for r in doc["units"])
    for r in doc["units"]:
        assert {"lut4", "ff", "bram", "dsp", "fmax_mhz", "goals", "met"} <= set(r)
        assert r["met"] == all(g["met"] for g in r["goals"])
        assert r["goals"][0]["goal"] == "Fmax >= 100 MHz"
        assert (r["goals"][0]["met"]) == (r["fmax_mhz"] >= 100)
    assert [g["goal"] for g in u["ternary_matvec"]["goals"]] == ["Fmax >= 100 MHz", "0 DSP"]
    for r in doc["units"]:
        path = r["critical_path"]
        assert path["limit"] in ("BRAM output", "DSP multiplier", "logic", "routing")
        assert abs(1000 / (path["logic_ns"] + path["routing_ns"]) - r["fmax_mhz"]) < 1
    assert doc["met"] == all(r["met"] for r in doc["units"])
    # the text's last line counts the goals missed, the same results (from the cache) as the JSON
    missed = sum(not g["met"] for r in doc["units"] for g in r["goals"])
    assert lines[-1] == ("all goals met." if not missed else f"{missed} goal(s) missed.")

    code, out, err = run(capsys, "report", "units", "--unit", "lb_blend", "--json", "--quiet")
    assert code == 0 and err == "" and json.loads(out)["units"][0]["unit"] == "lb_blend"


LOG = """Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  5.83  5.83 Source buf.0.1.DOB0
Info:    routing  3.03  8.85 Net rdata[54] (69,22) -> (42,11)
Info:                          Sink lane6_TRELLIS_FF_Q_3.M
Info:      setup  0.00  8.85 Source lane6_TRELLIS_FF_Q_3.M
Info: 5.83 ns logic, 3.03 ns routing

Info: Max frequency for clock 'clk': 112.93 MHz (PASS at 100.00 MHz)
"""


def test_critical_path():
    assert report.critical_path(LOG) == {"from": "buf.0.1.DOB0", "to": "lane6_TRELLIS_FF_Q_3.M",
                                         "logic_ns": 5.83, "routing_ns": 3.03, "limit": "BRAM output"}
    dsp = LOG.replace("buf.0.1.DOB0", "a_FF.Q").replace("Net rdata", "Source x_MULT18X18D_B9.P20\nNet r")
    assert report.critical_path(dsp)["limit"] == "DSP multiplier"
    assert report.critical_path(LOG.replace("buf.0.1.DOB0", "a_FF.Q"))["limit"] == "logic"
    assert report.critical_path("Info: Program finished normally.") is None
