"""The host link in gateware: the protocol of :mod:`mmfree.protocol` between a byte stream and the
token engine (:class:`~mmfree.hw.core.Core`).

Every constant, code and field layout here comes from :mod:`mmfree.protocol`; field offsets are read
from its ``struct`` formats, so this file holds no protocol number of its own.

Blocks
------
::

    rx bytes --> FrameReceiver --frame events--> executor --> FrameSender --> tx bytes
                 (COBS decode, CRC residue,        |   ^         (CRC append, COBS encode)
                  two 512-byte frame banks) <------'   |
                                                       v
                                 Core: req/res, wr_* and rd_* ports of the four regions

* :class:`FrameReceiver` decodes COBS on the fly into one of two frame banks (one block RAM), runs
  CRC-32 over every decoded byte and, at the closing delimiter, classifies the frame in the order of
  docs/protocol.md §2.4 (``TOO_LONG``, ``BAD_FRAME``, ``BAD_CRC``, intact). An intact frame keeps its
  bank until the executor frees it, so the next frame arrives into the other bank while one executes.
  With both banks held, input stalls (``ready`` low): a UART then drops bytes, which costs that frame.
* The **executor** is one state machine. Whenever the transmitter is free it serves, in this order:
  a result of the core, the next frame event, the next token of a running FEED or GENERATE. FEED
  and GENERATE run in the background, so INFO and STATUS (and STOP and RESEND during a GENERATE) are
  answered while the core computes; other commands get ``BUSY`` then, as the protocol specifies. No
  state waits for the host; the only waits are for the core (bounded) and for the transmitter.
* :class:`FrameSender` builds a frame from a random-access body (``seq``, ``code``, payload): it runs
  CRC-32 over the body, then COBS-encodes body and CRC with a look-ahead scan (about four clocks per
  byte), between two delimiters.

Replies are built from registers: the stored reply (the last non-NAK reply, resent for a duplicate
command) holds its code and up to 28 payload bytes, or stands for the INFO reply, a constant of the
build. NAK, TOKEN and DONE frames of the stream use a second, scratch set of registers, so they never
replace the stored reply.

Memory access: WRITE turns byte offsets into word addresses and byte lanes and merges partial words
with the word read back first (one byte per clock); VERIFY reads the region back through the ``rd_*`` ports
and runs CRC-32 over its bytes (one byte per clock). The model descriptor (the first four SCALARS
words) is kept in registers as it is written: it decides ``LOADED`` and the vocabulary ``BAD_TOKEN``
checks against. A WRITE that changes the descriptor (a new model) clears the recurrent state, the
position and the context, as the golden board does when it parses a model of another shape.

Sampling: a GENERATE with a non-zero temperature picks every token with the on-device sampler
(:class:`~mmfree.hw.sampler.Sampler`, bit-exact with :mod:`mmfree.sampler`) from the logits the core
left in its ``Y`` buffer, reading them through ``rd_logits`` while the core is idle; its LFSR is
seeded once per GENERATE. INFO reports the flag ``SAMPLING``. Temperature 0 takes the core's argmax.
"""

import re

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import crc, data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import memory_map
from mmfree import protocol as p

from .activations import ACT_SHAPE, BUFFER_READ_LATENCY, Pipeline
from .config import HwConfig
from .ecp5 import platform_arch
from .sampler import Sampler
from .core import (Command, REGION_PORTS, REGION_READ_LATENCY, read_signature, request_layout,
                   result_layout, write_signature)
from mmfree.numerics import GATE
from mmfree.sampler import TEMPERATURE_MAX, TOP_K_BITS

__all__ = ["Link", "FrameReceiver", "FrameSender", "core_signature", "info_for", "region_sizes",
           "check_arguments", "EVENT_LAYOUT"]

_CRC32 = crc.catalog.CRC32_ISO_HDLC(data_width=8)
assert _CRC32.compute(b"123456789") == p.crc32(b"123456789")

BANK = 512
"""Bytes per frame bank: a power of two that holds :data:`mmfree.protocol.MAX_ENCODED` decoded bytes."""
assert BANK >= p.MAX_ENCODED
BANK_READ_LATENCY = BUFFER_READ_LATENCY
"""Clocks from a frame bank's read address to its byte: the block RAM and a register after it
(:meth:`mmfree.hw.activations.Pipeline.buffer`)."""

_WALK_READ_LATENCY = REGION_READ_LATENCY + 1     # the walk's word address registered, then the port
_PAYLOAD_AT = p.HEADER_SIZE                     # payload offset in a decoded frame
_FEED_TOKEN = len(p.FeedRequest((0,)).pack())   # bytes per token id in a FEED
_FEED_LOG2 = _FEED_TOKEN.bit_length() - 1
assert _FEED_TOKEN == 1 << _FEED_LOG2
_HDR_BYTES = max(p.WriteRequest.HEAD.size, p.VerifyRequest.STRUCT.size,
                 p.GenerateRequest.STRUCT.size, p.ResendRequest.STRUCT.size)
_REPLY_BYTES = max(p.Status.SIZE, p.FeedReply.STRUCT.size, p.VerifyReply.STRUCT.size,
                   p.StopReply.STRUCT.size, p.Token.STRUCT.size, p.Done.STRUCT.size)
_SCRATCH_BYTES = max(p.Nak.STRUCT.size, p.Token.STRUCT.size, p.Done.STRUCT.size)
_COBS_BLOCK = 254                               # data bytes of the longest COBS block

EVENT_LAYOUT = data.StructLayout({
    "error": 8,                                 # an Err code (a frame error), or 0: intact
    "seq": 8,                                   # the frame's first two decoded bytes (0 and 0xFF
    "code": 8,                                  # where the protocol says so)
    "length": range(p.MAX_ENCODED + 1),         # decoded bytes, CRC included
    "bank": 1,
    "crc": 32,                                  # the frame's CRC field (its last four bytes)
})
"""What :class:`FrameReceiver` reports at each non-empty frame's closing delimiter."""


# --- struct layouts of mmfree.protocol as bit fields -----------------------------------------------

def _fields(st):
    """``(offset, size)`` of every field of a little-endian ``struct.Struct``, pad bytes skipped."""
    fmt = st.format
    if fmt[0] != "<":
        raise ValueError(f"struct format {fmt!r} is not little-endian")
    out, off = [], 0
    for count, kind in re.findall(r"(\d*)([xBHIs])", fmt[1:]):
        count = int(count or 1)
        size = {"x": 1, "B": 1, "H": 2, "I": 4, "s": 1}[kind]
        if kind == "x":
            off += count
        elif kind == "s":
            out.append((off, count))
            off += count
        else:
            for _ in range(count):
                out.append((off, size))
                off += size
    assert off == st.size, fmt
    return out


def _pack(st, *values):
    """An Amaranth value laid out as ``st.pack(*values)`` lays out its bytes (pad bytes zero)."""
    fields = _fields(st)
    if len(values) != len(fields):
        raise ValueError(f"{st.format} has {len(fields)} fields, {len(values)} values given")
    parts, at = [], 0
    for (off, size), v in zip(fields, values):
        if off > at:
            parts.append(Const(0, 8 * (off - at)))
        parts.append(Const(int(v), 8 * size) if isinstance(v, int) else _extend(v, 8 * size))
        at = off + size
    if st.size > at:
        parts.append(Const(0, 8 * (st.size - at)))
    return Cat(*parts)


def _extend(v, width):
    v = Value.cast(v)
    if len(v) >= width:
        return v[:width]
    return Cat(v, Const(0, width - len(v)))


def _unpack(st, bits):
    """The fields of ``st`` sliced from ``bits`` (the struct's bytes, little-endian)."""
    return [bits[8 * off:8 * (off + size)] for off, size in _fields(st)]


# --- the core's ports, seen from the link --------------------------------------------------------

def core_signature(config):
    """The ports of :class:`~mmfree.hw.core.Core` from the side that drives it (the link)."""
    return wiring.Signature({
        "req": Out(stream.Signature(request_layout(config))),
        "res": In(stream.Signature(result_layout(config))),
        "busy": In(1),
        "cycles": In(32),
        "wr_trits": Out(write_signature(config.trit_words, config.trit_word_bits)),
        "wr_params": Out(write_signature(config.param_words, 16)),
        "wr_gates": Out(write_signature(config.gate_words, GATE.width)),
        "wr_scalars": Out(write_signature(config.scalar_words, 32)),
        "rd_trits": Out(read_signature(config.trit_words, config.trit_word_bits)),
        "rd_params": Out(read_signature(config.param_words, 16)),
        "rd_gates": Out(read_signature(config.gate_words, GATE.width)),
        "rd_scalars": Out(read_signature(config.scalar_words, 32)),
        "rd_logits": Out(read_signature(config.y_depth, ACT_SHAPE)),
    })


def _region_words(config):
    """``{region: (bytes per word, words, bits per word)}`` of the device memory regions."""
    return {
        memory_map.REGION_TRITS: (config.trit_word_bytes, config.trit_words, config.trit_word_bits),
        memory_map.REGION_PARAMS: (memory_map.WORD_BYTES[memory_map.REGION_PARAMS], config.param_words, 16),
        memory_map.REGION_GATES: (memory_map.WORD_BYTES[memory_map.REGION_GATES], config.gate_words,
                                  GATE.width),
        memory_map.REGION_SCALARS: (memory_map.WORD_BYTES[memory_map.REGION_SCALARS],
                                    config.scalar_words, 32),
    }


def region_sizes(config):
    """Bytes of each region of a device built for ``config`` (what INFO reports)."""
    return {r: wb * n for r, (wb, n, _) in _region_words(config).items()}


def info_for(config, build_hash=0, token_history=256):
    """The :class:`~mmfree.protocol.Info` a device built for ``config`` reports."""
    from mmfree.image import FORMAT_VERSION
    from mmfree.numerics import NUMERIC_SPEC_VERSION
    regions = tuple(p.Region(memory_map.REGION_TAGS[r], size)
                    for r, size in sorted(region_sizes(config).items()))
    return p.Info(p.PROTOCOL_VERSION, config.lanes, FORMAT_VERSION, NUMERIC_SPEC_VERSION,
                  config.max_vocab, config.max_hidden, config.max_intermediate, config.max_layers,
                  config.clk_freq, build_hash, p.MAX_WRITE, token_history, p.InfoFlag.SAMPLING, regions,
                  config.rows)


def check_arguments(config, build_hash, token_history):
    """Raise ``TypeError`` or ``ValueError`` for arguments :class:`Link` cannot be built with."""
    if not isinstance(config, HwConfig):
        raise TypeError(f"config must be a HwConfig, not {config!r}")
    if isinstance(build_hash, bool) or not isinstance(build_hash, int):
        raise TypeError(f"build_hash must be an int, not {build_hash!r}")
    if not 0 <= build_hash < 1 << 32:
        raise ValueError(f"build_hash must be in [0, 2**32), not {build_hash}")
    if isinstance(token_history, bool) or not isinstance(token_history, int):
        raise TypeError(f"token_history must be an int, not {token_history!r}")
    if not 1 <= token_history <= 1 << 15 or token_history & (token_history - 1):
        raise ValueError(f"token_history must be a power of two from 1 to 32768, not {token_history}")
    if config.clk_freq >= 1 << 32:
        raise ValueError(f"clk_freq {config.clk_freq} does not fit INFO's 32-bit clock_hz")


# --- receiver ------------------------------------------------------------------------------------

class FrameReceiver(wiring.Component):
    """COBS deframer with CRC-32 residue check, into two frame banks.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes from the host, taken into a one-byte register. ``ready`` is low only while the byte
        there waits: while the bank the next frame would go to is still held, or while a closing
        delimiter waits for the previous event to be taken.
    buf : Out(write port: ``addr`` (``bank * 512 + index``), ``data``, ``en``)
        Decoded bytes of the frame in progress.
    event : Out(stream.Signature(EVENT_LAYOUT))
        One per non-empty frame, at its closing delimiter. An intact frame (``error`` 0) holds its bank
        until ``free`` releases it; a damaged one holds nothing.
    free : In(2)
        A pulse on bit ``b`` releases bank ``b``.
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(8)),
            "buf": Out(write_signature(2 * BANK, 8)),
            "event": Out(stream.Signature(EVENT_LAYOUT)),
            "free": In(2),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc_unit = _CRC32.create()
        # The input side (COBS) decodes each byte as it is taken; the decoded byte is written, counted
        # and fed to the CRC a clock later, from registers; a closing delimiter's frame is checked a
        # clock after it is taken (``closing``), when the frame's last byte has been counted, and
        # judged a clock after that (``judging``), from the checks' registers.
        n_enc = Signal(range(p.MAX_ENCODED + 2))        # encoded bytes since the last delimiter
        empty = Signal(init=1)                          # n_enc == 0
        full = Signal()                                 # n_enc >= MAX_ENCODED
        overflow = Signal()
        left = Signal(8)                                # data bytes left in the COBS block
        left_zero = Signal(init=1)                      # left == 0
        zero_pending = Signal()                         # a zero ends the block if more follows
        emit = Signal()                                 # a decoded byte, a clock after its code
        emit_byte = Signal(8)
        closing = Signal()                              # a delimiter ended a non-empty frame
        judging = Signal()                              # a clock later: its event is made
        c_overflow, c_open = Signal(), Signal()         # its COBS state: too long, block not closed
        dlen = Signal(range(p.MAX_ENCODED + 1))         # decoded bytes written
        seq, code = Signal(8), Signal(8)
        tail = Signal(32)
        wbank = Signal()
        held = Signal(2)

        # the byte from the host waits in a register of its own, with the comparisons the decoder
        # makes already made; the host side sees one byte of buffering
        ib_valid, byte = Signal(), Signal(8)
        is_delim, is_one, is_ff = Signal(), Signal(), Signal()
        ev = self.event.payload
        take = Signal()
        m.d.comb += [
            take.eq(ib_valid & ~closing & ~judging &
                    Mux(is_delim, empty | ~self.event.valid, ~held.bit_select(wbank, 1))),
            self.i.ready.eq(~ib_valid | take),
        ]
        with m.If(self.i.valid & self.i.ready):
            pl = self.i.payload
            m.d.sync += [ib_valid.eq(1), byte.eq(pl), is_delim.eq(pl == p.DELIMITER),
                         is_one.eq(pl == 1), is_ff.eq(pl == 0xFF)]
        with m.Elif(take):
            m.d.sync += ib_valid.eq(0)

        with m.If(self.event.ready):
            m.d.sync += self.event.valid.eq(0)
        m.d.sync += held.eq(held & ~self.free)

        m.d.comb += [
            self.buf.addr.eq(Cat(dlen[:BANK.bit_length() - 1], wbank)),
            self.buf.data.eq(emit_byte),
            self.buf.en.eq(emit),
            crc_unit.data.eq(emit_byte),
            crc_unit.valid.eq(emit),
        ]
        m.d.sync += emit.eq(0)
        with m.If(emit):
            m.d.sync += [dlen.eq(dlen + 1), tail.eq(Cat(tail[8:], emit_byte))]
            with m.If(dlen == 0):
                m.d.sync += seq.eq(emit_byte)
            with m.If(dlen == 1):
                m.d.sync += code.eq(emit_byte)

        # closing: the frame's checks into registers (its CRC is final now); judging, a clock
        # later: the event
        j_short, j_long, j_crc, j_seq, j_code = Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.sync += [closing.eq(0), judging.eq(closing)]
        with m.If(closing):
            m.d.sync += [j_short.eq(dlen < p.MIN_FRAME), j_long.eq(dlen > p.MAX_FRAME),
                         j_crc.eq(crc_unit.crc != p.CRC_RESIDUE), j_seq.eq(dlen > 0),
                         j_code.eq(dlen > 1)]
        with m.If(judging):
            m.d.comb += crc_unit.start.eq(1)
            m.d.sync += dlen.eq(0)
            seq_v = Mux(j_seq, seq, 0)
            code_v = Mux(j_code, code, 0xFF)
            error = Signal(8)
            with m.If(c_overflow):
                m.d.comb += error.eq(p.Err.TOO_LONG)
            with m.Elif(c_open):
                m.d.comb += error.eq(p.Err.BAD_FRAME)
            with m.Elif(j_short):
                m.d.comb += error.eq(p.Err.BAD_FRAME)
            with m.Elif(j_long):
                m.d.comb += error.eq(p.Err.TOO_LONG)
            with m.Elif(j_crc):
                m.d.comb += error.eq(p.Err.BAD_CRC)
            cobs_ok = ~c_overflow & ~c_open
            m.d.sync += [
                self.event.valid.eq(1),
                ev.error.eq(error),
                ev.seq.eq(Mux(cobs_ok, seq_v, 0)),
                ev.code.eq(Mux(cobs_ok, code_v, 0xFF)),
                ev.length.eq(dlen),
                ev.bank.eq(wbank),
                ev.crc.eq(tail),
            ]
            with m.If(~c_overflow & ~c_open & ~j_short & ~j_long & ~j_crc):
                m.d.sync += [held.eq((held & ~self.free) | (1 << wbank)), wbank.eq(~wbank)]

        with m.If(take & is_delim):
            m.d.sync += [n_enc.eq(0), empty.eq(1), full.eq(0), overflow.eq(0), left.eq(0),
                         left_zero.eq(1), zero_pending.eq(0)]
            with m.If(~empty):
                m.d.sync += [closing.eq(1), c_overflow.eq(overflow), c_open.eq(~left_zero)]
            with m.Else():
                m.d.comb += crc_unit.start.eq(1)
        with m.Elif(take):
            m.d.sync += [empty.eq(0), full.eq(n_enc >= p.MAX_ENCODED - 1)]
            with m.If(n_enc <= p.MAX_ENCODED):
                m.d.sync += n_enc.eq(n_enc + 1)
            with m.If(full):
                m.d.sync += overflow.eq(1)
            with m.Elif(left_zero):                     # a code byte
                m.d.sync += [left.eq(byte - 1), left_zero.eq(is_one), zero_pending.eq(~is_ff)]
                with m.If(zero_pending):
                    m.d.sync += [emit.eq(1), emit_byte.eq(0)]
            with m.Else():
                m.d.sync += [left.eq(left - 1), left_zero.eq(left == 1)]
                m.d.sync += [emit.eq(1), emit_byte.eq(byte)]
        return m


# --- sender --------------------------------------------------------------------------------------

class FrameSender(wiring.Component):
    """Frames a body (``seq``, ``code``, payload) read at random: CRC-32 appended, COBS-encoded,
    between two delimiters.

    Parameters
    ----------
    max_body : int
        The longest body; body and CRC must fit one COBS block (254 bytes).

    Members
    -------
    start : In(1)
        Pulse (while ``busy`` is low) to send a frame of ``length`` body bytes.
    length : In(range(max_body + 1))
    busy : Out(1)
        High from ``start`` until the closing delimiter has been taken by ``o``.
    index : Out(range(max_body))
        The body byte wanted (a register); ``byte`` must be it one clock later (the caller registers
        its choice once; it is registered again here). The body must not change while ``busy`` is
        high.
    byte : In(8)
    o : Out(stream.Signature(8))
        The frame on the wire.
    """

    def __init__(self, max_body):
        if max_body + p.CRC_SIZE > _COBS_BLOCK:
            raise ValueError(f"max_body {max_body} with its CRC exceeds one COBS block of {_COBS_BLOCK}")
        self.max_body = max_body
        super().__init__({
            "start": In(1),
            "length": In(range(max_body + 1)),
            "busy": Out(1),
            "index": Out(range(max_body)),
            "byte": In(8),
            "o": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc_unit = _CRC32.create()
        total_max = self.max_body + p.CRC_SIZE
        pos_shape = range(total_max + 4)
        n = Signal(range(self.max_body + 1))
        # n's sums, a clock behind n (set in IDLE; CRC, SCAN and NEXT use them later)
        n_1 = Signal(range(self.max_body + 1))          # n - 1: the last body byte
        total = Signal(range(total_max + 1))            # body and CRC bytes
        total_1 = Signal(range(total_max + 1))
        m.d.sync += [n_1.eq(n - 1), total.eq(n + p.CRC_SIZE), total_1.eq(n + p.CRC_SIZE - 1)]

        # Reads take four clocks: the index is a register (`rd`, valid while `rd_v`), the caller's
        # byte comes a clock later (`d_pos`, `d_v`: the caller's wide body multiplexer registers
        # once on the way), is registered (`byte_p` at `p_pos`), then it or the CRC's byte (`byte_q`
        # at `q_pos`, valid while `q_v`). CRC and SCAN issue a read every clock and consume the bytes
        # as they come; DATA reads one byte at a time (five clocks a byte, far below a UART's rate).
        rd, rd_v = Signal(pos_shape), Signal()
        d_pos, d_v = Signal(pos_shape), Signal()
        byte_p, p_pos, p_v, p_body = Signal(8), Signal(pos_shape), Signal(), Signal()
        byte_q, q_pos, q_v = Signal(8), Signal(pos_shape), Signal()
        nxt = Signal(pos_shape)                         # next index to read (CRC, SCAN)
        k = Signal(pos_shape)                           # DATA: the byte being sent
        start_at = Signal(pos_shape)                    # first byte of the COBS block
        at = Signal(pos_shape)                          # SCAN: the byte examined next; then the block's end
        at_1 = Signal(pos_shape)                        # at - 1 (once at has moved)
        at_total = Signal()                             # at == total
        q_zero = Signal()                               # byte_q == 0

        m.d.comb += self.index.eq(rd)
        m.d.sync += [rd_v.eq(0), d_v.eq(rd_v), d_pos.eq(rd),
                     p_v.eq(d_v), p_pos.eq(d_pos), p_body.eq(d_pos < n), byte_p.eq(self.byte),
                     q_v.eq(p_v), q_pos.eq(p_pos)]
        with m.If(p_v):
            q_byte = Mux(p_body, byte_p, crc_unit.crc.word_select((p_pos - n)[:2], 8))
            m.d.sync += [byte_q.eq(q_byte), q_zero.eq(q_byte == 0)]

        def advance_at():
            m.d.sync += [at.eq(at + 1), at_1.eq(at), at_total.eq(at == total_1)]
        m.d.comb += crc_unit.data.eq(byte_q)

        def issue(index):
            m.d.sync += [rd.eq(index), rd_v.eq(1)]

        o = self.o
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += crc_unit.start.eq(1)
                    m.d.sync += [n.eq(self.length), nxt.eq(1)]
                    issue(0)
                    m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += self.busy.eq(1)
                with m.If(nxt < n):
                    issue(nxt)
                    m.d.sync += nxt.eq(nxt + 1)
                with m.If(q_v):
                    m.d.comb += crc_unit.valid.eq(1)
                    with m.If(q_pos == n_1):
                        m.next = "OPEN"
            with m.State("OPEN"):
                # the CRC register is final from here; SCAN reads it no sooner than two clocks on
                m.d.comb += [self.busy.eq(1), o.valid.eq(1), o.payload.eq(p.DELIMITER)]
                with m.If(o.ready):
                    m.d.sync += [start_at.eq(0), at.eq(0), at_total.eq(0), nxt.eq(1)]
                    issue(0)
                    m.next = "SCAN"
            with m.State("SCAN"):
                m.d.comb += self.busy.eq(1)
                issue(nxt)
                m.d.sync += nxt.eq(nxt + 1)
                with m.If(q_v & (q_pos == at)):
                    with m.If(at_total | q_zero):
                        m.next = "CODE"
                    with m.Else():
                        advance_at()
            with m.State("CODE"):
                m.d.comb += [self.busy.eq(1), o.valid.eq(1), o.payload.eq(at - start_at + 1)]
                with m.If(o.ready):
                    m.d.sync += k.eq(start_at)
                    with m.If(at == start_at):
                        m.next = "NEXT"
                    with m.Else():
                        issue(start_at)
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                with m.If(q_v & (q_pos == k)):
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [self.busy.eq(1), o.valid.eq(1), o.payload.eq(byte_q)]
                with m.If(o.ready):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == at_1):
                        m.next = "NEXT"
                    with m.Else():
                        issue(k + 1)
                        m.next = "FETCH"
            with m.State("NEXT"):
                m.d.comb += self.busy.eq(1)
                with m.If(at_total):
                    m.next = "CLOSE"
                with m.Else():                          # a zero at `at` ended the block
                    m.d.sync += [start_at.eq(at + 1), nxt.eq(at + 2)]
                    advance_at()
                    with m.If(at == total_1):
                        m.next = "LAST"                 # the frame ends with a zero: empty block
                    with m.Else():
                        issue(at + 1)
                        m.next = "SCAN"
            with m.State("LAST"):
                m.d.comb += [self.busy.eq(1), o.valid.eq(1), o.payload.eq(1)]
                with m.If(o.ready):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [self.busy.eq(1), o.valid.eq(1), o.payload.eq(p.DELIMITER)]
                with m.If(o.ready):
                    m.next = "IDLE"
        return m


# --- the link ------------------------------------------------------------------------------------

class Link(wiring.Component):
    """The protocol engine: frames from ``rx``, replies and token streams to ``tx``, the core on
    ``core``. See the module documentation.

    Parameters
    ----------
    config : :class:`~mmfree.hw.config.HwConfig`
        The core's configuration (INFO reports it; ``clk_freq`` is INFO's ``clock_hz``).
    build_hash : int
        32-bit value INFO reports as the build hash.
    token_history : int
        Tokens of the current generation held for RESEND: a power of two from 1 to 32768.

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the host.
    tx : Out(stream.Signature(8))
        Bytes to the host.
    core : Out(:func:`core_signature`)
        Connect to the :class:`~mmfree.hw.core.Core` with :func:`amaranth.lib.wiring.connect`.
    loaded : Out(1)
        The SCALARS descriptor describes a model that fits (STATUS flag ``LOADED``).
    active : Out(1)
        A FEED or GENERATE is running.
    error : Out(1)
        The last reply sent was a NAK.
    """

    def __init__(self, config, build_hash=0, *, token_history=256):
        check_arguments(config, build_hash, token_history)
        self.config = config
        self.build_hash = build_hash
        self.token_history = token_history
        self.info = info_for(config, build_hash, token_history)
        self.info_bytes = self.info.pack()
        self.max_body = p.HEADER_SIZE + max(len(self.info_bytes), _REPLY_BYTES, _SCRATCH_BYTES)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "core": Out(core_signature(config)),
            "loaded": Out(1),
            "active": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        core = self.core
        words = _region_words(cfg)
        sizes = region_sizes(cfg)
        n_regions = len(words)
        wmax = max(wb for wb, _, _ in words.values())   # bytes of the widest word

        # --- receive -------------------------------------------------------------------------------
        m.submodules.rx = rxf = FrameReceiver()
        # the frame banks: a byte comes out BANK_READ_LATENCY clocks after its address, through a
        # register after the block RAM's (on the ECP5 the block's own output register)
        banks = Pipeline(m, Const(1), platform_arch(platform)).buffer(unsigned(8), 2 * BANK, name="banks")
        bank_raddr = Signal(range(2 * BANK))
        bank_data = banks.read(bank_raddr, name="bank_data")
        m.d.comb += [
            rxf.i.valid.eq(self.rx.valid), rxf.i.payload.eq(self.rx.payload),
            self.rx.ready.eq(rxf.i.ready),
            banks.w_addr.eq(rxf.buf.addr), banks.w_data.eq(rxf.buf.data), banks.w_en.eq(rxf.buf.en),
        ]

        # --- send ----------------------------------------------------------------------------------
        m.submodules.tx = snd = FrameSender(self.max_body)
        m.d.comb += [
            self.tx.valid.eq(snd.o.valid), self.tx.payload.eq(snd.o.payload),
            snd.o.ready.eq(self.tx.ready),
        ]

        # stored reply: seq, code, payload (or the INFO constant); scratch: NAK, TOKEN, DONE
        last_valid = Signal()
        last_seq = Signal(8)
        last_crc = Signal(32)
        r_code = Signal(8)
        r_blen = Signal(range(self.max_body + 1))      # body bytes of the stored reply
        r_info = Signal()
        r_payload = Signal(8 * _REPLY_BYTES)
        s_seq = Signal(8)
        s_code = Signal(8)
        s_payload = Signal(8 * _SCRATCH_BYTES)
        send_scratch = Signal()
        info_const = Const(int.from_bytes(self.info_bytes, "little"), 8 * len(self.info_bytes))
        # the body byte at the sender's index, a clock later: the group of eight bytes is chosen
        # and registered, then the byte in it
        idx = snd.index
        group = Signal(64)
        lane = Signal(3)

        def groups(body):
            return body.word_select(idx[3:], 64)

        m.d.sync += [
            group.eq(Mux(send_scratch, groups(Cat(s_seq, s_code, s_payload)),
                         Mux(r_info, groups(Cat(last_seq, r_code, info_const)),
                             groups(Cat(last_seq, r_code, r_payload))))),
            lane.eq(idx[:3]),
        ]
        m.d.comb += snd.byte.eq(group.word_select(lane, 8))

        # --- state ---------------------------------------------------------------------------------
        frames_ok = Signal(32)
        frames_rejected = Signal(32)
        naks_sent = Signal(32)
        last_error = Signal(8)
        cycles_last = Signal(32)
        position = Signal(32)
        context = Signal()
        err_flag = Signal()
        fault = Signal()                                # the core answered with its error flag
        desc = [Signal(32, name=f"desc{k}") for k in range(4)]     # V, H, L, I as written
        V, H, L, I = desc
        loaded = Signal()                               # registered twice: desc changes only by WRITE
        fields_ok = Signal(4)
        m.d.sync += [
            fields_ok.eq(Cat((V >= 1) & (V <= cfg.max_vocab),
                             (H >= 1) & (H <= cfg.max_hidden) & (H[:cfg.lanes_log2] == 0),
                             (L >= 1) & (L <= cfg.max_layers),
                             (I >= 1) & (I <= cfg.max_intermediate) & (I[:cfg.lanes_log2] == 0))),
            loaded.eq(fields_ok.all()),
        ]

        tok_shape = self.core.res.payload.token.shape()
        next_tok = Signal(tok_shape)                    # argmax of the last step
        step_out = Signal()                             # a STEP is with the core

        feed_active = Signal()
        feed_n = Signal(range(p.MAX_FEED + 1))
        feed_idx = Signal(range(p.MAX_FEED + 1))
        feed_last = Signal()                            # feed_idx + 1 == feed_n, a clock behind: the
        m.d.sync += feed_last.eq(feed_idx + 1 == feed_n)   # token in the core is the FEED's last
        feed_seq = Signal(8)
        feed_crc = Signal(32)
        m.submodules.feed_mem = feed_mem = memory.Memory(shape=tok_shape, depth=p.MAX_FEED, init=[])
        feed_w = feed_mem.write_port()
        feed_r = feed_mem.read_port(domain="comb")
        m.d.comb += feed_r.addr.eq(feed_idx)

        gen_active = Signal()
        gen_ever = Signal()
        # produced == gen_n and produced < gen_n, registered: both change only in states that never
        # lead straight to GEN_NEXT (DISPATCH, GEN_NEXT itself), so GEN_NEXT reads them up to date
        gen_all, gen_short = Signal(), Signal()
        gen_stop = Signal()
        gen_seq = Signal(8)
        gen_n = Signal(32)
        produced = Signal(32)
        m.d.sync += [gen_all.eq(produced == gen_n), gen_short.eq(produced < gen_n)]
        gen_reason = Signal(8)
        gen_temperature = Signal(TEMPERATURE_MAX.bit_length())     # 0: argmax
        gen_sampling = Signal()                         # gen_temperature != 0, a clock behind
        m.d.sync += gen_sampling.eq(gen_temperature != 0)
        gen_top_k = Signal(TOP_K_BITS)
        sampled = Signal()                              # next_tok is the sampler's pick for this index
        hist_shape = data.StructLayout({"token": tok_shape, "cycles": 32})
        # read through a register beside the block RAM (on the ECP5 the DP16KD's own): its output,
        # straight across the device into held_token, was the longest path of a 99.4 MHz demo build
        hist = Pipeline(m, Const(1), platform_arch(platform)).buffer(
            unsigned(Shape.cast(hist_shape).width), self.token_history, name="history")
        hist_word = Signal(hist_shape)                  # the entry written
        m.d.comb += hist.w_data.eq(hist_word)
        held_token = Signal(hist_shape)
        hist_bits = (self.token_history - 1).bit_length()

        m.d.comb += [
            self.loaded.eq(loaded),
            self.active.eq(feed_active | gen_active),
            self.error.eq(err_flag),
        ]

        # --- the frame being executed --------------------------------------------------------------
        ev = Signal(EVENT_LAYOUT)
        held = Signal()                                 # ev's bank is still ours
        dup = Signal()                                  # ev repeats the last command executed
        hdr = Signal(8 * _HDR_BYTES)                    # payload bytes 0.. of the frame
        plen = Signal(range(p.MAX_ENCODED + 1))         # payload bytes (set in EVENT)
        c_known = Signal()                              # CHECK: the code is a command
        c_length_ok = Signal()                          # ... with a payload length it takes
        c_before = Signal()                             # ... RESEND: r_index < produced
        c_held = Signal()                               # ... RESEND: the index is in the history
        v_nak = Signal()                                # VERDICT: the command is refused
        v_err = Signal(8)                               # ... with this error
        v_arg = Signal(32)                              # ... and argument
        is_cmd = {cmd: Signal(name=f"is_{cmd.name.lower()}") for cmd in p.Cmd}   # ... ev.code == cmd
        bank_base = Signal(range(BANK))                 # bank byte read next
        m.d.comb += bank_raddr.eq(Cat(bank_base, ev.bank))

        # memory walk (WRITE, VERIFY): byte position, bytes left, four pipeline stages
        region = Signal(range(n_regions))
        mpos = Signal(33)
        mleft = Signal(33)
        mcnt = Signal(signed(34))                       # WALK: bytes left less one (negative: none)
        writing = Signal()
        m_over = Signal()                               # the range runs past the region's end
        m_end = Signal(34)                              # mpos + mleft
        s0_valid, s0_first, s0_last = Signal(), Signal(), Signal()
        s0_lane = Signal(range(wmax))
        s0_addr = Signal(32)
        # the stages that wait for the memories' words (_WALK_READ_LATENCY, see below)
        waits = [{"valid": Signal(name=f"sw{k}_valid"), "first": Signal(name=f"sw{k}_first"),
                  "last": Signal(name=f"sw{k}_last"), "lane": Signal(range(wmax), name=f"sw{k}_lane"),
                  "addr": Signal(32, name=f"sw{k}_addr")} for k in range(_WALK_READ_LATENCY)]
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_lane = Signal(range(wmax))
        s1_addr = Signal(32)
        word = Signal(8 * wmax)
        desc_changed = Signal()
        m.submodules.vcrc = vcrc = _CRC32.create()

        # the walk's word address and byte lane: mpos // wb and mpos % wb (a word need not be a power
        # of two bytes: TRITS words are 9 bytes), found in RANGE_DIV one quotient bit a clock (a
        # restoring division: no multiplier, and short paths), then counted
        region_size = Signal(33)
        region_last_lane = Signal(range(wmax))
        region_wb = Signal(range(wmax + 1))
        div_bits = max(1, max(sizes.values()).bit_length())    # covers every position in range
        m_num = Signal(div_bits)                        # mpos, shifted out from the top
        m_quot = Signal(div_bits)
        m_rem = Signal(range(wmax))
        m_step = Signal(range(div_bits + 1))
        waddr = Signal(32)
        wlane = Signal(range(wmax))
        # each is needed no sooner than two clocks after region is set (RANGE_DIV, WALK): registered
        with m.Switch(region):
            for r, (wb, _, _) in words.items():
                with m.Case(r):
                    m.d.sync += [region_size.eq(sizes[r]), region_last_lane.eq(wb - 1),
                                 region_wb.eq(wb)]

        # each region's word is registered as it leaves its memory, and again after the region
        # multiplexer
        rdata = Signal(8 * wmax)
        # the word address goes to the region ports through a register of its own, so that the walk's
        # counting stays beside the executor and only this register's output crosses to the memories
        # (the count's enable, out to the address registers by the memories, was the longest path
        # of a demo build with four row units)
        waddr_q = Signal.like(waddr)
        m.d.sync += waddr_q.eq(waddr)
        for r, (wb, depth, bits) in words.items():
            name = REGION_PORTS[r]
            rd, wr = getattr(core, f"rd_{name}"), getattr(core, f"wr_{name}")
            m.d.comb += rd.addr.eq(waddr_q)
            rword = Signal(bits, name=f"rword_{name}")
            m.d.sync += rword.eq(rd.data)
            with m.If(region == r):
                m.d.sync += rdata.eq(rword)             # zero-extended (GATES: 17 of 32 bits)
        # the payload byte of stage 1: the bank answers in BANK_READ_LATENCY clocks, then as many
        # registers as the words pass
        bank_byte = bank_data
        for k in range(_WALK_READ_LATENCY + 2 - BANK_READ_LATENCY):
            q = Signal(8, name=f"bank_q{k}")
            m.d.sync += q.eq(bank_byte)
            bank_byte = q
        m.submodules.sampler = sampler = Sampler(cfg.max_vocab, cfg.y_depth)
        wiring.connect(m, sampler.rd, wiring.flipped(core.rd_logits))

        # stage 0 of the walk addresses the word and the payload byte; the word address reaches the
        # core's region ports a clock later (waddr_q), they answer REGION_READ_LATENCY clocks after
        # that, and the word is registered as it arrives (block RAM outputs are slow) and after the
        # region multiplexer: the wait stages, one per clock of _WALK_READ_LATENCY, cover the address
        # register, the memory's latency and those two registers less stage 0's clock. Stage 1 merges the byte into the word (WRITE) or picks the byte (VERIFY); stage 2
        # writes the merged word or feeds the CRC.
        s2_valid, s2_last = Signal(), Signal()
        s2_addr = Signal(32)
        v_byte = Signal(8)
        base = Mux(s1_first, rdata, word)
        merged = Signal(8 * wmax)
        m.d.comb += merged.eq(Cat(*(Mux(s1_lane == j, bank_byte, base.word_select(j, 8))
                                   for j in range(wmax))))
        chain = [{"valid": s0_valid, "first": s0_first, "last": s0_last, "lane": s0_lane,
                  "addr": s0_addr}, *waits,
                 {"valid": s1_valid, "first": s1_first, "last": s1_last, "lane": s1_lane,
                  "addr": s1_addr}]
        m.d.sync += [s0_valid.eq(0), s2_valid.eq(s1_valid), s2_last.eq(s1_last), s2_addr.eq(s1_addr)]
        # no byte in the walk's stages a clock ago: WALK_END, which starts none, ends on it (the
        # stages' valid bits in one clock with the reply's decision was the longest path of a demo
        # build placed for 100 MHz)
        walk_drained = Signal()
        m.d.sync += walk_drained.eq(~Cat(s0_valid, *(w["valid"] for w in waits), s1_valid,
                                         s2_valid).any())
        m.d.sync += [b[f].eq(a[f]) for a, b in zip(chain, chain[1:]) for f in a]
        with m.If(s1_valid):
            m.d.sync += [word.eq(merged), v_byte.eq(rdata.word_select(s1_lane, 8))]
        # which descriptor stage 2 writes, one bit each, found a stage early (the address and region
        # compared in the clock of the write, the descriptor compare and desc_changed was the longest
        # path of a demo build placed for 100 MHz)
        s2_desc = Signal(len(desc))
        m.d.sync += s2_desc.eq(Cat(s1_valid & writing & s1_last
                                   & (region == memory_map.REGION_SCALARS) & (s1_addr == k)
                                   for k in range(len(desc))))
        with m.If(s2_valid & writing & s2_last):
            for r, (wb, depth, bits) in words.items():
                wr = getattr(core, f"wr_{REGION_PORTS[r]}")
                m.d.comb += [wr.addr.eq(s2_addr), wr.data.eq(word[:bits]), wr.en.eq(region == r)]
        for k, d in enumerate(desc):
            with m.If(s2_desc[k]):
                m.d.sync += d.eq(word[:32])
                with m.If(d != word[:32]):
                    m.d.sync += desc_changed.eq(1)
        with m.If(s2_valid & ~writing):
            m.d.comb += [vcrc.valid.eq(1), vcrc.data.eq(v_byte)]

        # FEED copy: token assembly
        fbytes = Signal(range(_FEED_TOKEN * p.MAX_FEED + 1))    # payload bytes requested
        fgot = Signal(range(_FEED_TOKEN * p.MAX_FEED + 1))      # payload bytes arrived
        fshift = Signal(8 * _FEED_TOKEN)
        fbad = Signal()
        fbad_tok = Signal(32)
        ftoken = Signal()                               # fshift holds a whole token id
        f_end = Signal()                                # every payload byte read and stored
        f_read = [Signal(name=f"f_read{k}") for k in range(BANK_READ_LATENCY)]   # a byte read k + 1
        m.d.sync += [f_read[0].eq(0), *(b.eq(a) for a, b in zip(f_read, f_read[1:]))]   # clocks ago

        # request fields
        w_region, w_offset = _unpack(p.WriteRequest.HEAD, hdr)
        v_region, v_offset, v_length = _unpack(p.VerifyRequest.STRUCT, hdr)
        g_n, g_temperature, g_top_k, g_seed = _unpack(p.GenerateRequest.STRUCT, hdr)
        (r_index,) = _unpack(p.ResendRequest.STRUCT, hdr)
        w_reg = Mux(ev.code == p.Cmd.WRITE, w_region, v_region)     # WRITE's or VERIFY's region

        hist_data = hist.read(r_index[:hist_bits], name="history_rdata")
        m.d.comb += hist.w_addr.eq(produced[:hist_bits])

        # --- helpers: one frame out per command path ----------------------------------------------
        # the sender starts a clock after the decision, from registers (snd_go, snd_len), so that
        # the executor's conditions do not run on into the sender; IDLE waits for both
        snd_go = Signal()
        snd_len = Signal.like(snd.length)
        m.d.sync += snd_go.eq(0)
        m.d.comb += [snd.start.eq(snd_go), snd.length.eq(snd_len)]

        def send(length):
            m.d.sync += [snd_go.eq(1), snd_len.eq(length)]

        # a reply is decided into registers and stored and sent from them a clock later, like a
        # NAK: the stored reply's registers lie by the sender, and every command's conditions
        # deciding them there directly was the longest path of a demo build placed for 100 MHz
        rq_go = Signal()
        rq_code = Signal(8)
        rq_info = Signal()
        rq_len = Signal.like(r_blen, name="rq_len")
        rq_seq = Signal(8)
        rq_crc = Signal(32)
        rq_payload = Signal.like(r_payload, name="rq_payload")

        def reply(code, payload=None, length=0, info=False, seq=None, crc_field=None):
            m.d.sync += [
                rq_go.eq(1), rq_code.eq(code), rq_info.eq(int(info)),
                rq_len.eq(p.HEADER_SIZE + length), rq_seq.eq(ev.seq if seq is None else seq),
                rq_crc.eq(ev.crc if crc_field is None else crc_field),
            ]
            if payload is not None:
                m.d.sync += rq_payload.eq(_extend(payload, len(r_payload)))

        m.d.sync += rq_go.eq(0)
        with m.If(rq_go):
            m.d.sync += [
                r_code.eq(rq_code), r_info.eq(rq_info), r_blen.eq(rq_len), r_payload.eq(rq_payload),
                send_scratch.eq(0), err_flag.eq(0),
                last_valid.eq(1), last_seq.eq(rq_seq), last_crc.eq(rq_crc),
            ]
            send(rq_len)

        def scratch(seq, code, payload, length):
            m.d.sync += [s_seq.eq(seq), s_code.eq(code), s_payload.eq(_extend(payload, len(s_payload))),
                         send_scratch.eq(1)]
            send(p.HEADER_SIZE + length)

        # a NAK is decided into registers and sent from them a clock later, so that the scratch
        # body and the NAK counters take one source, not every command's conditions; IDLE waits
        nk_go = Signal()
        nk_seq = Signal(8)
        nk_err = Signal(8)
        nk_cmd = Signal(8)
        nk_arg = Signal(32)

        def nak(error, arg=0, seq=None, command=None):
            m.d.sync += [nk_go.eq(1), nk_seq.eq(ev.seq if seq is None else seq), nk_err.eq(error),
                         nk_cmd.eq(ev.code if command is None else command), nk_arg.eq(arg)]

        m.d.sync += nk_go.eq(0)
        with m.If(nk_go):
            scratch(nk_seq, p.Reply.NAK, _pack(p.Nak.STRUCT, nk_err, nk_cmd, nk_arg), p.Nak.STRUCT.size)
            m.d.sync += [naks_sent.eq(naks_sent + 1), last_error.eq(nk_err), err_flag.eq(1)]

        busy_now = feed_active | gen_active

        # the sampler samples these with its start only: held here, not multiplexed by the state
        m.d.comb += [sampler.vocab.eq(V), sampler.temperature.eq(gen_temperature),
                     sampler.top_k.eq(gen_top_k)]

        # --- executor ------------------------------------------------------------------------------
        ev_in = rxf.event
        with m.FSM(name="exec"):
            with m.State("IDLE"):
                with m.If(held):
                    m.d.comb += rxf.free.eq(1 << ev.bank)
                    m.d.sync += held.eq(0)
                with m.If(snd.busy | snd_go | nk_go | rq_go):
                    pass                                # every path below may send a frame
                with m.Elif(core.res.valid):
                    m.next = "STEP_DONE"
                with m.Elif(ev_in.valid & ~held):
                    # frames before the next token, so that a fast core cannot starve the host
                    m.d.comb += ev_in.ready.eq(1)
                    m.d.sync += [ev.eq(ev_in.payload),
                                 dup.eq(last_valid & (ev_in.payload.seq == last_seq) &
                                        (ev_in.payload.crc == last_crc))]
                    m.next = "EVENT"
                with m.Elif(feed_active & ~step_out):
                    m.next = "FEED_STEP"
                with m.Elif(gen_active & ~step_out):
                    m.next = "GEN_NEXT"

            with m.State("EVENT"):
                with m.If(ev.error != 0):
                    m.d.sync += frames_rejected.eq(frames_rejected + 1)
                    nak(ev.error)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [frames_ok.eq(frames_ok + 1), held.eq(1)]
                    with m.If(dup):
                        # a repeat of the last command executed: its stored reply again
                        m.d.sync += send_scratch.eq(0)
                        send(r_blen)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [bank_base.eq(_PAYLOAD_AT), fgot.eq(0),
                                     plen.eq(ev.length - p.HEADER_SIZE - p.CRC_SIZE)]
                        m.next = "HEADER"

            with m.State("HEADER"):
                # bytes _PAYLOAD_AT.. arrive BANK_READ_LATENCY clocks after their address; fgot counts
                # them
                m.d.sync += bank_base.eq(bank_base + 1)
                with m.If(bank_base >= _PAYLOAD_AT + BANK_READ_LATENCY):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], bank_data)), fgot.eq(fgot + 1)]
                with m.If(fgot == _HDR_BYTES - 1):
                    m.next = "CHECK"

            with m.State("CHECK"):
                # the comparisons VERDICT decides on, registered
                m.d.sync += [c_known.eq(0), c_length_ok.eq(0), c_before.eq(r_index < produced),
                             c_held.eq(produced - r_index <= self.token_history)]
                with m.Switch(ev.code):
                    for cmd, (lo, hi) in p.REQUEST_LENGTHS.items():
                        with m.Case(cmd):
                            ok = (plen >= lo) & (plen <= hi)
                            if cmd == p.Cmd.FEED:
                                ok = ok & (plen[:_FEED_LOG2] == 0)
                            m.d.sync += [c_known.eq(1), c_length_ok.eq(ok)]
                m.next = "VERDICT"

            with m.State("VERDICT"):
                # whether the command is refused, and with which NAK, into registers: DISPATCH then
                # acts on them and on the command's flag alone (deciding every refusal there, out to
                # the NAK's registers, was the longest path of a demo build placed for 100 MHz).
                # Nothing these conditions read changes before DISPATCH.
                m.d.sync += [v_nak.eq(0), v_err.eq(0), v_arg.eq(0)]
                m.d.sync += [flag.eq(ev.code == cmd) for cmd, flag in is_cmd.items()]

                def refuse(error, arg=0):
                    m.d.sync += [v_nak.eq(1), v_err.eq(error), v_arg.eq(arg)]

                with m.If(~c_known):
                    refuse(p.Err.UNKNOWN_COMMAND, ev.code)
                with m.Elif(~c_length_ok):
                    refuse(p.Err.BAD_LENGTH, plen)
                with m.Else():
                    with m.Switch(ev.code):
                        with m.Case(p.Cmd.WRITE, p.Cmd.VERIFY):
                            with m.If(busy_now):
                                refuse(p.Err.BUSY)
                            with m.Elif(w_reg >= n_regions):
                                refuse(p.Err.BAD_REGION, w_reg)
                        with m.Case(p.Cmd.RESET_STATE):
                            with m.If(busy_now):
                                refuse(p.Err.BUSY)
                        with m.Case(p.Cmd.FEED):
                            with m.If(busy_now):
                                refuse(p.Err.BUSY)
                            with m.Elif(~loaded):
                                refuse(p.Err.NOT_LOADED)
                        with m.Case(p.Cmd.GENERATE):
                            with m.If(busy_now):
                                refuse(p.Err.BUSY)
                            with m.Elif(~loaded):
                                refuse(p.Err.NOT_LOADED)
                            with m.Elif(~context):
                                refuse(p.Err.NO_CONTEXT)
                        with m.Case(p.Cmd.STOP):
                            with m.If(feed_active):
                                refuse(p.Err.BUSY)
                        with m.Case(p.Cmd.RESEND):
                            with m.If(feed_active):
                                refuse(p.Err.BUSY)
                            with m.Elif(~gen_ever | (c_before & ~c_held)):
                                refuse(p.Err.GONE, r_index)
                m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.If(v_nak):
                    nak(v_err, v_arg)
                    m.next = "IDLE"
                with m.Elif(is_cmd[p.Cmd.INFO]):
                    reply(p.Reply.ACK, info=True, length=len(self.info_bytes))
                    m.next = "IDLE"
                with m.Elif(is_cmd[p.Cmd.STATUS]):
                    state = Mux(feed_active, p.DeviceState.FEEDING,
                                Mux(gen_active, p.DeviceState.GENERATING, p.DeviceState.IDLE))
                    flags = Cat(loaded, context)
                    assert p.StatusFlag.LOADED == 1 and p.StatusFlag.CONTEXT == 2
                    reply(p.Reply.ACK, _pack(p.Status.STRUCT, cycles_last, produced, position,
                                             frames_ok, frames_rejected, naks_sent, last_error,
                                             state, flags),
                          p.Status.SIZE)
                    m.next = "IDLE"
                with m.Elif(is_cmd[p.Cmd.WRITE] | is_cmd[p.Cmd.VERIFY]):
                    is_write = is_cmd[p.Cmd.WRITE]
                    m.d.sync += [region.eq(w_reg[:len(region)]), mpos.eq(Mux(is_write, w_offset, v_offset)),
                                 mleft.eq(Mux(is_write, plen - p.WriteRequest.HEAD.size, v_length)),
                                 writing.eq(is_write), desc_changed.eq(0),
                                 bank_base.eq(_PAYLOAD_AT + p.WriteRequest.HEAD.size)]
                    m.next = "RANGE"
                with m.Elif(is_cmd[p.Cmd.RESET_STATE]):
                    m.next = "RESET"
                with m.Elif(is_cmd[p.Cmd.FEED]):
                    m.d.sync += [bank_base.eq(_PAYLOAD_AT), fbytes.eq(0), fgot.eq(0),
                                 fbad.eq(0), feed_n.eq(0), f_end.eq(0)]
                    m.next = "FEED_COPY"
                with m.Elif(is_cmd[p.Cmd.GENERATE]):
                    reply(p.Reply.ACK)
                    m.d.sync += [gen_active.eq(1), gen_ever.eq(1), gen_stop.eq(0),
                                 gen_seq.eq(ev.seq), gen_n.eq(g_n), produced.eq(0),
                                 gen_temperature.eq(g_temperature), gen_top_k.eq(g_top_k),
                                 sampled.eq(0)]
                    m.d.comb += [sampler.seed.eq(g_seed), sampler.load.eq(1)]
                    m.next = "IDLE"
                with m.Elif(is_cmd[p.Cmd.STOP]):
                    reply(p.Reply.ACK, _pack(p.StopReply.STRUCT, gen_active), p.StopReply.STRUCT.size)
                    with m.If(gen_active):
                        m.d.sync += gen_stop.eq(1)
                    m.next = "IDLE"
                with m.Else():                          # RESEND (VERDICT knows no other command)
                    with m.If(c_before):
                        m.next = "RESEND_WAIT"          # the history read is under way
                    with m.Elif(~gen_active):
                        reply(p.Reply.DONE, _pack(p.Done.STRUCT, produced, gen_reason), p.Done.STRUCT.size)
                        m.next = "IDLE"
                    with m.Else():
                        reply(p.Reply.ACK)
                        m.next = "IDLE"

            with m.State("RESEND_WAIT"):
                m.next = "RESEND_READ"                  # BUFFER_READ_LATENCY clocks from the index

            with m.State("RESEND_READ"):
                m.d.sync += held_token.eq(hist_data)
                m.next = "RESEND_TOKEN"

            with m.State("RESEND_TOKEN"):
                reply(p.Reply.TOKEN, _pack(p.Token.STRUCT, r_index, held_token.token, held_token.cycles),
                      p.Token.STRUCT.size)
                m.next = "IDLE"

            # --- WRITE and VERIFY ----------------------------------------------------------------
            with m.State("RANGE"):
                # a position past every region is caught by m_over (found during RANGE_DIV, from the
                # range's end in a register); its quotient does not matter
                m.d.sync += [m_end.eq(mpos + mleft), m_num.eq(mpos[:div_bits]),
                             m_quot.eq(0), m_rem.eq(0), m_step.eq(div_bits)]
                m.next = "RANGE_DIV"

            with m.State("RANGE_DIV"):
                partial = Cat(m_num[-1], m_rem)         # the remainder so far, the next bit below
                fits = partial >= region_wb
                m.d.sync += [m_over.eq(m_end > region_size),
                             m_num.eq(m_num << 1), m_quot.eq(Cat(fits, m_quot)),
                             m_rem.eq(Mux(fits, partial - region_wb, partial)), m_step.eq(m_step - 1)]
                with m.If(m_step == 1):
                    m.next = "RANGE_CHECK"

            with m.State("RANGE_CHECK"):
                m.d.sync += [waddr.eq(m_quot), wlane.eq(m_rem), mcnt.eq(mleft - 1)]
                with m.If(m_over):
                    nak(p.Err.BAD_RANGE, mpos[:32])
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += vcrc.start.eq(1)
                    m.next = "WALK"

            with m.State("WALK"):
                lane = wlane
                with m.If(~mcnt[-1]):
                    m.d.sync += [
                        s0_valid.eq(1), s0_lane.eq(lane),
                        s0_first.eq(s0_valid == 0),
                        s0_last.eq((mcnt == 0) | (lane == region_last_lane)),
                        s0_addr.eq(waddr),
                        mcnt.eq(mcnt - 1), bank_base.eq(bank_base + 1),
                    ]
                    with m.If(lane == region_last_lane):
                        m.d.sync += [wlane.eq(0), waddr.eq(waddr + 1)]
                    with m.Else():
                        m.d.sync += wlane.eq(lane + 1)
                    # a new word starts at lane 0 (the first byte of the walk is flagged above)
                    with m.If(lane == 0):
                        m.d.sync += s0_first.eq(1)
                with m.Else():
                    m.next = "WALK_END"

            with m.State("WALK_END"):
                # wait for the last byte to leave stage 2; the CRC register holds it then
                with m.If(walk_drained):
                    with m.If(writing):
                        with m.If(desc_changed):
                            m.d.sync += [context.eq(0), position.eq(0)]
                            m.next = "WRITE_RESET"
                        with m.Else():
                            reply(p.Reply.ACK)
                            m.next = "IDLE"
                    with m.Else():
                        reply(p.Reply.ACK, _pack(p.VerifyReply.STRUCT, vcrc.crc), p.VerifyReply.STRUCT.size)
                        m.next = "IDLE"

            with m.State("WRITE_RESET"):
                # a new model descriptor: the recurrent state of the old model means nothing
                m.d.comb += [core.req.valid.eq(1), core.req.payload.cmd.eq(Command.RESET_STATE)]
                with m.If(core.req.ready):
                    reply(p.Reply.ACK)
                    m.next = "IDLE"

            # --- RESET_STATE ---------------------------------------------------------------------
            with m.State("RESET"):
                m.d.comb += [core.req.valid.eq(1), core.req.payload.cmd.eq(Command.RESET_STATE)]
                with m.If(core.req.ready):
                    m.d.sync += [context.eq(0), position.eq(0)]
                    reply(p.Reply.ACK)
                    m.next = "IDLE"

            # --- FEED ----------------------------------------------------------------------------
            with m.State("FEED_COPY"):
                # read, shift in, then check and store a whole token id: three clocks deep
                m.d.sync += ftoken.eq(0)
                with m.If(fbytes != plen):
                    m.d.sync += [bank_base.eq(bank_base + 1), fbytes.eq(fbytes + 1), f_read[0].eq(1)]
                with m.If(f_read[-1]):                      # a byte read BANK_READ_LATENCY clocks ago
                    m.d.sync += [fshift.eq(Cat(fshift[8:], bank_data)), fgot.eq(fgot + 1)]
                    with m.If(fgot[:_FEED_LOG2] == _FEED_TOKEN - 1):
                        m.d.sync += ftoken.eq(1)
                with m.If(ftoken):
                    m.d.sync += feed_n.eq(feed_n + 1)
                    m.d.comb += [feed_w.addr.eq(feed_n), feed_w.data.eq(fshift), feed_w.en.eq(1)]
                    with m.If((fshift >= V) & ~fbad):
                        m.d.sync += [fbad.eq(1), fbad_tok.eq(fshift)]
                # the payload is through (it stays so): acted on a clock later, from a register
                m.d.sync += f_end.eq((fgot == plen) & (fbytes == plen) & ~ftoken)
                with m.If(f_end):
                    with m.If(fbad):
                        nak(p.Err.BAD_TOKEN, fbad_tok)
                    with m.Else():
                        m.d.sync += [feed_active.eq(1), feed_idx.eq(0), feed_seq.eq(ev.seq),
                                     feed_crc.eq(ev.crc), fault.eq(0)]
                    m.next = "IDLE"

            with m.State("FEED_STEP"):
                m.d.comb += [core.req.valid.eq(1), core.req.payload.cmd.eq(Command.STEP),
                             core.req.payload.token.eq(feed_r.data)]
                with m.If(core.req.ready):
                    m.d.sync += step_out.eq(1)
                    m.next = "IDLE"

            with m.State("STEP_DONE"):
                res = core.res.payload
                m.d.comb += core.res.ready.eq(1)
                m.d.sync += [next_tok.eq(res.token), cycles_last.eq(core.cycles), step_out.eq(0),
                             position.eq(position + 1), context.eq(1)]
                with m.If(res.error):
                    m.d.sync += fault.eq(1)
                    with m.If(gen_active):
                        m.d.sync += gen_stop.eq(1)
                with m.If(feed_active):
                    m.d.sync += feed_idx.eq(feed_idx + 1)
                    with m.If(feed_last):
                        m.d.sync += feed_active.eq(0)
                        m.next = "FEED_DONE"
                    with m.Else():
                        m.next = "IDLE"
                with m.Else():
                    m.next = "IDLE"

            with m.State("FEED_DONE"):
                with m.If(fault):
                    nak(p.Err.INTERNAL, seq=feed_seq, command=p.Cmd.FEED)
                with m.Else():
                    reply(p.Reply.ACK, _pack(p.FeedReply.STRUCT, position, next_tok, cycles_last),
                          p.FeedReply.STRUCT.size, seq=feed_seq, crc_field=feed_crc)
                m.next = "IDLE"

            # --- GENERATE ------------------------------------------------------------------------
            with m.State("GEN_NEXT"):
                with m.If(gen_stop | gen_all):
                    reason = Mux(gen_short, p.DoneReason.STOPPED, p.DoneReason.COMPLETE)
                    scratch(gen_seq, p.Reply.DONE, _pack(p.Done.STRUCT, produced, reason),
                            p.Done.STRUCT.size)
                    m.d.sync += [gen_active.eq(0), gen_reason.eq(reason)]
                    m.next = "IDLE"
                with m.Elif(gen_sampling & ~sampled):
                    # the core is idle and its Y buffer holds the logits this token is picked from
                    m.d.comb += sampler.start.eq(1)
                    m.next = "GEN_SAMPLE"
                with m.Else():
                    scratch(gen_seq, p.Reply.TOKEN, _pack(p.Token.STRUCT, produced, next_tok, cycles_last),
                            p.Token.STRUCT.size)
                    m.d.comb += [hist.w_en.eq(1), hist_word.token.eq(next_tok),
                                 hist_word.cycles.eq(cycles_last)]
                    m.d.sync += [produced.eq(produced + 1), sampled.eq(0)]
                    m.next = "GEN_STEP"

            with m.State("GEN_SAMPLE"):
                # bounded: about 3V clocks, 27V with top-k (mmfree.hw.sampler); nothing is sent meanwhile
                with m.If(sampler.done):
                    m.d.sync += [next_tok.eq(sampler.token), sampled.eq(1)]
                    m.next = "GEN_NEXT"

            with m.State("GEN_STEP"):
                m.d.comb += [core.req.valid.eq(1), core.req.payload.cmd.eq(Command.STEP),
                             core.req.payload.token.eq(next_tok)]
                with m.If(core.req.ready):
                    m.d.sync += step_out.eq(1)
                    m.next = "IDLE"
        return m

