"""Ternary weights out of the TRITS memory: base-3 words in, beats of ``lanes`` 2-bit trits out.

The TRITS region (:mod:`mmfree.memory_map`) stores trits five to a byte in base 3
(:func:`~mmfree.numerics.pack_trits_base3`), :func:`~mmfree.memory_map.trit_word_bytes` bytes a word,
all matrices of a token one continuous sequence. :class:`TritStream` reads that memory with one pointer
that only increments, decodes every byte into five trits in the 2-bit code of
:func:`~mmfree.numerics.pack_trits` (:func:`decode_table`), and cuts the sequence into beats of
``lanes`` trits, exactly the beats a row-major ``pack_trits`` image would give: the weight stream of
:class:`~mmfree.hw.ternary.TernaryMatVec`.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

import torch

from .. import memory_map
from .. import numerics as nx

__all__ = ["TritStream", "WordDecoder", "decode_word", "decode_table", "decode_lookup", "decode_logic"]

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


class WordDecoder(wiring.Component):
    """A word of ``word_bytes`` base-3 bytes decoded into ``5 * word_bytes`` trits (the 2-bit code of
    :func:`~mmfree.numerics.pack_trits`), registered before and after: the decoding step of
    :class:`TritStream` on its own, so that its cost can be measured apart from the stream's buffer
    (``mmfree report units --unit trit_decode``). ``i`` is taken every clock; ``o`` is its trits two
    clocks later."""

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
    A word read from the memory is registered first (block RAM outputs are slow), then decoded into a
    second register, shifted by the trits beyond the buffer's last whole beat into a third, and
    placed whole beats up into the buffer above the trits it holds: ``latency + 3`` clocks from
    ``rd.addr`` to the buffer. (Elaborated for a device the decoder is logic,
    :func:`decode_logic`: a table followed by a register would become block RAM ROMs; for simulation,
    no platform, it is the table, :func:`decode_lookup`, which simulators evaluate much faster.) A
    word is fetched whenever fewer than :attr:`ahead` ``P`` trits would be left, counting the words in
    flight and not counting the beat taken in the same clock, so a beat is offered on every clock (from
    the ``latency + 5``-th after ``start``) for as long as ``o.ready`` is high: the unit's full rate.
    The buffer holds at most ``ahead P + T - 1`` trits. ``o.valid`` depends on registers and
    ``active`` only; the shift that inserts a word and the fetch decision depend on registers (and
    ``active``) only, so ``o.ready`` drives nothing but final 2:1 multiplexers and the counters (the
    fetch decision seeing the beat taken, to the address counter through ``o.valid`` and
    ``o.ready``, was the longest path of a demo build placed for 100 MHz).
    """

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
    def ahead(self):
        """Beats kept buffered or in flight: one per clock from the address to the buffer, plus one,
        plus one for the beat a fetch decision does not see taken (it is made from registers)."""
        return self.latency + 5

    @property
    def capacity(self):
        """Trits the buffer holds at most: ``ahead P + T - 1``."""
        return self.ahead * self.lanes + self.trits_per_word - 1

    def elaborate(self, platform):
        m = Module()
        P, T, cap, A = self.lanes, self.trits_per_word, self.capacity, self.ahead

        buf = Signal(2 * cap)
        # the trits in buf, from bit 0 (bits above are 0), as whole beats and the rest: count =
        # hi P + lo; a beat taken lowers hi, a word inserted adds T to the pair. lo itself is not
        # kept: lo_n is what it will be after this clock's insertion (the rest the word behind
        # fine's will find), carry whether fine's word completes T // P + 1 beats; both are found a
        # clock ahead, as the word passes decoded (lo's sum and wrap in the clock of the shift,
        # behind fpend, was the longest path of a demo build placed for 100 MHz)
        hi = Signal(range(cap // P + 1))
        lo_n = Signal(range(P))
        carry = Signal()
        fetched = Signal(self.latency)                  # bit k: a word was addressed k + 1 clocks ago
        word = Signal(8 * self.word_bytes)              # that word, one clock later
        pend = Signal()                                 # word holds a word to insert
        ptr = Signal(range(self.depth + 1))

        m.d.sync += word.eq(self.rd.data)
        decoded = Signal(2 * T)                         # the trits of word, one clock later
        dpend = Signal()                                # decoded holds a word to insert
        m.d.sync += [decoded.eq(decode_word(word, platform)), dpend.eq(pend & ~self.start)]
        # a clock later the word, shifted by the rest lo it will find (taking a beat leaves lo as
        # it is, only the word ahead of it changes it), and in the clock after that inserted whole
        # beats up: no shifter longer than P trits or A beats in any clock. A word is fetched only
        # while fewer than A P trits would be left: it goes in below A P + T.
        fine = Signal(2 * (T + P - 1))
        fpend = Signal()                                # fine holds a word to insert
        lo_t, hi_t = T % P, T // P
        lo_sum = lo_n + lo_t                            # lo after decoded's word, before the wrap
        m.d.sync += [fine.eq(decoded << Cat(Const(0, 1), lo_n)), fpend.eq(dpend & ~self.start)]
        merged = Signal(2 * cap)
        placed = Array(Cat(Const(0, 2 * P * k), fine) for k in range(A))[hi]
        m.d.comb += merged.eq(buf | Mux(fpend, placed, 0))

        take = Signal()
        issue = Signal()
        # the trits in buf and in flight (hi P + lo + T (fpend + dpend + pend + fetched)), counted
        # in a register of its own: + T per word fetched, - P per beat taken
        ahead = Signal(range(cap + (self.latency + 3) * T + 1))
        ptr_end = Signal()                              # ptr == depth: every word fetched
        m.d.comb += [
            self.o.valid.eq(self.active & (hi != 0)),
            self.o.payload.eq(buf[:2 * P]),
            take.eq(self.o.valid & self.o.ready),
            # buf + the words in flight, before this clock's beat is taken, < A P: from registers
            # (and active), so that the beats taken at the buffer's end do not reach the address
            issue.eq(self.active & (ahead < A * P) & ~ptr_end),
            self.rd.addr.eq(ptr),
        ]
        with m.If(self.start):
            m.d.sync += [buf.eq(0), hi.eq(0), lo_n.eq(0), carry.eq(0), fetched.eq(0), pend.eq(0),
                         ptr.eq(0), ahead.eq(0), ptr_end.eq(0)]
        with m.Else():
            m.d.sync += [
                buf.eq(Mux(take, merged >> (2 * P), merged)),
                lo_n.eq(Mux(dpend, Mux(lo_sum >= P, lo_sum - P, lo_sum), lo_n)),
                carry.eq(lo_sum >= P),
                hi.eq(hi + Mux(fpend, hi_t + carry, 0) - take),
                fetched.eq(Cat(issue, fetched[:-1])),
                pend.eq(fetched[-1]),
                ptr.eq(ptr + issue),
                ptr_end.eq(Mux(issue, ptr == self.depth - 1, ptr == self.depth)),
                ahead.eq(ahead + Mux(issue, T, 0) - Mux(take, P, 0)),
            ]
        return m
