# amaranth: UnusedElaboratable=no
"""The token engine (:class:`mmfree.hw.core.Core`) against the integer golden model, token for token.

The model is loaded through the core's write ports exactly as :func:`mmfree.memory_map.to_regions`
lays it out; every next token and the largest logit must equal :meth:`GoldenModel.step`'s.
"""

import json

import numpy as np
import pytest
from amaranth.sim import Simulator

from mmfree import memory_map as mm
from mmfree.golden import GoldenModel, ModelShape, quantize_model
from mmfree.hw.config import HwConfig, TINY_SHAPE, DEMO_SHAPE, MemoryMapError
from mmfree.hw.core import (Core, Command, region_words, LOGITS_READ_LATENCY, REGION_PORTS, REGION_READ_LATENCY,
                            TRITS_BANK, PARAMS_BANK)
from mmfree.sim.core_sim import preload_regions, request, write_regions
from conftest import small_model


# --- configuration -------------------------------------------------------------------------------

def test_config_presets():
    tiny = HwConfig.preset("tiny")
    assert tiny.fits(TINY_SHAPE) and tiny.lanes == 32
    assert tiny.trit_words == -(-TINY_SHAPE.ternary_weights // tiny.trits_per_word)
    demo = HwConfig.preset("ulx3s-85f")
    # four row units of 32 lanes: a word is four 9-byte sub-words, one per row unit's stream
    assert demo.rows == 4 and demo.total_lanes == 128
    assert demo.trit_word_bytes == 36 and demo.trits_per_word == 180 and demo.trit_word_bits == 288
    assert demo.fits(DEMO_SHAPE) and demo.trit_words == -(-DEMO_SHAPE.ternary_weights // 4 // 45)
    assert not tiny.fits(DEMO_SHAPE)
    assert HwConfig.from_dict(demo.to_dict()) == demo
    with pytest.raises(ValueError, match="no hardware preset 'nope'"):
        HwConfig.preset("nope")


def test_config_presets_hold_bundled_models():
    from mmfree.registry import bundled_models, BUNDLED_DIR
    from mmfree.model import HGRNBitConfig
    for name in ("tiny", "demo"):
        if name not in bundled_models():
            continue
        c = HGRNBitConfig.from_json_file(BUNDLED_DIR / name / "config.json")
        shape = ModelShape(c.vocab_size, c.hidden_size, c.num_hidden_layers, c.intermediate)
        HwConfig.preset(name).check(shape)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(lanes=24), ValueError, "lanes must be a power of two from 4 to 1024, not 24"),
    (dict(lanes=2), ValueError, "lanes must be a power of two"),
    (dict(max_hidden=48), ValueError, r"max_hidden \(48\) must be a multiple of lanes \(32\)"),
    (dict(max_layers=0), ValueError, "max_layers must be positive, not 0"),
    (dict(max_vocab=2.5), TypeError, "max_vocab must be an int, not 2.5"),
    (dict(trit_bytes=12), ValueError, r"trit_bytes \(12\) must be a multiple of 9 bytes"),
    (dict(trit_bytes=1035, lanes=64, max_hidden=128), ValueError,
     r"trit_bytes \(1035\) must be a multiple of 18 bytes"),
    (dict(rows=3), ValueError, "rows must be a power of two from 1 to 64, not 3"),
    (dict(rows=128), ValueError, "rows must be a power of two from 1 to 64, not 128"),
    (dict(rows=2, arch="compact"), ValueError, "the compact architecture has one row unit, not 2"),
    (dict(rows=4, trit_bytes=1026), ValueError, r"trit_bytes \(1026\) must be a multiple of 36 bytes"),
])
def test_config_errors(kwargs, error, message):
    base = dict(max_hidden=64, max_layers=2, max_intermediate=256, max_vocab=256, trit_bytes=1026,
                param_words=1024, lanes=32)
    base.update(kwargs)
    with pytest.raises(error, match=message):
        HwConfig(**base)


def test_config_check():
    cfg = HwConfig.preset("tiny")
    cfg.check(TINY_SHAPE)
    with pytest.raises(MemoryMapError, match="hidden size 160 exceeds the configured 64"):
        cfg.check(DEMO_SHAPE)
    with pytest.raises(MemoryMapError, match="hidden size 48 is not a multiple of 32 lanes"):
        cfg.check(ModelShape(256, 48, 2, 256))
    with pytest.raises(MemoryMapError, match="the trits need"):
        HwConfig(**{**cfg.to_dict(), "trit_bytes": 1026}).check(TINY_SHAPE)
    with pytest.raises(MemoryMapError, match="not a multiple of 32 lanes"):
        HwConfig.for_model(ModelShape(256, 48, 2, 256), lanes=32)
    four = HwConfig.for_model(TINY_SHAPE, lanes=32, rows=4)
    assert four.fits(TINY_SHAPE)
    with pytest.raises(MemoryMapError, match="vocabulary 250 is not a multiple of 4 row units"):
        four.check(ModelShape(250, 64, 2, 256))


def test_core_rejects_bad_config():
    with pytest.raises(TypeError, match="config must be a HwConfig"):
        Core({"lanes": 32})


def test_region_words():
    q = quantize_model(small_model(30, hidden=16, layers=1, intermediate=32, vocab=32))
    regions = mm.to_regions(q, 8)
    words = region_words(regions, 8)
    assert words[mm.REGION_SCALARS][:4] == [32, 16, 1, 32]
    assert len(words[mm.REGION_TRITS]) * 9 == len(regions[mm.REGION_TRITS])
    assert words[mm.REGION_TRITS][0] == int.from_bytes(regions[mm.REGION_TRITS][:9], "little")
    with pytest.raises(ValueError, match="region params holds 3 bytes"):
        region_words({mm.REGION_PARAMS: b"abc"}, 8)


# --- Amaranth simulation of the whole core -------------------------------------------------------

def _model(seed, vocab, hidden, layers, intermediate):
    return quantize_model(small_model(seed, hidden=hidden, layers=layers, intermediate=intermediate,
                                      vocab=vocab))


def _run(dut, bench, *monitors):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    for monitor in monitors:
        sim.add_process(monitor)
    sim.run()


def _beats_monitor(dut, taken):
    """A process that checks, at every clock edge, that no row unit's weight FIFO is read while it
    offers no beat (the streamer reads them on its own count of the beats written, not on their
    flags), that all are read together, and counts the beats read into ``taken[0]``."""
    async def monitor(ctx):
        fifos = dut.probe["wfifos"]
        signals = [s for f in fifos for s in (f.r_en, f.r_rdy)]
        async for _, _, *values in ctx.tick().sample(*signals):
            reads, ready = values[0::2], values[1::2]
            assert len(set(reads)) == 1, "the weight FIFOs read apart"
            if reads[0]:
                assert all(ready), "a weight FIFO read while it was empty"
                taken[0] += 1
    return monitor


@pytest.mark.sim
@pytest.mark.parametrize("lanes, rows", [(8, 1), (8, 2), (4, 4)])
def test_core_amaranth_small(lanes, rows):
    """A model smaller than the configuration (shape read at run time), greedy tokens, state
    persistence and ``RESET_STATE``, logits readable after the token, bad requests answered; with
    one row unit and with several."""
    q = _model(40, vocab=32, hidden=16, layers=2, intermediate=32)
    cfg = HwConfig.for_model(ModelShape(48, 32, 3, 64), lanes=lanes, rows=rows)
    words = region_words(mm.to_regions(q, cfg.lanes, cfg.rows), cfg.lanes, cfg.rows)
    dut = Core(cfg)
    golden = GoldenModel(q)
    got, want = [], []
    logits_hw = []

    async def bench(ctx):
        await write_regions(ctx, dut, words)
        tok = 5
        for phase in range(2):
            for _ in range(3 if phase == 0 else 2):
                token, logit, error, cycles = await request(ctx, dut, Command.STEP, tok)
                assert error == 0
                logits, nxt = golden.step(tok)
                got.append((token, logit))
                want.append((nxt, int(logits.max())))
                tok = token
            # the logits stay readable in Y until the next token
            row = []
            for v in range(q.shape.vocab_size):
                ctx.set(dut.rd_logits.addr, v)
                await ctx.tick().repeat(LOGITS_READ_LATENCY)
                row.append(ctx.get(dut.rd_logits.data))
            logits_hw.append((row, logits.tolist()))
            await request(ctx, dut, Command.RESET_STATE)
            golden.reset()
            tok = 5
        # a token id outside the vocabulary is refused, and nothing changes
        assert (await request(ctx, dut, Command.STEP, 32))[2] == 1
        token, logit, error, cycles = await request(ctx, dut, Command.STEP, 7)
        logits, nxt = golden.step(7)
        assert (token, logit, error) == (nxt, int(logits.max()), 0)
        print(f"cycles per token: {cycles}")

    taken = [0]
    _run(dut, bench, _beats_monitor(dut, taken))
    assert got == want
    # every weight beat of every token (six tokens; the refused one streams nothing), each once
    assert taken[0] == 6 * q.shape.ternary_weights // (cfg.lanes * cfg.rows)
    for hw, gold in logits_hw:
        assert hw == gold


@pytest.mark.sim
def test_preload_regions_reads_back_as_written():
    """``preload_regions`` (what ``mmfree profile`` loads a model with) leaves every word of every
    region where the read ports find it: TRITS split over two row units' memories, over more than
    one bank."""
    q = _model(41, vocab=32, hidden=64, layers=2, intermediate=256)
    cfg = HwConfig.for_model(q.shape, lanes=4, rows=2)
    words = region_words(mm.to_regions(q, cfg.lanes, cfg.rows), cfg.lanes, cfg.rows)
    assert len(words[mm.REGION_TRITS]) > TRITS_BANK and len(words[mm.REGION_PARAMS]) > PARAMS_BANK
    dut = Core(cfg)
    got = {}

    async def bench(ctx):
        preload_regions(ctx, dut, words)
        for region, ws in words.items():
            port = getattr(dut, "rd_" + REGION_PORTS[region])
            got[region] = []
            for addr in range(len(ws)):
                ctx.set(port.addr, addr)
                await ctx.tick().repeat(REGION_READ_LATENCY)
                got[region].append(ctx.get(port.data))

    _run(dut, bench)
    assert got == words


@pytest.mark.sim
def test_core_amaranth_norm_weights_fetched_ahead():
    """The quantiser norm weights of the two-tensor passes are fetched into NWB while PARAMS is
    idle (from GLU's start for RES_DOWN and the next layer, from FINISH's for the next token), and
    those passes then skip their prefetch; a PARAMS write between tokens makes the next token fetch
    them again: here new norm weights of i_proj, o_proj and gate_proj in both layers, and of
    lm_head."""
    q = _model(43, vocab=32, hidden=16, layers=2, intermediate=32)
    cfg = HwConfig.for_model(ModelShape(48, 32, 3, 64), lanes=8, rows=2)
    words = region_words(mm.to_regions(q, cfg.lanes, cfg.rows), cfg.lanes, cfg.rows)
    dut = Core(cfg)
    golden = GoldenModel(q)
    got, want, fetched = [], [], []

    async def step(ctx, tok):
        token, logit, error, _ = await request(ctx, dut, Command.STEP, tok)
        logits, nxt = golden.step(tok)
        got.append((token, logit, error))
        want.append((nxt, int(logits.max()), 0))
        fetched.append((ctx.get(dut.probe["nw_ok0"]), ctx.get(dut.probe["nw_ok12"])))
        return token

    async def bench(ctx):
        await write_regions(ctx, dut, words)
        tok = await step(ctx, 3)
        tok = await step(ctx, tok)
        for layer in q.layers:
            for proj in ("i_proj", "o_proj", "gate_proj"):
                layer[proj].norm.mant = -layer[proj].norm.mant.flip(0)
        q.lm_head.norm.mant = -q.lm_head.norm.mant.flip(0)
        params = region_words(mm.to_regions(q, cfg.lanes, cfg.rows), cfg.lanes, cfg.rows)[mm.REGION_PARAMS]
        changed = [(a, w) for a, (w, old) in enumerate(zip(params, words[mm.REGION_PARAMS])) if w != old]
        assert len(changed) > 32
        ctx.set(dut.wr_params.en, 1)
        for addr, word in changed:
            ctx.set(dut.wr_params.addr, addr)
            ctx.set(dut.wr_params.data, word)
            await ctx.tick()
        ctx.set(dut.wr_params.en, 0)
        await ctx.tick()
        fetched.append((ctx.get(dut.probe["nw_ok0"]), ctx.get(dut.probe["nw_ok12"])))
        for _ in range(2):
            tok = await step(ctx, tok)

    _run(dut, bench)
    assert got == want
    # fetched ahead at the end of every token; nothing held after the write
    assert fetched == [(1, 1), (1, 1), (0, 0), (1, 1), (1, 1)]


@pytest.mark.sim
@pytest.mark.slow
def test_core_amaranth_reload_and_full_rate_rows():
    """A second model on the same gateware, with ``lanes == H`` so that the rows of every H-wide
    matrix come out one per cycle (the vector unit's two-read passes must hold them back); and a
    SCALARS descriptor that does not fit is answered with an error."""
    cfg = HwConfig.for_model(ModelShape(48, 32, 3, 64), lanes=16)
    dut = Core(cfg)
    models = [_model(41, vocab=40, hidden=16, layers=1, intermediate=48),
              _model(42, vocab=48, hidden=32, layers=3, intermediate=32)]
    got, want = [], []

    async def bench(ctx):
        for q in models:
            await write_regions(ctx, dut, region_words(mm.to_regions(q, cfg.lanes, cfg.rows), cfg.lanes, cfg.rows))
            await request(ctx, dut, Command.RESET_STATE)
            golden = GoldenModel(q)
            tok = 1
            for _ in range(2):
                token, logit, error, _ = await request(ctx, dut, Command.STEP, tok)
                logits, nxt = golden.step(tok)
                got.append((token, logit, error))
                want.append((nxt, int(logits.max()), 0))
                tok = token
        # a descriptor beyond the configuration: H = 64 > 32
        ctx.set(dut.wr_scalars.addr, 1)
        ctx.set(dut.wr_scalars.data, 64)
        ctx.set(dut.wr_scalars.en, 1)
        await ctx.tick()
        ctx.set(dut.wr_scalars.en, 0)
        assert (await request(ctx, dut, Command.STEP, 1))[2] == 1

    _run(dut, bench)
    assert got == want


# --- cocotb on Verilator, the tiny model's shape -------------------------------------------------

def _bundled_or_random(name, shape, seed):
    """The bundled model ``name`` if it is installed with ``shape``, else random weights of ``shape``."""
    from mmfree.registry import bundled_models, resolve
    if name in bundled_models():
        q = resolve(name).quantized()
        if q.shape == shape:
            return q, f"the bundled {name} model"
    return _model(seed, shape.vocab_size, shape.hidden_size, shape.num_layers,
                  shape.intermediate_size), f"random weights of the {name} shape"


def core_vectors(q, config, script):
    """Vectors for :mod:`mmfree.sim.tb_core`: the region words and a request script.

    ``script`` is a list of ``("step", token or None)`` (``None``: feed back the previous answer) and
    ``("reset",)``; the golden model gives every expected answer.
    """
    P, R = config.lanes, config.rows
    words = region_words(mm.to_regions(q, P, R), P, R)
    vec = {}
    for region, ws in words.items():
        size = mm.word_bytes(region, P, R)
        vec[f"region__{REGION_PORTS[region]}"] = np.frombuffer(
            b"".join(w.to_bytes(size, "little") for w in ws), dtype=np.uint8).reshape(len(ws), size)
    golden = GoldenModel(q)
    cmds, expect, rows = [], [], []
    tok = 0
    for item in script:
        if item[0] == "reset":
            golden.reset()
            cmds.append((Command.RESET_STATE.value, 0))
            continue
        tok = tok if item[1] is None else item[1]
        logits, nxt = golden.step(tok)
        cmds.append((Command.STEP.value, tok))
        expect.append((nxt, int(logits.max())))
        rows.append(np.asarray(logits, dtype=np.int64))
        tok = nxt
    vec["commands"] = np.array(cmds, dtype=np.int64)
    vec["expect"] = np.array(expect, dtype=np.int64)
    vec["logits"] = np.stack(rows)
    vec["logits_latency"] = np.array(LOGITS_READ_LATENCY)
    vec["weights_per_token"] = np.array(q.shape.ternary_weights)
    vec["lanes"] = np.array(P * R)
    return vec


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("name, steps, arch", [("tiny", 18, "generic"), ("demo", 4, "generic"),
                                               ("tiny", 6, "ecp5")])
def test_core_verilator(name, steps, arch, tmp_path):
    """The preset of a bundled model's name, that model (or random weights of its shape), greedy
    tokens with a ``RESET_STATE`` in between, every answer equal to the golden model's; prints cycles
    per token and the lane utilisation. ``ecp5``: the core as elaborated for an ECP5 (its DSP blocks
    and block RAMs instantiated with their own registers, the lanes' carry chains), through the
    cells' simulation models."""
    from mmfree.sim import runner
    reason = runner.missing("verilator")
    if reason:
        pytest.skip(reason)
    shape = {"tiny": TINY_SHAPE, "demo": DEMO_SHAPE}[name]
    q, what = _bundled_or_random(name, shape, 50)
    cfg = HwConfig.preset(name)
    first = steps * 2 // 3
    script = [("step", 10)] + [("step", None)] * (first - 1) + [("reset",), ("step", 10)] + \
        [("step", None)] * (steps - first - 1)
    vec = core_vectors(q, cfg, script)
    from mmfree.hw.synth import ECP5_TARGET
    ecp5 = arch == "ecp5"
    runner.run_cocotb(Core(cfg), simulator="verilator", test_module="mmfree.sim.tb_core", name="core",
                      vectors=vec, run_dir=tmp_path, platform=ECP5_TARGET if ecp5 else None,
                      sources=[runner.ecp5_cell_models()] if ecp5 else ())
    report = json.loads((tmp_path / "core_report.json").read_text())
    assert report["tokens"] == steps          # the testbench stops at the first difference
    print(f"\n{name} ({what}), {cfg.lanes} lanes: {steps} tokens and their rows of logits identical "
          f"to the golden model's; "
          f"{report['cycles_per_token']:.0f} cycles per token, lane utilisation "
          f"{100 * report['utilisation']:.1f}%")


# --- the banked regions' ECP5 block RAM ----------------------------------------------------------

def _banked_memory(width, depth, bank, arch):
    """A component around :class:`~mmfree.hw.core._BankedReadPort`: each ``cmd`` beat writes ``data``
    at ``addr`` (``write`` set) or reads ``addr``, whose word leaves on ``rdata`` in order."""
    from types import SimpleNamespace
    from amaranth import Module, Signal
    from amaranth.lib import data, fifo, stream, wiring
    from amaranth.lib.wiring import In, Out
    from mmfree.hw.core import _BankedReadPort, REGION_READ_LATENCY

    abits = (depth - 1).bit_length()
    cmd = data.StructLayout({"write": 1, "addr": abits, "data": width})

    class BankedMemory(wiring.Component):
        def __init__(self):
            super().__init__({"cmd": In(stream.Signature(cmd)), "rdata": Out(stream.Signature(width))})

        def elaborate(self, platform):
            m = Module()
            wr = SimpleNamespace(addr=Signal(abits), data=Signal(width), en=Signal())
            port = _BankedReadPort(m, "mem", width, depth, bank, wr, arch)
            m.submodules.out = out = fifo.SyncFIFOBuffered(width=width, depth=8)
            take = Signal()
            flight = [Signal(name=f"flight{i}") for i in range(REGION_READ_LATENCY)]
            m.d.comb += [
                self.cmd.ready.eq(out.level + sum(flight) < 6),
                take.eq(self.cmd.valid & self.cmd.ready),
                wr.addr.eq(self.cmd.payload.addr), wr.data.eq(self.cmd.payload.data),
                wr.en.eq(take & self.cmd.payload.write),
                port.addr.eq(self.cmd.payload.addr),
                out.w_data.eq(port.data), out.w_en.eq(flight[-1]),
                self.rdata.payload.eq(out.r_data), self.rdata.valid.eq(out.r_rdy),
                out.r_en.eq(self.rdata.ready),
            ]
            m.d.sync += [flight[0].eq(take & ~self.cmd.payload.write)]
            m.d.sync += [b.eq(a) for a, b in zip(flight, flight[1:])]
            return m

    return BankedMemory()


@pytest.mark.sim
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("width, bank, depth", [(20, 1024, 3000), (20, 1024, 300), (32, 512, 700),
                                                (17, 1024, 640), (16, 512, 4400)])
def test_banked_region_on_ecp5_cells(simulator, width, bank, depth, tmp_path):
    """The regions on the ECP5: banks of DP16KD blocks with their own output register (through the
    block's simulation model) read back every word written, in the clocks of the inferred memory and
    its registers; 20-bit words (two 18-bit blocks a bank), three banks, the last one short, or one
    bank shorter than a bank's 1,024 words (its address narrower than a bank's); SCALARS' 32-bit words
    in 512 x 36 blocks (two banks), GATES' 17-bit words in one 1024 x 18 block; nine banks of 16-bit
    words in three groups (the bank picked in two levels), the last group one short bank."""
    from mmfree.sim.runner import ecp5_cell_models, missing, run_cocotb
    from mmfree.sim.vectors import payload_rows
    if missing(simulator):
        pytest.skip(missing(simulator))
    abits = (depth - 1).bit_length()
    rng = np.random.default_rng(5)
    mem, cmds, reads = {}, [], []
    for _ in range(3000):
        addr = int(rng.integers(depth))
        if rng.random() < 0.5 or addr not in mem:
            mem[addr] = int(rng.integers(1 << width))
            cmds.append(1 | addr << 1 | mem[addr] << (1 + abits))
        else:
            cmds.append(addr << 1)
            reads.append(mem[addr])
    vectors = {"in__cmd": payload_rows(cmds, 1 + abits + width),
               "out__rdata": payload_rows(reads, width), "stall": 0.2, "seed": 2}
    for arch in ("generic", "ecp5"):
        run_cocotb(_banked_memory(width, depth, bank, arch), simulator=simulator,
                   test_module="mmfree.sim.tb_streams", name=f"banked_{arch}",
                   run_dir=tmp_path / arch, sources=[ecp5_cell_models()] if arch == "ecp5" else (),
                   vectors=vectors)
