"""Element-wise operations of the MLGRU and GLU: bit-exact pipelined hardware for :mod:`mmfree.numerics`.

Every function here exists twice: as a *datapath builder* (``sigmoid_datapath``, ``silu_datapath``, ...)
that adds its registers to a :class:`Pipeline` so that larger units (:mod:`mmfree.hw.mlgru`,
:mod:`mmfree.hw.glu`) can chain several of them under one stall signal, and as a small stream
:class:`~amaranth.lib.wiring.Component` (:class:`Sigmoid`, :class:`SiLU`, ...) that wraps one builder.

Stream elements
---------------
Each component has an input stream ``i`` and an output stream ``o``. All of them are a plain pipeline of
``LATENCY`` register stages that advances as a whole whenever its last stage is empty or being read
(``i.ready = ~o.valid | o.ready``):

* **Latency**: ``LATENCY`` clock cycles from an input transfer to ``o.valid``.
* **Throughput**: one element per clock cycle while ``o.ready`` is high; a stalled output stalls the
  whole pipeline (and ``i.ready``) for as many cycles.
* ``o.valid`` never depends on ``o.ready``; ``i.ready`` depends combinationally on ``o.ready``.

Timing: every product is split into DSP-sized pieces (18-bit signed operands) whose partial products
are registered, then summed by one registered adder level per halving (:meth:`Pipeline.mul`); block
RAM outputs get one more register before any arithmetic. Each stage is at most one DSP block, one
carry chain or one small mux tree: every unit here closes above 100 MHz on an ECP5-85F, speed grade 6.

Formats follow :mod:`mmfree.numerics`: ACT ``signed(24)`` with 12 fraction bits, STATE ``signed(32)``
with 20, GATE ``unsigned(17)`` with 16, BFP16 mantissas ``signed(16)`` with a ``signed(7)`` exponent.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics
from mmfree.hw.ecp5 import (DP16KD_LATENCY, DP16KD_MODES, MULT18X18D_LATENCY, MULT18X18D_WIDTH,
                            dp16kd_ram, mult18x18d, platform_arch)
from mmfree.numerics import ACT, GATE, STATE, BFP_MANT

__all__ = [
    "fixed_shape", "ACT_SHAPE", "STATE_SHAPE", "GATE_SHAPE", "MANT_SHAPE", "BFP_EXP_SHAPE",
    "Pipeline", "Buffer", "BUFFER_READ_LATENCY", "mul_latency", "saturate", "round_shift",
    "sigmoid_datapath", "silu_datapath", "silu_state_datapath", "mul_act_datapath",
    "lower_bound_blend_datapath", "state_update_datapath", "apply_norm_weight_datapath",
    "Sigmoid", "SiLU", "SiLUState", "MulAct", "LowerBoundBlend", "StateUpdate", "ApplyNormWeight",
]


def fixed_shape(fmt):
    """The Amaranth shape of a :class:`mmfree.numerics.Fixed` format."""
    return signed(fmt.width) if fmt.signed else unsigned(fmt.width)


ACT_SHAPE = fixed_shape(ACT)
STATE_SHAPE = fixed_shape(STATE)
GATE_SHAPE = fixed_shape(GATE)
MANT_SHAPE = fixed_shape(BFP_MANT)
BFP_EXP_SHAPE = signed(max(numerics.BFP_EXP_MIN.bit_length(), numerics.BFP_EXP_MAX.bit_length()) + 1)
"""Shape of a BFP16 exponent: holds ``numerics.BFP_EXP_MIN .. BFP_EXP_MAX``."""


# --- building blocks -----------------------------------------------------------------------------

_DSP_SIGNED_BITS = MULT18X18D_WIDTH  # operand width of the ECP5 MULT18X18D (and most FPGA DSP blocks)


def _mul_chunks(shape):
    """``(offset, width, signed)`` of the operand pieces one DSP multiplier each takes."""
    limit = _DSP_SIGNED_BITS if shape.signed else _DSP_SIGNED_BITS - 1
    if shape.width <= limit:
        return [(0, shape.width, shape.signed)]
    out, off = [], 0
    while shape.width - off > limit:
        out.append((off, _DSP_SIGNED_BITS - 1, False))
        off += _DSP_SIGNED_BITS - 1
    out.append((off, shape.width - off, shape.signed))
    return out


def mul_latency(shape_a, shape_b):
    """Register stages of :meth:`Pipeline.mul` for operands of these shapes."""
    n = len(_mul_chunks(shape_a)) * len(_mul_chunks(shape_b))
    return MULT18X18D_LATENCY + (n - 1).bit_length()


class Pipeline:
    """Registers of a pipeline that advances as a whole: every register loads only when ``en`` is high.

    ``en`` is typically ``~o.valid | o.ready`` of the stream the pipeline feeds, which makes a stalled
    output freeze every stage (and memory read ports wired with :meth:`read`) in place. ``arch``
    (:func:`mmfree.hw.ecp5.platform_arch`): on ``"ecp5"`` the products of :meth:`mul` are
    ``MULT18X18D`` blocks with their own registers (same clocks).
    """

    def __init__(self, m, en, arch="generic"):
        self.m = m
        self.en = en
        self.arch = arch

    def reg(self, value, shape=None, *, name=None):
        """One register stage holding ``value`` (truncated or extended to ``shape``)."""
        value = Value.cast(value)
        r = Signal(value.shape() if shape is None else shape, name=name)
        self.m.d.sync += r.eq(Mux(self.en, value, r))
        return r

    def delay(self, value, cycles, *, name=None):
        """``value`` delayed by ``cycles`` register stages."""
        for _ in range(cycles):
            value = self.reg(value, name=name)
        return value

    def read(self, mem, addr, *, registered=True, name=None):
        """A synchronous read port of ``mem`` at ``addr``: data 2 stages later (1 if not ``registered``).

        The extra register keeps a block RAM's slow output off any arithmetic path.
        """
        port = mem.read_port()
        self.m.d.comb += [port.addr.eq(addr), port.en.eq(self.en)]
        return self.reg(port.data, name=name) if registered else port.data

    def buffer(self, shape, depth, *, name, lut_ram=False):
        """A memory of ``depth`` words of ``shape`` that this pipeline reads, once, through
        :meth:`Buffer.read` (the word :data:`BUFFER_READ_LATENCY` stages after its address, frozen
        with the pipeline), and that is written through :attr:`Buffer.w_addr`, :attr:`Buffer.w_data`
        and :attr:`Buffer.w_en`. On the ECP5, if one ``DP16KD`` is deep enough, its blocks are
        instantiated with their own output register as the second stage
        (:func:`mmfree.hw.ecp5.dp16kd_ram`): a write and a read of one address in one clock then read
        an undefined word, which the caller must not use. With ``lut_ram`` the memory is LUT RAM
        instead (Yosys' ``ram_style`` ``distributed``), its word registered twice: for shallow
        buffers, where block RAM would hold a few words a block."""
        return Buffer(self, shape, depth, name, lut_ram)

    def mul(self, a, b, *, name="mul"):
        """``a * b``, :func:`mul_latency` stages later: the operand pieces (at most 18 bits each)
        registered, so that nothing but routing stands before a DSP block; one registered DSP
        product per pair of pieces; then one registered adder level per halving. On the ECP5 the
        operand and product registers are the DSP block's own (:func:`mmfree.hw.ecp5.mult18x18d`)."""
        a, b = Value.cast(a), Value.cast(b)
        shape = signed(len(a) + len(b)) if a.shape().signed or b.shape().signed \
            else unsigned(len(a) + len(b))
        if self.arch != "ecp5":
            a, b = self.reg(a, name=f"{name}_a"), self.reg(b, name=f"{name}_b")
        terms = []
        for oa, wa, sa in _mul_chunks(a.shape()):
            pa = a[oa:oa + wa].as_signed() if sa else a[oa:oa + wa]
            for ob, wb, sb in _mul_chunks(b.shape()):
                pb = b[ob:ob + wb].as_signed() if sb else b[ob:ob + wb]
                if self.arch == "ecp5":
                    pp = mult18x18d(self.m, f"{name}_dsp{len(terms)}", pa, pb, self.en)
                else:
                    pp = self.reg(pa * pb, name=f"{name}_pp")
                terms.append((pp, oa + ob))
        while len(terms) > 1:
            terms.sort(key=lambda t: t[1])
            nxt = []
            for j in range(0, len(terms) - 1, 2):
                (x, sx), (y, sy) = terms[j], terms[j + 1]
                nxt.append((self.reg(x + (y << (sy - sx)), name=f"{name}_sum"), sx))
            if len(terms) % 2:
                nxt.append((self.reg(terms[-1][0], name=f"{name}_sum"), terms[-1][1]))
            terms = nxt
        value, sh = terms[0]
        assert sh == 0
        return Value.cast(value)[:shape.width].as_signed() if shape.signed else value[:shape.width]


BUFFER_READ_LATENCY = 2
"""Stages from an address to its word in :meth:`Buffer.read`: the block RAM's read and a register
after it (:meth:`Pipeline.read`; on the ECP5 the ``DP16KD``'s own output register,
:data:`~mmfree.hw.ecp5.DP16KD_LATENCY`)."""
assert DP16KD_LATENCY == BUFFER_READ_LATENCY


class Buffer:
    """See :meth:`Pipeline.buffer`."""

    def __init__(self, p, shape, depth, name, lut_ram=False):
        self._p, self._shape, self._depth, self.name = p, Shape.cast(shape), depth, name
        self._lut_ram = lut_ram
        self.w_addr = Signal(range(max(depth, 2)), name=f"{name}_waddr")
        self.w_data = Signal(shape, name=f"{name}_wdata")
        self.w_en = Signal(name=f"{name}_we")
        self._read = False

    def read(self, addr, *, name=None):
        """The word at ``addr``, :data:`BUFFER_READ_LATENCY` stages later."""
        if self._read:
            raise ValueError(f"{self.name}: a buffer is read through one port")
        self._read = True
        p, m = self._p, self._p.m
        mode = next((w for w in sorted(DP16KD_MODES, reverse=True) if self._depth <= DP16KD_MODES[w]), None)
        if p.arch == "ecp5" and mode is not None and not self._lut_ram:
            raddr = Signal(range(max(self._depth, 2)), name=f"{self.name}_raddr")
            m.d.comb += raddr.eq(addr)
            data = Signal(self._shape, name=name)
            m.d.comb += data.eq(dp16kd_ram(m, self.name, self.w_addr, self.w_data, self.w_en,
                                           raddr, data_width=mode, read_en=p.en))
            return data
        attrs = {"ram_style": "distributed"} if self._lut_ram else {}
        mem = memory.Memory(shape=self._shape, depth=self._depth, init=[], attrs=attrs)
        m.submodules[self.name] = mem
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en)]
        return p.read(mem, addr, name=name)


def saturate(value, fmt):
    """``value`` clamped to the range of ``fmt`` and cast to its shape.

    For a signed value and format the range check compares the top bits with the sign (no carry chain).
    """
    value = Value.cast(value)
    if fmt.signed and value.shape().signed and len(value) > fmt.width:
        top = value[fmt.width - 1:]
        fits = top.all() | ~top.any()
        limit = Mux(value[-1], fmt.min, fmt.max)
        return Mux(fits, value[:fmt.width], limit[:fmt.width]).as_signed()
    lo, hi = fmt.min, fmt.max
    clamped = Mux(value > hi, hi, Mux(value < lo, lo, value))
    return clamped[:fmt.width].as_signed() if fmt.signed else clamped[:fmt.width]


def round_shift(value, sh):
    """``numerics.shift_round`` by a constant ``sh``: ``value * 2**-sh``, rounded half up."""
    value = Value.cast(value)
    if sh > 0:
        return (value + (1 << (sh - 1))) >> sh
    return value << (-sh)


# --- datapaths -----------------------------------------------------------------------------------

_SIG_FRAC_BITS = ACT.frac - numerics.SIGMOID_STEP_LOG2
_SIG_LO = numerics.SIGMOID_IN_MIN << ACT.frac
_SIG_TABLE = numerics.SIGMOID_TABLE
_SIG_SLOPE = unsigned(max(b - a for a, b in zip(_SIG_TABLE, _SIG_TABLE[1:])).bit_length())
if any(b < a for a, b in zip(_SIG_TABLE, _SIG_TABLE[1:])):
    raise ValueError("numerics.SIGMOID_TABLE must be non-decreasing")   # the datapath relies on it

SIGMOID_LATENCY = 5 + mul_latency(_SIG_SLOPE, unsigned(_SIG_FRAC_BITS)) + 1


def sigmoid_datapath(m, p, x, *, name="sigmoid"):
    """GATE ``numerics.sigmoid(x)`` of ACT ``x``, :data:`SIGMOID_LATENCY` stages after ``x``.

    A ROM holding ``numerics.SIGMOID_TABLE`` read at two addresses (one block RAM, two read ports), then
    the linear interpolation ``t0 + ((t1 - t0) * fr + half) >> bits`` with one small multiplier.
    Each entry passes two registers after the ROM: Yosys leaves an inferred block RAM's output
    register off, and its slow data output then only has to reach the first of them.
    """
    rom = memory.Memory(shape=GATE_SHAPE, depth=len(_SIG_TABLE), init=_SIG_TABLE)
    m.submodules[name + "_rom"] = rom
    span = -2 * _SIG_LO
    off = Signal(range(span), name=name + "_off")
    m.d.comb += off.eq(Mux(x < _SIG_LO, 0, Mux(x > -_SIG_LO - 1, span - 1, x - _SIG_LO)))
    off1 = p.reg(off, name=name + "_off1")
    idx = off1[_SIG_FRAC_BITS:]
    # stages 2 to 4: both table entries (the ROM, its register, one more)
    t0 = p.reg(p.read(rom, idx, name=name + "_t0q"), name=name + "_t0")
    t1 = p.reg(p.read(rom, idx + 1, name=name + "_t1q"), name=name + "_t1")
    fr = p.delay(off1[:_SIG_FRAC_BITS], 3, name=name + "_fr")
    # stage 5: slope (non-negative: the table is monotonic)
    slope = p.reg((t1 - t0)[:_SIG_SLOPE.width], _SIG_SLOPE, name=name + "_slope")
    t0 = p.reg(t0, name=name + "_t0d")
    fr = p.reg(fr, name=name + "_fr3")
    prod = p.mul(slope, fr, name=name + "_mul")
    t0 = p.delay(t0, mul_latency(_SIG_SLOPE, unsigned(_SIG_FRAC_BITS)))
    return p.reg(t0 + round_shift(prod, _SIG_FRAC_BITS), GATE_SHAPE, name=name)


SILU_LATENCY = SIGMOID_LATENCY + mul_latency(ACT_SHAPE, GATE_SHAPE) + 1


def silu_datapath(m, p, x, *, name="silu"):
    """ACT ``numerics.silu(x)`` of ACT ``x``, :data:`SILU_LATENCY` stages after ``x``."""
    s = sigmoid_datapath(m, p, x, name=name + "_sig")
    xs = p.delay(x, SIGMOID_LATENCY, name=name + "_x")
    prod = p.mul(xs, s, name=name + "_mul")
    return p.reg(saturate(round_shift(prod, GATE.frac), ACT), ACT_SHAPE, name=name)


SILU_STATE_LATENCY = 1 + SILU_LATENCY


def silu_state_datapath(m, p, h, *, name="silu_state"):
    """ACT ``numerics.silu_state(h)`` of STATE ``h``, :data:`SILU_STATE_LATENCY` stages after ``h``."""
    ha = p.reg(saturate(round_shift(h, STATE.frac - ACT.frac), ACT), ACT_SHAPE, name=name + "_act")
    return silu_datapath(m, p, ha, name=name)


MUL_ACT_LATENCY = mul_latency(ACT_SHAPE, ACT_SHAPE) + 2


def mul_act_datapath(m, p, a, b, *, name="mul_act"):
    """ACT ``numerics.mul_act(a, b)`` of ACT ``a``, ``b``, :data:`MUL_ACT_LATENCY` stages later."""
    prod = p.mul(a, b, name=name + "_mul")
    rounded = p.reg(round_shift(prod, ACT.frac), name=name + "_round")
    return p.reg(saturate(rounded, ACT), ACT_SHAPE, name=name)


_ONE_GATE = 1 << GATE.frac
_ONE_MINUS_GATE = signed(max((_ONE_GATE - GATE.max).bit_length(), _ONE_GATE.bit_length()) + 1)
LOWER_BOUND_BLEND_LATENCY = 1 + mul_latency(_ONE_MINUS_GATE, GATE_SHAPE) + 1


def lower_bound_blend_datapath(m, p, lb, f, *, name="lb_blend"):
    """GATE ``numerics.lower_bound_blend(lb, f)``, :data:`LOWER_BOUND_BLEND_LATENCY` stages later.

    The definition has no saturation; for any two GATE codes the exact result lies in the GATE range.
    """
    om = p.reg(_ONE_GATE - lb, _ONE_MINUS_GATE, name=name + "_om")
    f1 = p.reg(f, name=name + "_f")
    prod = p.mul(om, f1, name=name + "_mul")
    lb = p.delay(lb, 1 + mul_latency(_ONE_MINUS_GATE, GATE_SHAPE), name=name + "_lb")
    return p.reg(lb + round_shift(prod, GATE.frac), GATE_SHAPE, name=name)


STATE_UPDATE_LATENCY = 1 + max(mul_latency(GATE_SHAPE, STATE_SHAPE),
                               mul_latency(_ONE_MINUS_GATE, ACT_SHAPE)) + 3


def state_update_datapath(m, p, h, f, c, *, name="state_update"):
    """STATE ``numerics.state_update(h, f, c)``, :data:`STATE_UPDATE_LATENCY` stages later."""
    om = p.reg(_ONE_GATE - f, _ONE_MINUS_GATE, name=name + "_om")
    f1 = p.reg(f, name=name + "_f")
    h1 = p.reg(h, name=name + "_h")
    c1 = p.reg(c, name=name + "_c")
    lat_fh = mul_latency(GATE_SHAPE, STATE_SHAPE)
    lat_fc = mul_latency(_ONE_MINUS_GATE, ACT_SHAPE)
    lat = max(lat_fh, lat_fc)
    fh = p.delay(p.mul(f1, h1, name=name + "_fh"), lat - lat_fh)
    fc = p.delay(p.mul(om, c1, name=name + "_fc"), lat - lat_fc)
    acc = p.reg(fh + (fc << (STATE.frac - ACT.frac)), name=name + "_sum")
    rounded = p.reg(round_shift(acc, GATE.frac), name=name + "_round")
    return p.reg(saturate(rounded, STATE), STATE_SHAPE, name=name)


_NW_PROD = signed(ACT.width + BFP_MANT.width)
APPLY_NORM_WEIGHT_LATENCY = mul_latency(ACT_SHAPE, MANT_SHAPE) + 4


def apply_norm_weight_datapath(m, p, x, w_mant, w_exp, *, name="norm_weight"):
    """ACT ``numerics.apply_norm_weight(x, w_mant, w_exp)``, :data:`APPLY_NORM_WEIGHT_LATENCY` later.

    ``w_exp`` may change with every element. One arithmetic barrel shifter does both directions:
    ``u = (p << (W + 1)) >> (e + W)`` is ``p >> (e - 1)`` for ``e > 0`` and ``p << (1 - e)`` otherwise,
    and ``(u + 1) >> 1`` is then the half-up rounded ``p * 2**-e`` in both cases. ``e`` is clamped to
    ``[-W, width(p)]`` (``W`` = ACT width), beyond which the saturated result no longer changes.
    """
    prod = p.mul(x, w_mant, name=name + "_mul")
    pw = _NW_PROD.width
    lo, hi = -ACT.width, pw
    # the shift amount is clamped in the multiplier's last stage, into a register of its own
    e = p.delay(w_exp, mul_latency(ACT_SHAPE, MANT_SHAPE) - 1, name=name + "_exp")
    amt = p.reg(Mux(e < lo, 0, Mux(e > hi, hi - lo, e - lo))[:(hi - lo).bit_length()],
                name=name + "_amt")
    wide = prod << (ACT.width + 1)
    # the shift in two stages: whole bytes, then the bits left
    coarse = p.reg(wide >> (amt[3:] << 3), signed(len(wide)), name=name + "_coarse")
    u = p.reg(coarse >> p.reg(amt[:3], name=name + "_amt_lo"), signed(len(wide)),
              name=name + "_shifted")
    rounded = p.reg((u + 1) >> 1, name=name + "_round")
    return p.reg(saturate(rounded, ACT), ACT_SHAPE, name=name)


# --- stream components ---------------------------------------------------------------------------

class _Element(wiring.Component):
    LATENCY = None

    def __init__(self, i_shape, o_shape):
        super().__init__({
            "i": In(stream.Signature(i_shape)),
            "o": Out(stream.Signature(o_shape)),
        })

    def _datapath(self, m, p, payload):
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        p = Pipeline(m, en, platform_arch(platform))
        out = self._datapath(m, p, self.i.payload)
        m.d.comb += [
            self.i.ready.eq(en),
            self.o.valid.eq(p.delay(self.i.valid, self.LATENCY, name="valid")),
            self.o.payload.eq(out),
        ]
        return m


class Sigmoid(_Element):
    """``numerics.sigmoid``: ACT ``i`` -> GATE ``o``. Latency 6, one element per cycle; one block RAM,
    one small multiplier."""

    LATENCY = SIGMOID_LATENCY

    def __init__(self):
        super().__init__(ACT_SHAPE, GATE_SHAPE)

    def _datapath(self, m, p, x):
        return sigmoid_datapath(m, p, x)


class SiLU(_Element):
    """``numerics.silu``: ACT ``i`` -> ACT ``o``. Latency 9, one element per cycle; one block RAM,
    multipliers 24x17 (two DSP blocks) and a small one."""

    LATENCY = SILU_LATENCY

    def __init__(self):
        super().__init__(ACT_SHAPE, ACT_SHAPE)

    def _datapath(self, m, p, x):
        return silu_datapath(m, p, x)


class SiLUState(_Element):
    """``numerics.silu_state``: STATE ``i`` -> ACT ``o``. Latency 10, one element per cycle."""

    LATENCY = SILU_STATE_LATENCY

    def __init__(self):
        super().__init__(STATE_SHAPE, ACT_SHAPE)

    def _datapath(self, m, p, h):
        return silu_state_datapath(m, p, h)


class MulAct(_Element):
    """``numerics.mul_act``: ``i`` = {a, b: ACT} -> ACT ``o``. Latency 4, one element per cycle; a
    24x24 multiplier (four DSP blocks)."""

    LATENCY = MUL_ACT_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"a": ACT_SHAPE, "b": ACT_SHAPE}), ACT_SHAPE)

    def _datapath(self, m, p, i):
        return mul_act_datapath(m, p, i.a, i.b)


class LowerBoundBlend(_Element):
    """``numerics.lower_bound_blend``: ``i`` = {lb, f: GATE} -> GATE ``o``. Latency 3, one element per
    cycle; an 18x17 multiplier."""

    LATENCY = LOWER_BOUND_BLEND_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"lb": GATE_SHAPE, "f": GATE_SHAPE}), GATE_SHAPE)

    def _datapath(self, m, p, i):
        return lower_bound_blend_datapath(m, p, i.lb, i.f)


class StateUpdate(_Element):
    """``numerics.state_update``: ``i`` = {h: STATE, f: GATE, c: ACT} -> STATE ``o``. Latency 6, one
    element per cycle; multipliers 17x32 and 18x24 (two DSP blocks each)."""

    LATENCY = STATE_UPDATE_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"h": STATE_SHAPE, "f": GATE_SHAPE, "c": ACT_SHAPE}),
                         STATE_SHAPE)

    def _datapath(self, m, p, i):
        return state_update_datapath(m, p, i.h, i.f, i.c)


class ApplyNormWeight(_Element):
    """``numerics.apply_norm_weight``: ``i`` = {x: ACT, w_mant: signed(16), w_exp: signed(7)} -> ACT.

    Latency 5, one element per cycle; a 24x16 multiplier and a 65-bit barrel shifter. The exponent
    travels with every element, so one unit serves every norm weight tensor.
    """

    LATENCY = APPLY_NORM_WEIGHT_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"x": ACT_SHAPE, "w_mant": MANT_SHAPE,
                                            "w_exp": BFP_EXP_SHAPE}), ACT_SHAPE)

    def _datapath(self, m, p, i):
        return apply_norm_weight_datapath(m, p, i.x, i.w_mant, i.w_exp)
