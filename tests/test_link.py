# amaranth: UnusedElaboratable=no
"""The host link (:class:`mmfree.hw.link.Link`) in the Amaranth simulator, with frames made by
:mod:`mmfree.protocol`: every command, the NAK cases, retransmission, garbage and damaged frames.

The link drives a stand-in for the core (:class:`FakeCore`): the four region memories with the real
word widths, and a step whose answer is a simple function of the token and a running state
(:class:`FakeModel`), so that these tests run in seconds. Frame-level answers (damaged frames, unknown
commands, bad lengths) are compared byte for byte with the golden board's.
"""

import random
import struct
import zlib

import pytest
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.sim import Simulator

from mmfree import memory_map as mm
from mmfree import protocol as p
from mmfree.driver.golden_board import GoldenBoard
from mmfree.golden import ModelShape
from mmfree.sampler import Sampler
from mmfree.hw.config import HwConfig
from mmfree.hw.core import LOGITS_READ_LATENCY, REGION_PORTS, REGION_READ_LATENCY, Command
from mmfree.hw.link import (Link, FrameSender, core_signature, info_for, region_sizes,
                            _region_words)

pytestmark = pytest.mark.sim

CONFIG = HwConfig.for_model(ModelShape(vocab_size=32, hidden_size=16, num_layers=2, intermediate_size=32),
                            lanes=8, clk_freq=25_000_000)
BUILD_HASH = 0x5EED1234
LATENCY = 12


class FakeModel:
    """What :class:`FakeCore` computes: ``next = (7 tok + h + 3) mod V``, ``h += tok + 1``."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.h = 0

    def step(self, tok):
        nxt = (7 * tok + self.h + 3) % self.vocab
        self.h = (self.h + tok + 1) & 0xFFFF
        return nxt, LATENCY + tok % 4

    def reset(self):
        self.h = 0

    def logits(self):
        """What :class:`FakeCore` leaves in ``Y``: ``((37 i + 11 h) mod 256 - 128) * 256``."""
        return [(((37 * i + 11 * self.h) & 0xFF) - 128) << 8 for i in range(self.vocab)]


class FakeCore(wiring.Component):
    """The core's ports (:func:`mmfree.hw.link.core_signature`, flipped) over plain memories."""

    def __init__(self, config):
        self.config = config
        super().__init__(core_signature(config).flip())

    def elaborate(self, platform):
        m = Module()
        self.mems = {}
        for r, (wb, depth, bits) in _region_words(self.config).items():
            name = REGION_PORTS[r]
            mem = m.submodules[name] = memory.Memory(shape=bits, depth=depth, init=[])
            self.mems[r] = mem
            wr, rd = getattr(self, f"wr_{name}"), getattr(self, f"rd_{name}")
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(wr.addr), wp.data.eq(wr.data), wp.en.eq(wr.en),
                         rp.addr.eq(rd.addr)]
            data = rp.data
            for _ in range(REGION_READ_LATENCY - 1):    # as the core answers: registered again
                reg = Signal.like(data)
                m.d.sync += reg.eq(data)
                data = reg
            m.d.comb += rd.data.eq(data)
        vp = self.mems[mm.REGION_SCALARS].read_port(domain="comb")
        V = vp.data
        h = Signal(16)
        tok = Signal(16)
        left = Signal(8)
        cycles = Signal(32)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    with m.If(self.req.payload.cmd == Command.RESET_STATE):
                        m.d.sync += h.eq(0)
                    with m.Else():
                        tok_in = self.req.payload.token
                        m.d.sync += [tok.eq(tok_in), left.eq(LATENCY - 2 + tok_in[:2])]
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += left.eq(left - 1)
                with m.If(left == 0):
                    m.d.sync += cycles.eq(LATENCY + tok[:2])
                    m.next = "RESULT"
            with m.State("RESULT"):
                err = (V == 0) | (tok >= V)
                m.d.comb += [self.res.valid.eq(1), self.res.payload.error.eq(err),
                             self.res.payload.token.eq(Mux(err, 0, (7 * tok + h + 3) % Mux(err, 1, V)))]
                with m.If(self.res.ready):
                    m.d.sync += h.eq(h + tok + 1)
                    m.next = "IDLE"
        m.d.comb += self.cycles.eq(cycles)
        logit = Signal(signed(24))
        m.d.comb += logit.eq((((self.rd_logits.addr * 37 + h * 11) & 0xFF) - 128) << 8)
        for _ in range(LOGITS_READ_LATENCY):               # the core's Y: the word two clocks on
            nxt = Signal(signed(24))
            m.d.sync += nxt.eq(logit)
            logit = nxt
        m.d.comb += self.rd_logits.data.eq(logit)
        return m


class LinkDut(wiring.Component):
    def __init__(self, config=CONFIG, token_history=8):
        self.link = Link(config, BUILD_HASH, token_history=token_history)
        self.fake = FakeCore(config)
        super().__init__({"rx": wiring.In(stream.Signature(8)), "tx": wiring.Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link, m.submodules.core = self.link, self.fake
        wiring.connect(m, self.link.core, self.fake)
        wiring.connect(m, wiring.flipped(self.rx), self.link.rx)
        wiring.connect(m, self.link.tx, wiring.flipped(self.tx))
        return m


# --- a host in the testbench ---------------------------------------------------------------------

class Host:
    """Sends bytes to ``dut.rx`` and collects what ``dut.tx`` sends, as protocol frames."""

    def __init__(self, dut, seed=0, stall=0.0):
        self.dut = dut
        self.rng = random.Random(seed)
        self.stall = stall
        self.rx = p.FrameReceiver()
        self.frames = []            # Frame or FrameError, in arrival order
        self.raw = bytearray()
        self.seq = 0x40

    async def collect(self, ctx):
        """Background testbench: take every byte of ``tx`` (with random stalls)."""
        ready = 1
        ctx.set(self.dut.tx.ready, ready)
        async for _, _, valid, payload in ctx.tick().sample(self.dut.tx.valid, self.dut.tx.payload):
            if valid and ready:
                self.raw.append(payload)
                self.frames += self.rx.feed(bytes([payload]))
            if self.stall:
                ready = int(self.rng.random() >= self.stall)
                ctx.set(self.dut.tx.ready, ready)

    async def send(self, ctx, data):
        for b in data:
            ctx.set(self.dut.rx.payload, b)
            ctx.set(self.dut.rx.valid, 1)
            await ctx.tick().until(self.dut.rx.ready)
        ctx.set(self.dut.rx.valid, 0)

    async def wait(self, ctx, n, limit=200_000, since=None):
        """Wait until ``n`` frames after the first ``since`` (default: those here now) have arrived;
        return them."""
        start = len(self.frames) if since is None else since
        for _ in range(limit):
            if len(self.frames) >= start + n:
                return self.frames[start:start + n]
            await ctx.tick()
        raise AssertionError(f"{len(self.frames) - start} of {n} frames within {limit} cycles")

    async def idle(self, ctx, cycles=400):
        """Let ``cycles`` pass; return the frames that arrived meanwhile."""
        start = len(self.frames)
        await ctx.tick().repeat(cycles)
        return self.frames[start:]

    def next_seq(self):
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    async def command(self, ctx, code, payload=b"", seq=None, frames=1):
        """Send a command; return its reply frame (or the first ``frames`` frames)."""
        seq = self.next_seq() if seq is None else seq
        start = len(self.frames)
        await self.send(ctx, p.encode_frame(seq, code, payload))
        got = await self.wait(ctx, frames, since=start)
        for f in got:
            assert isinstance(f, p.Frame), f
            assert f.seq == seq, (f, seq)
        return got[0] if frames == 1 else got


def run(dut, bench, host):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host.collect, background=True)
    sim.add_testbench(bench)
    sim.run()


def ack(frame, size=None):
    assert frame.code == p.Reply.ACK, f"expected ACK, got {frame}: {nak_text(frame)}"
    if size is not None:
        assert len(frame.payload) == size
    return frame.payload


def nak_text(frame):
    if frame.code == p.Reply.NAK:
        return str(p.Nak.unpack(frame.payload))
    return ""


def expect_nak(frame, error, command=None, arg=None):
    assert frame.code == p.Reply.NAK, f"expected NAK {error.name}, got {frame}"
    n = p.Nak.unpack(frame.payload)
    assert n.error == error, f"expected {error.name}, got {n}"
    if command is not None:
        assert n.command == command, n
    if arg is not None:
        assert n.arg == arg, n
    return n


def write_frames(region, blob, offset=0, chunk=p.MAX_WRITE):
    out = []
    for k in range(0, len(blob), chunk):
        out.append((p.Cmd.WRITE, p.WriteRequest(region, offset + k, blob[k:k + chunk]).pack()))
    return out


def descriptor(V=32, H=16, L=2, I=32):
    return struct.pack("<4I", V, H, L, I)


# --- unit pieces ---------------------------------------------------------------------------------

def test_sender_encodes_like_protocol():
    """FrameSender against cobs_encode and crc32, including zeros at the ends and runs of zeros."""
    sender = FrameSender(64)
    bodies = [bytes([5, 1]), bytes([0, 0x80]), bytes([7, 0x81, 0, 0, 0, 0]), bytes([1, 2]) + bytes(20),
              bytes(range(1, 40)), bytes([0]) * 30, bytes([9, 0x82]) + bytes(range(256))[200:230]]
    out = bytearray()

    async def bench(ctx):
        for body in bodies:
            ctx.set(sender.length, len(body))
            ctx.set(sender.start, 1)
            await ctx.tick()
            ctx.set(sender.start, 0)
            ctx.set(sender.o.ready, 1)
            before = 0                      # the index of the clock before: byte answers it
            while True:
                ctx.set(sender.byte, body[before] if before < len(body) else 0)
                before = ctx.get(sender.index)
                if ctx.get(sender.o.valid):
                    out.append(ctx.get(sender.o.payload))
                await ctx.tick()
                if not ctx.get(sender.busy):
                    break

    sim = Simulator(sender)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = b"".join(b"\0" + p.cobs_encode(body + struct.pack("<I", p.crc32(body))) + b"\0" for body in bodies)
    assert bytes(out) == want


def test_signature_matches_core():
    from mmfree.hw.core import Core
    assert core_signature(CONFIG).flip() == Core(CONFIG).signature


def test_info_contents():
    info = info_for(CONFIG, BUILD_HASH, 8)
    assert p.Info.unpack(info.pack()) == info
    assert info.clock_hz == 25_000_000 and info.build_hash == BUILD_HASH and info.token_history == 8
    assert info.flags == p.InfoFlag.SAMPLING
    assert [r.tag for r in info.regions] == [mm.REGION_TAGS[r] for r in range(4)]
    sizes = region_sizes(CONFIG)
    assert [r.size for r in info.regions] == [sizes[r] for r in range(4)]
    assert sizes[mm.REGION_TRITS] == CONFIG.trit_bytes and sizes[mm.REGION_PARAMS] == 2 * CONFIG.param_words


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(build_hash=1 << 32), ValueError, r"build_hash must be in \[0, 2\*\*32\), not 4294967296"),
    (dict(build_hash="x"), TypeError, "build_hash must be an int, not 'x'"),
    (dict(token_history=6), ValueError, "token_history must be a power of two from 1 to 32768, not 6"),
])
def test_link_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        Link(CONFIG, **kwargs)
    with pytest.raises(TypeError, match="config must be a HwConfig"):
        Link({})


# --- the protocol --------------------------------------------------------------------------------

def test_info_status_and_retransmission():
    dut = LinkDut()
    host = Host(dut, seed=1, stall=0.3)

    async def bench(ctx):
        f = await host.command(ctx, p.Cmd.INFO, seq=5)
        assert f.raw() == p.Frame(5, p.Reply.ACK, dut.link.info_bytes).raw()
        assert p.Info.unpack(ack(f)) == dut.link.info
        st = p.Status.unpack(ack(await host.command(ctx, p.Cmd.STATUS)))
        assert (st.frames_ok, st.frames_rejected, st.naks_sent, st.last_error, st.state, st.flags) == \
            (2, 0, 0, 0, p.DeviceState.IDLE, 0)
        # the same STATUS again (seq and CRC equal): the stored reply, byte for byte
        seq = host.next_seq()
        first = await host.command(ctx, p.Cmd.STATUS, seq=seq)
        again = await host.command(ctx, p.Cmd.STATUS, seq=seq)
        assert again == first
        # a new command that reuses the seq executes
        third = await host.command(ctx, p.Cmd.INFO, seq=seq)
        assert third.payload == dut.link.info_bytes
        st = p.Status.unpack(ack(await host.command(ctx, p.Cmd.STATUS)))
        assert st.frames_ok == 6
        # a NAK does not replace the stored reply: INFO, a bad command, INFO again with the same seq
        await host.command(ctx, p.Cmd.INFO, seq=0x33)
        expect_nak(await host.command(ctx, 0x7E, seq=0x34), p.Err.UNKNOWN_COMMAND, 0x7E, 0x7E)
        again = await host.command(ctx, p.Cmd.INFO, seq=0x33)
        assert again.payload == dut.link.info_bytes
        st = p.Status.unpack(ack(await host.command(ctx, p.Cmd.STATUS)))
        assert (st.naks_sent, st.last_error) == (1, p.Err.UNKNOWN_COMMAND)

    run(dut, bench, host)


def test_write_verify_partial_words():
    """WRITE at every alignment and length merges into the words around it; VERIFY of any range is
    crc32 of the same bytes of a mirror; GATES keep 17 bits of each 32-bit word."""
    dut = LinkDut()
    host = Host(dut, seed=2)
    rng = random.Random(2)
    sizes = region_sizes(CONFIG)
    mirror = {r: bytearray(n) for r, n in sizes.items()}

    def gate_mask(r, blob):
        if r != mm.REGION_GATES:
            return blob
        out = bytearray(blob)
        for k in range(0, len(out), 4):
            w = int.from_bytes(out[k:k + 4], "little") & ((1 << 17) - 1)
            out[k:k + 4] = w.to_bytes(4, "little")
        return out

    async def bench(ctx):
        for r in range(4):
            n = min(sizes[r], 600)
            for _ in range(6):
                off = rng.randrange(0, n - 1)
                length = rng.randrange(1, min(p.MAX_WRITE, n - off) + 1)
                data = bytes(rng.randrange(1, 256) for _ in range(length))
                ack(await host.command(ctx, p.Cmd.WRITE, p.WriteRequest(r, off, data).pack()), 0)
                mirror[r][off:off + length] = data
                mirror[r][:] = gate_mask(r, mirror[r])
            for off, length in [(0, n), (1, 7), (3, 0), (rng.randrange(n), 1), (n - 5, 5)]:
                f = await host.command(ctx, p.Cmd.VERIFY, p.VerifyRequest(r, off, length).pack())
                crc = p.VerifyReply.unpack(ack(f)).crc
                assert crc == zlib.crc32(mirror[r][off:off + length]), (r, off, length)
        # the last byte of a region and the whole of the largest one
        r = mm.REGION_SCALARS
        ack(await host.command(ctx, p.Cmd.WRITE, p.WriteRequest(r, sizes[r] - 1, b"\x99").pack()))
        mirror[r][-1] = 0x99
        f = await host.command(ctx, p.Cmd.VERIFY, p.VerifyRequest(r, 0, sizes[r]).pack())
        assert p.VerifyReply.unpack(ack(f)).crc == zlib.crc32(mirror[r])

    run(dut, bench, host)


def test_nak_cases():
    dut = LinkDut()
    host = Host(dut, seed=3)
    sizes = region_sizes(CONFIG)

    async def bench(ctx):
        C = p.Cmd
        expect_nak(await host.command(ctx, 0x05), p.Err.UNKNOWN_COMMAND, 0x05, 0x05)
        expect_nak(await host.command(ctx, p.Reply.ACK), p.Err.UNKNOWN_COMMAND, 0x80, 0x80)
        for cmd, (lo, hi) in p.REQUEST_LENGTHS.items():
            for n in {lo - 1, hi + 1} - {-1}:
                if n <= p.MAX_PAYLOAD:
                    expect_nak(await host.command(ctx, cmd, bytes(n)), p.Err.BAD_LENGTH, cmd, n)
        expect_nak(await host.command(ctx, C.FEED, bytes(6)), p.Err.BAD_LENGTH, C.FEED, 6)
        expect_nak(await host.command(ctx, C.WRITE, p.WriteRequest(4, 0, b"x").pack()),
                   p.Err.BAD_REGION, C.WRITE, 4)
        expect_nak(await host.command(ctx, C.VERIFY, p.VerifyRequest(9, 0, 1).pack()),
                   p.Err.BAD_REGION, C.VERIFY, 9)
        n = sizes[mm.REGION_PARAMS]
        expect_nak(await host.command(ctx, C.WRITE, p.WriteRequest(1, n - 1, b"ab").pack()),
                   p.Err.BAD_RANGE, C.WRITE, n - 1)
        expect_nak(await host.command(ctx, C.VERIFY, p.VerifyRequest(1, 1, n).pack()),
                   p.Err.BAD_RANGE, C.VERIFY, 1)
        expect_nak(await host.command(ctx, C.VERIFY, p.VerifyRequest(1, 0xFFFFFFFF, 2).pack()),
                   p.Err.BAD_RANGE, C.VERIFY, 0xFFFFFFFF)
        expect_nak(await host.command(ctx, C.FEED, p.FeedRequest((1,)).pack()), p.Err.NOT_LOADED, C.FEED)
        expect_nak(await host.command(ctx, C.GENERATE, p.GenerateRequest(3).pack()), p.Err.NOT_LOADED)
        expect_nak(await host.command(ctx, C.RESEND, p.ResendRequest(0).pack()), p.Err.GONE, C.RESEND, 0)
        # a descriptor of a model that does not fit is not loaded: H = 24 is no multiple of 8 lanes
        ack(await host.command(ctx, C.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, descriptor(H=24)).pack()))
        expect_nak(await host.command(ctx, C.FEED, p.FeedRequest((1,)).pack()), p.Err.NOT_LOADED)
        st = p.Status.unpack(ack(await host.command(ctx, C.STATUS)))
        assert st.flags == 0
        ack(await host.command(ctx, C.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, descriptor()).pack()))
        st = p.Status.unpack(ack(await host.command(ctx, C.STATUS)))
        assert st.flags == p.StatusFlag.LOADED
        expect_nak(await host.command(ctx, C.GENERATE, p.GenerateRequest(3).pack()), p.Err.NO_CONTEXT)
        expect_nak(await host.command(ctx, C.FEED, p.FeedRequest((1, 2, 32, 40)).pack()),
                   p.Err.BAD_TOKEN, C.FEED, 32)
        st = p.Status.unpack(ack(await host.command(ctx, C.STATUS)))
        assert st.position == 0 and st.flags == p.StatusFlag.LOADED       # nothing was fed
        ack(await host.command(ctx, C.FEED, p.FeedRequest((1,)).pack()))
        st = p.Status.unpack(ack(await host.command(ctx, C.STATUS)))
        assert st.last_error == p.Err.BAD_TOKEN and st.flags == p.StatusFlag.LOADED | p.StatusFlag.CONTEXT

    run(dut, bench, host)


def _golden_answer(data):
    """The golden board's bytes for ``data`` (frame-level errors need no model)."""
    board = GoldenBoard(image_region_size=16)
    board.receive(data)
    return board.transmit()


def test_damaged_frames_like_golden_board():
    """Garbage, truncated, bad-CRC, bad-COBS, too-long and empty frames: NAKs identical to the golden
    board's, nothing else; a valid INFO is answered after each burst."""
    dut = LinkDut()
    host = Host(dut, seed=4)
    rng = random.Random(4)
    good = p.encode_frame(9, p.Cmd.STATUS)
    raw = p.Frame(9, p.Cmd.STATUS).raw()
    bursts = [
        b"\0\0\0",                                              # empty frames: no answer
        b"\0\x01\0",                                            # decodes to nothing
        b"\0\x03\x07\0",                                        # two decoded bytes
        b"\0" + p.cobs_encode(raw[:-1]) + b"\0",                # truncated: bad CRC
        good[:-4] + b"\0",                                      # cut short, COBS block unfinished
        b"\0" + p.cobs_encode(raw[:-1] + bytes([raw[-1] ^ 1])) + b"\0",   # one bit flipped
        b"\0" + bytes(rng.randrange(1, 256) for _ in range(300)) + b"\0",  # too long
        b"\0" + p.cobs_encode(bytes(271)) + b"\0",              # 271 decoded bytes: too long
        b"\0" + p.cobs_encode(bytes([1, 0x21]) + bytes(269)) + b"\0",       # too long, seq and code read
        bytes(rng.randrange(256) for _ in range(400)),          # random bytes
        p.encode_frame(3, 0x99) + p.encode_frame(4, p.Cmd.FEED, bytes(2)),   # intact, refused
    ]

    async def bench(ctx):
        for k, burst in enumerate(bursts):
            start = len(host.raw)
            await host.send(ctx, burst + b"\0")
            await host.idle(ctx, 3000)
            got = bytes(host.raw[start:])
            assert got == _golden_answer(burst + b"\0"), (k, got)
            f = await host.command(ctx, p.Cmd.INFO)
            assert f.payload == dut.link.info_bytes
        st = p.Status.unpack(ack(await host.command(ctx, p.Cmd.STATUS)))
        want = GoldenBoard(image_region_size=16)
        for burst in bursts:
            want.receive(burst + b"\0")
        assert (st.frames_rejected, st.naks_sent) == (want.frames_rejected, want.naks_sent)

    run(dut, bench, host)


def test_descriptor_rewrite():
    """Writing the model descriptor again with the same words keeps the context and position; a
    descriptor that differs in any word (here one byte of V) drops them, as the golden board does."""
    dut = LinkDut()
    host = Host(dut, seed=8)

    async def bench(ctx):
        C = p.Cmd

        async def status():
            return p.Status.unpack(ack(await host.command(ctx, C.STATUS)))

        ack(await host.command(ctx, C.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, descriptor()).pack()))
        ack(await host.command(ctx, C.RESET_STATE))
        ack(await host.command(ctx, C.FEED, p.FeedRequest((1, 2)).pack()))
        both = p.StatusFlag.LOADED | p.StatusFlag.CONTEXT
        st = await status()
        assert (st.position, st.flags) == (2, both)
        ack(await host.command(ctx, C.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, descriptor()).pack()))
        st = await status()
        assert (st.position, st.flags) == (2, both)
        ack(await host.command(ctx, C.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, b"\x10").pack()))
        st = await status()
        assert (st.position, st.flags) == (0, p.StatusFlag.LOADED)

    run(dut, bench, host)


def test_back_to_back_frames():
    """Frames sent without a pause (WRITEs in flight) all execute, in order; input stalls while both
    frame banks are held and resumes."""
    dut = LinkDut()
    host = Host(dut, seed=5, stall=0.5)
    rng = random.Random(5)
    blob = bytes(rng.randrange(256) for _ in range(region_sizes(CONFIG)[mm.REGION_TRITS]))  # 1134
    assert len(blob) > 4 * p.MAX_WRITE

    async def bench(ctx):
        frames = write_frames(mm.REGION_TRITS, blob)
        wire = b"".join(p.encode_frame(0x10 + i, code, payload) for i, (code, payload) in enumerate(frames))
        wire += p.encode_frame(0x10 + len(frames), p.Cmd.VERIFY, p.VerifyRequest(0, 0, len(blob)).pack())
        start = len(host.frames)
        await host.send(ctx, wire)
        got = await host.wait(ctx, len(frames) + 1, since=start)
        assert [f.seq for f in got] == [0x10 + i for i in range(len(frames) + 1)]
        assert all(f.code == p.Reply.ACK for f in got)
        assert p.VerifyReply.unpack(got[-1].payload).crc == zlib.crc32(blob)

    run(dut, bench, host)


def test_feed_generate_stop_resend():
    dut = LinkDut(token_history=4)
    host = Host(dut, seed=6, stall=0.2)
    model = FakeModel(32)

    async def bench(ctx):
        C = p.Cmd
        ack(await host.command(ctx, C.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, descriptor()).pack()))
        ack(await host.command(ctx, C.RESET_STATE))
        prompt = (3, 1, 4, 1, 5)
        for t in prompt:
            nxt, cyc = model.step(t)
        reply = p.FeedReply.unpack(ack(await host.command(ctx, C.FEED, p.FeedRequest(prompt).pack())))
        assert reply == p.FeedReply(len(prompt), nxt, cyc)
        # a repeated FEED is answered from the stored reply, not fed again
        seq = host.next_seq()
        await host.command(ctx, C.FEED, p.FeedRequest((7,)).pack(), seq=seq)
        for_seq = await host.command(ctx, C.FEED, p.FeedRequest((7,)).pack(), seq=seq)
        nxt, cyc = model.step(7)
        assert p.FeedReply.unpack(for_seq.payload) == p.FeedReply(len(prompt) + 1, nxt, cyc)

        # GENERATE 6: ACK, six TOKENs, DONE
        seq = host.next_seq()
        start = len(host.frames)
        await host.send(ctx, p.encode_frame(seq, C.GENERATE, p.GenerateRequest(6).pack()))
        got = await host.wait(ctx, 8, since=start)
        assert all(f.seq == seq for f in got)
        assert got[0].code == p.Reply.ACK and got[-1].code == p.Reply.DONE
        want, tok = [], nxt
        for i in range(6):
            want.append(p.Token(i, tok, cyc))
            tok, cyc = model.step(tok)
        assert [p.Token.unpack(f.payload) for f in got[1:7]] == want
        assert p.Done.unpack(got[-1].payload) == p.Done(6, p.DoneReason.COMPLETE)
        st = p.Status.unpack(ack(await host.command(ctx, C.STATUS)))
        assert (st.tokens_generated, st.position, st.state) == (6, len(prompt) + 7, p.DeviceState.IDLE)
        assert st.cycles_last_token == cyc
        # RESEND: held tokens (history of 4), older ones GONE, past the end DONE
        f = await host.command(ctx, C.RESEND, p.ResendRequest(5).pack())
        assert f.code == p.Reply.TOKEN and p.Token.unpack(f.payload) == want[5]
        f = await host.command(ctx, C.RESEND, p.ResendRequest(2).pack())
        assert p.Token.unpack(f.payload) == want[2]
        expect_nak(await host.command(ctx, C.RESEND, p.ResendRequest(1).pack()), p.Err.GONE, C.RESEND, 1)
        f = await host.command(ctx, C.RESEND, p.ResendRequest(0xFFFFFFFF).pack())
        assert f.code == p.Reply.DONE and p.Done.unpack(f.payload) == p.Done(6, 0)
        # GENERATE 0: ACK and DONE at once
        got = await host.command(ctx, C.GENERATE, p.GenerateRequest(0).pack(), frames=2)
        assert got[1].code == p.Reply.DONE and p.Done.unpack(got[1].payload) == p.Done(0, 0)

        # a long GENERATE, stopped: commands are answered while it runs
        seq = host.next_seq()
        start = len(host.frames)
        await host.send(ctx, p.encode_frame(seq, C.GENERATE, p.GenerateRequest(1000).pack()))
        await host.wait(ctx, 4, since=start)
        # collect until our replies come, skipping stream frames of the generation
        async def command_during(code, payload=b""):
            s = host.next_seq()
            at = len(host.frames)
            await host.send(ctx, p.encode_frame(s, code, payload))
            for _ in range(200):
                f = (await host.wait(ctx, 1, since=at))[0]
                at += 1
                if f.seq == s:
                    return f
            raise AssertionError("no reply")

        expect_nak(await command_during(C.WRITE, p.WriteRequest(0, 0, b"x").pack()), p.Err.BUSY, C.WRITE)
        expect_nak(await command_during(C.FEED, p.FeedRequest((1,)).pack()), p.Err.BUSY)
        expect_nak(await command_during(C.RESET_STATE), p.Err.BUSY)
        st = p.Status.unpack(ack(await command_during(C.STATUS)))
        assert st.state == p.DeviceState.GENERATING
        f = await command_during(C.RESEND, p.ResendRequest(0xFFFFFFFF).pack())
        assert f.code == p.Reply.ACK and f.payload == b""          # not yet
        f = await command_during(C.STOP)
        assert p.StopReply.unpack(ack(f)).stopped == 1
        for _ in range(100):
            if any(x.code == p.Reply.DONE and x.seq == seq for x in host.frames):
                break
            await host.wait(ctx, 1)
        else:
            raise AssertionError("no DONE after STOP")
        stream = [x for x in host.frames if x.seq == seq and x.code in (p.Reply.TOKEN, p.Reply.DONE)]
        done = p.Done.unpack(stream[-1].payload)
        tokens = [p.Token.unpack(x.payload) for x in stream[:-1]]
        assert done.reason == p.DoneReason.STOPPED and done.count == len(tokens) < 1000
        assert [t.index for t in tokens] == list(range(len(tokens)))
        for t in tokens:
            assert t.token == tok
            tok, cyc = model.step(tok)
        f = await host.command(ctx, C.STOP)
        assert p.StopReply.unpack(ack(f)).stopped == 0
        # the state holds every produced token: a FEED continues the same sequence
        reply = p.FeedReply.unpack(ack(await host.command(ctx, C.FEED, p.FeedRequest((tok,)).pack())))
        assert reply.argmax == model.step(tok)[0]

    run(dut, bench, host)


@pytest.mark.parametrize("temperature, top_k, seed", [(256, 0, 1234), (40, 5, 0), (65535, 31, 7)])
def test_generate_with_sampling(temperature, top_k, seed):
    """A GENERATE with a temperature: every token is the reference sampler's pick from the logits the
    core left, the LFSR seeded once per GENERATE and carried from token to token."""
    dut = LinkDut()
    host = Host(dut, seed=11)
    model = FakeModel(32)

    async def bench(ctx):
        C = p.Cmd
        ack(await host.command(ctx, C.WRITE, p.WriteRequest(mm.REGION_SCALARS, 0, descriptor()).pack()))
        ack(await host.command(ctx, C.RESET_STATE))
        for t in (3, 1, 4):
            model.step(t)
        ack(await host.command(ctx, C.FEED, p.FeedRequest((3, 1, 4)).pack()))
        for _ in range(2):                      # a second GENERATE reseeds and continues the sequence
            seq = host.next_seq()
            start = len(host.frames)
            await host.send(ctx, p.encode_frame(seq, C.GENERATE,
                                                p.GenerateRequest(6, temperature, top_k, seed).pack()))
            got = await host.wait(ctx, 8, since=start)
            assert got[0].code == p.Reply.ACK and got[-1].code == p.Reply.DONE
            sampler = Sampler(temperature, top_k, seed)
            want = []
            for _ in range(6):
                tok = sampler.pick(model.logits())
                want.append(tok)
                model.step(tok)
            assert [p.Token.unpack(f.payload).token for f in got[1:7]] == want

    run(dut, bench, host)


@pytest.mark.slow
def test_fuzzed_frames_never_wedge_the_link():
    """Bursts of mutated frames (bits flipped, bytes dropped, inserted or duplicated, cut short, random
    codes and payloads) and raw garbage: after every burst a valid INFO is answered, and the counters
    agree with what the protocol's own frame receiver makes of the bytes sent."""
    dut = LinkDut()
    host = Host(dut, seed=8, stall=0.1)
    rng = random.Random(8)
    reference = p.FrameReceiver()
    sent = {"ok": 0, "rejected": 0}

    def mutate(wire):
        wire = bytearray(wire)
        for _ in range(rng.randrange(1, 4)):
            if not wire:
                break
            kind = rng.randrange(5)
            at = rng.randrange(len(wire))
            if kind == 0:
                wire[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del wire[at]
            elif kind == 2:
                wire.insert(at, rng.choice([0, rng.randrange(256)]))
            elif kind == 3:
                wire.insert(at, wire[at])
            else:
                wire = wire[:at]
        return bytes(wire)

    def burst():
        out = b""
        for _ in range(rng.randrange(1, 5)):
            code = rng.choice([*p.Cmd, rng.randrange(256)])
            payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 12, rng.randrange(300)])))
            frame = p.encode_frame(rng.randrange(256), code, payload[:p.MAX_PAYLOAD])
            out += mutate(frame) if rng.random() < 0.8 else frame
        if rng.random() < 0.3:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        return out + b"\0"

    async def bench(ctx):
        for _ in range(60):
            data = burst()
            for item in reference.feed(data):
                sent["ok" if isinstance(item, p.Frame) else "rejected"] += 1
            await host.send(ctx, data)
            await host.idle(ctx, 200)
            seq = host.next_seq()
            await host.send(ctx, p.encode_frame(seq, p.Cmd.INFO))
            reference.feed(p.encode_frame(seq, p.Cmd.INFO))
            sent["ok"] += 1
            for _ in range(100):                    # frames of the burst may still be answered first
                f = (await host.wait(ctx, 1))[0]
                if isinstance(f, p.Frame) and f.seq == seq and f.code == p.Reply.ACK:
                    break
            else:
                raise AssertionError("no answer to the INFO after a burst")
            assert f.payload == dut.link.info_bytes
        st = p.Status.unpack(ack(await host.command(ctx, p.Cmd.STATUS)))
        assert (st.frames_ok, st.frames_rejected) == (sent["ok"] + 1, sent["rejected"])
        naks = sum(isinstance(f, p.Frame) and f.code == p.Reply.NAK for f in host.frames)
        assert st.naks_sent == naks
        assert not any(isinstance(f, p.FrameError) for f in host.frames)     # every reply intact

    run(dut, bench, host)
