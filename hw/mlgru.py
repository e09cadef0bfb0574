"""The MLGRU token mixer's element-wise part, bit-exact with :mod:`mmfree.numerics`.

Per channel ``j`` of layer ``l`` (``H`` channels), from the three projection outputs of the
``attn_norm`` output, exactly as the integer golden model computes it::

    f   = lower_bound_blend(lb[l][j], sigmoid(f_proj[j]))
    c   = silu(i_proj[j])
    h[l][j] = state_update(h[l][j], f, c)                      # STATE, kept in the unit
    o_in[j] = mul_act(apply_norm_weight(g_proj[j], g_norm_mant[j], g_norm_exp), silu_state(h[l][j]))

``o_in`` then feeds ``o_proj`` (whose own RMSNorm makes the missing normalisation of ``g`` irrelevant).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .ecp5 import platform_arch
from .activations import (
    ACT_SHAPE, BFP_EXP_SHAPE, GATE_SHAPE, MANT_SHAPE, STATE_SHAPE, Pipeline,
    APPLY_NORM_WEIGHT_LATENCY, LOWER_BOUND_BLEND_LATENCY, MUL_ACT_LATENCY, SIGMOID_LATENCY,
    SILU_LATENCY, SILU_STATE_LATENCY, STATE_UPDATE_LATENCY,
    apply_norm_weight_datapath, lower_bound_blend_datapath, mul_act_datapath, sigmoid_datapath,
    silu_datapath, silu_state_datapath, state_update_datapath,
)

__all__ = ["MLGRU"]

# stage at which the stored state is read (its data arrives one stage later, with f and c)
_GATES_STAGE = max(SIGMOID_LATENCY + LOWER_BOUND_BLEND_LATENCY, SILU_LATENCY)
_READ_STAGE = _GATES_STAGE - 1
_WRITE_STAGE = _GATES_STAGE + STATE_UPDATE_LATENCY
_OUT_STAGE = _WRITE_STAGE + SILU_STATE_LATENCY + MUL_ACT_LATENCY


class MLGRU(wiring.Component):
    """MLGRU gates, recurrent state and output gate: one channel per clock cycle.

    Parameters
    ----------
    hidden : int
        ``H``, channels per token; at least :attr:`MIN_HIDDEN` (a channel's state is read and written
        back a few cycles apart, so the same address must not come round sooner).
    layers : int
        ``L``; the state memory holds ``L * H`` STATE words at address ``layer * H + channel``.

    Interface
    ---------
    ``f``, ``i``, ``g`` : stream In, ACT signed(24): the f, i and g projection outputs, channel 0 first.
    ``w`` : stream In, per channel: ``lb`` GATE unsigned(17) (the layer's lower bound of the channel),
        ``g_mant`` signed(16) and ``g_exp`` signed(7) (the ``g_norm`` weight, BFP16), ``layer``, and
        ``first``: the first token of a sequence, whose previous state reads as zero.
    ``o`` : stream Out, ``data`` ACT (``o_in``), ``last`` on channel ``H - 1``.

    The four input streams are joined: an element is taken when all four are valid, and all four
    ``ready`` rise together (``ready`` waits for every ``valid``). The channel counts 0 .. H-1 in the
    unit and wraps, so a token is exactly ``H`` transfers.

    Latency :attr:`LATENCY` cycles from the joined transfer to ``o.valid``; throughput one channel
    per cycle while ``o.ready`` is high, the whole pipeline stalls with ``o``.
    Resources: three sigmoid ROMs (one block RAM each), the state memory, multipliers 17x32 (2),
    24x17 (2), 24x24, 24x16, 18x17 and small ones for the interpolation.
    """

    LATENCY = _OUT_STAGE
    MIN_HIDDEN = _WRITE_STAGE - _READ_STAGE + 1

    def __init__(self, hidden, layers):
        for name, value in (("hidden", hidden), ("layers", layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {value!r}")
        if hidden < self.MIN_HIDDEN:
            raise ValueError(f"hidden must be at least {self.MIN_HIDDEN}, not {hidden}")
        if layers < 1:
            raise ValueError(f"layers must be at least 1, not {layers}")
        self.hidden = hidden
        self.layers = layers
        super().__init__({
            "f": In(stream.Signature(ACT_SHAPE)),
            "i": In(stream.Signature(ACT_SHAPE)),
            "g": In(stream.Signature(ACT_SHAPE)),
            "w": In(stream.Signature(data.StructLayout({
                "lb": GATE_SHAPE,
                "g_mant": MANT_SHAPE,
                "g_exp": BFP_EXP_SHAPE,
                "layer": range(layers),
                "first": 1,
            }))),
            "o": Out(stream.Signature(data.StructLayout({"data": ACT_SHAPE, "last": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        H = self.hidden
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        p = Pipeline(m, en, platform_arch(platform))

        inputs = (self.f, self.i, self.g, self.w)
        all_valid = Signal()
        m.d.comb += all_valid.eq(self.f.valid & self.i.valid & self.g.valid & self.w.valid)
        for port in inputs:
            m.d.comb += port.ready.eq(en & all_valid)
        take = en & all_valid
        w = self.w.payload

        channel = Signal(range(H))
        with m.If(take):
            m.d.sync += channel.eq(Mux(channel == H - 1, 0, channel + 1))

        state = memory.Memory(shape=STATE_SHAPE, depth=self.layers * H, init=[])
        m.submodules.state = state

        # gates
        f_sig = sigmoid_datapath(m, p, self.f.payload, name="f_sig")
        lb = p.delay(w.lb, SIGMOID_LATENCY)
        f_gate = lower_bound_blend_datapath(m, p, lb, f_sig, name="f_gate")
        f_gate = p.delay(f_gate, _GATES_STAGE - SIGMOID_LATENCY - LOWER_BOUND_BLEND_LATENCY)
        c = silu_datapath(m, p, self.i.payload, name="c")
        c = p.delay(c, _GATES_STAGE - SILU_LATENCY)

        # state read, update, write back
        addr = p.reg(w.layer * H + channel, range(self.layers * H), name="addr")
        addr = p.delay(addr, _READ_STAGE - 1)
        first = p.delay(w.first, _GATES_STAGE)
        h_old = p.read(state, addr, registered=False)   # state_update registers it first thing
        h_prev = Mux(first, 0, h_old)
        h_new = state_update_datapath(m, p, h_prev, f_gate, c, name="h")
        valid = p.delay(take, _WRITE_STAGE, name="valid")
        wr = state.write_port()
        m.d.comb += [
            wr.addr.eq(p.delay(addr, _WRITE_STAGE - _READ_STAGE)),
            wr.data.eq(h_new),
            wr.en.eq(valid & en),
        ]

        # output gate
        act_h = silu_state_datapath(m, p, h_new, name="silu_h")
        gn = apply_norm_weight_datapath(m, p, self.g.payload, w.g_mant, w.g_exp, name="g_norm")
        gn = p.delay(gn, _WRITE_STAGE + SILU_STATE_LATENCY - APPLY_NORM_WEIGHT_LATENCY)
        out = mul_act_datapath(m, p, gn, act_h, name="o_in")

        m.d.comb += [
            self.o.valid.eq(p.delay(valid, _OUT_STAGE - _WRITE_STAGE, name="valid")),
            self.o.payload.data.eq(out),
            self.o.payload.last.eq(p.delay(channel == H - 1, _OUT_STAGE, name="last")),
        ]
        return m
