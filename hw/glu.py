"""The GLU channel mixer's element-wise part, bit-exact with :mod:`mmfree.numerics`::

    u = gate_proj(x)                          # 2I ACT values, gate half first
    o = mul_act(silu(u[:I]), u[I:])           # I ACT values, into down_proj
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .ecp5 import platform_arch
from .activations import ACT_SHAPE, MUL_ACT_LATENCY, SILU_LATENCY, Pipeline, mul_act_datapath, \
    silu_datapath

__all__ = ["GLU"]


class GLU(wiring.Component):
    """``mul_act(silu(gate), up)`` over the fused ``gate_proj`` output, in its row order.

    Parameters
    ----------
    intermediate : int
        ``I``: the unit takes ``2 I`` elements per token (``I`` gate values, then ``I`` up values) and
        produces ``I``. A buffer of ``I`` ACT words holds ``silu(gate)`` until the up half arrives.

    Interface
    ---------
    ``u`` : stream In, ACT signed(24), the ``gate_proj`` outputs in row order; the unit counts them.
    ``o`` : stream Out, ``data`` ACT, ``last`` on the ``I``-th output of a token.

    Latency :attr:`LATENCY` cycles from the transfer of ``up[j]`` to ``o.valid`` with ``o[j]``;
    one ``u`` element per cycle (so one output per cycle during the up half) while ``o.ready`` is
    high; a stalled ``o`` stalls the whole pipeline. Resources: one sigmoid ROM, multipliers 24x17 and
    24x24, the ``I x 24`` bit buffer.
    """

    LATENCY = SILU_LATENCY + 2 + MUL_ACT_LATENCY

    def __init__(self, intermediate):
        if not isinstance(intermediate, int) or isinstance(intermediate, bool):
            raise TypeError(f"intermediate must be an int, not {intermediate!r}")
        if intermediate < 1:
            raise ValueError(f"intermediate must be at least 1, not {intermediate}")
        self.intermediate = intermediate
        super().__init__({
            "u": In(stream.Signature(ACT_SHAPE)),
            "o": Out(stream.Signature(data.StructLayout({"data": ACT_SHAPE, "last": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.intermediate
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        p = Pipeline(m, en, platform_arch(platform))
        m.d.comb += self.u.ready.eq(en)
        take = self.u.valid & en

        index = Signal(range(n))
        up = Signal()                       # second half: up values
        with m.If(take):
            m.d.sync += index.eq(Mux(index == n - 1, 0, index + 1))
            with m.If(index == n - 1):
                m.d.sync += up.eq(~up)

        buf = p.buffer(ACT_SHAPE, n, name="gate_buffer")

        x = self.u.payload
        act = silu_datapath(m, p, x, name="silu")
        valid = p.delay(take, SILU_LATENCY, name="valid")
        idx = p.delay(index, SILU_LATENCY)
        is_up = p.delay(up, SILU_LATENCY)
        # a gate value's SiLU goes to the buffer; an up value reads its gate's SiLU back
        # (a gate value's write and its own read are of one address in one clock: that word is unused)
        m.d.comb += [buf.w_addr.eq(idx), buf.w_data.eq(act), buf.w_en.eq(valid & ~is_up & en)]
        gate = buf.read(idx)
        up_val = p.delay(x, SILU_LATENCY + 2)
        out = mul_act_datapath(m, p, gate, up_val, name="glu")

        k = 2 + MUL_ACT_LATENCY
        m.d.comb += [
            self.o.valid.eq(p.delay(valid & is_up, k, name="valid")),
            self.o.payload.data.eq(out),
            self.o.payload.last.eq(p.delay(idx == n - 1, k, name="last")),
        ]
        return m
