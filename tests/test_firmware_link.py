"""The compact accelerator's firmware (``hw/fw``, built for this computer: :mod:`mmfree.sim.firmware_board`)
against the golden board with the accelerator's memory layout, sized for the same build.

The same bytes go to both; what comes back must be identical, byte for byte: INFO, STATUS, WRITE and
VERIFY, every frame error, unknown commands, wrong lengths, duplicates, and, with the bundled ``tiny``
model uploaded, FEED, the GENERATE stream (greedy and sampled), BUSY, STOP and RESEND. The host driver
is run against the firmware too, over a clean and over a damaged link.
"""

import dataclasses
import random
import zlib

import pytest

from malformed import malformed_burst, valid_frames
from mmfree import protocol as p
from mmfree.driver import Device, DeviceNak, FaultyTransport, GoldenBoard
from mmfree.hw.config import HwConfig, TINY_SHAPE
from mmfree.hw.link import info_for

CONFIG = HwConfig.for_model(TINY_SHAPE, lanes=4)
BUILD_HASH = 0x5EED1234
HISTORY = 8
PROMPT = tuple(b"The cat sat on the mat. ")
SIZES = [r.size for r in info_for(CONFIG).regions]


def golden_board():
    """The golden board as a twin of the firmware's build: the same regions and INFO."""
    return GoldenBoard(layout="accelerator", lanes=CONFIG.lanes, max_vocab=CONFIG.max_vocab,
                       max_hidden=CONFIG.max_hidden, max_layers=CONFIG.max_layers,
                       max_intermediate=CONFIG.max_intermediate, clock_hz=CONFIG.clk_freq,
                       token_history=HISTORY, build_hash=BUILD_HASH)


@pytest.fixture(scope="module")
def library():
    from mmfree.sim.firmware_board import build_library
    return build_library(CONFIG, BUILD_HASH, HISTORY)


def firmware_board():
    from mmfree.sim.firmware_board import FirmwareBoard
    return FirmwareBoard(CONFIG, build_hash=BUILD_HASH, token_history=HISTORY)


class Pair:
    """The firmware and the golden board, fed the same bytes."""

    def __init__(self):
        self.fw = firmware_board()
        self.golden = golden_board()

    def send(self, wire):
        """Both boards' answers to ``wire``, which must be identical, as frames (and frame errors)."""
        self.fw.receive(wire)
        self.golden.receive(wire)
        got, want = self.fw.transmit(), self.golden.transmit()
        assert got == want
        return p.FrameReceiver().feed(got)

    def command(self, seq, cmd, payload=b""):
        """The one reply frame to a command."""
        (frame,) = self.send(p.encode_frame(seq, cmd, payload))
        assert isinstance(frame, p.Frame) and frame.seq == seq
        return frame

    def stream(self):
        """Poll both until they have nothing more to say; the identical bytes as frames."""
        out = []
        for board in (self.fw, self.golden):
            data = bytearray()
            while board.poll():
                data += board.transmit()
            out.append(bytes(data))
        assert out[0] == out[1]
        return p.FrameReceiver().feed(out[0])

    def status(self, seq=0x5A):
        return p.Status.unpack(self.command(seq, p.Cmd.STATUS).payload)


def nak_of(frame):
    assert frame.code == p.Reply.NAK, frame
    return p.Nak.unpack(frame.payload)


@pytest.fixture
def pair(library):
    return Pair()


def fast_device(port, **kw):
    kw.setdefault("timeout", 0.05)
    kw.setdefault("token_timeout", 0.5)
    kw.setdefault("retries", 6)
    return Device(port, seed=1, **kw)


# --- INFO and STATUS -----------------------------------------------------------------------------

def test_info_is_what_the_build_reports(pair):
    want = info_for(CONFIG, BUILD_HASH, HISTORY)
    info = fast_device(pair.fw).info()
    assert info == dataclasses.replace(want, flags=want.flags | p.InfoFlag.EMULATED) == pair.fw.info
    assert info.flags & p.InfoFlag.SAMPLING
    frame = pair.command(7, p.Cmd.INFO)                     # the golden twin's, byte for byte
    assert frame.code == p.Reply.ACK and p.Info.unpack(frame.payload) == info


def test_status_of_a_fresh_board(pair):
    st = pair.status()
    assert st == p.Status(0, 0, 0, 1, 0, 0, 0, p.DeviceState.IDLE, p.StatusFlag(0))
    assert pair.fw.status_bits == 0


# --- WRITE and VERIFY ----------------------------------------------------------------------------

def test_write_and_verify_every_region(pair):
    rng = random.Random(3)
    seq = 0
    for region, size in enumerate(SIZES):
        for offset, n in ((0, 1), (5, 256), (size - 100, 100), (size // 2, 37)):
            n = min(n, size - offset)
            data = bytes(rng.randrange(256) for _ in range(n))
            seq += 1
            assert pair.command(seq, p.Cmd.WRITE, p.WriteRequest(region, offset, data).pack()).code == p.Reply.ACK
            seq += 1
            f = pair.command(seq, p.Cmd.VERIFY, p.VerifyRequest(region, offset, n).pack())
            assert p.VerifyReply.unpack(f.payload).crc == zlib.crc32(data)
        assert bytes(pair.fw.memory[region]) == bytes(pair.golden.memory[region])
        f = pair.command(seq + 1, p.Cmd.VERIFY, p.VerifyRequest(region, 0, size).pack())
        assert p.VerifyReply.unpack(f.payload).crc == zlib.crc32(pair.golden.memory[region])
        seq += 1
    assert pair.command(200, p.Cmd.VERIFY, p.VerifyRequest(0, 3, 0).pack()).payload == bytes(4)


def test_driver_write_and_verify(pair):
    dev = fast_device(pair.fw)
    data = bytes(random.Random(4).randrange(256) for _ in range(3000))
    dev.write(1, 1000, data)                                # twelve frames, four in flight
    assert dev.verify(1, 1000, len(data)) == zlib.crc32(data)
    assert bytes(pair.fw.memory[1][1000:4000]) == data
    assert dev.verify(1, 0, SIZES[1]) == zlib.crc32(bytes(1000) + data + bytes(SIZES[1] - 4000))


def test_boards_do_not_share_state(library):
    a, b = firmware_board(), firmware_board()
    a.receive(p.encode_frame(1, p.Cmd.WRITE, p.WriteRequest(0, 0, b"\x01\x02").pack()))
    assert a.transmit() and bytes(a.memory[0][:3]) == b"\x01\x02\x00"
    assert not any(bytes(b.memory[0]))
    b.receive(p.encode_frame(2, p.Cmd.STATUS))
    assert p.Status.unpack(p.FrameReceiver().feed(b.transmit())[0].payload).frames_ok == 1


@pytest.mark.parametrize("cmd, region, offset, length, error, arg", [
    (p.Cmd.WRITE, 4, 0, 1, p.Err.BAD_REGION, 4),
    (p.Cmd.WRITE, 255, 0, 1, p.Err.BAD_REGION, 255),
    (p.Cmd.WRITE, 0, SIZES[0], 1, p.Err.BAD_RANGE, SIZES[0]),
    (p.Cmd.WRITE, 3, SIZES[3] - 1, 2, p.Err.BAD_RANGE, SIZES[3] - 1),
    (p.Cmd.WRITE, 2, 0xFFFFFFFF, 1, p.Err.BAD_RANGE, 0xFFFFFFFF),
    (p.Cmd.WRITE, 1, 0xFFFFFF00, 256, p.Err.BAD_RANGE, 0xFFFFFF00),
    (p.Cmd.VERIFY, 4, 0, 0, p.Err.BAD_REGION, 4),
    (p.Cmd.VERIFY, 0, 0, SIZES[0] + 1, p.Err.BAD_RANGE, 0),
    (p.Cmd.VERIFY, 2, SIZES[2] + 1, 0, p.Err.BAD_RANGE, SIZES[2] + 1),
    (p.Cmd.VERIFY, 1, 1, 0xFFFFFFFF, p.Err.BAD_RANGE, 1),
    (p.Cmd.VERIFY, 3, 0xFFFFFFFF, 2, p.Err.BAD_RANGE, 0xFFFFFFFF),
    (p.Cmd.VERIFY, 3, SIZES[3], 0, None, None),            # the empty range at the end: CRC 0
])
def test_write_and_verify_outside_the_regions(pair, cmd, region, offset, length, error, arg):
    if cmd == p.Cmd.WRITE:
        payload = p.WriteRequest(region, offset, bytes(1 + i % 255 for i in range(length))).pack()
    else:
        payload = p.VerifyRequest(region, offset, length).pack()
    f = pair.command(9, cmd, payload)
    if error is None:
        assert f.code == p.Reply.ACK and f.payload == bytes(4)
        return
    assert nak_of(f) == p.Nak(error, cmd, arg)
    assert pair.fw.status_bits & 4                          # the error light
    st = pair.status()
    assert (st.naks_sent, st.last_error) == (1, error)
    assert not any(any(bytes(m)) for m in pair.fw.memory)     # a NAK: nothing written


def test_driver_reports_the_refusals(pair):
    dev = fast_device(pair.fw)
    with pytest.raises(DeviceNak, match="no memory region 4"):
        dev.write(4, 0, b"x")
    with pytest.raises(DeviceNak, match="outside the region"):
        dev.write(3, SIZES[3] - 2, b"abc")
    with pytest.raises(DeviceNak) as e:
        dev.feed([1])
    assert e.value.error == p.Err.NOT_LOADED
    with pytest.raises(DeviceNak) as e:
        dev.generate(3)
    assert e.value.error == p.Err.NOT_LOADED
    assert dev.stop() == 0
    st = dev.status()
    assert st.naks_sent == 4 and st.last_error == p.Err.NOT_LOADED and not st.flags


# --- frames --------------------------------------------------------------------------------------

class _Raw(p.Frame):
    """A frame with a payload longer than any command's (which p.Frame refuses to make)."""

    def __post_init__(self):
        pass


def _frame_cases():
    info = p.encode_frame(5, p.Cmd.INFO)
    bad_crc = bytearray(p.Frame(6, p.Cmd.STATUS).raw())
    bad_crc[-1] ^= 0x40
    full_write = p.encode_frame(8, p.Cmd.WRITE, p.WriteRequest(1, 0, bytes(range(1, 256)) + b"\x01").pack())
    assert len(full_write) - 2 == p.MAX_ENCODED                  # the longest acceptable frame
    oversize = _Raw(9, p.Cmd.WRITE, bytes(p.MAX_PAYLOAD + 1))
    return [
        # (bytes on the wire, the NAK expected: (error, seq, command), or the number of ACKs)
        (b"\x00\x13\x37\x00", (p.Err.BAD_FRAME, 0, 0xFF)),                 # a block runs past the end
        (b"\x00garbage-without-cobs\x00", (p.Err.BAD_FRAME, 0, 0xFF)),
        (info[:-3] + b"\x00", (p.Err.BAD_FRAME, 0, 0xFF)),                  # truncated
        (b"\x00" + p.cobs_encode(b"") + b"\x00", (p.Err.BAD_FRAME, 0, 0xFF)),
        (b"\x00" + p.cobs_encode(b"\x07") + b"\x00", (p.Err.BAD_FRAME, 7, 0xFF)),
        (b"\x00" + p.cobs_encode(b"\x05\x01\x00\x02\x03") + b"\x00", (p.Err.BAD_FRAME, 5, 1)),
        (b"\x00" + p.cobs_encode(bytes(bad_crc)) + b"\x00", (p.Err.BAD_CRC, 6, p.Cmd.STATUS)),
        (b"\x00" + p.cobs_encode(b"\x00\x00\x00\x00\x00\x00") + b"\x00", (p.Err.BAD_CRC, 0, 0)),
        (b"\x00" + bytes(range(1, 256)) * 4 + b"\x00", (p.Err.TOO_LONG, 0, 0xFF)),
        (b"\x00" + b"\x41" * (p.MAX_ENCODED + 1) + b"\x00", (p.Err.TOO_LONG, 0, 0xFF)),
        (b"\x00" + b"\x01" * p.MAX_ENCODED + b"\x00", (p.Err.TOO_LONG, 0, 0)),     # 271 decoded bytes
        (full_write, 1),                                                     # answered: one ACK
        (b"\x00\x00\x00", 0),                                                # empty frames: silence
        (b"\x00\x00" + info + b"\x00\x00", 1),
        (b"\x00" + p.cobs_encode(oversize.raw()) + b"\x00",
         (p.Err.TOO_LONG, 9, p.Cmd.WRITE)),                                  # 271 decoded bytes, intact
    ]


@pytest.mark.parametrize("case", range(len(_frame_cases())))
def test_frame_errors(pair, case):
    wire, expect = _frame_cases()[case]
    frames = pair.send(wire)
    if isinstance(expect, int):                 # this many replies, each an ACK
        assert len(frames) == expect and all(f.code == p.Reply.ACK for f in frames), frames
        return
    (f,) = frames
    error, seq, cmd = expect
    assert f.seq == seq and nak_of(f) == p.Nak(error, cmd, 0)
    st = pair.status()
    assert (st.frames_ok, st.frames_rejected, st.naks_sent, st.last_error) == (1, 1, 1, error)


def test_frames_back_to_back_and_split_anywhere(pair):
    wire = b"".join(p.encode_frame(i, p.Cmd.STATUS) for i in range(10))
    assert len(pair.send(wire)) == 10
    wire = b"".join(p.encode_frame(20 + i, p.Cmd.INFO)[:-1] for i in range(5)) + b"\x00"
    for i in range(0, len(wire), 3):                        # three bytes at a time
        pair.send(wire[i:i + 3])
    st = pair.status()
    assert st.frames_ok == 16 and st.frames_rejected == 0


@pytest.mark.parametrize("code", [0x00, 0x03, 0x12, 0x25, 0x7F, 0x80, 0x81, 0x83, 0xFF])
def test_unknown_command(pair, code):
    f = pair.command(3, code, b"\x01\x02")
    assert nak_of(f) == p.Nak(p.Err.UNKNOWN_COMMAND, code, code)


def _length_cases():
    """(command, payload length, NAK argument): one byte short of and past every range (a WRITE
    past it is a frame too long), and FEEDs that are not whole token ids (argument 0)."""
    cases = []
    for cmd, (lo, hi) in p.REQUEST_LENGTHS.items():
        if lo > 0:
            cases.append((cmd, lo - 1, lo - 1))
        if hi < p.MAX_PAYLOAD:
            cases.append((cmd, hi + 1, hi + 1))
    return cases + [(p.Cmd.FEED, 5, 0), (p.Cmd.FEED, 255, 0)]


@pytest.mark.parametrize("cmd, length, arg", _length_cases())
def test_bad_length(pair, cmd, length, arg):
    f = pair.command(4, cmd, bytes((length * 7 + i) & 0xFF for i in range(length)))
    assert nak_of(f) == p.Nak(p.Err.BAD_LENGTH, cmd, arg)


def test_duplicates_are_answered_not_executed(pair):
    status = p.encode_frame(10, p.Cmd.STATUS)
    first = pair.send(status)
    assert pair.send(status) == first                       # the stored reply, byte for byte
    write = p.encode_frame(11, p.Cmd.WRITE, p.WriteRequest(2, 0, b"\x01\x02").pack())
    assert pair.send(write) == pair.send(write)
    refused = p.encode_frame(12, p.Cmd.WRITE, p.WriteRequest(9, 0, b"\x01").pack())
    assert nak_of(pair.send(refused)[0]).error == p.Err.BAD_REGION
    assert nak_of(pair.send(refused)[0]).error == p.Err.BAD_REGION    # a NAK is evaluated afresh
    assert pair.send(write)[0].code == p.Reply.ACK          # ... and leaves the stored reply alone
    pair.send(b"\x00\x13\x37\x00")                          # so does a frame error
    assert pair.send(write)[0].code == p.Reply.ACK
    same_seq = pair.send(p.encode_frame(11, p.Cmd.STATUS))[0]  # same seq, another CRC: executed
    st = p.Status.unpack(same_seq.payload)
    assert (st.frames_ok, st.frames_rejected, st.naks_sent) == (9, 1, 3)
    assert p.Status.unpack(pair.send(status)[0].payload).frames_ok == 10  # not the stored one now


def test_resend_and_stop_without_a_generation(pair):
    assert nak_of(pair.command(1, p.Cmd.RESEND, p.ResendRequest(0).pack())) == p.Nak(p.Err.GONE, p.Cmd.RESEND, 0)
    f = pair.command(2, p.Cmd.RESEND, p.ResendRequest(0xFFFFFFFF).pack())
    assert nak_of(f) == p.Nak(p.Err.GONE, p.Cmd.RESEND, 0xFFFFFFFF)
    f = pair.command(3, p.Cmd.STOP)
    assert f.code == p.Reply.ACK and p.StopReply.unpack(f.payload).stopped == 0
    for cmd, payload in ((p.Cmd.FEED, p.FeedRequest((1,)).pack()), (p.Cmd.GENERATE, p.GenerateRequest(3).pack())):
        assert nak_of(pair.command(4, cmd, payload)) == p.Nak(p.Err.NOT_LOADED, cmd, 0)
    assert pair.command(5, p.Cmd.RESET_STATE).code == p.Reply.ACK


def test_malformed_frame_storm(pair):
    """Thousands of random, truncated, damaged, overlong and well-formed-but-wrong frames: the two
    byte streams that come back are identical."""
    rng = random.Random(7)
    valid = valid_frames(rng)

    def shape(rng, code, payload):
        if code == p.Cmd.WRITE:             # regions without the model descriptor, in range
            payload[0] = rng.randrange(3)
            n = len(payload)
            payload[4:8] = rng.randrange(SIZES[payload[0]] - (n - 8) + 1).to_bytes(4, "little")
        elif code == p.Cmd.VERIFY:
            payload[0] = rng.randrange(5)
            payload[4:12] = p.VerifyRequest(0, rng.randrange(1000), rng.randrange(30000)).pack()[4:]

    for burst in range(30):
        chunk = malformed_burst(rng, valid, shape=shape)
        pair.send(chunk)
        frames = pair.send(p.encode_frame(burst, p.Cmd.INFO))   # its 00 may end a partial frame first
        assert p.Info.unpack(frames[-1].payload) == pair.fw.info
    for r in range(4):
        assert bytes(pair.fw.memory[r]) == bytes(pair.golden.memory[r])
    st = pair.status()
    assert st.frames_rejected > 1000 and st.frames_ok > 500 and pair.golden.internal_errors == 0


# --- with a model --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """The bundled tiny model: ``(image bytes, quantised model)``."""
    from mmfree.registry import resolve
    model = resolve("tiny")
    return model.image.read_bytes(), model.quantized()


@pytest.fixture(scope="module")
def reference(tiny):
    """64 greedy tokens after PROMPT, from the golden model run directly."""
    from mmfree.golden import GoldenModel
    return list(GoldenModel(tiny[1]).generate(PROMPT, 64))


@pytest.fixture
def loaded(library, tiny):
    """A pair with the tiny model uploaded to both by the driver."""
    pair = Pair()
    for board in (pair.fw, pair.golden):
        fast_device(board).upload(tiny[0])
    for r in range(4):
        assert bytes(pair.fw.memory[r]) == bytes(pair.golden.memory[r])
    return pair


def _feed(pair, seq, tokens):
    f = pair.command(seq, p.Cmd.FEED, p.FeedRequest(tuple(tokens)).pack())
    assert f.code == p.Reply.ACK, f
    return p.FeedReply.unpack(f.payload)


def _tokens(frames):
    return [p.Token.unpack(f.payload).token for f in frames if f.code == p.Reply.TOKEN]


def test_upload_loads_the_model(loaded):
    st = loaded.status()
    assert st.flags == p.StatusFlag.LOADED and st.position == 0
    assert loaded.fw.status_bits == 1


def test_feed_and_greedy_generation(loaded, reference):
    reply = _feed(loaded, 1, PROMPT)
    assert reply == p.FeedReply(len(PROMPT), reference[0], 0)
    assert loaded.command(2, p.Cmd.GENERATE, p.GenerateRequest(40).pack()).payload == b""
    frames = loaded.stream()
    assert _tokens(frames) == reference[:40]
    assert [p.Token.unpack(f.payload).index for f in frames[:-1]] == list(range(40))
    assert all(f.seq == 2 for f in frames)
    assert p.Done.unpack(frames[-1].payload) == p.Done(40, p.DoneReason.COMPLETE)
    st = loaded.status()
    assert (st.tokens_generated, st.position, st.state) == (40, len(PROMPT) + 40, p.DeviceState.IDLE)
    assert st.flags == p.StatusFlag.LOADED | p.StatusFlag.CONTEXT
    assert loaded.command(3, p.Cmd.GENERATE, p.GenerateRequest(10).pack()).code == p.Reply.ACK
    assert _tokens(loaded.stream()) == reference[40:50]    # the sequence goes on


@pytest.mark.parametrize("temperature, top_k, seed", [(205, 20, 0xBEEF), (256, 0, 0), (40, 1, 5),
                                                      (0xFFFF, 65535, 0xFFFFFFFF)])
def test_sampled_generation(loaded, tiny, reference, temperature, top_k, seed):
    from mmfree.golden import GoldenModel
    from mmfree.sampler import reference_generate
    _feed(loaded, 1, PROMPT)
    req = p.GenerateRequest(24, temperature, top_k, seed)
    assert loaded.command(2, p.Cmd.GENERATE, req.pack()).code == p.Reply.ACK
    frames = loaded.stream()
    want = list(reference_generate(GoldenModel(tiny[1]), PROMPT, 24, temperature, top_k, seed))
    assert _tokens(frames) == want
    if top_k != 1:
        assert want != reference[:24]                       # sampled, not greedy


def test_generate_of_nothing(loaded):
    _feed(loaded, 1, PROMPT[:3])
    assert loaded.command(2, p.Cmd.GENERATE, p.GenerateRequest(0).pack()).code == p.Reply.ACK
    (done,) = loaded.stream()
    assert p.Done.unpack(done.payload) == p.Done(0, p.DoneReason.COMPLETE)


def test_feed_and_generate_refusals(loaded):
    assert nak_of(loaded.command(1, p.Cmd.GENERATE, p.GenerateRequest(5).pack())) == \
        p.Nak(p.Err.NO_CONTEXT, p.Cmd.GENERATE, 0)
    f = loaded.command(2, p.Cmd.FEED, p.FeedRequest((1, 2, 256, 0xFFFFFFFF)).pack())
    assert nak_of(f) == p.Nak(p.Err.BAD_TOKEN, p.Cmd.FEED, 256)
    assert loaded.status().position == 0                    # nothing was fed
    assert _feed(loaded, 3, (255,)).position == 1
    loaded.command(4, p.Cmd.RESET_STATE)
    st = loaded.status()
    assert st.position == 0 and st.flags == p.StatusFlag.LOADED


def test_duplicate_feed_is_not_fed_twice(loaded):
    feed = p.encode_frame(40, p.Cmd.FEED, p.FeedRequest((1, 2, 3)).pack())
    first = loaded.send(feed)
    assert loaded.send(feed) == first and p.FeedReply.unpack(first[0].payload).position == 3
    assert _feed(loaded, 41, (1, 2, 3)).position == 6
    assert _feed(loaded, 41, (4,)).position == 7            # same seq, other contents


def test_busy_while_generating(loaded):
    _feed(loaded, 1, PROMPT)
    assert loaded.command(2, p.Cmd.GENERATE, p.GenerateRequest(50).pack()).code == p.Reply.ACK
    for board in (loaded.fw, loaded.golden):                # two tokens
        board.poll(), board.poll()
    assert loaded.fw.transmit() == loaded.golden.transmit()
    assert loaded.fw.status_bits & 2
    for cmd, payload in ((p.Cmd.WRITE, p.WriteRequest(0, 0, b"\x01").pack()),
                         (p.Cmd.VERIFY, p.VerifyRequest(0, 0, 1).pack()), (p.Cmd.RESET_STATE, b""),
                         (p.Cmd.FEED, p.FeedRequest((1,)).pack()), (p.Cmd.FEED, b"\x01" * 5),
                         (p.Cmd.GENERATE, p.GenerateRequest(1).pack())):
        assert nak_of(loaded.command(3, cmd, payload)) == p.Nak(p.Err.BUSY, cmd, 0)
    assert loaded.command(4, p.Cmd.INFO).code == p.Reply.ACK
    st = loaded.status(5)
    assert st.state == p.DeviceState.GENERATING and st.tokens_generated == 2
    f = loaded.command(6, p.Cmd.RESEND, p.ResendRequest(1).pack())
    assert f.code == p.Reply.TOKEN and p.Token.unpack(f.payload).index == 1
    assert loaded.command(7, p.Cmd.RESEND, p.ResendRequest(2).pack()) == p.Frame(7, p.Reply.ACK)
    f = loaded.command(8, p.Cmd.STOP)
    assert p.StopReply.unpack(f.payload).stopped == 1
    (done,) = loaded.stream()                               # STOP ends it before another token
    assert done.seq == 2 and p.Done.unpack(done.payload) == p.Done(2, p.DoneReason.STOPPED)
    assert p.StopReply.unpack(loaded.command(9, p.Cmd.STOP).payload).stopped == 0
    assert _feed(loaded, 10, (1,)).position == len(PROMPT) + 3
    assert loaded.fw.status_bits == 1


def test_stop_right_after_generate(loaded):
    _feed(loaded, 1, PROMPT)
    loaded.command(2, p.Cmd.GENERATE, p.GenerateRequest(100).pack())
    loaded.command(3, p.Cmd.STOP)
    (done,) = loaded.stream()
    assert p.Done.unpack(done.payload) == p.Done(0, p.DoneReason.STOPPED)


def test_resend_within_and_beyond_the_history(loaded, reference):
    _feed(loaded, 1, PROMPT)
    loaded.command(2, p.Cmd.GENERATE, p.GenerateRequest(20).pack())
    loaded.stream()
    for seq, index in enumerate((19, 12, 15), 3):          # the last HISTORY tokens are held
        f = loaded.command(seq, p.Cmd.RESEND, p.ResendRequest(index).pack())
        assert f.code == p.Reply.TOKEN and p.Token.unpack(f.payload) == p.Token(index, reference[index], 0)
    for seq, index in enumerate((11, 0), 10):
        f = loaded.command(seq, p.Cmd.RESEND, p.ResendRequest(index).pack())
        assert nak_of(f) == p.Nak(p.Err.GONE, p.Cmd.RESEND, index)
    for seq, index in enumerate((20, 0xFFFFFFFF), 20):
        f = loaded.command(seq, p.Cmd.RESEND, p.ResendRequest(index).pack())
        assert f.code == p.Reply.DONE and p.Done.unpack(f.payload) == p.Done(20, p.DoneReason.COMPLETE)


def test_model_is_read_again_after_a_write(loaded, tiny):
    from mmfree import memory_map as mm
    _feed(loaded, 1, PROMPT[:5])
    scalars = bytes(loaded.golden.memory[mm.REGION_SCALARS][:16])
    # the same bytes again: the same shape, the state and the position are kept
    loaded.command(2, p.Cmd.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, scalars).pack())
    st = loaded.status(3)
    assert st.position == 5 and st.flags == p.StatusFlag.LOADED | p.StatusFlag.CONTEXT
    assert _feed(loaded, 4, PROMPT[5:8]).position == 8
    # no model: NOT_LOADED, the context gone
    loaded.command(5, p.Cmd.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, bytes(4)).pack())
    st = loaded.status(6)
    assert st.position == 0 and st.flags == 0 and not loaded.fw.status_bits & 1
    assert nak_of(loaded.command(7, p.Cmd.FEED, p.FeedRequest((1,)).pack())).error == p.Err.NOT_LOADED
    # the model back: a new model, its state zeroed
    loaded.command(8, p.Cmd.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, scalars).pack())
    assert nak_of(loaded.command(9, p.Cmd.GENERATE, p.GenerateRequest(1).pack())).error == p.Err.NO_CONTEXT
    fresh = Pair()
    for board in (fresh.fw, fresh.golden):
        fast_device(board).upload(tiny[0])
    assert _feed(loaded, 10, PROMPT) == _feed(fresh, 10, PROMPT)


def test_driver_generation(loaded, reference):
    dev = fast_device(loaded.fw)
    dev.reset_state()
    assert dev.feed(PROMPT).argmax == reference[0]
    gen = dev.generate(32)
    assert list(gen) == reference[:32] and gen.cycles == [0] * 32
    gen = dev.generate(100)
    first = [next(gen) for _ in range(3)]
    count = dev.stop()
    assert 3 <= count < 100 and first + list(gen) == reference[32:32 + count]
    st = dev.status()
    assert st.position == len(PROMPT) + 32 + count and st.state == p.DeviceState.IDLE


def test_driver_over_a_damaged_link(library, tiny, reference):
    board = firmware_board()
    link = FaultyTransport(board, rate=1e-3, seed=2024)
    dev = fast_device(link)
    dev.upload(tiny[0])
    dev.feed(PROMPT)
    assert list(dev.generate(64)) == reference
    assert link.faults > 10 and dev.stats.retransmissions > 0
    st = fast_device(board).status()
    assert st.frames_rejected > 0 and st.position == len(PROMPT) + 64
