"""The host-link protocol: the single definition of what travels between a host and a device.

Pure Python (standard library only). The host driver (:mod:`mmfree.driver`), the in-process golden
board (:mod:`mmfree.driver.golden_board`) and the gateware generator all import their constants and
layouts from here; docs/protocol.md is the prose form of this module.

Summary
-------
* Byte stream (UART 8N1). A *frame* is ``seq (u8) | code (u8) | payload | crc32 (u32 LE)``, where the
  CRC is IEEE CRC-32 (``zlib.crc32``) over ``seq``, ``code`` and ``payload``. On the wire each frame is
  COBS-encoded and surrounded by ``0x00`` delimiters: ``00 | COBS(frame) | 00``. Empty frames (two
  delimiters in a row) are ignored, so a receiver resynchronises after garbage at the next ``0x00``.
* Commands have codes ``0x01..0x7F``, replies ``0x80..0xFF``. Every command gets exactly one reply
  frame carrying its ``seq``: ``ACK`` (command-specific payload), ``NAK`` (error code), or, for
  ``RESEND``, the ``TOKEN``/``DONE`` frame asked for. ``GENERATE`` additionally streams ``TOKEN`` frames
  and ends with a ``DONE`` frame, all carrying the ``GENERATE``'s ``seq``.
* A ``NAK`` always means the command had no effect. A command whose ``seq`` and CRC equal those of the
  last command the device executed (answered with something other than a NAK) is not executed again;
  the stored reply is sent again. Retransmitting after a lost reply is therefore always safe.
* Every field is little-endian at a fixed offset. The largest frame (a ``WRITE`` of 256 data bytes)
  decodes to :data:`MAX_FRAME` = 270 bytes, so one 512-byte block RAM holds a receive buffer.

A receiver checks the CRC without locating it: running CRC-32 over the whole decoded frame, CRC
included, gives :data:`CRC_RESIDUE` for every intact frame.
"""

from dataclasses import dataclass, field
import enum
import struct
import zlib

__all__ = [
    "PROTOCOL_VERSION", "INFO_MAGIC", "DELIMITER", "HEADER_SIZE", "CRC_SIZE", "MIN_FRAME",
    "MAX_WRITE", "MAX_FEED", "MAX_PAYLOAD", "MAX_FRAME", "MAX_ENCODED", "MAX_REGIONS", "CRC_RESIDUE",
    "REPLY_LATENCY_S", "VERIFY_CYCLES_PER_BYTE", "FRAME_ERRORS",
    "TEMPERATURE_FRAC", "Cmd", "Reply", "Err", "DoneReason", "DeviceState", "InfoFlag", "StatusFlag",
    "crc32", "cobs_encode", "cobs_decode", "cobs_max_length", "CobsError",
    "Frame", "FrameError", "decode_frame", "encode_frame", "FrameReceiver",
    "PayloadError", "REQUEST_LENGTHS",
    "Region", "Info", "Status", "WriteRequest", "VerifyRequest", "VerifyReply", "FeedRequest",
    "FeedReply", "GenerateRequest", "StopReply", "ResendRequest", "Token", "Done", "Nak",
    "command_name", "error_name", "DEFAULT_BAUD",
]

PROTOCOL_VERSION = 2
"""Reported by INFO; bumped on any change to this module that changes bytes on the wire."""

DEFAULT_BAUD = 3_000_000
"""The UART's line rate (8N1) that board builds use and the driver opens a serial port at, unless told
otherwise."""

INFO_MAGIC = b"MMFD"
"""First four bytes of the INFO reply: identifies an mmfree device."""

DELIMITER = 0x00
HEADER_SIZE = 2                  # seq, code
CRC_SIZE = 4
MIN_FRAME = HEADER_SIZE + CRC_SIZE
MAX_WRITE = 256
"""Most data bytes in one WRITE."""
MAX_FEED = 64
"""Most token ids in one FEED."""
MAX_PAYLOAD = 8 + MAX_WRITE
"""The largest payload of any frame (a full WRITE)."""
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
"""The largest decoded frame: 270 bytes."""
MAX_REGIONS = 16
"""Most memory regions a device may report in INFO."""
TEMPERATURE_FRAC = 8
"""GENERATE's temperature is an unsigned 8.8 fixed-point code: ``temperature = code / 256``."""

CRC_RESIDUE = 0x2144DF1C
"""``crc32(frame)`` over a whole intact frame, its own CRC bytes included."""

REPLY_LATENCY_S = 0.01
"""A device starts its reply to a command at most this long after the command's closing delimiter
(plus the time to finish frames already being sent), except FEED, which is answered when its tokens
have been processed, and VERIFY, which may take :data:`VERIFY_CYCLES_PER_BYTE` further clock cycles
per byte checked."""
VERIFY_CYCLES_PER_BYTE = 128
"""The most clock cycles a device spends per byte a VERIFY checks (the gateware link checks a byte a
clock, the compact accelerator's firmware takes about 60)."""


def cobs_max_length(n):
    """The longest COBS encoding of ``n`` bytes (without delimiters)."""
    return n + 1 + n // 254


MAX_ENCODED = cobs_max_length(MAX_FRAME)
"""The most bytes between two delimiters of an acceptable frame (272)."""


class Cmd(enum.IntEnum):
    """Command codes (host to device)."""

    INFO = 0x01
    STATUS = 0x02
    WRITE = 0x10
    VERIFY = 0x11
    RESET_STATE = 0x20
    FEED = 0x21
    GENERATE = 0x22
    STOP = 0x23
    RESEND = 0x24


class Reply(enum.IntEnum):
    """Reply codes (device to host); bit 7 is set in every reply code."""

    ACK = 0x80
    NAK = 0x81
    TOKEN = 0x82
    DONE = 0x83


class Err(enum.IntEnum):
    """Error codes carried by a NAK."""

    BAD_CRC = 0x01          # the frame's CRC does not match
    BAD_FRAME = 0x02        # invalid COBS, or shorter than MIN_FRAME
    TOO_LONG = 0x03         # more than MAX_ENCODED bytes between delimiters
    UNKNOWN_COMMAND = 0x04  # a code that is not a command
    BAD_LENGTH = 0x05       # the payload length is wrong for the command
    BAD_REGION = 0x06       # no such memory region
    BAD_RANGE = 0x07        # offset/length outside the region
    BUSY = 0x08             # the command cannot run now (generation or prefill in progress)
    NOT_LOADED = 0x09       # the memory holds no valid model
    NO_CONTEXT = 0x0A       # GENERATE before any token was fed since RESET_STATE
    BAD_TOKEN = 0x0B        # a token id outside the loaded model's vocabulary
    GONE = 0x0C             # RESEND of a token no longer (or never) held
    BAD_ARGUMENT = 0x0D     # a field value the device does not accept
    INTERNAL = 0x0E         # a device fault (the command had no effect)


FRAME_ERRORS = (Err.BAD_CRC, Err.BAD_FRAME, Err.TOO_LONG)
"""Errors about the frame itself rather than its command (counted as *frames rejected*)."""


class DoneReason(enum.IntEnum):
    COMPLETE = 0    # n tokens produced
    STOPPED = 1     # ended by STOP


class DeviceState(enum.IntEnum):
    IDLE = 0
    FEEDING = 1
    GENERATING = 2


class InfoFlag(enum.IntFlag):
    SAMPLING = 1    # GENERATE accepts a non-zero temperature (on-device sampler, mmfree.sampler)
    EMULATED = 2    # a software device (golden board): cycle counts are zero


class StatusFlag(enum.IntFlag):
    LOADED = 1      # the memory holds a valid model
    CONTEXT = 2     # a token was processed since RESET_STATE (GENERATE can start)


def command_name(code):
    for e in (Cmd, Reply):
        try:
            return e(code).name
        except ValueError:
            pass
    return f"0x{code:02x}"


def error_name(code):
    try:
        return Err(code).name
    except ValueError:
        return f"error 0x{code:02x}"


# --- CRC and COBS --------------------------------------------------------------------------------

def crc32(data, value=0):
    """IEEE 802.3 CRC-32 (reflected, init and final XOR 0xFFFFFFFF): exactly ``zlib.crc32``."""
    return zlib.crc32(data, value) & 0xFFFFFFFF


class CobsError(ValueError):
    """Bytes that are not a valid COBS encoding."""


def cobs_encode(data):
    """COBS-encode ``data`` (Cheshire and Baker): the result holds no zero byte.

    Each block is a code byte ``k`` (1..255) followed by ``k - 1`` non-zero bytes; a block with
    ``k < 255`` stands for its bytes and a zero, except the last block, whose zero is dropped. The
    encoding of ``n`` bytes is at most :func:`cobs_max_length` ``(n)`` long.
    """
    data = bytes(data)
    out = bytearray()
    pos, n = 0, len(data)
    while True:
        zero = data.find(b"\0", pos, pos + 254)
        if zero >= 0:                       # a block ended by a zero
            out.append(zero - pos + 1)
            out += data[pos:zero]
            pos = zero + 1
            continue
        end = min(pos + 254, n)
        out.append(end - pos + 1)
        out += data[pos:end]
        if end - pos < 254:                 # the last block (possibly empty)
            return bytes(out)
        pos = end                           # a full block of 254: no zero follows it


def cobs_decode(data):
    """Decode one COBS block sequence (no delimiters inside); raises :class:`CobsError`."""
    data = bytes(data)
    out = bytearray()
    i = 0
    n = len(data)
    if n == 0:
        raise CobsError("empty COBS frame")
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError(f"zero byte at {i}")
        end = i + code
        if end > n:
            raise CobsError(f"block at {i} runs past the end")
        block = data[i + 1:end]
        if 0 in block:
            raise CobsError("zero byte inside a block")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


# --- frames --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One decoded frame: sequence number, command or reply code, payload."""

    seq: int
    code: int
    payload: bytes = b""

    def __post_init__(self):
        if not 0 <= self.seq <= 0xFF:
            raise ValueError(f"seq must be 0..255, not {self.seq}")
        if not 0 <= self.code <= 0xFF:
            raise ValueError(f"code must be 0..255, not {self.code}")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")

    def raw(self):
        """The decoded frame bytes, CRC appended."""
        body = bytes((self.seq, self.code)) + bytes(self.payload)
        return body + struct.pack("<I", crc32(body))

    @property
    def crc(self):
        return crc32(bytes((self.seq, self.code)) + bytes(self.payload))

    def encode(self):
        """Bytes on the wire: ``00 | COBS(raw) | 00``."""
        return b"\0" + cobs_encode(self.raw()) + b"\0"

    def __repr__(self):
        return f"Frame(seq={self.seq}, {command_name(self.code)}, {bytes(self.payload).hex()})"


def encode_frame(seq, code, payload=b""):
    return Frame(seq, int(code), bytes(payload)).encode()


class FrameError(Exception):
    """A delimited frame that was rejected. ``error`` is an :class:`Err`; ``seq`` and ``code`` are the
    frame's first two decoded bytes where they could be read (else 0 and 0xFF), which a NAK echoes."""

    def __init__(self, error, seq=0, code=0xFF):
        super().__init__(f"{error_name(error)} (seq {seq}, code 0x{code:02x})")
        self.error = Err(error)
        self.seq = seq
        self.code = code


def decode_frame(encoded):
    """A :class:`Frame` from the bytes between two delimiters; raises :class:`FrameError`."""
    if len(encoded) > MAX_ENCODED:
        raise FrameError(Err.TOO_LONG)
    try:
        raw = cobs_decode(encoded)
    except CobsError:
        raise FrameError(Err.BAD_FRAME) from None
    seq = raw[0] if len(raw) > 0 else 0
    code = raw[1] if len(raw) > 1 else 0xFF
    if len(raw) < MIN_FRAME:
        raise FrameError(Err.BAD_FRAME, seq, code)
    if len(raw) > MAX_FRAME:
        raise FrameError(Err.TOO_LONG, seq, code)
    if crc32(raw) != CRC_RESIDUE:
        raise FrameError(Err.BAD_CRC, seq, code)
    return Frame(seq, code, raw[HEADER_SIZE:-CRC_SIZE])


class FrameReceiver:
    """Splits a byte stream into frames: ``feed(data)`` returns a list of :class:`Frame` and
    :class:`FrameError` in arrival order. Empty frames are skipped; bytes beyond :data:`MAX_ENCODED`
    are discarded until the next delimiter, which then yields one ``TOO_LONG`` error."""

    def __init__(self):
        self._buf = bytearray()
        self._overflow = False

    def reset(self):
        self._buf.clear()
        self._overflow = False

    def feed(self, data):
        out = []
        data = bytes(data)
        start = 0
        while True:
            end = data.find(b"\0", start)
            if end < 0:
                self._take(data[start:])
                return out
            self._take(data[start:end])
            if self._overflow:
                out.append(FrameError(Err.TOO_LONG))
            elif self._buf:
                try:
                    out.append(decode_frame(self._buf))
                except FrameError as e:
                    out.append(e)
            self._buf.clear()
            self._overflow = False
            start = end + 1

    def _take(self, chunk):
        if self._overflow:
            return
        if len(self._buf) + len(chunk) > MAX_ENCODED:
            self._overflow = True
            self._buf.clear()
        else:
            self._buf += chunk


# --- payloads ------------------------------------------------------------------------------------

class PayloadError(ValueError):
    """A payload whose length or contents do not fit the command (answered with ``BAD_LENGTH``)."""

    def __init__(self, message, error=Err.BAD_LENGTH, arg=0):
        super().__init__(message)
        self.error = Err(error)
        self.arg = arg


def _fixed(fmt):
    s = struct.Struct("<" + fmt)
    return s


def _unpack(st, payload, what):
    if len(payload) != st.size:
        raise PayloadError(f"{what} payload is {len(payload)} bytes, expected {st.size}")
    return st.unpack(payload)


@dataclass(frozen=True)
class Region:
    """One memory region as INFO reports it: a four-byte tag and a size in bytes."""

    tag: bytes
    size: int

    @property
    def name(self):
        return self.tag.rstrip(b"\0").decode("ascii", "replace")


@dataclass(frozen=True)
class Info:
    """The INFO reply: what the device was built for. Offsets in docs/protocol.md."""

    protocol_version: int
    lanes: int
    image_format_version: int
    numeric_spec_version: int
    max_vocab: int
    max_hidden: int
    max_intermediate: int
    max_layers: int
    clock_hz: int
    build_hash: int
    max_write: int
    token_history: int
    flags: int
    regions: tuple = ()
    rows: int = 1

    STRUCT = _fixed("4sBBHHHIIIIIIHHIHH")
    SIZE = STRUCT.size           # 48, then 8 bytes per region
    REGION = _fixed("4sI")

    def pack(self):
        if len(self.regions) > MAX_REGIONS:
            raise ValueError(f"{len(self.regions)} regions; at most {MAX_REGIONS}")
        head = self.STRUCT.pack(INFO_MAGIC, self.protocol_version, len(self.regions), self.lanes,
                                self.image_format_version, self.numeric_spec_version, self.max_vocab,
                                self.max_hidden, self.max_intermediate, self.max_layers, self.clock_hz,
                                self.build_hash, self.max_write, self.token_history, int(self.flags),
                                self.rows, 0)
        return head + b"".join(self.REGION.pack(r.tag.ljust(4, b"\0")[:4], r.size) for r in self.regions)

    @classmethod
    def unpack(cls, payload):
        if len(payload) < cls.SIZE:
            raise PayloadError(f"INFO payload is {len(payload)} bytes, shorter than {cls.SIZE}")
        (magic, pv, nreg, lanes, fv, nv, mv, mh, mi, ml, clk, bh, mw, th, flags, rows,
         _) = cls.STRUCT.unpack_from(payload)
        if magic != INFO_MAGIC:
            raise PayloadError(f"INFO magic {magic!r}, expected {INFO_MAGIC!r}", Err.BAD_ARGUMENT)
        if len(payload) != cls.SIZE + cls.REGION.size * nreg:
            raise PayloadError(f"INFO payload is {len(payload)} bytes for {nreg} regions")
        regions = tuple(Region(*cls.REGION.unpack_from(payload, cls.SIZE + cls.REGION.size * i))
                        for i in range(nreg))
        return cls(pv, lanes, fv, nv, mv, mh, mi, ml, clk, bh, mw, th, InfoFlag(flags), regions, rows)


@dataclass(frozen=True)
class Status:
    """The STATUS reply: counters (each wraps at 2**32) and the device's state."""

    cycles_last_token: int
    tokens_generated: int       # by the current or last GENERATE
    position: int               # tokens processed since RESET_STATE (fed and generated)
    frames_ok: int              # frames received intact
    frames_rejected: int        # frames dropped for BAD_CRC, BAD_FRAME or TOO_LONG
    naks_sent: int
    last_error: int             # error code of the last NAK sent (0: none yet)
    state: int                  # DeviceState
    flags: int                  # StatusFlag

    STRUCT = _fixed("IIIIIIBBBx")
    SIZE = STRUCT.size           # 28

    def pack(self):
        return self.STRUCT.pack(self.cycles_last_token, self.tokens_generated, self.position,
                                self.frames_ok, self.frames_rejected, self.naks_sent, self.last_error,
                                self.state, int(self.flags))

    @classmethod
    def unpack(cls, payload):
        v = _unpack(cls.STRUCT, payload, "STATUS")
        return cls(*v[:7], DeviceState(v[7]) if v[7] in DeviceState._value2member_map_ else v[7],
                   StatusFlag(v[8]))


@dataclass(frozen=True)
class WriteRequest:
    """WRITE: ``region u8 | 3 reserved | offset u32 | data (1..256 bytes)``."""

    region: int
    offset: int
    data: bytes

    HEAD = _fixed("B3xI")

    def pack(self):
        if not 1 <= len(self.data) <= MAX_WRITE:
            raise ValueError(f"WRITE carries 1..{MAX_WRITE} bytes, not {len(self.data)}")
        return self.HEAD.pack(self.region, self.offset) + bytes(self.data)

    @classmethod
    def unpack(cls, payload):
        n = len(payload) - cls.HEAD.size
        if not 1 <= n <= MAX_WRITE:
            raise PayloadError(f"WRITE payload is {len(payload)} bytes, expected "
                               f"{cls.HEAD.size + 1}..{cls.HEAD.size + MAX_WRITE}")
        region, offset = cls.HEAD.unpack_from(payload)
        return cls(region, offset, bytes(payload[cls.HEAD.size:]))


@dataclass(frozen=True)
class VerifyRequest:
    """VERIFY: ``region u8 | 3 reserved | offset u32 | length u32``."""

    region: int
    offset: int
    length: int

    STRUCT = _fixed("B3xII")

    def pack(self):
        return self.STRUCT.pack(self.region, self.offset, self.length)

    @classmethod
    def unpack(cls, payload):
        return cls(*_unpack(cls.STRUCT, payload, "VERIFY"))


@dataclass(frozen=True)
class VerifyReply:
    """ACK of VERIFY: ``crc32 u32`` of the bytes ``region[offset:offset+length]``."""

    crc: int

    STRUCT = _fixed("I")

    def pack(self):
        return self.STRUCT.pack(self.crc)

    @classmethod
    def unpack(cls, payload):
        return cls(*_unpack(cls.STRUCT, payload, "VERIFY reply"))


@dataclass(frozen=True)
class FeedRequest:
    """FEED: 1..64 token ids, ``u32`` each."""

    tokens: tuple

    def pack(self):
        if not 1 <= len(self.tokens) <= MAX_FEED:
            raise ValueError(f"FEED carries 1..{MAX_FEED} tokens, not {len(self.tokens)}")
        return struct.pack(f"<{len(self.tokens)}I", *self.tokens)

    @classmethod
    def unpack(cls, payload):
        n, rest = divmod(len(payload), 4)
        if rest or not 1 <= n <= MAX_FEED:
            raise PayloadError(f"FEED payload is {len(payload)} bytes, expected a multiple of 4 "
                               f"from 4 to {4 * MAX_FEED}")
        return cls(struct.unpack(f"<{n}I", payload))


@dataclass(frozen=True)
class FeedReply:
    """ACK of FEED: ``position u32 | argmax u32 | cycles u32`` after the last token of the FEED."""

    position: int
    argmax: int
    cycles: int

    STRUCT = _fixed("III")

    def pack(self):
        return self.STRUCT.pack(self.position, self.argmax, self.cycles)

    @classmethod
    def unpack(cls, payload):
        return cls(*_unpack(cls.STRUCT, payload, "FEED reply"))


@dataclass(frozen=True)
class GenerateRequest:
    """GENERATE: ``n u32 | temperature u16 (8.8) | top_k u16 | seed u32``."""

    n: int
    temperature: int = 0
    top_k: int = 0
    seed: int = 0

    STRUCT = _fixed("IHHI")

    def pack(self):
        return self.STRUCT.pack(self.n, self.temperature, self.top_k, self.seed)

    @classmethod
    def unpack(cls, payload):
        return cls(*_unpack(cls.STRUCT, payload, "GENERATE"))


@dataclass(frozen=True)
class StopReply:
    """ACK of STOP: ``stopped u8`` (1 when a generation was running) ``| 3 reserved``."""

    stopped: int

    STRUCT = _fixed("B3x")

    def pack(self):
        return self.STRUCT.pack(self.stopped)

    @classmethod
    def unpack(cls, payload):
        return cls(*_unpack(cls.STRUCT, payload, "STOP reply"))


@dataclass(frozen=True)
class ResendRequest:
    """RESEND: ``index u32``, the running index of the token wanted."""

    index: int

    STRUCT = _fixed("I")

    def pack(self):
        return self.STRUCT.pack(self.index)

    @classmethod
    def unpack(cls, payload):
        return cls(*_unpack(cls.STRUCT, payload, "RESEND"))


@dataclass(frozen=True)
class Token:
    """TOKEN: ``index u32 | token u32 | cycles u32`` (index counts from 0 in each GENERATE)."""

    index: int
    token: int
    cycles: int

    STRUCT = _fixed("III")

    def pack(self):
        return self.STRUCT.pack(self.index, self.token, self.cycles)

    @classmethod
    def unpack(cls, payload):
        return cls(*_unpack(cls.STRUCT, payload, "TOKEN"))


@dataclass(frozen=True)
class Done:
    """DONE: ``count u32 | reason u8 | 3 reserved``: the generation produced ``count`` tokens."""

    count: int
    reason: int

    STRUCT = _fixed("IB3x")

    def pack(self):
        return self.STRUCT.pack(self.count, self.reason)

    @classmethod
    def unpack(cls, payload):
        count, reason = _unpack(cls.STRUCT, payload, "DONE")
        return cls(count, DoneReason(reason) if reason in DoneReason._value2member_map_ else reason)


@dataclass(frozen=True)
class Nak:
    """NAK: ``error u8 | command u8 | 2 reserved | arg u32`` (``command``: the rejected frame's code,
    0xFF if unreadable; ``arg``: error-specific detail, e.g. the offending token id or offset)."""

    error: int
    command: int = 0xFF
    arg: int = 0

    STRUCT = _fixed("BB2xI")

    def pack(self):
        return self.STRUCT.pack(int(self.error), self.command, self.arg)

    @classmethod
    def unpack(cls, payload):
        error, command, arg = _unpack(cls.STRUCT, payload, "NAK")
        return cls(error, command, arg)

    def __str__(self):
        return f"{error_name(self.error)} ({command_name(self.command)}, arg {self.arg})"


REQUEST_LENGTHS = {
    Cmd.INFO: (0, 0),
    Cmd.STATUS: (0, 0),
    Cmd.WRITE: (WriteRequest.HEAD.size + 1, WriteRequest.HEAD.size + MAX_WRITE),
    Cmd.VERIFY: (VerifyRequest.STRUCT.size, VerifyRequest.STRUCT.size),
    Cmd.RESET_STATE: (0, 0),
    Cmd.FEED: (4, 4 * MAX_FEED),
    Cmd.GENERATE: (GenerateRequest.STRUCT.size, GenerateRequest.STRUCT.size),
    Cmd.STOP: (0, 0),
    Cmd.RESEND: (ResendRequest.STRUCT.size, ResendRequest.STRUCT.size),
}
"""``(min, max)`` payload length of every command; FEED must also be a multiple of 4."""

assert max(hi for _, hi in REQUEST_LENGTHS.values()) == MAX_PAYLOAD
assert Info.SIZE + Info.REGION.size * MAX_REGIONS <= MAX_PAYLOAD
