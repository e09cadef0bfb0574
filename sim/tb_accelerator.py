"""cocotb testbench of the whole accelerator (:class:`mmfree.hw.accelerator.Accelerator`, byte port):
a host talks the protocol to it byte by byte, uploads a model, feeds a prompt, generates tokens, and
every reply is compared with what the golden model says.

:func:`make_vectors` runs in the pytest process (it needs the golden model, so torch); the testbench
itself needs cocotb, numpy and :mod:`mmfree.protocol` (standard library only). Vector file contents:

``wire__<phase>``, ``expect__<phase>``
    ``uint8``: the bytes the host sends in a phase and, for ``info``, ``upload``, ``reset`` and
    ``verify``, the exact bytes the device must answer with.
``feed_expect``
    ``int64 [2]``: position and argmax the FEED's ACK must report.
``gen_seq``, ``gen_tokens``
    The GENERATE's sequence number and the ``n`` tokens it must stream.
``sample_seq``, ``sample_tokens`` (with ``sample``)
    A second GENERATE, with a temperature, top-k and seed: the tokens the on-device sampler must pick
    (:func:`mmfree.sampler.Sampler`), continuing after the first GENERATE.
``weights_per_token``, ``lanes``
    For the lane utilisation figure.

The run writes ``accelerator_report.json`` next to the vector file: tokens, matched, cycles of every
token (from the TOKEN frames), cycles per token, utilisation, and the clock cycles of each phase.
"""

import json
import os

PHASES = ("info", "upload", "reset", "verify", "feed", "generate", "sample")


# --- the pytest side -----------------------------------------------------------------------------

def make_vectors(q, config, prompt, n, build_hash=0, token_history=256, sample=None):
    """Vectors for this testbench: upload ``q`` (a :class:`~mmfree.golden.QuantizedModel`) to a device
    built for ``config``, FEED ``prompt`` (token ids), GENERATE ``n`` tokens greedily; then, with
    ``sample = (n, temperature code, top_k, seed)``, GENERATE that many tokens by sampling."""
    import numpy as np
    from mmfree import memory_map as mm, protocol as p
    from mmfree.golden import GoldenModel
    from mmfree.hw.link import info_for

    seq = [0]

    def frame(code, payload=b""):
        seq[0] = (seq[0] + 1) & 0xFF
        return seq[0], p.encode_frame(seq[0], code, payload)

    def reply(s, code=p.Reply.ACK, payload=b""):
        return p.encode_frame(s, code, payload)

    wire, expect = {k: b"" for k in PHASES}, {k: b"" for k in PHASES}
    s, w = frame(p.Cmd.INFO)
    wire["info"], expect["info"] = w, reply(s, payload=info_for(config, build_hash, token_history).pack())
    regions = mm.to_regions(q, config.lanes, config.rows)
    for r, blob in sorted(regions.items()):
        for k in range(0, len(blob), p.MAX_WRITE):
            s, w = frame(p.Cmd.WRITE, p.WriteRequest(r, k, blob[k:k + p.MAX_WRITE]).pack())
            wire["upload"] += w
            expect["upload"] += reply(s)
    s, w = frame(p.Cmd.RESET_STATE)
    wire["reset"], expect["reset"] = w, reply(s)
    for r, blob in sorted(regions.items()):
        s, w = frame(p.Cmd.VERIFY, p.VerifyRequest(r, 0, len(blob)).pack())
        wire["verify"] += w
        expect["verify"] += reply(s, payload=p.VerifyReply(p.crc32(blob)).pack())

    golden = GoldenModel(q)
    for t in prompt:
        logits, nxt = golden.step(t)
    _, wire["feed"] = frame(p.Cmd.FEED, p.FeedRequest(tuple(prompt)).pack())
    feed_expect = [len(prompt), nxt]
    gen_seq, wire["generate"] = frame(p.Cmd.GENERATE, p.GenerateRequest(n).pack())
    tokens = []
    for _ in range(n):
        tokens.append(nxt)
        logits, nxt = golden.step(nxt)
    sampled = []
    if sample is not None:
        from mmfree.sampler import Sampler
        count, code, top_k, seed = sample
        sample_seq, wire["sample"] = frame(p.Cmd.GENERATE, p.GenerateRequest(count, code, top_k, seed).pack())
        picker = Sampler(code, top_k, seed)
        for _ in range(count):
            sampled.append(picker.pick(logits))
            logits, _ = golden.step(sampled[-1])

    vec = {}
    for k in PHASES:
        vec[f"wire__{k}"] = np.frombuffer(wire[k], dtype=np.uint8)
        vec[f"expect__{k}"] = np.frombuffer(expect[k], dtype=np.uint8)
    vec["feed_expect"] = np.array(feed_expect, dtype=np.int64)
    vec["gen_seq"] = np.array(gen_seq)
    vec["gen_tokens"] = np.array(tokens, dtype=np.int64)
    if sample is not None:
        vec["sample_seq"] = np.array(sample_seq)
        vec["sample_tokens"] = np.array(sampled, dtype=np.int64)
    vec["weights_per_token"] = np.array(q.shape.ternary_weights)
    vec["verified_bytes"] = np.array(sum(len(blob) for blob in regions.values()))
    vec["lanes"] = np.array(config.total_lanes)
    return vec


# --- the cocotb side -----------------------------------------------------------------------------

try:
    import cocotb
    from cocotb.triggers import Event, First, ReadOnly, RisingEdge, Timer
    from cocotb.utils import get_sim_time
    from mmfree.sim.tb_common import start_clock_and_reset
except ImportError:                     # imported for make_vectors only
    cocotb = None


def _load():
    import numpy as np
    with np.load(os.environ["MMFREE_VECTORS"], allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


class _Host:
    def __init__(self, dut):
        from mmfree import protocol as p
        self.p = p
        self.dut = dut
        self.raw = bytearray()
        self.frames = []
        self.rx = p.FrameReceiver()
        self.arrived = Event()

    async def collect(self):
        """Take every byte of ``tx`` (``ready`` stays high). While ``valid`` is low the coroutine
        sleeps until it rises, so a computing device costs no testbench time per clock."""
        dut = self.dut
        dut.tx__ready.value = 1
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if dut.tx__valid.value != 1:
                await RisingEdge(dut.tx__valid)
                await ReadOnly()
            b = int(dut.tx__payload.value)          # taken at the next clock edge
            self.raw.append(b)
            new = self.rx.feed(bytes((b,)))
            if new:
                self.frames += new
            self.arrived.set()

    def now(self):
        return int(get_sim_time("ns")) // 10

    async def send(self, data):
        """Offer each byte until the device takes it. While ``ready`` is low the coroutine sleeps until
        it rises, so a device working through its receive buffer costs no testbench time per clock."""
        dut = self.dut
        for b in data:
            dut.rx__payload.value = int(b)
            dut.rx__valid.value = 1
            while True:
                await ReadOnly()
                if dut.rx__ready.value == 1:
                    await RisingEdge(dut.clk)           # taken at this edge
                    break
                await RisingEdge(dut.rx__ready)
        dut.rx__valid.value = 0

    async def _until(self, done, limit, what):
        deadline = self.now() + limit
        while not done():
            left = deadline - self.now()
            if left <= 0:
                raise AssertionError(f"{what} within {limit} cycles")
            self.arrived.clear()
            await First(self.arrived.wait(), Timer(10 * left, unit="ns"))
        await RisingEdge(self.dut.clk)              # out of the read-only phase the wake-up came in

    async def frames_since(self, start, n, limit):
        await self._until(lambda: len(self.frames) >= start + n, limit,
                          f"{n} frames (got {len(self.frames) - start})")
        return self.frames[start:start + n]

    async def generate(self, wire, seq, n):
        """Send a GENERATE of ``n`` tokens; check its ACK, TOKEN and DONE frames; return the tokens."""
        p = self.p
        start = len(self.frames)
        await self.send(wire)
        got = await self.frames_since(start, n + 2, 2_000_000 * (n + 1))
        assert all(isinstance(x, p.Frame) and x.seq == seq for x in got), got[:4]
        assert got[0].code == p.Reply.ACK and got[-1].code == p.Reply.DONE, got[-1]
        assert p.Done.unpack(got[-1].payload) == p.Done(n, p.DoneReason.COMPLETE)
        stream = [p.Token.unpack(x.payload) for x in got[1:-1]]
        assert [t.index for t in stream] == list(range(n))
        return stream

    async def bytes_since(self, start, n, limit):
        await self._until(lambda: len(self.raw) >= start + n, limit,
                          f"{n} bytes (got {len(self.raw) - start})")
        return bytes(self.raw[start:start + n])


if cocotb is not None:
    @cocotb.test()
    async def accelerator(dut):
        """INFO, upload, RESET_STATE, VERIFY, FEED, GENERATE; every reply checked."""
        vec = _load()
        host = _Host(dut)
        p = host.p
        dut.rx__valid.value = 0
        dut.tx__ready.value = 1
        await start_clock_and_reset(dut)
        cocotb.start_soon(host.collect())
        await RisingEdge(dut.clk)

        phase_cycles = {}
        for phase in ("info", "upload", "reset", "verify"):
            want = bytes(vec[f"expect__{phase}"])
            t0, start = host.now(), len(host.raw)
            await host.send(bytes(vec[f"wire__{phase}"]))
            limit = 200 * len(want) + 100_000
            if phase == "verify":           # the device may take this long per byte it checks
                limit += p.VERIFY_CYCLES_PER_BYTE * int(vec["verified_bytes"])
            got = await host.bytes_since(start, len(want), limit)
            assert got == want, (f"{phase}: the device answered {got[:64].hex()}..., "
                                 f"expected {want[:64].hex()}...")
            phase_cycles[phase] = host.now() - t0
            dut._log.info(f"{phase}: {len(vec[f'wire__{phase}'])} bytes sent, reply identical, "
                          f"{phase_cycles[phase]} cycles")

        t0, start = host.now(), len(host.frames)
        await host.send(bytes(vec["wire__feed"]))
        (f,) = await host.frames_since(start, 1, 1_000_000 * 64)
        assert isinstance(f, p.Frame) and f.code == p.Reply.ACK, f"FEED answered {f}"
        feed = p.FeedReply.unpack(f.payload)
        want_pos, want_arg = (int(v) for v in vec["feed_expect"])
        assert (feed.position, feed.argmax) == (want_pos, want_arg), \
            f"FEED: {feed}, golden {want_pos, want_arg}"
        phase_cycles["feed"] = host.now() - t0
        dut._log.info(f"feed: {want_pos} tokens, argmax {feed.argmax}, {phase_cycles['feed']} cycles")

        tokens = [int(t) for t in vec["gen_tokens"]]
        t0 = host.now()
        stream = await host.generate(bytes(vec["wire__generate"]), int(vec["gen_seq"]), len(tokens))
        phase_cycles["generate"] = host.now() - t0
        assert len(stream) == len(tokens), f"{len(stream)} tokens streamed, {len(tokens)} asked for"
        for i, (t, want) in enumerate(zip(stream, tokens)):
            assert t.token == want, f"token {i}: device {t.token}, golden {want}"
        matched = len(stream)
        cycles = [t.cycles for t in stream]
        per_token = sum(cycles) / len(cycles)
        weights, lanes = int(vec["weights_per_token"]), int(vec["lanes"])
        report = dict(tokens=len(stream), matched=matched, cycles=cycles, cycles_per_token=per_token,
                      weights_per_token=weights, lanes=lanes, utilisation=weights / (lanes * per_token),
                      phase_cycles=phase_cycles,
                      upload_bytes=len(vec["wire__upload"]))
        dut._log.info(f"{len(tokens)} generated tokens identical to the golden model; {per_token:.0f} "
                      f"cycles per token, lane utilisation {100 * report['utilisation']:.1f}%")

        if "sample_tokens" in vec:
            want = [int(t) for t in vec["sample_tokens"]]
            t0 = host.now()
            picked = [t.token for t in await host.generate(bytes(vec["wire__sample"]),
                                                           int(vec["sample_seq"]), len(want))]
            assert picked == want, f"sampled tokens: device {picked}, golden {want}"
            report["sampled"] = len(picked)
            report["phase_cycles"]["sample"] = host.now() - t0
            dut._log.info(f"{len(picked)} sampled tokens identical to the golden model's sampler")

        with open(os.path.join(os.path.dirname(os.environ["MMFREE_VECTORS"]), "accelerator_report.json"),
                  "w") as fh:
            json.dump(report, fh)

