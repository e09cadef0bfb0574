"""The ternary matrix-vector unit and the rescale stage that follows it.

:class:`TernaryMatVec` computes ``acc[n] = sum_k trit[n, k] * code[k]`` for a ternary matrix that streams
in ``lanes`` trits per clock and an int8 activation vector held in a local, double-buffered buffer. It
uses additions only: no multiplier, no DSP block. With ``rows = R`` it is ``R`` such row units in
lockstep, each on its own row of the matrix and its own ``lanes`` lanes, all fed from the one
activation buffer: ``R`` rows at once, ``R * lanes`` trits per clock.

:class:`Rescale` turns those accumulators into the golden model's ACT values,
``numerics.rescale(acc, scale)`` bit for bit, with the scale (a :class:`~mmfree.numerics.PFloat`)
given once per vector. It uses one or two 18x18 multipliers.

:class:`TernaryLinear` is the two connected: the integer half of a BitLinear.

Lane design
-----------
A trit uses the 2-bit code of :data:`~mmfree.numerics.TRIT_CODE`: bit 0 says "non-zero", bit 1 (``n``)
says "negative". ``-x`` is ``(x ^ -1) + 1``, so a lane's product is ``(g ^ -n) + n`` where ``g`` is the
code, or 0 for a zero trit. Three choices keep the lanes nearly free:

* **zero trits cost no LUT**: ``g`` is a register whose synchronous reset is the trit's non-zero bit
  (ECP5 flip-flops have one); the block RAM's output feeds it directly. The unused code ``0b10``
  gives ``(0 ^ -1) + 1 = 0``.
* **the negation's ``+n`` costs no adder**: every node of the adder tree takes one owed ``+n`` as its
  carry-in (an extra low bit on both operands, ``{a, c} + {b, c}``, whose carry out is ``c``), and the
  one left at the root is the accumulator's carry-in. ``P`` lanes, ``P - 1`` nodes, one accumulator:
  exactly ``P`` carry-ins.
* **the negation's XOR costs no LUT on ECP5**: lanes are added in pairs,
  ``(g_a ^ -n_a) + (g_b ^ -n_b) + n_a``, by a carry chain whose LUT4 per bit sees all four of
  ``g_a[i], n_a, g_b[i], n_b`` (``arch="ecp5"``, see :meth:`TernaryMatVec._pair`). Elsewhere the XORs
  are LUTs in front of the adder.

The rest is a plain adder tree, every level registered: the longest path is one carry chain of at
most ``8 + log2(P) + 1`` bits. Per lane that is about one carry-chain LUT per adder output bit,
``sum_l (8 + l) / 2**l``, about 10 LUT4.
"""

from types import SimpleNamespace

from amaranth import *
from amaranth.lib import wiring, stream, data, memory, fifo
from amaranth.lib.wiring import In, Out

from .. import memory_map, numerics as nx
from .ecp5 import check_arch, dp16kd_ram, mult18x18d, platform_arch, register_copy

__all__ = ["TernaryMatVec", "Rescale", "TernaryLinear", "MAX_LANES", "MAX_ROWS", "acc_width_for"]


ACT_MEMORIES = ("block", "distributed", "registers")
"""Values of ``act_memory``: where the activation buffer lives (Yosys' ``ram_style``)."""

DP16KD_WIDTH = 36
"""Data bits of an ECP5 ``DP16KD`` in its widest (pseudo-dual-port) mode ..."""
DP16KD_DEPTH = 512
"""... and its words in that mode: :class:`TernaryMatVec` instantiates it for buffers this shallow."""

GROUP_LANES = {"block": 16 * DP16KD_WIDTH // nx.CODE.width, "registers": 16 * DP16KD_WIDTH // nx.CODE.width,
               "distributed": 16}
"""Lanes per memory of a buffer with ``spread_control``: 72 lanes are 576 bits, sixteen 36-bit
DP16KD exactly; 16 lanes of LUT RAM are 32 ``TRELLIS_DPR16X4``."""

MAX_LANES = 1024
"""The largest lane count :class:`TernaryMatVec` accepts."""
MAX_ROWS = memory_map.MAX_ROWS
"""The most row units (``rows``) :class:`TernaryMatVec` accepts: a device's most."""

CODE_BITS = nx.CODE.width
PF_MANT_BITS = 16
"""Width of a :class:`~mmfree.numerics.PFloat` mantissa (``[2**15, 2**16)``, or 0)."""
MUL_LO_BITS = 17
"""Low accumulator bits multiplied on their own (unsigned 17 x 16 fits one 18x18 multiplier)."""


def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")


def acc_width_for(max_k):
    """Bits of the signed accumulator that holds any row sum of ``max_k`` trits times int8 codes.

    ``|acc| <= 128 * max_k`` (the code -128 negated is 128), so this is ``bitlen(128 * max_k) + 1``.
    """
    return (-nx.CODE.min * max_k).bit_length() + 1


MAX_K = (1 << (nx.ACC.width - 1)) // -nx.CODE.min - 1
"""The longest row whose accumulator still fits :data:`~mmfree.numerics.ACC` (32 bits)."""


def _range_shape(lo, hi):
    return Shape.cast(range(lo, hi + 1))


class TernaryMatVec(wiring.Component):
    """Ternary matrix times int8 vector, ``lanes`` trits per clock, additions only.

    Parameters
    ----------
    lanes : int
        ``P``, the trits consumed per clock and row unit: 1 to 1024. Every row length must be a
        multiple of it.
    max_k : int
        The longest row (and vector) the unit holds: a multiple of ``lanes``, at most :data:`MAX_K`.
        The activation buffer holds two vectors of ``max_k`` codes.
    arch : ``None``, ``"generic"`` or ``"ecp5"``
        How the lane pairs are built: ``"ecp5"`` instantiates ``CCU2C`` carry chains that absorb the
        negation (see :meth:`_pair`), ``"generic"`` is plain Amaranth arithmetic (and the only one
        Amaranth's simulator runs). ``None`` (the default) chooses ``"ecp5"`` when the platform given
        to ``elaborate`` is an ECP5 (``platform.family == "ecp5"``). Both compute the same bits.
    act_memory : ``"block"``, ``"distributed"`` or ``"registers"``
        What holds the activation buffer (passed to Yosys as ``ram_style``): block RAM (the default),
        LUT RAM, or flip-flops. Same bits, same timing.
    act_lut_lanes : int
        How many lanes (the last ones) keep their codes in a LUT RAM beside the ``act_memory`` buffer
        (default 0). The buffer is read ``8P`` bits at a time, so block RAM needs ``ceil(8P / 36)``
        DP16KD however shallow it is: beyond about 930 lanes that is more than an ECP5-85F has (208).
        Such a unit keeps most lanes in block RAM and the rest in LUT RAM (``16 x 4`` bits per
        ``TRELLIS_DPR16X4``, about 1.5 LUT4 per bit while ``2 max_k / P <= 16``); a buffer entirely in
        LUT RAM fits too, but is far harder to place and route.
    spread_control : bool
        For units that span the die (hundreds of lanes): split the activation buffer into memories
        of :data:`GROUP_LANES` lanes, each driven by its own registered copies of the write enable
        and of both addresses, so that no control signal has to cross the die in one clock (on ECP5
        the copies are ``TRELLIS_FF`` cells that synthesis keeps apart); each memory's read data
        passes a second register, so that a slow block-RAM output does not have to reach a far lane
        in the same clock (on ECP5, for buffers of at most :data:`DP16KD_DEPTH` words, the block RAM
        is ``DP16KD`` instances with their own output register, see :meth:`_dp16kd`). It costs two
        more cycles of latency, two weight-beat registers (``2P`` flip-flops each), and activation
        beats are taken one every three clocks instead of one a clock: a matrix of at least three
        times as many weight beats as the next vector has beats still hides the load. Same bits.
        Default ``False``.
    trits_delay : int
        Clocks after a weight beat's transfer (``w.valid & w.ready``) at which its ``payload.trits``
        arrive (its ``payload.last`` counts in the clock of the transfer): 0 (the default), or up to
        2 with ``spread_control``, whose beat registers the late trits then skip. A feeder that
        spans the die can so read its FIFOs on registered copies of the transfer. Same latency.
    rows : int
        ``R``, the row units: 1 (the default) to 64. The unit then computes ``R`` rows at once (a *row
        group*), each on its own ``P`` lanes, pair stage, adder tree and accumulator, all ``R`` in
        lockstep at the same column and fed the same codes from the one activation buffer:
        ``R * P`` trits per clock. A weight beat is one clock of all ``R`` units, and everything
        said below of a row (its beats, ``last``, the flow control, the output buffer) holds for a row
        group. The matrix's row count must then be a multiple of ``R``.

    Interfaces
    ----------
    act : ``In(stream.Signature(act_layout))``
        The activation vector, ``P`` codes per beat: ``payload.codes[j]`` (``signed(8)``, code
        ``k = beat * P + j``) and ``payload.last``, set on the final beat of the vector. The vector's
        length ``K`` is the number of its beats times ``P``; a vector is also ended by its
        ``max_k / P``-th beat. Beats are written into whichever of the two buffers is free, so the
        next vector loads while the current one is in use. As the stream rules require, a beat's
        payload stays put from ``valid`` to its transfer (with ``spread_control`` the unit decides to
        take a beat a clock before the transfer and writes it, through the registered copies, in the
        clock of the transfer).
    w : ``In(stream.Signature(weight_layout))``
        Weights, ``P`` trits per beat, row after row, each row ``K / P`` beats long (``K`` of the vector
        in use): ``payload.trits`` is ``2P`` bits, trit ``j`` of the beat (column ``k = beat * P + j``) at
        bits ``2j + 1 .. 2j`` in the code of :func:`~mmfree.numerics.pack_trits`, so that a row-major
        ``pack_trits`` image is streamed as it lies in memory (``P / 4`` bytes per beat, little-endian,
        when ``P`` is a multiple of 4). ``payload.last`` on the final beat of a row says that this row is
        the last one that uses the current vector: after it the unit releases that buffer and moves to
        the next vector. ``last`` on any other beat is ignored.

        With ``rows = R > 1``, ``payload.trits`` is ``2PR`` bits, row unit ``r``'s ``P`` trits at bits
        ``[2Pr, 2P(r + 1))`` (each as above within its slice), and the beats go row group after row
        group: beat ``b`` of group ``g`` holds columns ``bP .. bP + P - 1`` of rows ``gR .. gR + R - 1``
        (unit ``r`` gets row ``gR + r``). In ``pack_trits`` terms: the image of the ``[N, K]`` matrix
        reshaped to ``[N / R, R, K / P, P]`` and transposed to ``[N / R, K / P, R, P]``.
        ``payload.last`` is set on the final beat of a row group.
    o : ``Out(stream.Signature(acc_layout))``
        One accumulator per row, in row order: ``payload.acc`` (``signed(acc_width)``, sign-extend to
        :data:`~mmfree.numerics.ACC`) and ``payload.last`` (copied from the row's final weight beat).
        With ``rows = R > 1``, one beat per row group: ``payload.acc`` is
        ``data.ArrayLayout(signed(acc_width), R)`` (``acc[r]``, row ``gR + r``'s sum) and
        ``payload.last``; ``payload.as_value()`` is ``acc[0], acc[1], ..., acc[R - 1], last`` from bit
        0 up (for ``R = 1``, the layout above).

    Throughput and latency
    ----------------------
    ``w.ready`` is high whenever a vector is loaded and the output buffer has room: fed without
    stalls the unit takes one weight beat (``P`` trits) every clock, with no gap between columns,
    rows, or matrices. The next vector loads (``K / P`` beats, one per clock) into the free buffer
    while the current matrix streams, and the unit moves on to it in the clock after the current
    matrix's last beat if it is complete by then: a matrix of at least as many beats as the next
    vector has words hides the load entirely. ``act.ready`` depends on registers only; ``w.ready`` is a register.
    A row's accumulator appears on ``o`` :attr:`latency` cycles (``4 + max(1, ceil(log2 P))``, two
    more with ``spread_control``) after
    its final weight beat was accepted. ``o.ready`` may stall at will: an internal buffer of
    :attr:`fifo_depth` results absorbs the pipeline's contents, and ``w`` stops before it would
    overflow.

    Resources
    ---------
    The activation buffer is block RAM (``2 * max_k / P`` words of ``8P`` bits: ``ceil(8P / 36)``
    DP16KD on ECP5, whatever the depth, since a LUT RAM that wide would cost more than the lanes),
    unless ``act_memory`` and ``act_lut_lanes`` say otherwise.
    The lanes, pairs, adder tree and accumulator are ``R`` times those of one row unit (``R`` times
    the lanes' LUTs, ``R`` accumulators); the activation buffer and the control are shared (its read
    data fans out to ``R`` units), and the output buffer is ``R * acc_width + 1`` bits wide.
    No multiplier. See the module docstring for the lane design and ``python -m mmfree.hw.synth``
    for measured figures.
    """

    def __init__(self, lanes, max_k, *, arch=None, act_memory="block", act_lut_lanes=0,
                 spread_control=False, trits_delay=0, rows=1):
        _check_int("lanes", lanes, 1, MAX_LANES)
        _check_int("rows", rows, 1, MAX_ROWS)
        _check_int("act_lut_lanes", act_lut_lanes, 0, lanes)
        _check_int("max_k", max_k, 1, MAX_K)
        if max_k % lanes:
            raise ValueError(f"max_k ({max_k}) must be a multiple of lanes ({lanes})")
        check_arch(arch)
        if act_memory not in ACT_MEMORIES:
            raise ValueError(f"act_memory must be one of {', '.join(map(repr, ACT_MEMORIES))}, "
                             f"not {act_memory!r}")
        if not isinstance(spread_control, bool):
            raise TypeError(f"spread_control must be True or False, not {spread_control!r}")
        _check_int("trits_delay", trits_delay, 0, 2)
        if trits_delay and not spread_control:
            raise ValueError("trits_delay needs spread_control (the beat registers the late trits skip)")
        self._arch = arch
        self._trits_delay = trits_delay
        self._spread = spread_control
        self._act_memory = act_memory
        self._act_lut_lanes = act_lut_lanes
        self._lanes = lanes
        self._rows = rows
        self._max_k = max_k
        self._acc_width = acc_width_for(max_k)
        self._depth = max(1, (lanes - 1).bit_length())      # adder tree levels, lane pairs included
        super().__init__({
            "act": In(stream.Signature(self.act_layout)),
            "w": In(stream.Signature(self.weight_layout)),
            "o": Out(stream.Signature(self.acc_layout)),
        })

    lanes = property(lambda self: self._lanes)
    rows = property(lambda self: self._rows)
    max_k = property(lambda self: self._max_k)
    acc_width = property(lambda self: self._acc_width)
    act_memory = property(lambda self: self._act_memory)
    act_lut_lanes = property(lambda self: self._act_lut_lanes)
    spread_control = property(lambda self: self._spread)
    trits_delay = property(lambda self: self._trits_delay)

    @property
    def act_layout(self):
        return data.StructLayout({"codes": data.ArrayLayout(signed(CODE_BITS), self._lanes),
                                  "last": unsigned(1)})

    @property
    def weight_layout(self):
        return data.StructLayout({"trits": unsigned(2 * self._lanes * self._rows), "last": unsigned(1)})

    @property
    def acc_layout(self):
        acc = signed(self._acc_width)
        if self._rows > 1:
            acc = data.ArrayLayout(acc, self._rows)
        return data.StructLayout({"acc": acc, "last": unsigned(1)})

    @property
    def latency(self):
        """Cycles from accepting a row's final weight beat to its accumulator being valid on ``o``."""
        # [address copies, output registers,] buffer read, lane, tree levels, accumulator, FIFO output
        return 2 * self._spread + 1 + 1 + self._depth + 1 + 1

    @property
    def fifo_depth(self):
        return self.latency + 4

    def elaborate(self, platform):
        m = Module()
        P, R, W = self._lanes, self._rows, self._max_k // self._lanes
        arch = self._arch or platform_arch(platform)
        col_bits = (W - 1).bit_length()

        # --- activation buffer: two banks of W words of P codes --------------------------------
        # Block RAM whatever the depth (unless told otherwise): a LUT RAM of 8P-bit words would cost
        # more LUTs than the lanes.
        # The last act_lut_lanes lanes may live in a LUT RAM of their own, beside it; with
        # spread_control each part is cut into memories of GROUP_LANES lanes.
        parts = [(0, P - self._act_lut_lanes, self._act_memory), (P - self._act_lut_lanes, P, "distributed")]
        groups = []
        for lo, hi, style in parts:
            step = GROUP_LANES[style] if self._spread else max(1, hi - lo)
            groups += [(a, min(hi, a + step), style) for a in range(lo, hi, step)]
        # With spread_control the codes leave every memory through a second register: on ECP5 the
        # block RAM's own output register (DP16KD instances, see _dp16kd), which its slow data output
        # would otherwise have to drive across the die in the same clock.
        depth = 2 << col_bits
        wports, rports, reads = [], [], []
        for n, (lo, hi, style) in enumerate(groups):
            name = "buf" if n == 0 else f"buf{n}"
            if self._spread and arch == "ecp5" and style == "block" and depth <= DP16KD_DEPTH:
                port = _ram_ports(name, CODE_BITS * (hi - lo), depth)
                reads.append([self._dp16kd(m, name, port)] * R)
                wports.append((port.write, lo, hi))
                rports.append(port.read)
                continue
            buf = memory.Memory(shape=unsigned(CODE_BITS * (hi - lo)), depth=depth, init=[],
                                attrs={"ram_style": style, "no_rw_check": 1})
            m.submodules[name] = buf
            wports.append((buf.write_port(), lo, hi))
            # An asynchronous port followed by a register: Yosys merges the register into the block RAM
            # and, with no_rw_check, needs no collision logic (a bank is never read while written).
            rports.append(buf.read_port(domain="comb"))
            read = rports[-1].data
            if not self._spread:
                reads.append([read] * R)
                continue
            # as the DP16KD: latch, output register; with several row units, the output register in a
            # copy per unit (kept apart by synthesis), so that each unit's lanes are fed from beside them
            r = Signal(len(read), name=f"{name}_rdata0", reset_less=True)
            m.d.sync += r.eq(read)
            if R == 1:
                out = Signal(len(read), name=f"{name}_rdata1", reset_less=True)
                m.d.sync += out.eq(r)
                reads.append([out])
            else:
                reads.append([register_copy(m, r, f"{name}_rdata1_r{u}", arch) for u in range(R)])
        # the codes of every lane, per row unit: one clock after the read address (this register, which
        # Yosys merges into the block RAM), or with spread_control two after each memory's copy of it
        # (read above)
        if self._spread:
            rdatas = [Cat(*(group[u] for group in reads)) for u in range(R)]
        else:
            rdata = Signal(CODE_BITS * P, reset_less=True)
            m.d.sync += rdata.eq(Cat(*(group[0] for group in reads)))
            rdatas = [rdata] * R

        full = Signal(2)                    # bank holds a complete vector
        # act.ready comes straight from a register: the write enable it makes drives every block RAM
        act_ready = Signal(init=not self._spread)
        last_col = Array(Signal(range(W), name=f"last_col{b}") for b in range(2))
        w_bank = Signal()
        w_col = Signal(range(W))
        r_bank = Signal()
        r_col = Signal(range(W))
        act_take = self.act.valid & self.act.ready

        m.d.comb += self.act.ready.eq(act_ready)
        if self._spread:
            # A beat waiting on act (valid, its payload held) and a free bank: wr_go, then in the next
            # clock act.ready and, in every memory, a registered copy of wr_go and the write address;
            # the write and the transfer fall in the same clock. Only registers cross the die.
            wr_go = Signal()
            m.d.sync += wr_go.eq(self.act.valid & ~wr_go & ~act_ready & ~full.bit_select(w_bank, 1))
        for n, (wport, lo, hi) in enumerate(wports):
            w_addr, w_en = Cat(w_col[:col_bits], w_bank), act_take
            if self._spread:
                w_addr = register_copy(m, w_addr, f"wa_copy{n}", arch)
                w_en = register_copy(m, wr_go, f"we_copy{n}", arch)
            m.d.comb += [
                wport.addr.eq(w_addr),
                wport.data.eq(self.act.payload.codes.as_value()[CODE_BITS * lo:CODE_BITS * hi]),
                wport.en.eq(w_en),
            ]
        set_full = Signal(2)
        clr_full = Signal(2)
        w_bank_next = Signal()
        m.d.comb += w_bank_next.eq(w_bank)
        with m.If(act_take):
            with m.If(self.act.payload.last | (w_col == W - 1)):
                m.d.comb += [set_full.eq(Mux(w_bank, 0b10, 0b01)), w_bank_next.eq(~w_bank)]
                m.d.sync += [last_col[w_bank].eq(w_col), w_col.eq(0)]
            with m.Else():
                m.d.sync += w_col.eq(w_col + 1)

        # --- weight intake -------------------------------------------------------------------------
        inflight = Signal(range(self.fifo_depth + 1))    # results promised and not yet taken from o
        take = Signal()
        eor = Signal()                                   # this beat ends a row
        # w.ready is a register: whether the read bank holds its vector and the result FIFO has room,
        # found from the next clock's values, so that the reader's take (and all it decides, maybe
        # across the device) starts at a register here
        w_ready = Signal()
        m.d.comb += [
            self.w.ready.eq(w_ready),
            take.eq(self.w.valid & self.w.ready),
            eor.eq(r_col == last_col[r_bank]),
        ]
        for n, rport in enumerate(rports):
            r_addr = Cat(r_col[:col_bits], r_bank)
            # with spread_control each memory reads a clock later, from its own copy of the address
            m.d.comb += rport.addr.eq(register_copy(m, r_addr, f"ra_copy{n}", arch)
                                      if self._spread else r_addr)
        with m.If(take):
            with m.If(eor):
                m.d.sync += r_col.eq(0)
                with m.If(self.w.payload.last):
                    m.d.comb += clr_full.eq(Mux(r_bank, 0b10, 0b01))
                    m.d.sync += r_bank.eq(~r_bank)
            with m.Else():
                m.d.sync += r_col.eq(r_col + 1)
        full_next = Signal(2)
        r_bank_next = Signal()
        inflight_next = Signal.like(inflight)
        m.d.comb += [
            full_next.eq((full | set_full) & ~clr_full),
            r_bank_next.eq(r_bank ^ clr_full.any()),
        ]
        m.d.sync += [
            full.eq(full_next),
            inflight.eq(inflight_next),
            w_ready.eq(full_next.bit_select(r_bank_next, 1) & (inflight_next < self.fifo_depth)),
            w_bank.eq(w_bank_next),
            act_ready.eq(wr_go if self._spread else ~full_next.bit_select(w_bank_next, 1)),
        ]

        # --- stage 1: buffer read; trits and row flags registered alongside ---------------------
        s1_trits = Signal(2 * P * R, reset_less=True)
        s1_flags = Signal(4)                             # valid, start of row, end of row, last
        trits, flags = self.w.payload.trits, Cat(take, r_col == 0, eor, eor & self.w.payload.last)
        # the beat waits for the address copies and the memories' output registers (trits that
        # arrive trits_delay clocks late skip as many of its registers)
        for i in range(2 * self._spread):
            s0_flags = Signal(4, name=f"s0_flags{i}")
            m.d.sync += s0_flags.eq(flags)
            flags = s0_flags
            if i >= self._trits_delay:
                s0_trits = Signal(2 * P * R, name=f"s0_trits{i}", reset_less=True)
                m.d.sync += s0_trits.eq(trits)
                trits = s0_trits
        m.d.sync += [s1_trits.eq(trits), s1_flags.eq(flags)]

        # --- stages 2 .. 2 + depth: per row unit, its lanes and adder tree; the flags alongside -------
        totals = [self._row_unit(m, rdatas[r], s1_trits[2 * P * r:2 * P * (r + 1)], arch,
                                 f"r{r}_" if R > 1 else "")
                  for r in range(R)]
        flags = s1_flags
        for name in ["s2_flags", "t1_flags"] + [f"t{level}_flags" for level in range(2, self._depth + 1)]:
            f = Signal(4, name=name)
            m.d.sync += f.eq(flags)
            flags = f

        # --- accumulators ----------------------------------------------------------------------------
        f_valid, f_sor, f_eor, f_last = flags
        acc_nexts = []
        for r, (total, cin) in enumerate(totals):
            pre = f"r{r}_" if R > 1 else ""
            acc = Signal(signed(self._acc_width), name=f"{pre}acc", reset_less=True)
            acc_next = Signal(signed(self._acc_width), name=f"{pre}acc_next")
            m.d.comb += acc_next.eq(self._add_cin(Mux(f_sor, 0, acc), total, cin))
            with m.If(f_valid):
                m.d.sync += acc.eq(acc_next)
            acc_nexts.append(acc_next)

        m.submodules.fifo = out = fifo.SyncFIFOBuffered(width=R * self._acc_width + 1, depth=self.fifo_depth)
        m.d.comb += [
            out.w_data.eq(Cat(*acc_nexts, f_last)),
            out.w_en.eq(f_valid & f_eor),
            self.o.valid.eq(out.r_rdy),
            self.o.payload.eq(out.r_data),
            out.r_en.eq(self.o.ready),
        ]
        m.d.comb += inflight_next.eq(inflight + (take & eor) - (self.o.valid & self.o.ready))
        return m

    def _row_unit(self, m, rdata, trits, arch, pre):
        """One row unit's lanes (stage 2), lane pairs (stage 3) and the rest of its adder tree, from the
        shared codes ``rdata`` and its own ``2P`` trits; signal names start with ``pre``. Returns the
        tree's root (registered, ``depth + 1`` clocks after ``trits``) and the carry-in it still owes."""
        P = self._lanes
        # --- stage 2: lanes: the code, cleared by a zero trit (a flip-flop's synchronous reset) ------
        lanes = []
        for j in range(P):
            x = rdata[CODE_BITS * j:CODE_BITS * (j + 1)]
            nz, neg = trits[2 * j], trits[2 * j + 1]
            g = Signal(signed(CODE_BITS), name=f"{pre}lane{j}", reset_less=True)
            n = Signal(name=f"{pre}lane{j}_neg", reset_less=True)
            m.d.sync += [g.eq(Mux(nz, x, 0)), n.eq(neg)]
            lanes.append((g, n))

        # --- stage 3: pairs of lanes: (g_a ^ -n_a) + (g_b ^ -n_b) + n_a; n_b is owed upwards ----------
        items = []
        for i in range(0, P, 2):
            idx = len(items)
            name = f"{pre}t1_{idx}"
            ga, na = lanes[i]
            if i + 1 == P:                               # an odd lane on its own
                r = Signal(signed(CODE_BITS), name=name, reset_less=True)
                m.d.sync += r.eq(ga ^ na.replicate(CODE_BITS).as_signed())
                items.append((r, nx.CODE.min, nx.CODE.max, self._delay(m, [na], name)))
                continue
            gb, nb = lanes[i + 1]
            lo, hi = 2 * nx.CODE.min, 2 * nx.CODE.max + 1
            r = Signal(_range_shape(lo, hi), name=name, reset_less=True)
            m.d.sync += r.eq(self._pair(m, ga, na, gb, nb, len(r), arch, name))
            items.append((r, lo, hi, self._delay(m, [nb], name)))

        # --- stages 4 .. 2 + depth: the rest of the adder tree ---------------------------------------
        level = 1
        while len(items) > 1:
            level += 1
            nxt = []
            for i in range(0, len(items), 2):
                idx = len(nxt)
                name = f"{pre}t{level}_{idx}"
                if i + 1 == len(items):                  # odd one out: delay a stage
                    v, lo, hi, pend = items[i]
                    r = Signal(v.shape(), name=name, reset_less=True)
                    m.d.sync += r.eq(v)
                    nxt.append((r, lo, hi, self._delay(m, pend, name)))
                    continue
                (a, alo, ahi, apend), (b, blo, bhi, bpend) = items[i], items[i + 1]
                pend = apend + bpend
                cin = pend.pop(0)
                lo, hi = alo + blo, ahi + bhi + 1
                r = Signal(_range_shape(lo, hi), name=name, reset_less=True)
                m.d.sync += r.eq(self._add_cin(a, b, cin))
                nxt.append((r, lo, hi, self._delay(m, pend, name)))
            items = nxt
        assert level == self._depth
        (total, _, _, pend), = items
        assert len(pend) == 1
        return total, pend[0]

    @staticmethod
    def _pair(m, ga, na, gb, nb, width, arch, name):
        """``(ga ^ -na) + (gb ^ -nb) + na``, ``width`` bits.

        Generic: two XOR LUTs per bit feed the adder. ECP5: one carry chain whose LUT4s see all four
        inputs of a bit (``ga[i], na, gb[i], nb``) and compute the propagate ``ga^na^gb^nb``; the
        generate LUT2 sees ``ga[i], na``, which is the carry whenever the operand bits agree. The
        lane's negation thus costs no LUT at all. Bit 0 of the chain only turns ``na`` into its carry.
        """
        if arch != "ecp5":
            return TernaryMatVec._add_cin(ga ^ na.replicate(len(ga)).as_signed(),
                                          gb ^ nb.replicate(len(gb)).as_signed(), na)
        # chain positions: [carry-in] + operand bits 0 .. width-1, sign-extended
        quads = [(na, C(0, 1), C(0, 1), C(1, 1), 0x000A)]
        for i in range(width):
            k = min(i, len(ga) - 1)
            quads.append((ga[k], na, gb[k], nb, 0x6996))
        if len(quads) % 2:
            quads.append((C(0, 1), C(0, 1), C(0, 1), C(1, 1), 0x0000))
        sums = Signal(len(quads), name=f"{name}_s")
        carry = C(0, 1)
        for c in range(0, len(quads), 2):
            cout = Signal(name=f"{name}_co{c // 2}")
            (a0, b0, c0, d0, i0), (a1, b1, c1, d1, i1) = quads[c], quads[c + 1]
            m.submodules[f"{name}_ccu{c // 2}"] = Instance(
                "CCU2C",
                p_INIT0=C(i0, 16), p_INIT1=C(i1, 16), p_INJECT1_0="NO", p_INJECT1_1="NO",
                i_CIN=carry, i_A0=a0, i_B0=b0, i_C0=c0, i_D0=d0, i_A1=a1, i_B1=b1, i_C1=c1, i_D1=d1,
                o_S0=sums[c], o_S1=sums[c + 1], o_COUT=cout)
            carry = cout
        return sums[1:1 + width].as_signed()

    @staticmethod
    def _dp16kd(m, name, port):
        """The memory ``port`` describes as ECP5 ``DP16KD`` blocks in 36-bit pseudo-dual-port mode with
        their output register (:func:`~mmfree.hw.ecp5.dp16kd_ram`): the codes of ``port.read.addr``
        come out two clocks later. Returns that data."""
        return dp16kd_ram(m, name, port.write.addr, port.write.data, port.write.en, port.read.addr,
                          data_width=DP16KD_WIDTH)

    @staticmethod
    def _add_cin(a, b, cin):
        """``a + b + cin`` as one adder: the carry-in rides on an extra low bit of both operands."""
        return (Cat(cin, a).as_signed() + Cat(cin, b).as_signed())[1:].as_signed()

    @staticmethod
    def _delay(m, sigs, name):
        out = []
        for i, s in enumerate(sigs):
            r = Signal(name=f"{name}_c{i}", reset_less=True)
            m.d.sync += r.eq(s)
            out.append(r)
        return out


def _ram_ports(name, width, depth):
    """The signals of a memory with one write and one read port, for :meth:`TernaryMatVec._dp16kd`:
    ``write.addr``, ``write.data``, ``write.en`` and ``read.addr``, named as on Amaranth's memory ports
    so that the unit drives either kind alike."""
    bits = (depth - 1).bit_length()
    return SimpleNamespace(
        write=SimpleNamespace(addr=Signal(bits, name=f"{name}_waddr"), data=Signal(width, name=f"{name}_wdata"),
                              en=Signal(name=f"{name}_we")),
        read=SimpleNamespace(addr=Signal(bits, name=f"{name}_raddr")))


class Rescale(wiring.Component):
    """Accumulators times a per-vector PFloat scale, to ACT: :func:`~mmfree.numerics.rescale`.

    ``value = saturate_ACT(round_half_up(acc * mant * 2**(exp + 12)))`` exactly as the numeric
    specification defines it, for every accumulator and every scale with ``mant`` 0 or in
    ``[2**15, 2**16)`` and ``exp`` representable in ``exp_width`` bits.

    Parameters
    ----------
    acc_width : int
        Width of the signed accumulators (2 to 32; :attr:`TernaryMatVec.acc_width` to connect to one).
    exp_width : int
        Width of the signed PFloat exponent (2 to 16). The default, 8, covers ``2**-128 .. 2**127``.
    arch : ``None``, ``"generic"`` or ``"ecp5"``
        ``"ecp5"``: the partial products are ``MULT18X18D`` blocks whose own registers hold the
        operands and the products (:func:`~mmfree.hw.ecp5.mult18x18d`); ``None`` picks ``"ecp5"``
        when elaborated for an ECP5 platform. Same clocks either way.

    Interfaces
    ----------
    i : ``In(stream.Signature(acc_layout))``
        Accumulators: ``payload.acc`` and ``payload.last`` (the last accumulator of a vector), the
        layout of :attr:`TernaryMatVec.o`.
    scale : ``In(stream.Signature(scale_layout))``
        One scale per vector: ``payload.mant`` (``unsigned(16)``) and ``payload.exp`` (``signed(exp_width)``).
        The scale is held for every accumulator of a vector and taken (``scale.ready``) together with
        the accumulator that has ``last`` set.
    o : ``Out(stream.Signature(value_layout))``
        ``payload.value`` (``signed(24)``, ACT codes) and ``payload.last``, one per accumulator.

    Throughput and latency
    ----------------------
    One accumulator per clock. A value leaves :attr:`latency` cycles after its accumulator entered,
    if ``o`` does not stall. The pipeline stops as a whole while ``o.valid & ~o.ready`` (``i.ready``
    then goes low in the same cycle).

    Datapath
    --------
    ``p = acc * mant`` (two registered partial products, ``acc[:17] * mant`` and
    ``acc[17:] * mant``, each one 18x18 DSP multiplier, then their sum; one product when the
    accumulator has at most 18 bits). Then, with ``sh = -(exp + 12)`` clamped to
    ``[-8, acc_width + 16]`` (beyond it the result no longer changes) and ``t = sh + 8``:
    ``u = (p << 9) >> t`` (arithmetic barrel shift, by whole bytes then by the bits left, a stage
    each) and ``value = saturate((u + 1) >> 1)`` (rounded, then saturated, a stage each), which is
    the round-half-up of ``p * 2**-sh``. ``sh < -8`` saturates any non-zero product: with a normalised
    mantissa ``|p| >= 2**15``, so ``|p| * 2**9`` is already beyond ACT's range.
    """

    def __init__(self, acc_width=nx.ACC.width, exp_width=8, *, arch=None):
        _check_int("acc_width", acc_width, 2, nx.ACC.width)
        _check_int("exp_width", exp_width, 2, 16)
        check_arch(arch)
        self._acc_width = acc_width
        self._exp_width = exp_width
        self._arch = arch
        super().__init__({
            "i": In(stream.Signature(self.acc_layout)),
            "scale": In(stream.Signature(self.scale_layout)),
            "o": Out(stream.Signature(self.value_layout)),
        })

    acc_width = property(lambda self: self._acc_width)
    exp_width = property(lambda self: self._exp_width)
    latency = 7
    """Cycles from an accumulator's transfer on ``i`` to its value being valid on ``o``."""

    @property
    def acc_layout(self):
        return data.StructLayout({"acc": signed(self._acc_width), "last": unsigned(1)})

    @property
    def scale_layout(self):
        return data.StructLayout({"mant": unsigned(PF_MANT_BITS), "exp": signed(self._exp_width)})

    @property
    def value_layout(self):
        return data.StructLayout({"value": signed(nx.ACT.width), "last": unsigned(1)})

    def elaborate(self, platform):
        m = Module()
        A = self._acc_width
        sh_max = A + 16

        o_valid = Signal()
        adv = Signal()                                   # the whole pipeline moves
        m.d.comb += [
            adv.eq(~o_valid | self.o.ready),
            self.i.ready.eq(self.scale.valid & adv),
            self.scale.ready.eq(self.i.valid & adv & self.i.payload.last),
        ]

        # stage a: operands
        a_valid, a_last = Signal(), Signal()
        a_sh = Signal(signed(self._exp_width + 2))
        # stage b: partial products, each one 18x18 multiplier, registered before they are added
        # (an accumulator of at most 18 bits needs one multiplier: a single signed product)
        lo_bits = MUL_LO_BITS if A > MUL_LO_BITS + 1 else 0
        b_valid, b_last = Signal(), Signal()
        b_lo = Signal(lo_bits + PF_MANT_BITS)
        b_hi = Signal(signed(A - lo_bits + PF_MANT_BITS + 1))
        b_sh = Signal(signed(self._exp_width + 2))
        if (self._arch or platform_arch(platform)) == "ecp5":
            # the operand and product registers are the DSP blocks' own (stages a and b)
            acc, mant = self.i.payload.acc, self.scale.payload.mant
            if lo_bits:
                m.d.comb += b_lo.eq(mult18x18d(m, "mul_lo", acc[:lo_bits], mant, adv))
            m.d.comb += b_hi.eq(mult18x18d(m, "mul_hi", acc[lo_bits:].as_signed(), mant, adv))
        else:
            a_acc, a_mant = Signal(signed(A)), Signal(PF_MANT_BITS)
            with m.If(adv):
                m.d.sync += [
                    a_acc.eq(self.i.payload.acc),
                    a_mant.eq(self.scale.payload.mant),
                    b_lo.eq(a_acc[:lo_bits] * a_mant),
                    b_hi.eq(a_acc[lo_bits:].as_signed() * a_mant),
                ]
        # stage c: product and shift amount
        c_valid, c_last, c_big = Signal(), Signal(), Signal()
        c_p = Signal(signed(A + PF_MANT_BITS + 1))
        c_t = Signal(range(sh_max + 9))
        # stages s, d: shifted by whole bytes, then by the bits left
        s_valid, s_last, s_big, s_neg = Signal(), Signal(), Signal(), Signal()
        s_u = Signal(signed(A + PF_MANT_BITS + 1 + 9))
        s_t = Signal(3)
        d_valid, d_last, d_big, d_neg = Signal(), Signal(), Signal(), Signal()
        d_u = Signal(signed(A + PF_MANT_BITS + 1 + 9))
        # stage e: rounded
        e_valid, e_last, e_big, e_neg = Signal(), Signal(), Signal(), Signal()
        e_r = Signal(signed(len(d_u)))

        with m.If(adv):
            m.d.sync += [
                a_valid.eq(self.i.valid & self.i.ready),
                a_last.eq(self.i.payload.last),
                a_sh.eq(-(self.scale.payload.exp + nx.ACT.frac)),

                b_valid.eq(a_valid), b_last.eq(a_last),
                b_sh.eq(a_sh),

                c_valid.eq(b_valid), c_last.eq(b_last),
                c_p.eq((b_hi << lo_bits) + b_lo),
                c_big.eq(b_sh < -8),
                c_t.eq(Mux(b_sh < -8, 0, Mux(b_sh > sh_max, sh_max, b_sh)) + 8),

                s_valid.eq(c_valid), s_last.eq(c_last),
                s_u.eq((c_p << 9) >> (c_t[3:] << 3)),
                s_t.eq(c_t[:3]),
                s_big.eq(c_big & (c_p != 0)),
                s_neg.eq(c_p < 0),

                d_valid.eq(s_valid), d_last.eq(s_last), d_big.eq(s_big), d_neg.eq(s_neg),
                d_u.eq(s_u >> s_t),

                e_valid.eq(d_valid), e_last.eq(d_last), e_big.eq(d_big), e_neg.eq(d_neg),
                e_r.eq((d_u + 1) >> 1),
            ]
        # stage e -> output register
        o_value = Signal(signed(nx.ACT.width))
        o_last = Signal()
        r = e_r
        with m.If(adv):
            m.d.sync += [o_valid.eq(e_valid), o_last.eq(e_last)]
            with m.If(e_big):
                m.d.sync += o_value.eq(Mux(e_neg, nx.ACT.min, nx.ACT.max))
            with m.Elif(r > nx.ACT.max):
                m.d.sync += o_value.eq(nx.ACT.max)
            with m.Elif(r < nx.ACT.min):
                m.d.sync += o_value.eq(nx.ACT.min)
            with m.Else():
                m.d.sync += o_value.eq(r)
        m.d.comb += [
            self.o.valid.eq(o_valid),
            self.o.payload.value.eq(o_value),
            self.o.payload.last.eq(o_last),
        ]
        return m


class TernaryLinear(wiring.Component):
    """:class:`TernaryMatVec` followed by :class:`Rescale`: ternary matrix times int8 vector, to ACT.

    Interfaces ``act`` and ``w`` are those of :class:`TernaryMatVec`, ``scale`` that of
    :class:`Rescale` (one scale per vector, in vector order), ``o`` carries one ACT value per row.
    Throughput is the matrix-vector unit's; latency is the sum of both latencies.
    """

    def __init__(self, lanes, max_k, exp_width=8, *, arch=None, act_memory="block", act_lut_lanes=0,
                 spread_control=False):
        self._matvec = TernaryMatVec(lanes, max_k, arch=arch, act_memory=act_memory,
                                     act_lut_lanes=act_lut_lanes, spread_control=spread_control)
        self._rescale = Rescale(self._matvec.acc_width, exp_width, arch=arch)
        super().__init__({
            "act": In(stream.Signature(self._matvec.act_layout)),
            "w": In(stream.Signature(self._matvec.weight_layout)),
            "scale": In(stream.Signature(self._rescale.scale_layout)),
            "o": Out(stream.Signature(self._rescale.value_layout)),
        })

    lanes = property(lambda self: self._matvec.lanes)
    max_k = property(lambda self: self._matvec.max_k)

    @property
    def latency(self):
        return self._matvec.latency + self._rescale.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.matvec = mv = self._matvec
        m.submodules.rescale = rs = self._rescale
        wiring.connect(m, wiring.flipped(self.act), mv.act)
        wiring.connect(m, wiring.flipped(self.w), mv.w)
        wiring.connect(m, mv.o, rs.i)
        wiring.connect(m, wiring.flipped(self.scale), rs.scale)
        wiring.connect(m, rs.o, wiring.flipped(self.o))
        return m
