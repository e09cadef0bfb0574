"""Ternary weights out of the TRITS memory: base-3 words in, beats of ``lanes`` 2-bit trits out.

The TRITS region (:mod:`mmfree.memory_map`) stores trits five to a byte in base 3
(:func:`~mmfree.numerics.pack_trits_base3`), :func:`~mmfree.memory_map.trit_word_bytes` bytes a word,
all matrices of a token one continuous sequence. :class:`TritStream` reads that memory with one pointer
that only increments, decodes every byte into five trits in the 2-bit code of
:func:`~mmfree.numerics.pack_trits` (:func:`decode_table`), and cuts the sequence into beats of
``lanes`` trits, exactly the beats a row-major ``pack_trits`` image would give: the weight stream of
:class:`~mmfree.hw.ternary.TernaryMatVec`.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

import torch

from .. import memory_map
from .. import numerics as nx

__all__ = ["TritStream", "WordDecoder", "decode_word", "decode_table", "decode_lookup", "decode_logic",
           "window_bytes"]

_CODE_BITS = 2 * memory_map.TRITS_PER_BYTE      # one byte's trits in the 2-bit code


def decode_table():
    """``table[b]``: the five trits of base-3 byte ``b`` as :func:`~mmfree.numerics.pack_trits` packs
    them (trit ``k`` at bits ``2k + 1 .. 2k``), for ``b`` in ``0 .. 255`` (``0`` above 242, which no
    image holds)."""
    n = memory_map.TRITS_PER_BYTE
    out = []
    for b in range(256):
        if b >= 3 ** n:
            out.append(0)
            continue
        trits = nx.unpack_trits_base3(torch.tensor([b], dtype=torch.uint8), n)
        out.append(int.from_bytes(nx.pack_trits(trits).numpy().tobytes(), "little"))
    return out


def decode_lookup(byte, table):
    """The trits of ``byte`` (a Value) looked up in ``table`` (:func:`decode_table`): what simulators
    evaluate fastest."""
    return Const(sum(v << (_CODE_BITS * b) for b, v in enumerate(table)),
                 len(table) * _CODE_BITS).word_select(byte, _CODE_BITS)


def decode_logic(byte, table):
    """The same trits as logic: every output bit a choice, by the byte's high four bits, among sixteen
    functions of its low four bits (one LUT4 each). For synthesis: Yosys turns a table lookup
    followed by a register into block RAM ROMs, but not this, and maps it three LUTs deep;
    simulators evaluate it slowly."""
    lo, hi = byte[:4], byte[4:8]
    bits = []
    for k in range(_CODE_BITS):
        funcs = [Const(sum(1 << i for i in range(16) if table[16 * h + i] >> k & 1), 16).bit_select(lo, 1)
                 for h in range(16)]
        bits.append(Array(funcs)[hi])
    return Cat(*bits)


def decode_word(word, platform):
    """The trits of every byte of ``word`` (a Value of whole bytes), byte 0 lowest: elaborated for a
    device (``platform`` given) as :func:`decode_logic`; for simulation as :func:`decode_lookup`, the
    same bits."""
    table = decode_table()
    decode = decode_lookup if platform is None else decode_logic
    return Cat(*(decode(word.word_select(j, 8), table) for j in range(len(word) // 8)))


def window_bytes(lanes):
    """The most bytes the trits of one beat of ``lanes`` trits touch, ``ceil((lanes + 4) / 5)`` (a beat
    may start at any of a byte's five trits): what :class:`TritStream` decodes a clock."""
    n = memory_map.TRITS_PER_BYTE
    return -(-(lanes + n - 1) // n)


class WordDecoder(wiring.Component):
    """A word of ``word_bytes`` base-3 bytes decoded into ``5 * word_bytes`` trits (the 2-bit code of
    :func:`~mmfree.numerics.pack_trits`), registered before and after: the decoding step of
    :class:`TritStream` on its own (``word_bytes`` = :func:`window_bytes`), so that its cost can be
    measured apart from the rest of the stream (``mmfree report units --unit trit_decode``). ``i`` is
    taken every clock; ``o`` is its trits two clocks later."""

    def __init__(self, word_bytes):
        if not isinstance(word_bytes, int) or isinstance(word_bytes, bool) or word_bytes < 1:
            raise ValueError(f"word_bytes must be a positive int, not {word_bytes!r}")
        self.word_bytes = word_bytes
        super().__init__({"i": In(8 * word_bytes), "o": Out(_CODE_BITS * word_bytes)})

    def elaborate(self, platform):
        m = Module()
        word = Signal(8 * self.word_bytes)
        m.d.sync += [word.eq(self.i), self.o.eq(decode_word(word, platform))]
        return m


class TritStream(wiring.Component):
    """Beats of ``lanes`` trits, read in sequence from a memory of base-3 trit words.

    Parameters
    ----------
    lanes : int
        ``P``, trits per beat.
    word_bytes : int
        Bytes per memory word (``T = 5 * word_bytes`` trits); ``T >= P``, so that one word a clock
        is enough.
    depth : int
        Words of the memory.
    latency : int
        Clocks from ``rd.addr`` to ``rd.data``: 1 for a block RAM read port, 2 for one whose output
        is registered once more.

    Interfaces
    ----------
    start : In(1)
        Restart: the next word read is word 0, and whatever is buffered is dropped.
    active : In(1)
        Beats are wanted. Words are fetched and beats offered only while it is high; the reader lowers
        it after the last beat it needs (the words fetched ahead are dropped at the next ``start``).
    rd : Out, ``addr`` (``range(depth)``) and ``data`` (``8 * word_bytes`` bits, In): a memory read
        port, ``data`` being the word at the ``addr`` of ``latency`` clocks before.
    o : Out(stream.Signature(2 * lanes))
        Beat after beat of the sequence: trit ``j`` of a beat at bits ``2j + 1 .. 2j`` in the code of
        :func:`~mmfree.numerics.pack_trits`.

    Throughput and timing
    ---------------------
    The words go into a FIFO (:attr:`word_fifo_depth`, fetched only while it has room for every word
    on its way), and from it into a window of two words, the current one and the next. A beat
    starting at trit ``s`` of the current word (``s = 5 o + f``) needs its bytes ``o`` to
    ``o + B - 1`` (``B`` = :attr:`window_bytes`, ``ceil((P + 4) / 5)``): those bytes are picked out of
    the two words (a choice among ``word_bytes`` byte offsets) into a register, decoded in the next
    clock (:func:`decode_word`; for a device :func:`decode_logic`, since a table followed by a
    register would become block RAM ROMs), and shifted down by ``f`` trits in the clock after that,
    into a FIFO of beats (:attr:`beat_fifo_depth`). A beat leaves the window only while that FIFO has
    room for every beat on its way. ``s`` goes round the word's ``T`` trits ``P`` at a time, so
    its next value, its byte ``o`` and trit ``f``, and whether the beat ends the current word, are
    functions of ``s`` alone, kept in registers: the choice of bytes is made from registers. Every
    byte is aligned before it is decoded (8 bits a byte against 10 of its trits), and no buffer wider
    than two words is shifted: the cost of the stream is mostly the decoding of ``B`` bytes a clock.

    A beat is offered on every clock (the first :attr:`first_beat` clocks after ``active`` rises
    behind a ``start``) for as long as ``o.ready`` is high: the unit's full rate. ``o.valid`` is
    ``active`` and a register; ``o.ready`` drives the beat FIFO's read and its count only.
    """

    #: beats the FIFO at the output holds: enough for the beats on their way to it and its own latency
    beat_fifo_depth = 8

    def __init__(self, lanes, word_bytes, depth, *, latency=1):
        for name, value in (("lanes", lanes), ("word_bytes", word_bytes), ("depth", depth),
                            ("latency", latency)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if memory_map.TRITS_PER_BYTE * word_bytes < lanes:
            raise ValueError(f"a word of {word_bytes} bytes holds fewer than lanes ({lanes}) trits")
        self.lanes, self.word_bytes, self.depth, self.latency = lanes, word_bytes, depth, latency
        super().__init__({
            "start": In(1),
            "active": In(1),
            "rd": Out(wiring.Signature({"addr": Out(range(max(depth, 2))), "data": In(8 * word_bytes)})),
            "o": Out(stream.Signature(unsigned(2 * lanes))),
        })

    @property
    def trits_per_word(self):
        return memory_map.TRITS_PER_BYTE * self.word_bytes

    @property
    def window_bytes(self):
        """``B``: the bytes decoded a clock, :func:`window_bytes` of ``lanes``."""
        return window_bytes(self.lanes)

    @property
    def word_fifo_depth(self):
        """Words the FIFO ahead of the window holds: a word a clock is taken from it at most, and a
        word fetched reaches its output ``latency + 2`` clocks later."""
        return self.latency + 4

    @property
    def first_beat(self):
        """Clocks from the first with ``active`` high (after ``start``) to the first beat offered."""
        return self.latency + 8

    def elaborate(self, platform):
        m = Module()
        P, W, T, B = self.lanes, self.word_bytes, self.trits_per_word, self.window_bytes
        n5 = memory_map.TRITS_PER_BYTE
        assert B <= W + 1                               # o + B <= 2 W for every o < W

        # the words: fetched while the FIFO has room for every word fetched and not yet taken
        m.submodules.words = words = ResetInserter(self.start)(
            fifo.SyncFIFOBuffered(width=8 * W, depth=self.word_fifo_depth))
        fetched = Signal(self.latency)                  # bit k: a word was addressed k + 1 clocks ago
        ptr = Signal(range(self.depth + 1))
        ptr_end = Signal()                              # ptr == depth: every word fetched
        wcount = Signal(range(self.word_fifo_depth + 1))
        issue = Signal()
        m.d.comb += [
            issue.eq(self.active & (wcount < self.word_fifo_depth) & ~ptr_end),
            self.rd.addr.eq(ptr),
            words.w_data.eq(self.rd.data),
            words.w_en.eq(fetched[-1]),
        ]

        # the window: the current word and the next, and where the next beat starts in the current
        cur, nxt = Signal(8 * W), Signal(8 * W)
        cur_v, nxt_v = Signal(), Signal()
        # per start trit s of the current word: the next s, the byte o and trit f of s, whether the
        # beat ends in the current word's last trit or beyond (the window moves on by a word), and
        # whether it has trits of the next word (the bytes of the window beyond the current word
        # are not needed otherwise, whatever nxt holds)
        succ = [(s + P) % T for s in range(T)]
        s = Signal(range(T))
        o = Signal(range(W))
        f = Signal(range(n5))
        wrap = Signal()
        need = Signal()

        def table(values, shape):
            return Array(Const(v, shape) for v in values)

        def wraps(v):
            return int(v + P >= T)

        def needs(v):
            return int(v + P > T)

        # each of them for the next s, looked up from s itself: one table between registers
        succ_of = table(succ, s.shape())
        o_of = table([succ[v] // n5 for v in range(T)], o.shape())
        f_of = table([succ[v] % n5 for v in range(T)], f.shape())
        wrap_of = table([wraps(succ[v]) for v in range(T)], 1)
        need_of = table([needs(succ[v]) for v in range(T)], 1)

        # beats on their way to the beat FIFO or in it
        m.submodules.beats = beats = ResetInserter(self.start)(
            fifo.SyncFIFOBuffered(width=2 * P, depth=self.beat_fifo_depth))
        bcount = Signal(range(self.beat_fifo_depth + 1))
        go = Signal()                                   # a beat leaves the window
        take = Signal()
        m.d.comb += [
            go.eq(self.active & cur_v & (nxt_v | ~need) & (bcount < self.beat_fifo_depth)),
            self.o.valid.eq(self.active & beats.r_rdy),
            self.o.payload.eq(beats.r_data),
            take.eq(self.o.valid & self.o.ready),
            beats.r_en.eq(take),
        ]

        # after this clock's beat: the window moved on by a word if the beat wrapped
        moved = go & wrap
        cv = Mux(moved, nxt_v, cur_v)
        nv = ~moved & nxt_v
        pop = words.r_rdy & ~(cv & nv)
        m.d.comb += words.r_en.eq(pop)

        # the beat's bytes, then its trits, then the beat: three registers to the beat FIFO
        win = Signal(8 * B)
        dec = Signal(2 * n5 * B)
        f1, f2 = Signal.like(f), Signal.like(f)
        v1, v2, v3 = Signal(), Signal(), Signal()
        beat = Signal(2 * P)
        pair = Cat(cur, nxt)
        m.d.sync += [
            win.eq(Array(pair[8 * k:8 * (k + B)] for k in range(W))[o]),
            f1.eq(f),
            dec.eq(decode_word(win, platform)),
            f2.eq(f1),
            beat.eq(Array(dec[2 * k:2 * (k + P)] for k in range(n5))[f2]),
        ]
        m.d.comb += [beats.w_data.eq(beat), beats.w_en.eq(v3)]

        with m.If(self.start):
            m.d.sync += [fetched.eq(0), ptr.eq(0), ptr_end.eq(0), wcount.eq(0), cur_v.eq(0), nxt_v.eq(0),
                         s.eq(0), o.eq(0), f.eq(0), wrap.eq(wraps(0)), need.eq(needs(0)),
                         bcount.eq(0), v1.eq(0), v2.eq(0), v3.eq(0)]
        with m.Else():
            m.d.sync += [
                fetched.eq(Cat(issue, fetched[:-1])),
                ptr.eq(ptr + issue),
                ptr_end.eq(Mux(issue, ptr == self.depth - 1, ptr == self.depth)),
                wcount.eq(wcount + issue - (pop & words.r_rdy)),
                bcount.eq(bcount + go - take),
                v1.eq(go), v2.eq(v1), v3.eq(v2),
            ]
            with m.If(go):
                m.d.sync += [s.eq(succ_of[s]), o.eq(o_of[s]), f.eq(f_of[s]), wrap.eq(wrap_of[s]),
                             need.eq(need_of[s])]
            # the current word: the next one when the window moves on, a word from the FIFO when empty
            with m.If(moved):
                m.d.sync += cur.eq(nxt)
            with m.If(~cv):
                m.d.sync += [cur.eq(words.r_data), cur_v.eq(words.r_rdy)]
            with m.Else():
                m.d.sync += cur_v.eq(1)
            with m.If(cv & ~nv):
                m.d.sync += [nxt.eq(words.r_data), nxt_v.eq(words.r_rdy)]
            with m.Else():
                m.d.sync += nxt_v.eq(nv)
        return m
