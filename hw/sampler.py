"""The on-device sampler: the next token from the logits in the core's ``Y`` buffer, bit for bit
:class:`mmfree.sampler.Sampler` (temperature, top-k, a seeded 32-bit LFSR).

Everything here follows the steps of :mod:`mmfree.sampler`; its table (``EXP2_TABLE``), LFSR mask,
``log2(e)`` constant and shifts are imported from there, so the two cannot drift apart.

Schedule of one ``start`` (``V`` logits, read through ``rd`` one per clock), a clock after it::

    MAX      V + 4 clocks    lmax = max(l); meanwhile beta = (LOG2E_Q22 + T/2) // T (restoring
                             division, one quotient bit a clock) and the LFSR's 32 steps of this draw
    TOPK     24 (V + 4)      only when 0 < top_k < V: the threshold, one bit a pass, from the top:
                             the largest t with #{i: l[i] >= t} >= top_k (a radix select)
    SUM      V + 8           W = sum of w[i] (the weight pipeline below)
    SCALE    32              u = (r * W) >> 32, a shift-and-add multiplier
    SELECT   <= V + 9        the first i whose running sum of w exceeds u

Weight pipeline (SUM and SELECT), one logit a clock: read ``l[i]`` and register it twice (the
port's register by the block RAM, then one of the sampler's own);
``d = lmax - l[i]`` and the candidate test; the product ``d * beta`` in three stages (four 12 x 12-bit
partial products, one multiplier block each, then two adds); ``x = product >> 20``, the table entry
``EXP2_TABLE[x & 63]`` and ``n = x >> 6`` (zero weight when ``x >= 1024`` or not a candidate); the
shift ``>> n``; the running sum.
About ``3V + 100`` clocks without top-k (``V = 256``: under 900), ``27V + 150`` with it.
Greedy decoding (temperature 0) does not use this unit: the core's argmax is the answer then.

Interface
---------
``start`` : In(1), a one-clock request (ignored while ``busy``), taken into a register;
    ``temperature`` (8.8 code, >= 1), ``top_k`` and ``vocab`` (``V >= 1``) are sampled a clock
    after it, so the caller holds them.
``load`` : In(1), sets the LFSR state from ``seed`` (0 stands for :data:`~mmfree.sampler.SEED_ZERO`);
    a GENERATE loads its seed once, each ``start`` then draws the next 32-bit word.
``rd`` : read port into the logits (``addr`` out, ``data`` the ACT logit at the ``addr`` of
    :data:`~mmfree.hw.core.LOGITS_READ_LATENCY` clocks before, registered after the block RAM);
    the core serves it while it is idle.
``busy`` : Out(1); ``done`` : Out(1), one clock, with ``token`` valid (held until the next ``start``).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics as nx
from mmfree import sampler as spec

from .activations import ACT_SHAPE
from .ecp5 import check_arch, mult18x18d, platform_arch
from .core import LOGITS_READ_LATENCY, read_signature

__all__ = ["Sampler", "TOPK_PASSES", "cycle_bound"]

TOPK_PASSES = nx.ACT.width
"""Passes of the top-k threshold search: one per bit of an ACT logit."""
_T_BITS = spec.TEMPERATURE_MAX.bit_length()       # the 8.8 temperature code
_BETA_BITS = spec.LOG2E_Q22.bit_length()          # beta <= LOG2E_Q22
_NUM_BITS = (spec.LOG2E_Q22 + spec.TEMPERATURE_MAX // 2).bit_length()
_X_LIMIT_BITS = spec.EXP2_FRAC_BITS + 4           # x < 1024: n = x >> 6 < 16
_W_BITS = 16                                     # EXP2_TABLE entries are below 2**16
_MUL_SPLIT = 12                                  # d and beta in 12-bit halves: 2 x 24 >= 24, 23 bits
_PIPE = 7                                        # read, d, partial products, two sums, table, shift


class Sampler(wiring.Component):
    """Temperature and top-k sampling over the logits, bit-exact with :class:`mmfree.sampler.Sampler`.

    Parameters
    ----------
    max_vocab : int
        The largest ``V`` it serves.
    depth : int
        Depth of the logits memory behind ``rd`` (its address width).
    arch : ``None``, ``"generic"`` or ``"ecp5"``
        ``"ecp5"``: the four partial products of ``d * beta`` are ``MULT18X18D`` blocks whose own
        registers hold ``d`` and the products (:func:`~mmfree.hw.ecp5.mult18x18d`); ``None`` picks
        ``"ecp5"`` when elaborated for an ECP5 platform. Same clocks either way.
    """

    def __init__(self, max_vocab, depth, *, arch=None):
        if not isinstance(max_vocab, int) or not 1 <= max_vocab <= 1 << 16:
            raise ValueError(f"max_vocab must be an integer from 1 to 65536, not {max_vocab!r}")
        if not isinstance(depth, int) or depth < max_vocab:
            raise ValueError(f"depth must be an integer of at least max_vocab ({max_vocab}), not {depth!r}")
        check_arch(arch)
        self._max_vocab = max_vocab
        self._depth = depth
        self._arch = arch
        super().__init__({
            "start": In(1),
            "temperature": In(_T_BITS),
            "top_k": In(spec.TOP_K_BITS),
            "vocab": In(range(max_vocab + 1)),
            "load": In(1),
            "seed": In(32),
            "busy": Out(1),
            "done": Out(1),
            "token": Out(range(max(max_vocab, 2))),
            "rd": Out(read_signature(depth, ACT_SHAPE)),
        })

    max_vocab = property(lambda self: self._max_vocab)

    @property
    def sum_width(self):
        """Bits of ``W``: ``V`` weights of at most ``2**15`` each."""
        return 15 + max(1, self._max_vocab.bit_length())

    def elaborate(self, platform):
        m = Module()
        VB = self.vocab.shape()
        SW = self.sum_width
        act_w = nx.ACT.width

        # --- request ------------------------------------------------------------------------------
        V_last = Signal(VB)                             # V - 1: no subtraction ahead of the compares
        code = Signal(_T_BITS)
        k = Signal(16)
        use_topk = Signal()

        # --- LFSR, stepped 32 times per draw ------------------------------------------------------
        lfsr = Signal(32, init=spec.SEED_ZERO)
        lfsr_steps = Signal(range(33))
        with m.If(self.load):
            m.d.sync += lfsr.eq(Mux(self.seed == 0, spec.SEED_ZERO, self.seed))
        with m.Elif(lfsr_steps != 0):
            m.d.sync += [lfsr.eq((lfsr >> 1) ^ Mux(lfsr[0], spec.LFSR_MASK, 0)),
                         lfsr_steps.eq(lfsr_steps - 1)]

        # --- beta = (LOG2E_Q22 + code // 2) // code: restoring division ---------------------------
        num = Signal(_NUM_BITS)              # dividend bits still to bring down, MSB first
        rem = Signal(_T_BITS + 1)
        beta = Signal(_NUM_BITS)
        div_steps = Signal(range(_NUM_BITS + 1))
        with m.If(div_steps != 0):
            trial = Cat(num[-1], rem[:-1])
            fits = trial >= code
            m.d.sync += [rem.eq(Mux(fits, trial - code, trial)), beta.eq(Cat(fits, beta[:-1])),
                         num.eq(num << 1), div_steps.eq(div_steps - 1)]

        # --- the scan: addresses 0 .. V-1, one per clock; their data LOGITS_READ_LATENCY clocks
        # later, registered after the block RAM by the port (block RAM outputs are slow), and once
        # more here: the logits memory may lie across the device from this unit --------------------
        scan_i = Signal(VB)
        scanning = Signal()
        scan_last = Signal()                           # the index is V - 1
        m.d.comb += [self.rd.addr.eq(scan_i), scan_last.eq(scan_i == V_last)]
        rd_valid, rd_idx, rd_last = scanning, scan_i, scan_last
        for j in range(LOGITS_READ_LATENCY + 1):       # the index that ``logit`` holds, by stage
            valid_j, idx_j, last_j = Signal(name=f"r{j}_valid"), Signal(VB, name=f"r{j}_idx"), \
                Signal(name=f"r{j}_last")
            m.d.sync += [valid_j.eq(rd_valid), idx_j.eq(rd_idx), last_j.eq(rd_last)]
            rd_valid, rd_idx, rd_last = valid_j, idx_j, last_j
        logit = Signal(ACT_SHAPE)
        m.d.sync += logit.eq(self.rd.data)
        with m.If(scanning):
            m.d.sync += scan_i.eq(scan_i + 1)
            with m.If(scan_last):
                m.d.sync += scanning.eq(0)
        key = Signal(act_w)                  # order-preserving unsigned form of the logit
        m.d.comb += key.eq(logit.as_unsigned() ^ (1 << (act_w - 1)))

        # --- MAX pass -----------------------------------------------------------------------------
        lmax = Signal(ACT_SHAPE)
        lmax_first = Signal()

        # --- TOPK passes: threshold key t, one bit per pass ---------------------------------------
        tkey = Signal(act_w)                 # candidates: key >= tkey (0 keeps every logit)
        tbit = Signal(range(act_w))
        count = Signal(17)
        trial_key = Signal(act_w)            # tkey | 1 << tbit, in a register of its own

        # --- weight pipeline (SUM, SELECT) --------------------------------------------------------
        # d = lmax - l[i]; d * beta as four registered 12 x 12-bit partial products (one MULT18X18D
        # each, nothing after it in the clock; on the ECP5 d and the products are the block's own
        # registers) summed in two more stages; the table entry and the
        # shift amount; the shifted weight. valid and index travel alongside.
        exp2 = Array(Const(v, _W_BITS) for v in spec.EXP2_TABLE)
        weighing = Signal()                  # the scan feeds the pipeline (SUM and SELECT passes)
        valid = [Signal(name=f"p{j}_valid") for j in range(_PIPE - 1)]
        idx = [Signal(VB, name=f"p{j}_idx") for j in range(_PIPE - 1)]
        last = [Signal(name=f"p{j}_last") for j in range(_PIPE - 1)]
        cand = [Signal(name=f"p{j}_cand") for j in range(4)]
        m.d.sync += [valid[0].eq(rd_valid & weighing), idx[0].eq(rd_idx), last[0].eq(rd_last),
                     cand[0].eq(key >= tkey)]
        for j in range(1, _PIPE - 1):
            m.d.sync += [valid[j].eq(valid[j - 1]), idx[j].eq(idx[j - 1]), last[j].eq(last[j - 1])]
        for j in range(1, 4):
            m.d.sync += cand[j].eq(cand[j - 1])
        d = Signal(act_w)                    # stage 0: lmax - l[i], 0 .. 2**24 - 1
        half = _MUL_SPLIT
        partial = [[Signal(2 * half, name=f"pp{a}{b}") for b in range(2)] for a in range(2)]
        if (self._arch or platform_arch(platform)) == "ecp5":
            # stages 0 and 1 are the DSP blocks' own input and output registers (their beta
            # register is a clock behind beta: immaterial, as SUM_WAIT holds the first pass that
            # uses the product until beta is final)
            m.d.comb += d.eq(lmax - logit)
            for a in range(2):
                for b in range(2):
                    m.d.comb += partial[a][b].eq(mult18x18d(
                        m, f"mul{a}{b}", d[a * half:(a + 1) * half], beta[b * half:(b + 1) * half], 1))
        else:
            m.d.sync += d.eq(lmax - logit)
            for a in range(2):               # stage 1
                for b in range(2):
                    m.d.sync += partial[a][b].eq(d[a * half:(a + 1) * half] * beta[b * half:(b + 1) * half])
        rows = [Signal(3 * half + 1, name=f"ppsum{a}") for a in range(2)]
        for a in range(2):                   # stage 2
            m.d.sync += rows[a].eq(partial[a][0] + (partial[a][1] << half))
        prod = Signal(act_w + _BETA_BITS)    # stage 3: d * beta; x = prod >> 20
        m.d.sync += prod.eq(rows[0] + (rows[1] << half))
        entry = Signal(_W_BITS)
        shift = Signal(4)
        zero = Signal()
        x_at = spec.BETA_SHIFT
        m.d.sync += [                        # stage 4
            entry.eq(exp2[prod[x_at:x_at + spec.EXP2_FRAC_BITS]]),
            shift.eq(prod[x_at + spec.EXP2_FRAC_BITS:x_at + _X_LIMIT_BITS]),
            # zero beyond 15 halvings (x >= 1024) and off the candidates
            zero.eq(~cand[3] | (prod[x_at + _X_LIMIT_BITS:] != 0)),
        ]
        w = Signal(_W_BITS)                  # stage 5
        m.d.sync += w.eq(Mux(zero, 0, entry >> shift))
        w_valid, w_idx, w_last = valid[-1], idx[-1], last[-1]

        total = Signal(SW)
        running = Signal(SW)
        u = Signal(SW + 1)

        # --- u = (r * W) >> 32: shift and add, least significant bit of r first ------------------
        mul_r = Signal(32)
        mul_steps = Signal(range(33))

        # the running sum of the weights leaving the pipeline (SUM: W; SELECT: the prefix sums);
        # the states that start a pass clear it (their assignment below takes precedence)
        running_next = running + w
        with m.If(w_valid):
            m.d.sync += running.eq(running_next)
        sel_valid = Signal()                            # running includes w[sel_idx]
        sel_idx = Signal.like(w_idx)
        m.d.sync += [sel_valid.eq(w_valid), sel_idx.eq(w_idx)]

        def restart_scan():
            m.d.sync += [scan_i.eq(0), scanning.eq(1)]

        # --- control ------------------------------------------------------------------------------
        start = Signal()                     # the request, registered: it loads most of the unit
        with m.FSM(name="sampler") as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [
                        V_last.eq(self.vocab - 1), code.eq(self.temperature), k.eq(self.top_k),
                        use_topk.eq((self.top_k != 0) & (self.top_k < self.vocab)),
                        lmax_first.eq(1), tkey.eq(0), tbit.eq(act_w - 1), count.eq(0),
                        trial_key.eq(1 << (act_w - 1)),
                        num.eq(spec.LOG2E_Q22 + (self.temperature >> 1)), rem.eq(0), beta.eq(0),
                        div_steps.eq(_NUM_BITS), lfsr_steps.eq(32),
                    ]
                    restart_scan()
                    m.next = "MAX"
            with m.State("MAX"):
                with m.If(rd_valid & (lmax_first | (logit > lmax))):
                    m.d.sync += [lmax.eq(logit), lmax_first.eq(0)]
                with m.If(rd_valid & rd_last):
                    with m.If(use_topk):
                        restart_scan()
                        m.next = "TOPK"
                    with m.Else():
                        m.next = "SUM_WAIT"
            with m.State("TOPK"):
                with m.If(rd_valid & (key >= trial_key)):
                    m.d.sync += count.eq(count + 1)
                with m.If(rd_valid & rd_last):
                    m.next = "TOPK_BIT"
            with m.State("TOPK_BIT"):
                # the pass's count (its last logit included) is final here
                kept = Mux(count >= k, trial_key, tkey)
                m.d.sync += [tkey.eq(kept), trial_key.eq(kept | (Const(1, act_w) << (tbit - 1)[:len(tbit)])),
                             count.eq(0), tbit.eq(tbit - 1)]
                with m.If(tbit == 0):
                    m.next = "SUM_WAIT"
                with m.Else():
                    restart_scan()
                    m.next = "TOPK"
            with m.State("SUM_WAIT"):
                # beta must be complete (a short vocabulary scans faster than the division runs)
                m.d.sync += running.eq(0)
                with m.If(div_steps == 0):
                    restart_scan()
                    m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += weighing.eq(1)
                with m.If(w_valid & w_last):
                    m.next = "SCALE_WAIT"
            with m.State("SCALE_WAIT"):
                m.d.sync += [total.eq(running), u.eq(0), mul_steps.eq(32), mul_r.eq(lfsr)]
                with m.If((lfsr_steps == 0) & (div_steps == 0)):
                    m.next = "SCALE"
            with m.State("SCALE"):
                partial = u + Mux(mul_r[0], total, 0)
                m.d.sync += [u.eq(partial >> 1), mul_r.eq(mul_r >> 1), mul_steps.eq(mul_steps - 1),
                             running.eq(0)]
                with m.If(mul_steps == 1):
                    restart_scan()
                    m.next = "SELECT"
            with m.State("SELECT"):
                # the prefix sum is compared a clock after it is added up (from its register), so
                # that no comparison follows the adder in one clock
                m.d.comb += weighing.eq(1)
                with m.If(sel_valid & (running > u)):
                    m.d.sync += [self.token.eq(sel_idx), scanning.eq(0)]
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | start)
        m.d.sync += start.eq(self.start & ~self.busy)
        return m


def cycle_bound(vocab, top_k):
    """The most clocks one pick takes, from ``start`` to ``done`` (the schedule in the module
    documentation): what a caller may wait before it calls the unit stuck."""
    passes = 3 + (TOPK_PASSES if 0 < top_k < vocab else 0)
    return 1 + passes * (vocab + _PIPE + LOGITS_READ_LATENCY + 2) + 2 * 33 + _NUM_BITS
