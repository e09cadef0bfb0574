# amaranth: UnusedElaboratable=no
"""The ternary matrix-vector unit and the rescale stage against the numeric specification.

Three levels: constructor checks; short Amaranth-simulator runs (``sim``); cocotb on the generated
Verilog under Verilator and Icarus (``sim``, ``slow``), bit-exact on seeded random jobs and edge
cases, with random stalls on every stream, and a stall-free throughput run. On each simulator the
matrix-vector unit computes more than 10,000 rows and the rescale stage more than 10,000 values.
"""

import random

import numpy as np
import pytest
import torch
from amaranth import signed

from mmfree import numerics as nx
from mmfree.hw.ternary import TernaryMatVec, Rescale, TernaryLinear, MAX_K, acc_width_for
from mmfree.sim import vectors as V
from mmfree.sim.pysim import run_streams
from mmfree.sim.runner import ecp5_cell_models, missing, run_cocotb
from conftest import unused

TB = "mmfree.sim.tb_streams"


# --- jobs ------------------------------------------------------------------------------------------

def random_jobs(seed, lanes, max_k, rows, *, min_rows=1, max_rows=40, scales=False):
    """Jobs of random length (a multiple of ``lanes``) and row count, ``rows`` rows in all."""
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    jobs, total = [], 0
    while total < rows:
        k = lanes * rng.randint(1, max_k // lanes)
        n = min(rng.randint(min_rows, max_rows), max(1, rows - total))
        codes = torch.randint(-128, 128, (k,), generator=g)
        if rng.random() < 0.3:                            # quantiser-like codes: -127..127
            codes = codes.clamp(-127, 127)
        density = rng.choice([1.0, 0.6, 0.2])
        trits = torch.randint(-1, 2, (n, k), generator=g) * (torch.rand(n, k, generator=g) < density)
        jobs.append((codes.tolist(), trits, random_scale(rng) if scales else None))
        total += n
    return jobs


def random_scale(rng, exp_lo=-40, exp_hi=-8):
    return nx.PFloat(rng.randrange(1 << 15, 1 << 16), rng.randint(exp_lo, exp_hi))


def edge_jobs(lanes, max_k):
    """All-zero, all +1 and all -1 rows; extreme and zero vectors; the largest and smallest K."""
    k = max_k
    zero = torch.zeros(k, dtype=torch.int64)
    plus, minus = zero + 1, zero - 1
    alt = torch.tensor([1, -1] * (k // 2) + [1] * (k % 2))
    rows = torch.stack([zero, plus, minus, alt, -alt])
    g = torch.Generator().manual_seed(99)
    rnd = torch.randint(-1, 2, (4, k), generator=g)
    both = torch.cat([rows, rnd])
    return [
        ([127] * k, both, None),
        ([-127] * k, both, None),
        ([-128] * k, both, None),                         # acc = +-128 K: the accumulator's extremes
        ([-128, 127] * (k // 2) + [-128] * (k % 2), both, None),
        ([0] * k, both, None),                            # zero vector
        ([-128] * lanes, torch.tensor([[-1] * lanes, [1] * lanes, [0] * lanes]), None),   # K = P
        ([5] * k, torch.zeros((3, k), dtype=torch.int64), None),                          # all-zero matrix
    ]


def steady_jobs(lanes, max_k, seed=7, clocks_per_act_beat=1):
    """Jobs whose matrices take at least as long as loading the next vector: no gap is allowed.

    ``clocks_per_act_beat``: 1, or 3 for a unit with ``spread_control`` (its rows are made longer)."""
    g = torch.Generator().manual_seed(seed)
    jobs = []
    words = max_k // lanes
    half = lanes * max(1, words // 2)
    c = clocks_per_act_beat
    for k, n in [(max_k, 6), (lanes, c), (lanes, c), (lanes, c * words), (half, 3 * c), (max_k, 2 * c)]:
        jobs.append((torch.randint(-128, 128, (k,), generator=g).tolist(),
                     torch.randint(-1, 2, (n, k), generator=g), None))
    # the next vector must load within the current matrix: beats(job j) >= c * words(job j + 1)
    for (_, t, _), (v, _, _) in zip(jobs, jobs[1:]):
        assert t.shape[0] * t.shape[1] // lanes >= c * len(v) // lanes
    return jobs


def attach_scales(jobs, seed, exp_lo=-40, exp_hi=-8):
    rng = random.Random(seed)
    return [(c, t, random_scale(rng, exp_lo, exp_hi)) for c, t, _ in jobs]


# --- constructor checks ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, exc, msg", [
    ((0, 16), ValueError, "lanes must be between 1 and 1024, not 0"),
    ((1025, 2050), ValueError, "lanes must be between 1 and 1024, not 1025"),
    ((4.0, 16), TypeError, "lanes must be an integer, not 4.0"),
    ((True, 16), TypeError, "lanes must be an integer, not True"),
    ((4, "16"), TypeError, "max_k must be an integer, not '16'"),
    ((4, 0), ValueError, "max_k must be between 1 and"),
    ((4, 18), ValueError, r"max_k \(18\) must be a multiple of lanes \(4\)"),
    ((4, MAX_K + 1), ValueError, "max_k must be between 1 and"),
])
def test_matvec_rejects(args, exc, msg):
    with pytest.raises(exc, match=msg):
        TernaryMatVec(*args)


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(acc_width=1), ValueError, "acc_width must be between 2 and 32, not 1"),
    (dict(acc_width=33), ValueError, "acc_width must be between 2 and 32, not 33"),
    (dict(acc_width=20.5), TypeError, "acc_width must be an integer"),
    (dict(exp_width=1), ValueError, "exp_width must be between 2 and 16, not 1"),
])
def test_rescale_rejects(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        Rescale(**kwargs)


def test_act_memory():
    """Where the activation buffer lives is Yosys' ``ram_style`` of the buffer; nothing else changes."""
    from amaranth.back import rtlil
    with pytest.raises(ValueError, match="act_memory must be one of 'block', 'distributed', 'registers', "
                                         "not 'lut'"):
        TernaryMatVec(4, 16, act_memory="lut")
    texts = {}
    for mem in ("block", "distributed", "registers"):
        u = TernaryMatVec(4, 16, act_memory=mem)
        assert u.act_memory == mem
        texts[mem] = rtlil.convert(u, emit_src=False)
        assert f'attribute \\ram_style "{mem}"' in texts[mem]
    assert texts["block"].replace('"block"', '"registers"') == texts["registers"]
    lin = TernaryLinear(4, 16, act_memory="distributed")
    assert "distributed" in rtlil.convert(lin, emit_src=False)
    with pytest.raises(ValueError, match="act_lut_lanes must be between 0 and 4, not 5"):
        TernaryMatVec(4, 16, act_lut_lanes=5)
    split = rtlil.convert(TernaryMatVec(4, 16, act_lut_lanes=1), emit_src=False)
    assert split.count('attribute \\ram_style "block"') == split.count('attribute \\ram_style "distributed"') == 1


@pytest.mark.sim
@pytest.mark.parametrize("lanes, lut_lanes", [(4, 1), (3, 3), (5, 2)])
def test_matvec_split_buffer_pysim(lanes, lut_lanes):
    """Lanes whose codes live in a LUT RAM beside the block RAM compute the same bits."""
    max_k = 4 * lanes
    dut = TernaryMatVec(lanes, max_k, act_lut_lanes=lut_lanes)
    jobs = random_jobs(40 + lanes, lanes, max_k, 40, max_rows=8) + edge_jobs(lanes, max_k)
    run_streams(dut, V.ternary_vectors(jobs, lanes, dut.acc_width, stall=0.3, seed=lanes))


@pytest.mark.sim
@pytest.mark.parametrize("lanes, max_k, lut_lanes", [(4, 16, 0), (5, 20, 2), (3, 12, 3)])
def test_matvec_spread_control_pysim(lanes, max_k, lut_lanes):
    """Control copies and an output register per memory: the same bits, two more cycles of latency."""
    dut = TernaryMatVec(lanes, max_k, act_lut_lanes=lut_lanes, spread_control=True)
    assert dut.spread_control and dut.latency == unused(TernaryMatVec(lanes, max_k)).latency + 2
    jobs = random_jobs(60 + lanes, lanes, max_k, 60, max_rows=12) + edge_jobs(lanes, max_k)
    run_streams(dut, V.ternary_vectors(jobs, lanes, dut.acc_width, stall=0.3, seed=lanes))


@pytest.mark.sim
def test_matvec_spread_control_throughput():
    """With spread_control a vector takes three clocks a beat to load; a matrix at least three times
    as long as the next vector still streams without a gap."""
    lanes, max_k = 4, 16
    dut = TernaryMatVec(lanes, max_k, spread_control=True)
    jobs = steady_jobs(lanes, max_k, clocks_per_act_beat=3)
    stats = run_streams(dut, V.ternary_vectors(jobs, lanes, dut.acc_width, measure="w"))
    beats = sum(t.numel() // lanes for _, t, _ in jobs)
    assert stats["transfers"] == beats
    assert stats["span"] == beats, f"{beats} weight beats took {stats['span']} cycles"


def test_spread_control_groups():
    """spread_control cuts the buffer into memories of GROUP_LANES lanes, each with its own copies."""
    from amaranth.back import rtlil
    from mmfree.hw.ternary import GROUP_LANES
    with pytest.raises(TypeError, match="spread_control must be True or False, not 1"):
        TernaryMatVec(4, 16, spread_control=1)
    with pytest.raises(ValueError, match="trits_delay needs spread_control"):
        TernaryMatVec(4, 16, trits_delay=1)
    with pytest.raises(ValueError, match="trits_delay must be between 0 and 2, not 3"):
        TernaryMatVec(4, 16, spread_control=True, trits_delay=3)
    lanes, lut = 2 * GROUP_LANES["block"] + 8, GROUP_LANES["distributed"] + 4
    text = rtlil.convert(TernaryMatVec(lanes, lanes, act_lut_lanes=lut, spread_control=True),
                         emit_src=False)
    assert text.count('attribute \\ram_style "block"') == 2            # 72 + 60 lanes
    assert text.count('attribute \\ram_style "distributed"') == 2      # 16 + 4 lanes
    ecp5 = rtlil.convert(TernaryMatVec(lanes, lanes, act_lut_lanes=lut, spread_control=True, arch="ecp5"),
                         emit_src=False)
    assert ecp5.count("cell \\TRELLIS_FF") == 4 * 3     # per memory: its write enable, both addresses
    # on ECP5 the block RAM is instantiated, with its output register: 16 + ceil(480 / 36) DP16KD
    assert ecp5.count("cell \\DP16KD") == 16 + 14
    assert ecp5.count('parameter \\REGMODE_A "OUTREG"') == ecp5.count('parameter \\REGMODE_B "OUTREG"') == 30
    assert ecp5.count('attribute \\ram_style "block"') == 0
    assert ecp5.count('attribute \\ram_style "distributed"') == 2
    # a buffer deeper than one DP16KD stays an inferred memory
    deep = rtlil.convert(TernaryMatVec(4, 2048, spread_control=True, arch="ecp5"), emit_src=False)
    assert "DP16KD" not in deep and deep.count('attribute \\ram_style "block"') == 1


def test_widths():
    u = unused(TernaryMatVec(16, 4096))
    assert u.acc_width == acc_width_for(4096) == 21          # |acc| <= 128 * 4096 = 2**19
    assert acc_width_for(MAX_K) <= nx.ACC.width
    assert unused(TernaryMatVec(1024, 1024)).lanes == 1024


# --- Amaranth simulator ------------------------------------------------------------------------------

@pytest.mark.sim
@pytest.mark.parametrize("lanes, max_k", [(1, 4), (3, 12), (4, 16)])
def test_matvec_pysim(lanes, max_k):
    dut = TernaryMatVec(lanes, max_k)
    jobs = random_jobs(lanes, lanes, max_k, 60, max_rows=12) + edge_jobs(lanes, max_k)
    run_streams(dut, V.ternary_vectors(jobs, lanes, dut.acc_width, stall=0.3, seed=lanes))


@pytest.mark.sim
@pytest.mark.parametrize("lanes, max_k", [(4, 16), (5, 5)])
def test_matvec_pysim_throughput(lanes, max_k):
    dut = TernaryMatVec(lanes, max_k)
    jobs = steady_jobs(lanes, max_k)
    stats = run_streams(dut, V.ternary_vectors(jobs, lanes, dut.acc_width, measure="w"))
    beats = sum(t.numel() // lanes for _, t, _ in jobs)
    assert stats["transfers"] == beats
    assert stats["span"] == beats, f"{beats} weight beats took {stats['span']} cycles"


def _one_beat(dut, act, w, read):
    """Load the vector ``act`` (one beat) into the matrix-vector unit ``dut``, give it the weight beat
    ``w``, and return ``{"cycle": clocks from that beat to o.valid, **read(ctx)}`` at o.valid."""
    from amaranth.sim import Simulator
    seen = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.act.payload.as_value(), act)
        ctx.set(dut.act.valid, 1)
        await ctx.tick().until(dut.act.ready)
        ctx.set(dut.act.valid, 0)
        await ctx.tick().until(dut.w.ready)
        ctx.set(dut.w.payload.as_value(), w)
        ctx.set(dut.w.valid, 1)
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        for cycle in range(1, 30):
            if ctx.get(dut.o.valid):
                seen.update(cycle=cycle, **read(ctx))
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.sim
@pytest.mark.parametrize("lanes, spread", [(1, False), (4, False), (5, False), (4, True)])
def test_matvec_latency(lanes, spread):
    """A single-beat row's accumulator appears exactly ``latency`` cycles after its beat."""
    dut = TernaryMatVec(lanes, lanes, spread_control=spread)
    codes = [j + 1 for j in range(lanes)]
    trits = [1, -1, 0] * lanes
    act, w = V.ternary_beats([(codes, torch.tensor([trits[:lanes]]), None)], lanes)
    seen = _one_beat(dut, act[0], w[0], lambda ctx: {"acc": ctx.get(dut.o.payload.acc)})
    assert seen == {"cycle": dut.latency, "acc": sum(c * t for c, t in zip(codes, trits))}
    assert dut.latency == 4 + max(1, (lanes - 1).bit_length()) + 2 * spread


@pytest.mark.sim
def test_matvec_invalid_code_is_zero():
    """The unused code 0b10 contributes nothing (it never comes out of ``pack_trits``)."""
    dut = TernaryMatVec(4, 4)
    act = (1 << 32) | 0x7F7F7F7F
    w = (1 << 8) | 0b10_10_01_10                        # invalid, +1 (code 127), invalid, invalid
    vec = dict(in__act=V.payload_rows([act], 33), in__w=V.payload_rows([w], 9),
               out__o=V.payload_rows([127 | (1 << dut.acc_width)], dut.acc_width + 1))
    run_streams(dut, vec)


def rescale_cases(seed, count, acc_width):
    """Accumulators, last flags and scales: random, plus the scales that saturate or vanish."""
    rng = random.Random(seed)
    lim = 1 << (acc_width - 1)
    edge_acc = [0, 1, -1, lim - 1, -lim, 2, -2, 3, -3, 1000, -1000]
    edge_scales = [nx.PF_ZERO, nx.PFloat(1 << 15, -74), nx.PFloat(0xFFFF, -74), nx.PFloat(0xFFFF, -28),
                   nx.PFloat(1 << 15, -12), nx.PFloat(0xFFFF, 0), nx.PFloat(1 << 15, 11),
                   nx.PFloat(0xFFFF, 127), nx.PFloat(1 << 15, -9), nx.PFloat(1 << 15, -20),
                   nx.PFloat(0xABCD, -13), nx.PFloat(1 << 15, -16)]
    # numerics.rescale evaluates p << -sh in int64: keep |acc * mant| << -sh below 2**63
    exp_max = 127 if acc_width <= 24 else 3
    edge_scales = [sc for sc in edge_scales if sc.exp <= exp_max]
    accs, lasts, scales = [], [], []
    for sc in edge_scales:                               # each edge scale on each edge accumulator
        accs += edge_acc
        lasts += [0] * (len(edge_acc) - 1) + [1]
        scales.append(sc)
    while len(accs) < count:
        n = rng.randint(1, 30)
        for i in range(n):
            mag = rng.choice([lim, 1 << 12, 1 << 6])
            accs.append(rng.randrange(-mag, mag))
            lasts.append(int(i == n - 1))
        scales.append(random_scale(rng, -50, 2) if rng.random() < 0.8 else
                      nx.PFloat(rng.randrange(1 << 15, 1 << 16), rng.randint(-74, exp_max)))
    return accs, lasts, scales


@pytest.mark.sim
@pytest.mark.parametrize("acc_width", [13, 18, 19, 21, 32])
def test_rescale_pysim(acc_width):
    dut = Rescale(acc_width=acc_width)
    accs, lasts, scales = rescale_cases(acc_width, 300, acc_width)
    run_streams(dut, V.rescale_vectors(accs, lasts, scales, acc_width, 8, stall=0.3, seed=5))


@pytest.mark.sim
def test_rescale_beyond_spec_range():
    """Exponents too small for ``numerics.rescale`` to evaluate (``2**sh`` overflows int64) give 0."""
    dut = Rescale(acc_width=21)
    accs = [0, 1, -1, (1 << 20) - 1, -(1 << 20)]
    lasts = [0, 0, 0, 0, 1]
    i = [a & ((1 << 21) - 1) | (l << 21) for a, l in zip(accs, lasts)]
    s = [0xFFFF | ((-128 & 0xFF) << 16)]
    vec = dict(in__i=V.payload_rows(i, 22), in__scale=V.payload_rows(s, 24),
               out__o=V.payload_rows([l << 24 for l in lasts], 25))
    run_streams(dut, vec)


@pytest.mark.sim
def test_rescale_throughput():
    dut = Rescale(acc_width=21)
    accs, lasts, scales = rescale_cases(4, 200, 21)
    stats = run_streams(dut, V.rescale_vectors(accs, lasts, scales, 21, 8, measure="i"))
    assert stats["span"] == stats["transfers"] == len(accs)


@pytest.mark.sim
def test_linear_pysim():
    dut = TernaryLinear(4, 16)
    jobs = attach_scales(random_jobs(11, 4, 16, 50, max_rows=10) + edge_jobs(4, 16), 12, -20, -6)
    run_streams(dut, V.linear_vectors(jobs, 4, 8, stall=0.25, seed=2))


# --- cocotb on Verilator and Icarus --------------------------------------------------------------------

SIMULATORS = ["verilator", "icarus"]


def need(simulator):
    reason = missing(simulator)
    if reason:
        pytest.skip(reason)


MATVEC_RUNS = [(1000 + 4, 4, 32, 1500), (1000 + 16, 16, 64, 5500)]
MATVEC_ECP5_RUN = (77, 8, 32, 3000)
"""The cocotb runs of the matrix-vector unit: ``(seed, lanes, max_k, rows)`` of their random jobs
(tests/test_hw_coverage.py checks what they hold)."""
RESCALE_RUN = (8, 10_000)
"""The cocotb runs of the rescale stage: ``(seed, count)`` of :func:`rescale_cases`."""


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("seed, lanes, max_k, rows", MATVEC_RUNS)
def test_matvec_cocotb(simulator, seed, lanes, max_k, rows, tmp_path):
    """With the ECP5 run below, 10,000+ rows on each simulator (short rows: many per cycle)."""
    need(simulator)
    dut = TernaryMatVec(lanes, max_k)
    jobs = random_jobs(seed, lanes, max_k, rows) + edge_jobs(lanes, max_k)
    run_cocotb(dut, simulator=simulator, test_module=TB, name=f"matvec{lanes}", run_dir=tmp_path,
               vectors=V.ternary_vectors(jobs, lanes, dut.acc_width, stall=0.25, seed=lanes))


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_matvec_cocotb_throughput(simulator, tmp_path):
    """Fed without stalls, the unit takes P trits every clock across rows, columns and matrices."""
    need(simulator)
    lanes, max_k = 16, 64
    dut = TernaryMatVec(lanes, max_k)
    jobs = steady_jobs(lanes, max_k) * 3
    run_cocotb(dut, simulator=simulator, test_module=TB, name=f"matvec{lanes}", run_dir=tmp_path,
               vectors=V.ternary_vectors(jobs, lanes, dut.acc_width, measure="w", full_rate=1))
    transfers, span = map(int, (tmp_path / "measure.txt").read_text().split())
    assert transfers == span == sum(t.numel() // lanes for _, t, _ in jobs)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("acc_width, arch", [(21, "generic"), (21, "ecp5"), (18, "ecp5")])
def test_rescale_cocotb(simulator, acc_width, arch, tmp_path):
    """Exact on 10,000 random and edge accumulators; on the ECP5 the partial products are DSP blocks
    with their own registers (through the block's simulation model): two of them, or one for an
    accumulator of 18 bits."""
    need(simulator)
    dut = Rescale(acc_width=acc_width, arch=arch)
    accs, lasts, scales = rescale_cases(*RESCALE_RUN, acc_width)
    run_cocotb(dut, simulator=simulator, test_module=TB, name="rescale", run_dir=tmp_path,
               sources=[ecp5_cell_models()] if arch == "ecp5" else (),
               vectors=V.rescale_vectors(accs, lasts, scales, acc_width, 8, stall=0.25, seed=9))


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_matvec_ecp5_cocotb(simulator, tmp_path):
    """The ECP5 lane pairs (CCU2C carry chains, Yosys' cell models) give the same bits; three of the
    lanes read their codes from a LUT RAM beside the block RAM (``act_lut_lanes``)."""
    need(simulator)
    seed, lanes, max_k, rows = MATVEC_ECP5_RUN
    dut = TernaryMatVec(lanes, max_k, arch="ecp5", act_lut_lanes=3)
    jobs = random_jobs(seed, lanes, max_k, rows) + edge_jobs(lanes, max_k)
    run_cocotb(dut, simulator=simulator, test_module=TB, name="matvec_ecp5", run_dir=tmp_path,
               sources=[ecp5_cell_models()],
               vectors=V.ternary_vectors(jobs, lanes, dut.acc_width, stall=0.25, seed=3))


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_matvec_spread_control_cocotb(simulator, tmp_path):
    """``spread_control`` on ECP5 cells: four memories (72 + 4 lanes of block RAM, DP16KD instances
    with their output register; 16 + 4 lanes of LUT RAM), each written and read through its own
    ``TRELLIS_FF`` copies of the control; the same bits."""
    need(simulator)
    lanes, max_k = 96, 384
    dut = TernaryMatVec(lanes, max_k, arch="ecp5", act_lut_lanes=20, spread_control=True)
    jobs = random_jobs(78, lanes, max_k, 600) + edge_jobs(lanes, max_k)
    run_cocotb(dut, simulator=simulator, test_module=TB, name="matvec_spread", run_dir=tmp_path,
               sources=[ecp5_cell_models()],
               vectors=V.ternary_vectors(jobs, lanes, dut.acc_width, stall=0.25, seed=4))


# --- row units (rows > 1) --------------------------------------------------------------------------

def group_jobs(jobs, rows, seed):
    """The jobs with every matrix padded with random trit rows to a multiple of ``rows`` rows."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for codes, trits, scale in jobs:
        trits = torch.as_tensor(trits, dtype=torch.int64)
        pad = (-trits.shape[0]) % rows
        out.append((codes, torch.cat([trits, torch.randint(-1, 2, (pad, trits.shape[1]), generator=g)]), scale))
    return out


def steady_group_jobs(lanes, max_k, rows, seed=7):
    """:func:`steady_jobs` with ``rows`` times the rows: the same weight beats per matrix."""
    g = torch.Generator().manual_seed(seed + 1)
    return [(c, torch.randint(-1, 2, (t.shape[0] * rows, t.shape[1]), generator=g), s)
            for c, t, s in steady_jobs(lanes, max_k, seed)]


def group_beats(jobs, lanes, rows, acc_width):
    """Payload integers ``(act, w, o)`` of a unit with ``rows`` row units, built trit by trit from
    ``TRIT_CODE`` and a numpy ``trits @ codes`` (independently of :mod:`mmfree.sim.vectors`' packing)."""
    act, _ = V.ternary_beats(jobs, lanes)
    w, o = [], []
    mask = (1 << acc_width) - 1
    for codes, trits, _ in jobs:
        t = np.asarray(trits, dtype=np.int64)
        n, k = t.shape
        assert n % rows == 0 and k % lanes == 0
        acc = t @ np.asarray(codes, dtype=np.int64)
        groups, words = n // rows, k // lanes
        for gr in range(groups):
            for b in range(words):
                v = 0
                for r in range(rows):
                    for j in range(lanes):
                        v |= nx.TRIT_CODE[int(t[gr * rows + r, b * lanes + j])] << (2 * (lanes * r + j))
                w.append(v | (int(gr == groups - 1 and b == words - 1) << (2 * lanes * rows)))
            v = 0
            for r in range(rows):
                v |= (int(acc[gr * rows + r]) & mask) << (acc_width * r)
            o.append(v | (int(gr == groups - 1) << (rows * acc_width)))
    return act, w, o


def group_vectors(jobs, lanes, rows, acc_width, **extra):
    act, w, o = group_beats(jobs, lanes, rows, acc_width)
    fields = [f"acc{r}:{r * acc_width}:{acc_width}:s" for r in range(rows)] + [f"last:{rows * acc_width}:1:u"]
    return dict(in__act=V.payload_rows(act, 8 * lanes + 1), in__w=V.payload_rows(w, 2 * lanes * rows + 1),
                out__o=V.payload_rows(o, rows * acc_width + 1), fields__o=np.array(fields), **extra)


@pytest.mark.parametrize("rows, exc, msg", [
    (0, ValueError, "rows must be between 1 and 64, not 0"),
    (65, ValueError, "rows must be between 1 and 64, not 65"),
    (2.0, TypeError, "rows must be an integer, not 2.0"),
    (True, TypeError, "rows must be an integer, not True"),
])
def test_matvec_rows_rejects(rows, exc, msg):
    with pytest.raises(exc, match=msg):
        TernaryMatVec(4, 16, rows=rows)


def test_matvec_rows_layout():
    """rows = R: 2PR trit bits a beat; acc[0] .. acc[R - 1], last on o; rows = 1 as before."""
    from amaranth.lib import data
    one = unused(TernaryMatVec(4, 16))
    assert one.rows == 1 and one.acc_layout.size == one.acc_width + 1
    assert one.acc_layout["acc"].shape == one.o.payload.acc.shape() == signed(one.acc_width)
    for rows in (2, 3, 64):
        u = unused(TernaryMatVec(4, 16, rows=rows))
        assert u.rows == rows and u.latency == one.latency and u.fifo_depth == one.fifo_depth
        assert u.weight_layout.size == 2 * 4 * rows + 1 and u.weight_layout["last"].offset == 2 * 4 * rows
        assert u.acc_layout["acc"].shape == data.ArrayLayout(signed(u.acc_width), rows)
        assert u.acc_layout["last"].offset == rows * u.acc_width and u.acc_layout.size == rows * u.acc_width + 1
        assert len(u.o.payload.as_value()) == rows * u.acc_width + 1


def test_matvec_rows_weight_image():
    """The documented image: pack_trits of the matrix as [N/R, K/P, R, P] gives the weight beats."""
    lanes, rows, k, n = 4, 3, 12, 6
    t = torch.randint(-1, 2, (n, k), generator=torch.Generator().manual_seed(3))
    _, w, _ = group_beats([([1] * k, t, None)], lanes, rows, 13)
    image = nx.pack_trits(t.reshape(n // rows, rows, k // lanes, lanes).permute(0, 2, 1, 3))
    bits, width = int.from_bytes(image.numpy().tobytes(), "little"), 2 * lanes * rows
    assert [b & ((1 << width) - 1) for b in w] == [(bits >> (width * i)) & ((1 << width) - 1) for i in range(len(w))]


@pytest.mark.sim
@pytest.mark.parametrize("lanes, max_k, rows, kwargs", [
    (4, 16, 2, {}), (3, 12, 3, {}), (4, 16, 4, {}), (1, 4, 2, {}),
    (5, 20, 3, dict(act_lut_lanes=2, spread_control=True)),
])
def test_matvec_rows_pysim(lanes, max_k, rows, kwargs):
    """R row units against numpy: random matrices back to back, random stalls on every stream."""
    dut = TernaryMatVec(lanes, max_k, rows=rows, **kwargs)
    jobs = group_jobs(random_jobs(200 + lanes + rows, lanes, max_k, 20 * rows, max_rows=4 * rows)
                      + edge_jobs(lanes, max_k), rows, seed=rows)
    run_streams(dut, group_vectors(jobs, lanes, rows, dut.acc_width, stall=0.3, seed=rows + lanes))


@pytest.mark.sim
@pytest.mark.parametrize("lanes, max_k, rows", [(4, 16, 2), (4, 16, 4), (5, 5, 3)])
def test_matvec_rows_throughput(lanes, max_k, rows):
    """Fed without stalls, R row units take a weight beat (R P trits) every clock."""
    dut = TernaryMatVec(lanes, max_k, rows=rows)
    jobs = steady_group_jobs(lanes, max_k, rows)
    stats = run_streams(dut, group_vectors(jobs, lanes, rows, dut.acc_width, measure="w"))
    beats = sum(t.numel() // (lanes * rows) for _, t, _ in jobs)
    assert stats["transfers"] == beats
    assert stats["span"] == beats, f"{beats} weight beats took {stats['span']} cycles"


@pytest.mark.sim
@pytest.mark.parametrize("lanes, rows", [(4, 3), (1, 2)])
def test_matvec_rows_latency(lanes, rows):
    """A single-beat row group's accumulators appear ``latency`` cycles after its beat, as with one unit."""
    dut = TernaryMatVec(lanes, lanes, rows=rows)
    codes = [3 * j - 5 for j in range(lanes)]
    trits = torch.randint(-1, 2, (rows, lanes), generator=torch.Generator().manual_seed(lanes))
    act, w, _ = group_beats([(codes, trits, None)], lanes, rows, dut.acc_width)
    seen = _one_beat(dut, act[0], w[0], lambda ctx: {
        "acc": [ctx.get(dut.o.payload.acc[r]) for r in range(rows)], "last": ctx.get(dut.o.payload.last)})
    expect = (trits @ torch.tensor(codes)).tolist()
    assert seen == {"cycle": unused(TernaryMatVec(lanes, lanes)).latency, "acc": expect, "last": 1}


def test_matvec_rows_ecp5():
    """On ECP5 every row unit has its own CCU2C lane pairs; names are per unit, the buffer is shared."""
    from amaranth.back import rtlil, verilog
    one = rtlil.convert(TernaryMatVec(5, 20, arch="ecp5"), emit_src=False)
    three = rtlil.convert(TernaryMatVec(5, 20, arch="ecp5", rows=3), emit_src=False)
    assert one.count("cell \\CCU2C") > 0 and three.count("cell \\CCU2C") == 3 * one.count("cell \\CCU2C")
    assert three.count('attribute \\ram_style "block"') == one.count('attribute \\ram_style "block"') == 1
    for r in range(3):
        assert f"r{r}_lane4" in three and f"r{r}_acc" in three and f"r{r}_t1_0_ccu0" in three
    assert "r0_" not in one and "lane4" in one
    spread = verilog.convert(TernaryMatVec(96, 384, arch="ecp5", act_lut_lanes=20, spread_control=True, rows=2),
                             emit_src=False)
    assert "DP16KD" in spread and "r1_t1_47_ccu0" in spread


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("arch", ["generic", "ecp5"])
@pytest.mark.parametrize("spread", [False, True])
def test_matvec_rows_cocotb(simulator, arch, spread, tmp_path):
    """Two row units on the generated Verilog (ECP5: through the cell models), random stalls; with
    spread_control, a LUT RAM buffer whose output register is a copy per row unit."""
    need(simulator)
    lanes, max_k, rows = 4, 32, 2
    dut = TernaryMatVec(lanes, max_k, arch=arch, rows=rows, spread_control=spread,
                        act_memory="distributed" if spread else "block")
    jobs = group_jobs(random_jobs(90, lanes, max_k, 1200) + edge_jobs(lanes, max_k), rows, seed=5)
    run_cocotb(dut, simulator=simulator, test_module=TB,
               name=f"matvec_rows_{arch}{'_spread' if spread else ''}", run_dir=tmp_path,
               sources=[ecp5_cell_models()] if arch == "ecp5" else (),
               vectors=group_vectors(jobs, lanes, rows, dut.acc_width, stall=0.25, seed=6))
