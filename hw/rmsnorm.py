"""The BitLinear input stage: RMSNorm and the 8-bit activation quantiser, bit-exact with :mod:`mmfree.numerics`.

Every ternary projection ``y = rescale(T @ codes, scale)`` needs, from the ACT vector ``v`` it reads and
the projection's own BFP16 norm weight ``(w_mant, w_exp)`` and weight scale ``m``:

* the int8 codes ``quantize_activations(v * w_mant)`` (the quantiser is scale invariant, so neither the
  RMS of ``v`` nor ``w_exp`` changes them), and
* the PFloat ``output_scale(max|v*w_mant|, ACT.frac + w_exp, sum(v*v), K, m)``, in which the RMSNorm
  lives.

:class:`RMSNormQuantizer` computes both; :class:`OutputScale` is its small sequential scalar unit, also
usable alone. :class:`~mmfree.hw.activations.ApplyNormWeight` (re-exported here) is the element-wise
``apply_norm_weight`` used where a norm weight is applied without quantising (``attn_norm``,
``mlp_norm``, ``g_norm``).
"""

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics
from mmfree.numerics import ACT, BFP_MANT, CODE, QUANT_BITS

from .ecp5 import mult18x18d, platform_arch
from .activations import ACT_SHAPE, BFP_EXP_SHAPE, MANT_SHAPE, ApplyNormWeight, Pipeline, mul_latency

__all__ = ["PFLOAT_LAYOUT", "OutputScale", "RMSNormQuantizer", "ApplyNormWeight", "MAX_LENGTH"]


PFLOAT_LAYOUT = data.StructLayout({"mant": unsigned(16), "exp": signed(16)})
"""A :class:`mmfree.numerics.PFloat` on a wire: ``mant * 2**exp``, ``mant`` 0 (zero) or in [2**15, 2**16)."""

MAX_LENGTH = (1 << 24) // 127
"""Longest vector accepted (``numerics.ACC``: accumulators of ``127 * K`` stay exact)."""

_Z_WIDTH = ACT.width + BFP_MANT.width                   # v * w_mant, signed
_ZMAG_WIDTH = _Z_WIDTH - 1                              # |v * w_mant| <= 2**38
_Z_EXP_SHAPE = signed(8)                                # ACT.frac + w_exp: -20 .. 75
_EXP_WIDTH = 18                                         # exponents inside OutputScale
_NORM_WIDTH = 64
_PASS2_STAGES = 13                                      # buffer read 2, magnitude, shift, numerator,
                                                        # divider 7, sign


def _ss_width(max_length):
    return 2 * (ACT.width - 1) + max_length.bit_length()


class OutputScale(wiring.Component):
    """``numerics.output_scale(zmax, z_exp, ss, k, m)`` as a small sequential unit.

    Parameters
    ----------
    max_length : int
        The longest vector ``k`` whose sum of squares ``ss`` the unit must take: sets the width of
        ``ss`` (``46 + bitlen(max_length)`` bits).

    Interface
    ---------
    ``i`` : stream In, one transfer per vector:
        ``zmax`` unsigned(39) (max|v * w_mant|), ``z_exp`` signed(8) (``ACT.frac + w_exp``),
        ``ss`` unsigned (sum of ``v*v``), ``k_recip`` PFloat (``numerics.pf_recip(k)``; a zero
        mantissa gives a zero scale), ``m`` PFloat (the weight scale; any 16-bit mantissa).
    ``o`` : stream Out, :data:`PFLOAT_LAYOUT`, the scale (zero for a zero vector).

    Exact for ``|m.exp| < 2**14``. One shared 16x16 multiplier; normalisation shifts by 8, 4 or 1 bit
    per cycle (truncating, then one half-up rounding step, which equals ``pf_from_int``'s rounding);
    the reciprocal square root is a restoring division of ``2**62`` by the 16/17-bit mantissa, two
    quotient bits a clock, and a restoring integer square root that takes each pair of bits a clock
    after the division makes it (25 clocks for both).

    Latency 67 to 83 cycles from the ``i`` transfer to ``o.valid`` (data dependent; 2 for a zero
    scale); ``i.ready`` is high only when idle, so one scale at a time.
    """

    def __init__(self, max_length=MAX_LENGTH):
        if not isinstance(max_length, int) or isinstance(max_length, bool):
            raise TypeError(f"max_length must be an int, not {max_length!r}")
        if not 1 <= max_length <= MAX_LENGTH:
            raise ValueError(f"max_length must be in 1..{MAX_LENGTH}, not {max_length}")
        self.max_length = max_length
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "zmax": unsigned(_ZMAG_WIDTH),
                "z_exp": _Z_EXP_SHAPE,
                "ss": unsigned(_ss_width(max_length)),
                "k_recip": PFLOAT_LAYOUT,
                "m": PFLOAT_LAYOUT,
            }))),
            "o": Out(stream.Signature(PFLOAT_LAYOUT)),
        })

    def elaborate(self, platform):
        m = Module()
        inv = numerics.INV_127

        zmax = Signal(_ZMAG_WIDTH)
        nz_exp = Signal(signed(_EXP_WIDTH))         # -z_exp, the exponent zmax starts with
        rk_m, rk_e = Signal(16), Signal(signed(_EXP_WIDTH))
        w_m, w_e = Signal(16), Signal(signed(_EXP_WIDTH))
        r_m, r_e = Signal(16), Signal(signed(_EXP_WIDTH))
        x = Signal(_NORM_WIDTH)                     # value being normalised
        xf = Signal(6)                              # NORM's tests of x, made as x is loaded

        def x_tests(v):
            """What NORM asks of ``v``: bits 24 and up set; 20 and up; 17 and up; bit 16; bit 15;
            bits 8..15 clear."""
            v = Value.cast(v)
            v = v[:_NORM_WIDTH] if len(v) >= _NORM_WIDTH else Cat(v, C(0, _NORM_WIDTH - len(v)))
            return Cat(v[24:] != 0, v[20:] != 0, v[17:] != 0, v[16], v[15], v[8:16] == 0)

        def load_x(v):
            m.d.sync += [x.eq(v), xf.eq(x_tests(v))]
        e = Signal(signed(_EXP_WIDTH))              # its exponent
        phase = Signal(range(7))                    # which step the current normalisation ends
        res_m, res_e = Signal(16), Signal(signed(_EXP_WIDTH))
        # reciprocal square root
        div_m = Signal(17)
        e_even = Signal(signed(_EXP_WIDTH))
        e_root = Signal(signed(_EXP_WIDTH))         # the root's exponent, from e_even (set in DIV)
        m.d.sync += e_root.eq(-31 - (e_even >> 1))
        rem = Signal(18)
        quo = Signal(2)                             # the quotient's last two bits
        cnt = Signal(range(25))
        root = Signal(24)
        srem = Signal(28)

        # the one multiplier: current mantissa times the operand of this phase
        operand = Signal(16)
        operand_e = Signal(signed(_EXP_WIDTH))
        m.d.comb += [
            operand.eq(Mux(phase == 0, rk_m, Mux(phase == 3, r_m, Mux(phase == 4, w_m, inv.mant)))),
            operand_e.eq(Mux(phase == 0, rk_e, Mux(phase == 3, r_e, Mux(phase == 4, w_e, inv.exp)))),
        ]
        mul_e = Signal(signed(_EXP_WIDTH))
        product = Signal(32)
        load_mul = Signal()                         # mul_a, mul_b take x and operand
        ecp5 = platform_arch(platform) == "ecp5"

        # the division two quotient bits a clock (two restoring steps in one), the square root's
        # step on those two bits a clock later: both in DIV
        r2 = rem << 1
        q_hi = r2 >= div_m
        rem1 = Mux(q_hi, r2 - div_m, r2)[:18]
        r4 = rem1 << 1
        q_lo = r4 >= div_m
        rem2 = Mux(q_lo, r4 - div_m, r4)[:18]
        s_in = Signal(30)
        trial = Signal(27)
        m.d.comb += [
            s_in.eq((srem << 2) | quo),
            trial.eq((root << 2) | 1),
        ]
        s_ge = s_in >= trial
        root_next = Signal(24)
        m.d.comb += root_next.eq((root << 1) | s_ge)

        # handshakes from the state by continuous assignment: some event-driven simulators never
        # evaluate a combinational process whose inputs keep their initial values
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    p = self.i.payload
                    m.d.sync += [
                        zmax.eq(p.zmax), nz_exp.eq(-p.z_exp),
                        rk_m.eq(p.k_recip.mant), rk_e.eq(p.k_recip.exp),
                        w_m.eq(p.m.mant), w_e.eq(p.m.exp),
                        e.eq(-2 * ACT.frac), phase.eq(0),
                    ]
                    load_x(p.ss)
                    with m.If((p.ss == 0) | (p.zmax == 0) | (p.k_recip.mant == 0) | (p.m.mant == 0)):
                        m.d.sync += [res_m.eq(0), res_e.eq(0)]
                        m.next = "DONE"
                    with m.Else():
                        m.next = "NORM"

            with m.State("NORM"):
                with m.If(xf[0]):                   # x[24:] != 0
                    load_x(x >> 8)
                    m.d.sync += e.eq(e + 8)
                with m.Elif(xf[1]):                 # x[20:] != 0
                    load_x(x >> 4)
                    m.d.sync += e.eq(e + 4)
                with m.Elif(xf[2]):                 # x[17:] != 0
                    load_x(x >> 1)
                    m.d.sync += e.eq(e + 1)
                with m.Elif(xf[3]):                 # x[16]: the rounding step
                    load_x((x[:17] + 1) >> 1)
                    m.d.sync += e.eq(e + 1)
                with m.Elif(~xf[4] & xf[5]):        # ~x[15] & (x[8:16] == 0)
                    load_x(x << 8)
                    m.d.sync += e.eq(e - 8)
                with m.Elif(~xf[4]):                # ~x[15]
                    load_x(x << 1)
                    m.d.sync += e.eq(e - 1)
                with m.Else():
                    # x is a normalised mantissa: finish this step, start the next one
                    with m.Switch(phase):
                        with m.Case(0, 3, 4, 5):
                            m.d.comb += load_mul.eq(1)
                            m.d.sync += [mul_e.eq(e + operand_e), phase.eq(phase + 1)]
                            m.next = "MUL"
                        with m.Case(1):
                            # pf_rsqrt: make the exponent even, then isqrt(2**62 // mant)
                            m.d.sync += [
                                div_m.eq(Mux(e[0], x[:16] << 1, x[:16])),
                                e_even.eq(e - e[0]),
                                rem.eq(1 << 14),            # 2**62 >> 48: the quotient has 48 bits
                                cnt.eq(24), root.eq(0), srem.eq(0),
                            ]
                            m.next = "DIV"
                        with m.Case(2):
                            m.d.sync += [
                                r_m.eq(x[:16]), r_e.eq(e),
                                e.eq(nz_exp), phase.eq(3),
                            ]
                            load_x(zmax)
                        with m.Case(6):
                            m.d.sync += [res_m.eq(x[:16]), res_e.eq(e)]
                            m.next = "DONE"

            with m.State("MUL"):
                m.next = "PRODUCT"

            with m.State("PRODUCT"):
                load_x(product)
                m.d.sync += e.eq(mul_e)
                m.next = "NORM"

            with m.State("DIV"):
                # 24 clocks of the division (cnt 24 .. 1), each followed by the root's step on its
                # two bits (cnt 23 .. 0)
                with m.If(cnt != 0):
                    m.d.sync += [rem.eq(rem2), quo.eq(Cat(q_lo, q_hi))]
                with m.If(cnt != 24):
                    m.d.sync += [srem.eq(Mux(s_ge, s_in - trial, s_in)), root.eq(root_next)]
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    m.next = "ROOT"

            with m.State("ROOT"):
                load_x(root)
                m.d.sync += [e.eq(e_root), phase.eq(2)]
                m.next = "NORM"

            with m.State("DONE"):
                with m.If(self.o.ready):
                    m.next = "IDLE"
        m.d.comb += [
            self.i.ready.eq(fsm.ongoing("IDLE")),
            self.o.valid.eq(fsm.ongoing("DONE")),
            self.o.payload.mant.eq(res_m),
            self.o.payload.exp.eq(res_e),
        ]
        # the multiplier's operands are taken with load_mul, its product in MUL: on the ECP5 into
        # the DSP block's own input and output registers
        if ecp5:
            m.d.comb += product.eq(mult18x18d(m, "mul", x[:16], operand, load_mul, fsm.ongoing("MUL")))
        else:
            mul_a, mul_b = Signal(16), Signal(16)
            with m.If(load_mul):
                m.d.sync += [mul_a.eq(x[:16]), mul_b.eq(operand)]
            with m.If(fsm.ongoing("MUL")):
                m.d.sync += product.eq(mul_a * mul_b)

        return m


class RMSNormQuantizer(wiring.Component):
    """RMSNorm and activation quantiser of one BitLinear: int8 codes and the PFloat output scale.

    For a vector ``v`` of ``K`` ACT elements with the norm weight mantissas ``w_mant`` (one per element),
    the tensor's exponent ``w_exp`` and weight scale ``m``, it produces exactly
    ``codes, zmax = numerics.quantize_activations(v * w_mant)`` and
    ``numerics.output_scale(zmax, ACT.frac + w_exp, sum(v * v), K, m)``.

    Parameters
    ----------
    lengths : int or sequence of int
        The vector lengths ``K`` the unit serves (e.g. ``(hidden, intermediate)``); the buffer holds the
        longest. ``numerics.pf_recip(K)`` of each is a constant built at elaboration. Each must be a
        multiple of ``width``.
    width : int
        ``Q``, the codes pass 2 emits per cycle: a power of two from 1 (default) to 16.
    lut_ram : bool
        Keep the banks in LUT RAM instead of block RAM (default ``False``): for wide units, whose
        banks are shallow (``max(lengths) / Q`` words of 40 bits take two DP16KD each, however few).

    Interface
    ---------
    ``i`` : stream In, one transfer per element: ``v`` signed(24) ACT, ``w_mant`` signed(16),
        ``w_exp`` signed(7), ``m`` :data:`PFLOAT_LAYOUT`, ``last``. ``w_exp`` and ``m`` are taken
        from the ``last`` element; the element count at ``last`` is ``K``.
    ``codes`` : stream Out, one transfer per group of ``Q`` consecutive elements, ``K / Q`` per vector
        in input order, ``last`` on the final one. For ``Q == 1`` the payload is ``code`` signed(8)
        (-127..127), ``last``; for ``Q > 1`` it is ``code`` ``data.ArrayLayout(signed(8), Q)``,
        ``last``, ``code[j]`` being element ``g Q + j`` of the vector in group ``g`` (as a value:
        ``code[0]`` in the low 8 bits, then ``code[1]``, ..., ``last`` on top).
    ``scale`` : stream Out, :data:`PFLOAT_LAYOUT`, one per vector.
    ``length_error`` : Out(1), sticky: a vector had a length not in ``lengths`` (its scale is zero)
        or more elements than the buffer holds (the excess is dropped). Such a vector's codes come
        in ``ceil(K' / Q)`` groups (``K'`` the elements kept); the lanes of its last group past
        ``K'`` carry unspecified codes.

    Operation, latency, throughput
    ------------------------------
    Pass 1 accepts one element per cycle (``i.ready`` stays high until ``last``): ``z = v * w_mant`` goes
    to a buffer of ``max(lengths)`` x 40 bits, ``max|z|`` and ``sum(v*v)`` accumulate. The buffer is
    ``Q`` memories (banks) of ``max(lengths) / Q`` words: element ``k`` goes to bank ``k mod Q`` at
    address ``k // Q``. Pass 2 then reads the buffer back, one address of every bank (a group of ``Q``
    elements) per cycle: ``s = max(0, bitlen(max|z|) - 24)``, ``A = max|z| >> s``, and per element
    ``(254 (|z| >> s) + A) // (2 A)`` through a 7-stage pipelined restoring divider (13 stages in all),
    in ``Q`` copies of that pipeline sharing one control. The first group is valid
    :attr:`CODE_LATENCY` (24) cycles after the ``last`` transfer, if the previous vector's codes have
    left the pipeline and its scale has been taken; one group follows per cycle while ``codes.ready``
    is high (a stalled ``codes`` stalls pass 2). In parallel :class:`OutputScale` computes the scale,
    valid about 80 to 95 cycles after ``last``. The next vector is accepted as soon as pass 2 has
    read the whole buffer, so a stream of vectors takes about ``max(K + K / Q + 10, 90)`` cycles each
    (for short vectors the scale is the slower part). ``i.ready`` does not depend on the
    outputs combinationally.

    Resources: multipliers 24x16 and 24x24 (pass 1), 16x16 (scale), ``Q`` memories of
    ``max(lengths) / Q`` x 40 bits, ``Q`` copies of the pass-2 pipeline (no divider beyond their 7
    compare-subtract stages each and the sequential ones of the scale).
    """

    CODE_LATENCY = 20 + max(mul_latency(ACT_SHAPE, MANT_SHAPE), mul_latency(ACT_SHAPE, ACT_SHAPE))
    """Cycles from the ``last`` transfer to the first ``codes.valid`` (checked by the tests)."""

    def __init__(self, lengths, *, width=1, lut_ram=False):
        if not isinstance(width, int) or isinstance(width, bool):
            raise TypeError(f"width must be an int, not {width!r}")
        if width not in (1, 2, 4, 8, 16):
            raise ValueError(f"width must be a power of two in 1..16, not {width}")
        if isinstance(lengths, int) and not isinstance(lengths, bool):
            lengths = (lengths,)
        try:
            lengths = tuple(lengths)
        except TypeError:
            raise TypeError(f"lengths must be an int or a sequence of ints, not {lengths!r}") from None
        if not lengths:
            raise ValueError("lengths must not be empty")
        for k in lengths:
            if not isinstance(k, int) or isinstance(k, bool):
                raise TypeError(f"lengths must hold ints, not {k!r}")
            if not 1 <= k <= MAX_LENGTH:
                raise ValueError(f"each of lengths must be in 1..{MAX_LENGTH}, not {k}")
            if k % width:
                raise ValueError(f"each of lengths must be a multiple of width {width}, not {k}")
        self._width = width
        self._lut_ram = bool(lut_ram)
        self.lengths = tuple(sorted(set(lengths)))
        self.max_length = max(self.lengths)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "v": ACT_SHAPE,
                "w_mant": MANT_SHAPE,
                "w_exp": BFP_EXP_SHAPE,
                "m": PFLOAT_LAYOUT,
                "last": 1,
            }))),
            "codes": Out(stream.Signature(data.StructLayout({
                "code": signed(CODE.width) if width == 1 else data.ArrayLayout(signed(CODE.width), width),
                "last": 1,
            }))),
            "scale": Out(stream.Signature(PFLOAT_LAYOUT)),
            "length_error": Out(1),
        })

    @property
    def width(self):
        """``Q``: the codes pass 2 emits per cycle (one ``codes`` transfer)."""
        return self._width

    def elaborate(self, platform):
        m = Module()
        kmax = self.max_length
        q = self._width
        lq = q.bit_length() - 1                         # log2 Q
        groups = kmax // q                              # words per bank
        m.submodules.scale_unit = su = OutputScale(kmax)
        wiring.connect(m, wiring.flipped(self.scale), su.o)


        # --- pass 1: z = v * w into the buffer, max|z|, sum(v*v) -----------------------------------
        loading = Signal()
        take = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(loading)
        p1 = Pipeline(m, Const(1), platform_arch(platform))  # never stalls: nothing flows out of pass 1
        v1 = p1.reg(self.i.payload.v, name="v1")
        w1 = p1.reg(self.i.payload.w_mant, name="w1")
        lat_z = mul_latency(ACT_SHAPE, MANT_SHAPE)
        lat_sq = mul_latency(ACT_SHAPE, ACT_SHAPE)
        lat = max(lat_z, lat_sq)
        z = p1.delay(p1.mul(v1, w1, name="z"), lat - lat_z, name="z")
        sq = p1.delay(p1.mul(v1, v1, name="sq"), lat - lat_sq, name="sq")
        az = p1.reg(Mux(z < 0, -z, z), unsigned(_ZMAG_WIDTH), name="az")
        z = p1.reg(z, name="z")
        sq = p1.reg(sq, name="sq")
        c_ok = p1.delay(take, 2 + lat, name="ok")
        c_last = p1.delay(self.i.payload.last, 2 + lat, name="last")

        count = Signal(range(kmax + 1))
        zmax = Signal(_ZMAG_WIDTH)
        ss = Signal(_ss_width(kmax))
        loaded = Signal()
        w_exp = Signal(BFP_EXP_SHAPE)
        wm = Signal(PFLOAT_LAYOUT)
        with m.If(take & self.i.payload.last):
            m.d.sync += [w_exp.eq(self.i.payload.w_exp), wm.eq(self.i.payload.m)]
        pass1_write = (count, z, c_ok & (count != kmax))
        with m.If(c_ok):
            m.d.sync += [
                ss.eq(ss + sq),
                zmax.eq(Mux(az > zmax, az, zmax)),
                loaded.eq(c_last),
            ]
            with m.If(count != kmax):
                m.d.sync += count.eq(count + 1)
            with m.Else():
                m.d.sync += self.length_error.eq(1)

        # --- pass 2 pipeline: codes ------------------------------------------------------------------
        en = Signal()
        m.d.comb += en.eq(~self.codes.valid | self.codes.ready)
        p = Pipeline(m, en, platform_arch(platform))
        # the buffer, Q banks: written by pass 1, read by pass 2 (never both in one clock: LOAD and
        # EMIT), from registers of its own, a clock after pass 1 (pass 2 starts four clocks after the
        # last write at the soonest, through FLUSH, SETTLE and WAIT): the write enable's comparison,
        # out to the buffer's block RAM, was the longest path of the demo accelerator's 80 MHz build.
        # Element `count` goes to bank count % Q at address count // Q.
        bufs = []
        for b in range(q):
            buf = p.buffer(signed(_Z_WIDTH), groups, name="buffer" if q == 1 else f"buffer{b}",
                           lut_ram=self._lut_ram)
            w_en = pass1_write[2] if q == 1 else pass1_write[2] & (pass1_write[0][:lq] == b)
            w_addr = pass1_write[0] if q == 1 else pass1_write[0] >> lq
            m.d.sync += [buf.w_addr.eq(w_addr), buf.w_data.eq(pass1_write[1]),
                         buf.w_en.eq(w_en)]
            bufs.append(buf)
        k = Signal(range(groups + 1))                   # groups of the vector
        k_1 = Signal(range(groups + 1))                 # k - 1 (k >= 1 once emitting)
        rptr = Signal(range(groups + 1))                # the group read next
        emitting = Signal()
        shift = Signal(range(_ZMAG_WIDTH - QUANT_BITS + 1))
        amax = Signal(QUANT_BITS)                       # max|z| >> s
        zero = Signal()

        issue = emitting & (rptr != k)
        with m.If(en & issue):
            m.d.sync += rptr.eq(rptr + 1)

        # the control, shared by the Q lanes: valid and last through the 13 stages
        valid = [issue]
        last = [rptr == k_1]

        def lane(buf, sfx):
            """One element's code from bank ``buf``: a generator, advanced once per stage; its
            :data:`_PASS2_STAGES`-th step yields the code."""
            # stages 1, 2: the buffer's output, registered
            zr = buf.read(rptr, name="zr" + sfx)
            yield
            yield
            # stage 3: magnitude and sign; stage 4: the common shift s
            neg = p.reg(zr < 0, name="neg" + sfx)
            mag = p.reg(Mux(zr < 0, -zr, zr), unsigned(_ZMAG_WIDTH), name="mag" + sfx)
            yield
            mag = p.reg(mag >> shift, unsigned(QUANT_BITS), name="mag_s" + sfx)
            neg = p.reg(neg, name="neg" + sfx)
            yield
            # stage 5: numerator 254 |z| + A
            num = p.reg((mag << 8) - (mag << 1) + amax, unsigned(QUANT_BITS + 8), name="num" + sfx)
            neg = p.reg(neg, name="neg" + sfx)
            yield
            # stages 6-12: restoring division by 2A, one quotient bit per stage (the quotient is <= 127)
            quo = Const(0, 7)
            for bit in reversed(range(7)):
                diff = num - (amax << (bit + 1))
                ge = diff >= 0
                quo = p.reg(quo | (ge << bit), unsigned(7), name="quo" + sfx)
                num = p.reg(Mux(ge, diff, num), unsigned(QUANT_BITS + 8), name="num" + sfx)
                neg = p.reg(neg, name="neg" + sfx)
                yield
            # stage 13: sign
            yield p.reg(Mux(zero, 0, Mux(neg, -quo, quo)), signed(CODE.width), name="code" + sfx)

        # the lanes and the control built stage by stage (for Q == 1 in the order, and so with the
        # names, of the single pipeline this was)
        lanes = [lane(buf, "" if q == 1 else f"_{j}") for j, buf in enumerate(bufs)]
        for _ in range(_PASS2_STAGES):
            codes = [next(g) for g in lanes]
            valid.append(p.reg(valid[-1], name="valid"))
            last.append(p.reg(last[-1], name="last"))
        if q == 1:
            m.d.comb += self.codes.payload.code.eq(codes[0])
        else:
            for j, code in enumerate(codes):
                m.d.comb += self.codes.payload.code[j].eq(code)
        m.d.comb += [
            self.codes.valid.eq(valid[-1]),
            self.codes.payload.last.eq(last[-1]),
        ]
        busy2 = Signal()
        m.d.comb += busy2.eq(Cat(*valid[1:]).any())

        # --- vector sequencing -----------------------------------------------------------------------
        k_recip = Signal(PFLOAT_LAYOUT)
        su_start = Signal()
        m.d.comb += [
            su.i.valid.eq(su_start),
            su.i.payload.zmax.eq(zmax),
            su.i.payload.z_exp.eq(ACT.frac + w_exp),
            su.i.payload.ss.eq(ss),
            su.i.payload.k_recip.eq(k_recip),
            su.i.payload.m.eq(wm),
        ]
        # s = max(0, bitlen(max|z|) - QUANT_BITS) = bitlen(max|z| >> QUANT_BITS)
        bits_over = Const(0, shift.shape())
        for b, bit in enumerate(zmax[QUANT_BITS:]):
            bits_over = Mux(bit, b + 1, bits_over)
        # pf_recip(K) of the configured lengths, zero (and an error) for any other length: the hits
        # exclude each other, so a balanced OR of masked constants selects (no priority chain)
        # Registered twice, the comparisons then the choice: count and zmax are final from the clock
        # FLUSH sees loaded, two clocks before WAIT (through SETTLE)
        hits = Signal(len(self.lengths))
        m.d.sync += hits.eq(Cat(*(count == length for length in self.lengths)))
        terms = [Mux(hit, PFLOAT_LAYOUT.const({"mant": r.mant, "exp": r.exp}).as_value(), 0)
                 for hit, r in zip(hits, (numerics.pf_recip(length) for length in self.lengths))]
        while len(terms) > 1:
            terms = [terms[j] | terms[j + 1] if j + 1 < len(terms) else terms[j]
                     for j in range(0, len(terms), 2)]
        recip, match, shift_next = Signal.like(k_recip), Signal(), Signal.like(shift)
        m.d.sync += [recip.eq(terms[0]), match.eq(hits.any()), shift_next.eq(bits_over)]

        with m.FSM() as fsm:
            with m.State("LOAD"):
                with m.If(take & self.i.payload.last):
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                with m.If(loaded):
                    m.d.sync += loaded.eq(0)
                    m.next = "SETTLE"
            with m.State("SETTLE"):
                m.next = "WAIT"
            with m.State("WAIT"):
                # the previous vector's codes must be out of the pipeline (it uses A, s) and its
                # scale delivered before this vector's are started
                with m.If(~busy2 & su.i.ready):
                    # ceil(count / Q) groups (count >= 1: a vector ends with an element)
                    k_next, k_1_next = ((count, count - 1) if q == 1 else
                                        (((count - 1) >> lq) + 1, (count - 1) >> lq))
                    m.d.sync += [shift.eq(shift_next), k.eq(k_next), k_1.eq(k_1_next),
                                 k_recip.eq(recip)]
                    with m.If(~match):
                        m.d.sync += self.length_error.eq(1)
                    m.next = "PREP"
            with m.State("PREP"):
                # su.i.ready is high: it was idle in WAIT
                m.d.sync += [
                    amax.eq(zmax >> shift),
                    zero.eq(zmax == 0),
                    rptr.eq(0),
                    count.eq(0), zmax.eq(0), ss.eq(0),
                ]
                m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(en & (rptr == k_1)):
                    m.next = "LOAD"
        m.d.comb += [
            loading.eq(fsm.ongoing("LOAD")),
            su_start.eq(fsm.ongoing("PREP")),
            emitting.eq(fsm.ongoing("EMIT")),
        ]
        return m
