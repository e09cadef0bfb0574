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

Formats follow :mod:`mmfree.numerics`: ACT ``signed(24)`` with 12 fraction bits, STATE ``signed(32)``
with 20, GATE ``unsigned(17)`` with 16, BFP16 mantissas ``signed(16)`` with a ``signed(7)`` exponent.
"""

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics
from mmfree.numerics import ACT, GATE, STATE, BFP_MANT

__all__ = [
    "fixed_shape", "ACT_SHAPE", "STATE_SHAPE", "GATE_SHAPE", "MANT_SHAPE", "BFP_EXP_SHAPE",
    "Pipeline", "saturate", "round_shift",
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

class Pipeline:
    """Registers of a pipeline that advances as a whole: every register loads only when ``en`` is high.

    ``en`` is typically ``~o.valid | o.ready`` of the stream the pipeline feeds, which makes a stalled
    output freeze every stage (and memory read ports wired with :meth:`read`) in place.
    """

    def __init__(self, m, en):
        self.m = m
        self.en = en

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

    def read(self, mem, addr):
        """A synchronous read port of ``mem`` at ``addr``; its data is one stage later."""
        port = mem.read_port()
        self.m.d.comb += [port.addr.eq(addr), port.en.eq(self.en)]
        return port.data


def saturate(value, fmt):
    """``value`` clamped to the range of ``fmt`` and cast to its shape."""
    value = Value.cast(value)
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

SIGMOID_LATENCY = 3


def sigmoid_datapath(m, p, x, *, name="sigmoid"):
    """GATE ``numerics.sigmoid(x)`` of ACT ``x``, :data:`SIGMOID_LATENCY` stages after ``x``.

    A ROM holding ``numerics.SIGMOID_TABLE`` read at two addresses (one block RAM, two read ports), then
    the linear interpolation ``t0 + ((t1 - t0) * fr + half) >> bits`` with one small multiplier.
    """
    table = numerics.SIGMOID_TABLE
    if any(b < a for a, b in zip(table, table[1:])):
        raise ValueError("numerics.SIGMOID_TABLE must be non-decreasing")   # the datapath relies on it
    rom = memory.Memory(shape=GATE_SHAPE, depth=len(table), init=table)
    m.submodules[name + "_rom"] = rom
    span = -2 * _SIG_LO
    off = Signal(range(span), name=name + "_off")
    m.d.comb += off.eq(Mux(x < _SIG_LO, 0, Mux(x > -_SIG_LO - 1, span - 1, x - _SIG_LO)))
    idx = off[_SIG_FRAC_BITS:]
    fr = off[:_SIG_FRAC_BITS]
    # stage 1: both table entries
    t0 = p.read(rom, idx)
    t1 = p.read(rom, idx + 1)
    fr1 = p.reg(fr, name=name + "_fr1")
    # stage 2: slope (non-negative: the table is monotonic)
    d2 = p.reg((t1 - t0)[:GATE.width], unsigned(GATE.width), name=name + "_d2")
    t02 = p.reg(t0, name=name + "_t02")
    fr2 = p.reg(fr1, name=name + "_fr2")
    # stage 3: interpolation
    return p.reg(t02 + round_shift(d2 * fr2, _SIG_FRAC_BITS), GATE_SHAPE, name=name)


SILU_LATENCY = SIGMOID_LATENCY + 2


def silu_datapath(m, p, x, *, name="silu"):
    """ACT ``numerics.silu(x)`` of ACT ``x``, :data:`SILU_LATENCY` stages after ``x``."""
    s = sigmoid_datapath(m, p, x, name=name + "_sig")
    xs = p.delay(x, SIGMOID_LATENCY, name=name + "_x")
    prod = p.reg(xs * s, name=name + "_prod")
    return p.reg(saturate(round_shift(prod, GATE.frac), ACT), ACT_SHAPE, name=name)


SILU_STATE_LATENCY = 1 + SILU_LATENCY


def silu_state_datapath(m, p, h, *, name="silu_state"):
    """ACT ``numerics.silu_state(h)`` of STATE ``h``, :data:`SILU_STATE_LATENCY` stages after ``h``."""
    ha = p.reg(saturate(round_shift(h, STATE.frac - ACT.frac), ACT), ACT_SHAPE, name=name + "_act")
    return silu_datapath(m, p, ha, name=name)


MUL_ACT_LATENCY = 2


def mul_act_datapath(m, p, a, b, *, name="mul_act"):
    """ACT ``numerics.mul_act(a, b)`` of ACT ``a``, ``b``, :data:`MUL_ACT_LATENCY` stages later."""
    prod = p.reg(a * b, name=name + "_prod")
    return p.reg(saturate(round_shift(prod, ACT.frac), ACT), ACT_SHAPE, name=name)


LOWER_BOUND_BLEND_LATENCY = 2
_ONE_GATE = Const(1 << GATE.frac, signed(GATE.width + 2))


def lower_bound_blend_datapath(m, p, lb, f, *, name="lb_blend"):
    """GATE ``numerics.lower_bound_blend(lb, f)``, :data:`LOWER_BOUND_BLEND_LATENCY` stages later.

    The definition has no saturation; for any two GATE codes the exact result lies in the GATE range.
    """
    prod = p.reg((_ONE_GATE - lb) * f, name=name + "_prod")
    lb1 = p.reg(lb, name=name + "_lb")
    return p.reg(lb1 + round_shift(prod, GATE.frac), GATE_SHAPE, name=name)


STATE_UPDATE_LATENCY = 3


def state_update_datapath(m, p, h, f, c, *, name="state_update"):
    """STATE ``numerics.state_update(h, f, c)``, :data:`STATE_UPDATE_LATENCY` stages later."""
    c_s = c << (STATE.frac - ACT.frac)
    p1 = p.reg(f * h, name=name + "_fh")
    p2 = p.reg((_ONE_GATE - f) * c_s, name=name + "_fc")
    acc = p.reg(p1 + p2, name=name + "_sum")
    return p.reg(saturate(round_shift(acc, GATE.frac), STATE), STATE_SHAPE, name=name)


APPLY_NORM_WEIGHT_LATENCY = 3


def apply_norm_weight_datapath(m, p, x, w_mant, w_exp, *, name="norm_weight"):
    """ACT ``numerics.apply_norm_weight(x, w_mant, w_exp)``, :data:`APPLY_NORM_WEIGHT_LATENCY` later.

    ``w_exp`` may change with every element. The product (40 bits) is shifted right with rounding for
    ``w_exp > 0`` or left for ``w_exp <= 0``; shift amounts beyond those that can still change the
    saturated result are clamped, which keeps the shifters small.
    """
    prod = p.reg(x * w_mant, name=name + "_prod")
    pw = len(prod)
    e1 = p.reg(w_exp, name=name + "_exp")
    # right: (p + 2**(e-1)) >> e == ((p >> (e-1)) + 1) >> 1; any e-1 >= pw-1 gives the same result
    r_amt = Mux(e1 - 1 > pw - 1, pw - 1, e1 - 1)[:(pw - 1).bit_length()]
    right = ((prod >> r_amt) + 1) >> 1
    # left: a non-zero product shifted by >= ACT.width bits saturates whatever the exact amount
    l_amt = Mux(-e1 > ACT.width, ACT.width, -e1)[:ACT.width.bit_length()]
    left = prod << l_amt
    shifted = p.reg(Mux(e1 > 0, right, left), name=name + "_shifted")
    return p.reg(saturate(shifted, ACT), ACT_SHAPE, name=name)


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
        p = Pipeline(m, en)
        out = self._datapath(m, p, self.i.payload)
        m.d.comb += [
            self.i.ready.eq(en),
            self.o.valid.eq(p.delay(self.i.valid, self.LATENCY, name="valid")),
            self.o.payload.eq(out),
        ]
        return m


class Sigmoid(_Element):
    """``numerics.sigmoid``: ACT ``i`` -> GATE ``o``. Latency 3, one element per cycle, one block RAM."""

    LATENCY = SIGMOID_LATENCY

    def __init__(self):
        super().__init__(ACT_SHAPE, GATE_SHAPE)

    def _datapath(self, m, p, x):
        return sigmoid_datapath(m, p, x)


class SiLU(_Element):
    """``numerics.silu``: ACT ``i`` -> ACT ``o``. Latency 5, one element per cycle."""

    LATENCY = SILU_LATENCY

    def __init__(self):
        super().__init__(ACT_SHAPE, ACT_SHAPE)

    def _datapath(self, m, p, x):
        return silu_datapath(m, p, x)


class SiLUState(_Element):
    """``numerics.silu_state``: STATE ``i`` -> ACT ``o``. Latency 6, one element per cycle."""

    LATENCY = SILU_STATE_LATENCY

    def __init__(self):
        super().__init__(STATE_SHAPE, ACT_SHAPE)

    def _datapath(self, m, p, h):
        return silu_state_datapath(m, p, h)


class MulAct(_Element):
    """``numerics.mul_act``: ``i`` = {a, b: ACT} -> ACT ``o``. Latency 2, one element per cycle."""

    LATENCY = MUL_ACT_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"a": ACT_SHAPE, "b": ACT_SHAPE}), ACT_SHAPE)

    def _datapath(self, m, p, i):
        return mul_act_datapath(m, p, i.a, i.b)


class LowerBoundBlend(_Element):
    """``numerics.lower_bound_blend``: ``i`` = {lb, f: GATE} -> GATE ``o``. Latency 2, one per cycle."""

    LATENCY = LOWER_BOUND_BLEND_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"lb": GATE_SHAPE, "f": GATE_SHAPE}), GATE_SHAPE)

    def _datapath(self, m, p, i):
        return lower_bound_blend_datapath(m, p, i.lb, i.f)


class StateUpdate(_Element):
    """``numerics.state_update``: ``i`` = {h: STATE, f: GATE, c: ACT} -> STATE ``o``. Latency 3."""

    LATENCY = STATE_UPDATE_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"h": STATE_SHAPE, "f": GATE_SHAPE, "c": ACT_SHAPE}),
                         STATE_SHAPE)

    def _datapath(self, m, p, i):
        return state_update_datapath(m, p, i.h, i.f, i.c)


class ApplyNormWeight(_Element):
    """``numerics.apply_norm_weight``: ``i`` = {x: ACT, w_mant: signed(16), w_exp: signed(7)} -> ACT.

    Latency 3, one element per cycle. The exponent travels with every element, so one unit serves
    every norm weight tensor.
    """

    LATENCY = APPLY_NORM_WEIGHT_LATENCY

    def __init__(self):
        super().__init__(data.StructLayout({"x": ACT_SHAPE, "w_mant": MANT_SHAPE,
                                            "w_exp": BFP_EXP_SHAPE}), ACT_SHAPE)

    def _datapath(self, m, p, i):
        return apply_norm_weight_datapath(m, p, i.x, i.w_mant, i.w_exp)
