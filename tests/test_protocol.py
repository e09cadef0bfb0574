"""The host-link protocol (framing, COBS, CRC, payload layouts) and the device sampler."""

import math
import random
import struct
import zlib

import pytest

from mmfree import protocol as p
from mmfree import sampler as s


# --- constants -----------------------------------------------------------------------------------

def test_limits_fit_one_block_ram():
    assert p.MAX_PAYLOAD == 264 and p.MAX_FRAME == 270 and p.MAX_ENCODED == 272
    assert len(p.Frame(255, p.Cmd.WRITE, bytes(p.MAX_PAYLOAD)).encode()) <= p.MAX_ENCODED + 2 <= 512
    assert p.REQUEST_LENGTHS[p.Cmd.WRITE] == (9, 264)
    assert p.REQUEST_LENGTHS[p.Cmd.FEED] == (4, 256)


def test_codes_are_distinct_and_replies_have_bit7():
    cmds = [int(c) for c in p.Cmd]
    replies = [int(r) for r in p.Reply]
    assert len(set(cmds + replies)) == len(cmds) + len(replies)
    assert all(0 < c < 0x80 for c in cmds) and all(r & 0x80 for r in replies)
    assert set(p.REQUEST_LENGTHS) == set(p.Cmd)
    assert len({int(e) for e in p.Err}) == len(p.Err) and 0 not in {int(e) for e in p.Err}


def test_crc_is_zlib_and_residue_constant():
    rng = random.Random(0)
    for n in (0, 1, 5, 100, 268):
        body = bytes(rng.randrange(256) for _ in range(n))
        assert p.crc32(body) == zlib.crc32(body)
        assert p.crc32(body + struct.pack("<I", zlib.crc32(body))) == p.CRC_RESIDUE
    assert p.crc32(b"123456789") == 0xCBF43926       # the CRC-32/ISO-HDLC check value


# --- COBS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("data,encoded", [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
])
def test_cobs_known_vectors(data, encoded):
    assert p.cobs_encode(data) == encoded
    assert p.cobs_decode(encoded) == data


@pytest.mark.parametrize("n", [253, 254, 255, 508, 509])
def test_cobs_long_runs(n):
    data = bytes((i % 255) + 1 for i in range(n))
    enc = p.cobs_encode(data)
    assert 0 not in enc and len(enc) <= p.cobs_max_length(n)
    assert enc[0] == min(n, 254) + 1
    assert p.cobs_decode(enc) == data
    for tail in (b"\x00", b"\x00\x07"):
        assert p.cobs_decode(p.cobs_encode(data + tail)) == data + tail


def test_cobs_random_round_trips():
    rng = random.Random(1)
    for _ in range(400):
        n = rng.randrange(0, 600)
        zeros = rng.choice((0.0, 0.01, 0.3, 1.0))
        data = bytes(0 if rng.random() < zeros else rng.randrange(1, 256) for _ in range(n))
        enc = p.cobs_encode(data)
        assert 0 not in enc and len(enc) <= p.cobs_max_length(n)
        assert p.cobs_decode(enc) == data


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x03\x11", b"\x02\x00", b"\x05\x11\x00\x22\x33", b"\xff"])
def test_cobs_rejects_invalid(bad):
    with pytest.raises(p.CobsError):
        p.cobs_decode(bad)


# --- frames --------------------------------------------------------------------------------------

def test_frame_round_trip_and_wire_form():
    f = p.Frame(7, p.Cmd.WRITE, p.WriteRequest(1, 0x1234, bytes(range(256))).pack())
    wire = f.encode()
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert p.decode_frame(wire[1:-1]) == f
    raw = f.raw()
    assert raw[:2] == bytes((7, p.Cmd.WRITE)) and struct.unpack("<I", raw[-4:])[0] == f.crc


def test_frame_validates_fields():
    with pytest.raises(ValueError, match="seq must be 0..255"):
        p.Frame(256, 1)
    with pytest.raises(ValueError, match="exceeds MAX_PAYLOAD"):
        p.Frame(0, 1, bytes(p.MAX_PAYLOAD + 1))


def test_receiver_splits_stream_at_any_chunking():
    frames = [p.Frame(i, p.Cmd.FEED, p.FeedRequest(tuple(range(i + 1))).pack()) for i in range(5)]
    stream = b"".join(f.encode() for f in frames)
    rng = random.Random(2)
    for _ in range(20):
        rx = p.FrameReceiver()
        got = []
        pos = 0
        while pos < len(stream):
            step = rng.randrange(1, 40)
            got += rx.feed(stream[pos:pos + step])
            pos += step
        assert got == frames


def test_receiver_resynchronises_after_garbage():
    f = p.Frame(3, p.Cmd.INFO)
    rx = p.FrameReceiver()
    out = rx.feed(b"\x12\x34\x56garbage")
    assert out == []
    out = rx.feed(f.encode())                 # the leading delimiter ends the garbage
    assert isinstance(out[0], p.FrameError) and out[0].error == p.Err.BAD_FRAME
    assert out[1:] == [f]
    assert rx.feed(b"\x00\x00\x00") == []     # empty frames are ignored


def test_receiver_overlong_frame_is_one_error():
    rx = p.FrameReceiver()
    out = rx.feed(b"\x00" + b"\x01" * 5000 + b"\x00" + p.Frame(1, p.Cmd.STATUS).encode())
    assert [type(x) for x in out] == [p.FrameError, p.Frame]
    assert out[0].error == p.Err.TOO_LONG


def test_every_single_bit_flip_is_detected():
    f = p.Frame(9, p.Cmd.VERIFY, p.VerifyRequest(0, 100, 2000).pack())
    wire = bytearray(f.encode())
    for i in range(1, len(wire) - 1):
        for bit in range(8):
            bad = bytearray(wire)
            bad[i] ^= 1 << bit
            for item in p.FrameReceiver().feed(bytes(bad)):
                assert isinstance(item, p.FrameError)


def test_truncated_and_short_frames():
    wire = p.Frame(5, p.Cmd.GENERATE, p.GenerateRequest(10).pack()).encode()
    for cut in range(2, len(wire) - 1):
        out = p.FrameReceiver().feed(wire[:cut] + b"\x00")
        assert len(out) == 1 and isinstance(out[0], p.FrameError)
    out = p.FrameReceiver().feed(b"\x00" + p.cobs_encode(b"\x05\x01\x02") + b"\x00")
    assert out[0].error == p.Err.BAD_FRAME and (out[0].seq, out[0].code) == (5, 1)
    out = p.FrameReceiver().feed(b"\x00" + p.cobs_encode(b"\x05\x01\x02\x03\x04\x05") + b"\x00")
    assert out[0].error == p.Err.BAD_CRC and out[0].seq == 5


# --- payloads ------------------------------------------------------------------------------------

def test_payload_round_trips():
    info = p.Info(1, 64, 1, 1, 256, 512, 1536, 12, 50_000_000, 0xDEADBEEF, 256, 256,
                  p.InfoFlag.SAMPLING, (p.Region(b"TRIT", 1 << 20), p.Region(b"PARM", 65536)), 4)
    raw = info.pack()
    assert len(raw) == p.Info.SIZE + 16 == 64 and raw[:4] == p.INFO_MAGIC
    assert raw[44:48] == b"\x04\x00\x00\x00" and raw[48:52] == b"TRIT"
    assert p.Info.unpack(raw) == info and p.Info.unpack(raw).rows == 4
    assert p.Info.unpack(raw).regions[0].name == "TRIT"
    st = p.Status(1000, 5, 20, 100, 3, 4, p.Err.BAD_CRC, p.DeviceState.GENERATING,
                  p.StatusFlag.LOADED | p.StatusFlag.CONTEXT)
    assert len(st.pack()) == 28 and p.Status.unpack(st.pack()) == st
    for obj in (p.WriteRequest(2, 4096, b"\x00\x01\x02"), p.VerifyRequest(1, 8, 300), p.VerifyReply(0xFFFFFFFF),
                p.FeedRequest((1, 2, 0xFFFFFFFF)), p.FeedReply(3, 4, 5), p.GenerateRequest(50, 256, 40, 7),
                p.StopReply(1), p.ResendRequest(12), p.Token(3, 65, 999), p.Done(10, p.DoneReason.STOPPED),
                p.Nak(p.Err.BUSY, p.Cmd.FEED, 17)):
        assert type(obj).unpack(obj.pack()) == obj


def test_fixed_layout_offsets():
    assert p.WriteRequest(3, 0x01020304, b"\xaa").pack() == b"\x03\x00\x00\x00\x04\x03\x02\x01\xaa"
    assert p.GenerateRequest(0x10, 0x0180, 5, 0x11223344).pack() == bytes.fromhex("10000000800105004433" "2211")
    assert p.Token(1, 2, 3).pack() == bytes.fromhex("010000000200000003000000")
    assert p.Nak(p.Err.GONE, 0x24, 9).pack() == bytes.fromhex("0c24000009000000")


def test_payload_length_errors():
    with pytest.raises(p.PayloadError, match="VERIFY payload is 3 bytes"):
        p.VerifyRequest.unpack(b"\x00\x00\x00")
    with pytest.raises(p.PayloadError, match="multiple of 4"):
        p.FeedRequest.unpack(b"\x01\x00\x00")
    with pytest.raises(p.PayloadError):
        p.FeedRequest.unpack(b"")
    with pytest.raises(p.PayloadError):
        p.WriteRequest.unpack(bytes(8))
    with pytest.raises(p.PayloadError):
        p.WriteRequest.unpack(bytes(8 + 257))
    with pytest.raises(ValueError, match="FEED carries 1..64 tokens"):
        p.FeedRequest(tuple(range(65))).pack()
    with pytest.raises(p.PayloadError, match="magic"):
        p.Info.unpack(b"XXXX" + bytes(p.Info.SIZE - 4))


# --- sampler -------------------------------------------------------------------------------------

def test_sampler_constants():
    assert s.LOG2E_Q22 == round(math.log2(math.e) * 2 ** 22)
    assert s.EXP2_TABLE[0] == 32768 and len(s.EXP2_TABLE) == 64
    for f, v in enumerate(s.EXP2_TABLE):
        assert abs(v - 2 ** (15 - f / 64)) <= 0.5
    assert s.temperature_code(0) == 0 and s.temperature_code(-1) == 0
    assert s.temperature_code(1.0) == 256 and s.temperature_code(0.7) == 179
    assert s.temperature_code(1e-9) == 1 and s.temperature_code(1e9) == 0xFFFF


def test_lfsr_is_maximal_length():
    """The step map's order is 2**32 - 1 and no proper divisor of it (so every non-zero state recurs
    only after visiting all 2**32 - 1)."""
    def apply(cols, v):
        r, i = 0, 0
        while v:
            if v & 1:
                r ^= cols[i]
            v >>= 1
            i += 1
        return r

    def power(m, e):
        res = [1 << i for i in range(32)]
        while e:
            if e & 1:
                res = [apply(m, c) for c in res]
            m = [apply(m, c) for c in m]
            e >>= 1
        return res

    step = [s.lfsr_step(1 << i) for i in range(32)]
    ident = [1 << i for i in range(32)]
    n = 2 ** 32 - 1
    assert power(step, n) == ident
    for q in (3, 5, 17, 257, 65537):
        assert power(step, n // q) != ident
    x = 1
    for _ in range(32):
        x = s.lfsr_step(x)
    assert s.lfsr_draw(1) == x and s.seed_state(0) == s.SEED_ZERO


def test_greedy_is_argmax_lowest_index():
    smp = s.Sampler()
    assert smp.pick([3, 9, 9, 1]) == 1
    assert smp.pick([-5, -7]) == 0


def test_sampling_follows_softmax():
    rng = random.Random(3)
    logits = [rng.randrange(-3 * 4096, 3 * 4096) for _ in range(12)]
    code = s.temperature_code(0.8)
    smp = s.Sampler(code, 0, 12345)
    counts = [0] * len(logits)
    n = 6000
    for _ in range(n):
        counts[smp.pick(logits)] += 1
    z = [math.exp(v / 4096 / 0.8) for v in logits]
    probs = [v / sum(z) for v in z]
    for c, q in zip(counts, probs):
        assert abs(c / n - q) < 4 * math.sqrt(q * (1 - q) / n) + 0.003


def test_sampling_top_k_and_ties():
    logits = [100, 500, 500, 300, 200, 50]
    smp = s.Sampler(s.temperature_code(5.0), 2, 1)
    picks = {smp.pick(logits) for _ in range(300)}
    assert picks == {1, 2}                                  # the two largest
    smp = s.Sampler(s.temperature_code(5.0), 3, 1)
    assert {smp.pick(logits) for _ in range(500)} == {1, 2, 3}
    assert s.top_k_threshold([5, 5, 5, 1], 2) == 5          # ties at the threshold are kept
    w = s.weights([5, 5, 5, 1], 256, 2)
    assert w[:3] == [32768] * 3 and w[3] == 0


def test_sampling_is_deterministic_per_seed():
    rng = random.Random(4)
    logits = [rng.randrange(-4096, 4096) for _ in range(256)]
    a = [s.Sampler(300, 40, 9).pick(logits) for _ in range(3)]
    smp1, smp2, smp3 = s.Sampler(300, 40, 9), s.Sampler(300, 40, 9), s.Sampler(300, 40, 10)
    seq1 = [smp1.pick(logits) for _ in range(50)]
    assert seq1 == [smp2.pick(logits) for _ in range(50)]
    assert seq1 != [smp3.pick(logits) for _ in range(50)]
    assert a == [seq1[0]] * 3


def test_sampler_validates_arguments():
    with pytest.raises(ValueError, match="temperature code must be 0..65535"):
        s.Sampler(70000)
    with pytest.raises(ValueError, match="seed must be a 32-bit"):
        s.Sampler(1, 0, -1)
