# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the non-ternary compute units against :mod:`mmfree.numerics`, bit for bit.

Every stream is driven with random valid/ready stalls, and every output stream is checked for the
stream rules (valid holds, payload stable until the transfer).
"""

import random

import pytest
import torch
from amaranth.sim import Simulator

from mmfree import numerics as nx
from mmfree.numerics import ACT, PFloat
from mmfree.hw.activations import (
    Sigmoid, SiLU, SiLUState, MulAct, LowerBoundBlend, StateUpdate, ApplyNormWeight,
)
from mmfree.hw.rmsnorm import RMSNormQuantizer, OutputScale, MAX_LENGTH
from mmfree.hw.mlgru import MLGRU
from mmfree.hw.glu import GLU
from mmfree.sim.unit_vectors import (
    ELEMENTS, element_cases, element_reference, norm_cases, norm_reference, norm_beats,
    mlgru_steps, mlgru_beats, glu_tokens, glu_reference,
)


# --- stream helpers ------------------------------------------------------------------------------


async def _send(ctx, port, items, rng, stall):
    """Drive ``items`` onto the stream ``port``, idling a random number of cycles before each."""
    for item in items:
        while rng.random() < stall:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, item)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def _recv(ctx, port, count, rng, stall, out, fields=None):
    """Take ``count`` transfers from ``port`` with random ready stalls; check the stream rules."""
    held = None                 # payload offered but not taken at the last edge
    while len(out) < count:
        ready = rng.random() >= stall
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        value = _decode(payload, fields)
        if held is not None:
            assert valid, "valid dropped before the transfer"
            assert value == held, f"payload changed before the transfer: {held} -> {value}"
        held = None
        if valid and ready:
            out.append(value)
        elif valid:
            held = value
    ctx.set(port.ready, 0)


def _decode(payload, fields):
    if fields is None:
        return int(payload) if not hasattr(payload, "as_value") else payload.as_value().value
    return tuple(_field(payload, f) for f in fields)


def _field(payload, name):
    for part in name.split("."):
        payload = getattr(payload, part)
    return int(payload) if not hasattr(payload, "as_value") else payload.as_value().value


def _run(dut, *testbenches, deadline=200_000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)

    async def watchdog(ctx):
        await ctx.delay(deadline * 1e-8)
        raise AssertionError(f"simulation did not finish in {deadline} cycles")

    sim.add_testbench(watchdog, background=True)
    sim.run()


def _stream_test(dut, port_in, items, port_out, count, seed, *, stall_in=0.3, stall_out=0.3,
                 fields=None):
    rng = random.Random(seed)
    got = []

    async def tx(ctx):
        await _send(ctx, port_in, items, random.Random(rng.random()), stall_in)

    async def rx(ctx):
        await _recv(ctx, port_out, count, random.Random(rng.random()), stall_out, got, fields)

    _run(dut, tx, rx)
    return got


# --- element-wise units --------------------------------------------------------------------------

@pytest.mark.sim
@pytest.mark.parametrize("name", list(ELEMENTS))
def test_element(name):
    """Each element unit on 600 seeded inputs (extremes of every format included), random stalls."""
    seed = list(ELEMENTS).index(name) + 1
    cases = element_cases(name, random.Random(seed), 600)
    dut = ELEMENTS[name]()
    got = _stream_test(dut, dut.i, cases, dut.o, len(cases), 10 + seed)
    assert got == element_reference(name, cases)


def test_apply_norm_weight_int64_range():
    """Where ``x * w << -w_exp`` would leave int64, ``apply_norm_weight`` still saturates exactly, as
    the hardware does and as the same definition on unbounded integers does."""
    x, w, e = 6564614, 12927, -32
    assert int(nx.apply_norm_weight(_t([x]), _t([w]), e)[0]) == ACT.max
    assert int(nx.apply_norm_weight(_t([-x]), _t([w]), e)[0]) == ACT.min
    assert element_reference("norm_weight", [{"x": x, "w_mant": w, "w_exp": e}]) == [ACT.max]
    assert ACT.saturate(nx.shift_round(x * w, e)) == ACT.max


def _t(xs):
    return torch.tensor(xs, dtype=torch.int64)


# --- RMSNorm and quantiser -----------------------------------------------------------------------

def _pf(p):
    return {"mant": p.mant, "exp": p.exp}


def _lanes(value, width):
    """The ``width`` signed 8-bit codes packed in ``value`` (``code[0]`` lowest)."""
    return [((value >> (8 * j)) & 0xFF) - (((value >> (8 * j)) & 0x80) << 1) for j in range(width)]


def _ungroup(groups, width):
    """``(code, last)`` per element from ``(packed codes, last)`` per group; ``last`` on the group's
    final element."""
    if width == 1:
        return groups
    return [(c, l if j == width - 1 else 0) for g, l in groups for j, c in enumerate(_lanes(g, width))]


def _run_norm(lengths, vecs, seed, stall_in=0.3, stall_out=0.3, width=1):
    dut = RMSNormQuantizer(lengths, width=width)
    rng = random.Random(seed)
    items, _, _ = norm_beats(vecs)
    groups, scales = [], []

    async def tx(ctx):
        await _send(ctx, dut.i, items, random.Random(rng.random()), stall_in)

    async def rx_codes(ctx):
        await _recv(ctx, dut.codes, len(items) // width, random.Random(rng.random()), stall_out,
                    groups, ("code", "last"))

    async def rx_scale(ctx):
        await _recv(ctx, dut.scale, len(vecs), random.Random(rng.random()), stall_out, scales,
                    ("mant", "exp"))

    _run(dut, tx, rx_codes, rx_scale)
    codes = _ungroup(groups, width)
    pos = 0
    for n, (v, w, e, mm) in enumerate(vecs):
        ref_codes, ref_scale = norm_reference((v, w, e, mm))
        got = codes[pos:pos + len(v)]
        pos += len(v)
        assert [c for c, _ in got] == ref_codes, f"vector {n}: codes"
        assert [l for _, l in got] == [0] * (len(v) - 1) + [1], f"vector {n}: last"
        assert scales[n] == ref_scale, f"vector {n}: scale {scales[n]} != {ref_scale}"
    return dut


@pytest.mark.sim
def test_rmsnorm_quantizer():
    rng = random.Random(21)
    _run_norm((24, 40), norm_cases(rng, (24, 40), 14), 22)


@pytest.mark.sim
def test_rmsnorm_quantizer_back_to_back():
    """No stalls: vectors of a length above the scale latency, one after the other."""
    rng = random.Random(23)
    _run_norm((200,), norm_cases(rng, (200,), 3), 24, stall_in=0.0, stall_out=0.0)


@pytest.mark.sim
def test_output_scale_unit():
    rng = random.Random(25)
    dut = OutputScale(1 << 17)
    cases = [(0, 12, 5, 64, PFloat(40000, -20)), (5, 12, 0, 64, PFloat(40000, -20)),
             ((1 << 38), -20, ((1 << 17) - 1) << 46, (1 << 17) - 1, PFloat(65535, 1000)),
             (1, 75, 1, 1, PFloat(32768, -1000)), (3, 12, 7, 3, PFloat(3, 0))]
    while len(cases) < 300:
        k = rng.choice([1, 2, 3, 7, 64, 1000, 1 << 17])
        cases.append((rng.randint(1, 1 << rng.randint(1, 38)), rng.randint(-20, 75),
                      rng.randint(1, k << rng.randint(0, 46)), k,
                      PFloat(rng.randint(0, 65535), rng.randint(-200, 200))))
    items = [{"zmax": z, "z_exp": ze, "ss": s, "k_recip": _pf(nx.pf_recip(k)), "m": _pf(mm)}
             for z, ze, s, k, mm in cases]
    got = _stream_test(dut, dut.i, items, dut.o, len(items), 26, fields=("mant", "exp"))
    for (z, ze, s, k, mm), g in zip(cases, got):
        ref = nx.output_scale(z, ze, s, k, mm)
        assert g == (ref.mant, ref.exp), (z, ze, s, k, mm)


@pytest.mark.sim
@pytest.mark.parametrize("width", [1, 2, 4])
def test_rmsnorm_length_error(width):
    """A length not in ``lengths`` (5, not a multiple of 2 or 4 either: ceil(5 / Q) groups, the lanes
    past the fifth element unspecified): a zero scale and the error."""
    dut = RMSNormQuantizer((4, 8), width=width)
    items = [{"v": 100 * (j + 1), "w_mant": 1 << 14, "w_exp": 14, "m": _pf(PFloat(40000, -20)),
              "last": j == 4} for j in range(5)]
    rng = random.Random(27)
    scales, groups, err = [], [], []
    n = -(-5 // width)

    async def tx(ctx):
        await _send(ctx, dut.i, items, rng, 0.0)

    async def rx(ctx):
        await _recv(ctx, dut.scale, 1, rng, 0.0, scales, ("mant", "exp"))
        err.append(ctx.get(dut.length_error))

    async def rxc(ctx):
        await _recv(ctx, dut.codes, n, rng, 0.0, groups, ("code", "last"))

    _run(dut, tx, rx, rxc)
    assert scales == [(0, 0)] and err == [1]
    codes = _ungroup(groups, width)
    assert [c for c, _ in codes[:5]] == nx.quantize_activations(_t([100 * (j + 1) for j in range(5)]))[0].tolist()
    assert [l for _, l in groups] == [0] * (n - 1) + [1]


@pytest.mark.sim
@pytest.mark.parametrize("width", [1, 2, 4])
def test_rmsnorm_too_long(width):
    """A vector longer than the buffer: the excess is dropped (its codes are those of the whole vector
    without it: max|z| covers it), the error is set, and the next vector is exact again."""
    dut = RMSNormQuantizer((4, 8), width=width)
    rng = random.Random(29)
    v = [rng.randint(-5000, 5000) for _ in range(11)]
    w = [rng.randint(1, 1 << 14) for _ in range(11)]
    good = norm_cases(random.Random(30), (8,), 9)[-1]
    items, _, _ = norm_beats([(v, w, 14, PFloat(40000, -20)), good])
    scales, groups, err = [], [], []

    async def tx(ctx):
        await _send(ctx, dut.i, items, rng, 0.0)

    async def rx(ctx):
        await _recv(ctx, dut.scale, 2, rng, 0.2, scales, ("mant", "exp"))
        err.append(ctx.get(dut.length_error))

    async def rxc(ctx):
        await _recv(ctx, dut.codes, 16 // width, rng, 0.2, groups, ("code", "last"))

    _run(dut, tx, rx, rxc)
    assert err == [1]
    codes = _ungroup(groups, width)
    assert [c for c, _ in codes[:8]] == nx.quantize_activations(_t(v) * _t(w))[0].tolist()[:8]
    assert [l for _, l in codes] == ([0] * 7 + [1]) * 2
    ref_codes, ref_scale = norm_reference(good)
    assert [c for c, _ in codes[8:]] == ref_codes and scales[1] == ref_scale


@pytest.mark.synth
@pytest.mark.parametrize("lut_ram", [False, True])
def test_rmsnorm_banks_memory(lut_ram, tmp_path):
    """Synthesised for the ECP5, the quantiser's eight banks of 64 words are block RAM (two DP16KD
    each: 40-bit words) or, with ``lut_ram``, LUT RAM and no block RAM at all."""
    import re
    import subprocess
    from amaranth.back import rtlil
    from mmfree.hw.synth import ECP5_TARGET, yowasp_env
    dut = RMSNormQuantizer(tuple(range(32, 513, 32)), width=8, lut_ram=lut_ram)
    (tmp_path / "q.il").write_text(rtlil.convert(dut, name="q", emit_src=False, platform=ECP5_TARGET))
    out = subprocess.run([yowasp_env()["YOSYS"], "-q", "-p",
                          "read_rtlil q.il; synth_ecp5 -top q; tee -o stat.txt stat"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$",
                                                    (tmp_path / "stat.txt").read_text(), re.M)}
    if lut_ram:
        assert "DP16KD" not in cells and cells["TRELLIS_DPR16X4"] >= 8 * 4 * 10
    else:
        assert cells["DP16KD"] == 16 and "TRELLIS_DPR16X4" not in cells


def test_rmsnorm_arguments():
    with pytest.raises(TypeError, match="lengths must hold ints, not 'x'"):
        RMSNormQuantizer((4, "x"))
    with pytest.raises(ValueError, match=r"each of lengths must be in 1\.\.132104, not 0"):
        RMSNormQuantizer(0)
    with pytest.raises(ValueError, match="lengths must not be empty"):
        RMSNormQuantizer(())
    with pytest.raises(TypeError, match="lengths must be an int or a sequence of ints, not 2.5"):
        RMSNormQuantizer(2.5)
    with pytest.raises(ValueError, match="max_length must be in"):
        OutputScale(MAX_LENGTH + 1)
    assert RMSNormQuantizer((64, 16, 64)).lengths == (16, 64)
    for width in (3, 0, 32, -2):
        with pytest.raises(ValueError, match=f"width must be a power of two in 1..16, not {width}"):
            RMSNormQuantizer(16, width=width)
    for width in (2.0, "2", True):
        with pytest.raises(TypeError, match="width must be an int, not"):
            RMSNormQuantizer(16, width=width)
    with pytest.raises(ValueError, match="each of lengths must be a multiple of width 4, not 18"):
        RMSNormQuantizer((16, 18), width=4)
    with pytest.raises(ValueError, match="each of lengths must be a multiple of width 16, not 8"):
        RMSNormQuantizer(8, width=16)


def test_rmsnorm_width_interface():
    """The ``codes`` payload: ``code`` signed(8) and ``last`` for width 1, an array of width codes
    (``code[0]`` lowest) and ``last`` otherwise."""
    from amaranth.hdl import signed
    from amaranth.lib import data
    dut = RMSNormQuantizer((16, 64))
    assert dut.width == 1
    assert dut.codes.payload.shape() == data.StructLayout({"code": signed(8), "last": 1})
    for width in (2, 4, 8, 16):
        dut = RMSNormQuantizer((16, 64), width=width)
        assert dut.width == width
        layout = dut.codes.payload.shape()
        assert layout == data.StructLayout({"code": data.ArrayLayout(signed(8), width), "last": 1})
        assert layout["code"].offset == 0 and layout["last"].offset == 8 * width
    assert _lanes(0x80_7F_FF_01, 4) == [1, -1, 127, -128]


@pytest.mark.sim
@pytest.mark.parametrize("width,lengths,count", [(2, (24, 40), 12), (4, (24, 40), 12), (8, (16, 64), 10)])
def test_rmsnorm_quantizer_width(width, lengths, count):
    """Q codes per transfer: random vectors and norm weights of every length, random stalls on every
    stream."""
    rng = random.Random(100 + width)
    _run_norm(lengths, norm_cases(rng, lengths, count), 200 + width, width=width)


@pytest.mark.sim
@pytest.mark.parametrize("width", [2, 4])
def test_rmsnorm_quantizer_width_back_to_back(width):
    """No stalls: vectors of two lengths above the scale latency, one after the other."""
    rng = random.Random(300 + width)
    _run_norm((160, 200), norm_cases(rng, (160, 200), 4), 400 + width, stall_in=0.0, stall_out=0.0,
              width=width)


@pytest.mark.sim
@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_rmsnorm_quantizer_throughput(width):
    """With ``codes.ready`` high, pass 2 emits one group every clock (K / Q consecutive transfers per
    vector), and a stream of vectors takes ``max(K + K / Q + 10, 135)`` cycles or fewer each."""
    k, n = 256, 3
    dut = RMSNormQuantizer(k, width=width)
    vecs = norm_cases(random.Random(500 + width), (k,), 8)[-n:]
    items, _, _ = norm_beats(vecs)
    cycles, groups = [], []

    async def tx(ctx):
        await _send(ctx, dut.i, items, random.Random(1), 0.0)

    async def rx(ctx):
        ctx.set(dut.codes.ready, 1)
        ctx.set(dut.scale.ready, 1)
        t = 0
        while len(groups) < n * k // width:
            _, _, valid, payload = await ctx.tick().sample(dut.codes.valid, dut.codes.payload)
            t += 1
            if valid:
                cycles.append(t)
                groups.append((_field(payload, "code"), _field(payload, "last")))

    _run(dut, tx, rx)
    codes = _ungroup(groups, width)
    g = k // width
    for v in range(n):
        run = cycles[v * g:(v + 1) * g]
        assert run == list(range(run[0], run[0] + g)), f"vector {v}: a gap in pass 2"
        assert [c for c, _ in codes[v * k:(v + 1) * k]] == norm_reference(vecs[v])[0]
    period = [cycles[(v + 1) * g] - cycles[v * g] for v in range(n - 1)]
    assert period == [max(k + g + 10, 135)] * (n - 1), period


# --- MLGRU ---------------------------------------------------------------------------------------

def _run_mlgru(hidden, layers, steps, seed, stall_in=0.3, stall_out=0.3):
    dut = MLGRU(hidden, layers)
    rng = random.Random(seed)
    streams, expected = mlgru_beats(steps, hidden, layers)
    got = []
    n = len(streams["f"])

    def sender(name):
        async def tx(ctx):
            await _send(ctx, getattr(dut, name), streams[name], random.Random(rng.random()), stall_in)
        return tx

    async def rx(ctx):
        await _recv(ctx, dut.o, n, random.Random(rng.random()), stall_out, got, ("data", "last"))

    _run(dut, *(sender(k) for k in streams), rx)
    assert got == [(e["data"], e["last"]) for e in expected]


@pytest.mark.sim
def test_mlgru():
    rng = random.Random(31)
    _run_mlgru(16, 3, mlgru_steps(rng, 16, 3, 6), 32)


@pytest.mark.sim
def test_mlgru_same_layer_back_to_back():
    """The smallest hidden size, one layer, no stalls: every channel's state is read right after the
    previous token wrote it."""
    rng = random.Random(33)
    h = MLGRU.MIN_HIDDEN
    _run_mlgru(h, 1, mlgru_steps(rng, h, 1, 24, one_layer=True), 34, stall_in=0.0, stall_out=0.0)


def test_mlgru_arguments():
    with pytest.raises(ValueError, match=f"hidden must be at least {MLGRU.MIN_HIDDEN}, not 2"):
        MLGRU(2, 1)
    with pytest.raises(ValueError, match="layers must be at least 1, not 0"):
        MLGRU(16, 0)
    with pytest.raises(TypeError, match="hidden must be an int, not '16'"):
        MLGRU("16", 1)


# --- GLU -----------------------------------------------------------------------------------------

def _run_glu(n, tokens, seed, stall_in=0.3, stall_out=0.3):
    toks = glu_tokens(random.Random(seed), n, tokens)
    dut = GLU(n)
    got = _stream_test(dut, dut.u, [x for u in toks for x in u], dut.o, n * tokens, seed + 1,
                       stall_in=stall_in, stall_out=stall_out, fields=("data", "last"))
    assert [d for d, _ in got] == glu_reference(toks, n)
    assert [l for _, l in got] == ([0] * (n - 1) + [1]) * tokens


@pytest.mark.sim
def test_glu():
    _run_glu(24, 8, 41)


@pytest.mark.sim
def test_glu_small():
    _run_glu(1, 12, 43, stall_in=0.0, stall_out=0.0)
    _run_glu(3, 12, 45, stall_in=0.5, stall_out=0.0)


def test_glu_arguments():
    with pytest.raises(ValueError, match="intermediate must be at least 1, not 0"):
        GLU(0)
    with pytest.raises(TypeError, match="intermediate must be an int, not 2.0"):
        GLU(2.0)


# --- the same units as Verilog, under cocotb ------------------------------------------------------

FULL_RUN_SEED = 2024
FULL_RUN_VECTORS = 10_000
"""The cocotb run of every unit: its seed, and the outputs it checks per unit (at least)."""


def full_run_counts(bench, n=FULL_RUN_VECTORS):
    """The case counts of :func:`~mmfree.sim.unit_vectors.bench_cases` giving ``n`` outputs or more
    per unit (tests/test_hw_coverage.py checks what these cases hold)."""
    return dict(elements=n, norm=n // 70, mlgru=-(-n // (bench.hidden * bench.layers)),
                glu=-(-n // bench.intermediate))


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("arch", ["generic", "ecp5"])
def test_units_cocotb(simulator, arch, monkeypatch):
    """Every unit at once on the generated Verilog: 10,000+ seeded vectors per unit, random stalls on
    every stream, exact comparison and stream-rule checks in :mod:`mmfree.sim.tb_units`; also as
    elaborated for the ECP5, with the DSP blocks' and block RAMs' own registers (through their
    simulation models)."""
    import hashlib
    from mmfree.sim import runner
    from mmfree.hw.synth import ECP5_TARGET
    from mmfree.sim.unit_vectors import UnitsBench, bench_vectors

    reason = runner.missing(simulator)
    if reason is not None:
        pytest.skip(reason)
    bench = UnitsBench()
    # The runner reuses Verilator's run-time objects across designs, and one of them (cocotb's
    # verilator.o) is compiled against the top module's port list: keep this bench's builds in a cache
    # of their own, keyed by its ports, so that it never links one compiled for another design.
    ports = repr(sorted((name, repr(member)) for name, member in bench.signature.members.flatten()))
    key = hashlib.sha256(ports.encode()).hexdigest()[:12]
    monkeypatch.setenv("MMFREE_SIM_CACHE", str(runner.cache_dir() / f"units-{key}"))
    vec = bench_vectors(bench, FULL_RUN_SEED, **full_run_counts(bench), stall=0.25)
    for port in [k for k in vec if k.startswith("out__") and k != "out__rmsnorm_scale"]:
        assert len(vec[port]) >= FULL_RUN_VECTORS, port
    num, _ = runner.run_cocotb(bench, simulator=simulator, test_module="mmfree.sim.tb_units",
                               name="units", vectors=vec, platform=ECP5_TARGET if arch == "ecp5" else None,
                               sources=[runner.ecp5_cell_models()] if arch == "ecp5" else ())
    assert num == 1


@pytest.mark.sim
def test_latencies():
    """The documented latencies: element units, MLGRU, GLU, and the quantiser's first code."""
    def first_out(dut, send_port, items, out_port):
        t = {}

        async def bench(ctx):
            ctx.set(out_port.ready, 1)
            for n, item in enumerate(items):
                ctx.set(send_port.valid, 1)
                ctx.set(send_port.payload, item)
                await ctx.tick().until(send_port.ready)
            ctx.set(send_port.valid, 0)
            cycles = 0
            while not ctx.get(out_port.valid):
                await ctx.tick()
                cycles += 1
            t["latency"] = cycles + 1          # the last transfer's edge counts as the first cycle
        _run(dut, bench, deadline=2000)
        return t["latency"]

    for cls, item in ((Sigmoid, 0), (SiLU, 0), (SiLUState, 0), (MulAct, {"a": 0, "b": 0}),
                      (LowerBoundBlend, {"lb": 0, "f": 0}), (StateUpdate, {"h": 0, "f": 0, "c": 0}),
                      (ApplyNormWeight, {"x": 0, "w_mant": 0, "w_exp": 0})):
        dut = cls()
        assert first_out(dut, dut.i, [item], dut.o) == cls.LATENCY, cls.__name__
    dut = GLU(4)
    assert first_out(dut, dut.u, [0] * 5, dut.o) == GLU.LATENCY

    dut = MLGRU(MLGRU.MIN_HIDDEN, 1)
    t = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for port in (dut.f, dut.i, dut.g, dut.w):
            ctx.set(port.valid, 1)
        await ctx.tick().until(dut.w.ready)
        for port in (dut.f, dut.i, dut.g, dut.w):
            ctx.set(port.valid, 0)
        cycles = 1
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycles += 1
        t["latency"] = cycles
    _run(dut, bench, deadline=2000)
    assert t["latency"] == MLGRU.LATENCY
    items = [{"v": 1, "w_mant": 1, "w_exp": 0, "m": {"mant": 1 << 15, "exp": 0}, "last": j == 7}
             for j in range(8)]
    for width in (1, 2, 4, 8):
        dut = RMSNormQuantizer(8, width=width)
        assert first_out(dut, dut.i, items, dut.codes) == RMSNormQuantizer.CODE_LATENCY, width
