"""The host driver against the golden board: commands, upload, generation, recovery from a damaged link."""

import random
import zlib

import pytest
import torch

from mmfree import protocol as p
from mmfree.golden import GoldenModel, quantize_model
from mmfree.image import ImageError, image_bytes
from mmfree.model import HGRNBitConfig, HGRNBitForCausalLM
from mmfree.sampler import reference_generate, temperature_code
from malformed import malformed_burst, valid_frames
from mmfree.driver import (Device, GoldenBoard, BoardServer, FaultyTransport, DeviceError, DeviceNak,
                           DeviceTimeout, IncompatibleImage, TokenLost, check_image, upload)

PROMPT = [72, 101, 108, 108, 111]


@pytest.fixture(scope="module")
def qmodel():
    torch.manual_seed(11)
    model = HGRNBitForCausalLM(HGRNBitConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2,
                                             intermediate_size=64)).eval()
    with torch.no_grad():
        model.model.embeddings.weight.mul_(20)
    return quantize_model(model)


@pytest.fixture(scope="module")
def image(qmodel):
    return image_bytes(qmodel)


@pytest.fixture(scope="module")
def reference(qmodel):
    """200 greedy tokens after PROMPT, from the golden model run directly."""
    return list(GoldenModel(qmodel).generate(PROMPT, 200))


class VirtualClock:
    """The driver's ``time`` on a clock of its own: ``sleep`` advances it, nothing else does, so the
    seconds a test sees are the driver's waits and not the machine's speed."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(0.0, seconds)


@pytest.fixture
def clock(monkeypatch):
    import mmfree.driver.device
    c = VirtualClock()
    monkeypatch.setattr(mmfree.driver.device, "time", c)
    return c


def fast_device(port, **kw):
    kw.setdefault("timeout", 0.05)
    kw.setdefault("token_timeout", 0.5)
    kw.setdefault("retries", 6)
    return Device(port, seed=1, **kw)


@pytest.fixture
def loaded(image):
    """A device over an in-process golden board with the image uploaded."""
    board = GoldenBoard()
    dev = fast_device(board)
    dev.upload(image)
    return dev, board


# --- commands ------------------------------------------------------------------------------------

def test_info(image):
    info = fast_device(GoldenBoard(max_hidden=2048, clock_hz=48_000_000)).info()
    assert info.protocol_version == p.PROTOCOL_VERSION
    assert (info.image_format_version, info.numeric_spec_version) == (1, 1)
    assert info.max_hidden == 2048 and info.clock_hz == 48_000_000 and info.max_write == 256
    assert info.regions[0].name == "IMG" and info.regions[0].size >= len(image)
    assert info.flags & p.InfoFlag.SAMPLING


def test_upload_and_verify(image):
    board = GoldenBoard()
    dev = fast_device(board)
    seen = []
    report = upload(dev, image, progress=lambda done, total: seen.append((done, total)))
    assert report.bytes == len(image) and report.rewritten == 0
    assert seen[0] == (0, len(image)) and seen[-1] == (len(image), len(image))
    assert dev.verify(0, 0, len(image)) == zlib.crc32(image)
    assert dev.verify(0, 100, 50) == zlib.crc32(image[100:150])
    assert bytes(board.memory[0][:len(image)]) == image
    assert dev.status().flags & p.StatusFlag.LOADED
    dev.write(0, 0, b"XXXX")                                 # a damaged header: no model
    assert not dev.status().flags & p.StatusFlag.LOADED


def test_greedy_generation_equals_golden_model(loaded, reference):
    dev, _ = loaded
    reply = dev.feed(PROMPT)
    assert reply.position == len(PROMPT) and reply.argmax == reference[0]
    gen = dev.generate(50)
    assert list(gen) == reference[:50]
    assert gen.count == 50 and len(gen.cycles) == 50


def test_sampled_generation_equals_reference_sampler(loaded, qmodel):
    dev, _ = loaded
    dev.feed(PROMPT)
    got = list(dev.generate(20, temperature=0.8, top_k=30, seed=99))
    want = list(reference_generate(GoldenModel(qmodel), PROMPT, 20, temperature_code(0.8), 30, 99))
    assert got == want
    assert got != list(GoldenModel(qmodel).generate(PROMPT, 20))


def test_long_prompt_is_fed_in_several_frames(loaded, qmodel):
    dev, _ = loaded
    prompt = [random.Random(5).randrange(256) for _ in range(70)]
    reply = dev.feed(prompt)
    assert reply.position == 70
    g = GoldenModel(qmodel)
    _, nxt = g.prefill(prompt)
    assert reply.argmax == nxt


def test_stop_mid_generation(loaded, reference):
    dev, board = loaded
    dev.feed(PROMPT)
    gen = dev.generate(100)
    first = [next(gen) for _ in range(5)]
    count = dev.stop()
    rest = list(gen)
    assert 5 <= count < 100 and first + rest == reference[:count]
    st = dev.status()
    assert st.tokens_generated == count and st.state == p.DeviceState.IDLE
    assert st.position == len(PROMPT) + count
    # every produced token went into the state: the sequence continues where it stopped
    assert list(dev.generate(10)) == reference[count:count + 10]
    assert dev.stop() == 0                       # nothing running: harmless


def test_status_counters(loaded):
    dev, board = loaded
    before = dev.status()
    board.receive(b"\x00\x13\x37\x00" + b"\x00garbage-without-cobs\x00")
    board.transmit()
    dev.reset_state()
    after = dev.status()
    assert after.frames_rejected == before.frames_rejected + 2
    assert after.naks_sent == before.naks_sent + 2
    assert after.last_error == p.Err.BAD_FRAME        # 'g' is a COBS block running past the end
    assert after.frames_ok == before.frames_ok + 2           # RESET_STATE and this STATUS
    assert after.position == 0 and not after.flags & p.StatusFlag.CONTEXT
    dev.feed([1, 2])
    gen = dev.generate(3)
    list(gen)
    st = dev.status()
    assert st.tokens_generated == 3 and st.position == 5 and st.cycles_last_token == 0


def test_command_errors_are_one_line_device_errors(image):
    dev = fast_device(GoldenBoard(image_region_size=1 << 16))
    with pytest.raises(DeviceNak, match="no valid model") as e:
        dev.feed([1])
    assert e.value.error == p.Err.NOT_LOADED and isinstance(e.value, OSError)
    assert "\n" not in str(e.value)
    with pytest.raises(DeviceNak, match="no memory region 3"):
        dev.write(3, 0, b"x")
    with pytest.raises(DeviceNak, match="outside the region"):
        dev.write(0, (1 << 16) - 2, b"abc")
    with pytest.raises(DeviceNak, match="BAD_RANGE|outside"):
        dev.verify(0, 0, (1 << 16) + 1)
    dev.upload(image)
    with pytest.raises(DeviceNak, match="feed a prompt first"):
        dev.generate(5)
    with pytest.raises(DeviceNak, match="token id 256"):
        dev.feed([1, 256])
    assert dev.status().position == 0             # a NAK means no effect: token 1 was not fed
    with pytest.raises(ValueError, match="at least one token"):
        dev.feed([])


def test_busy_while_generating(loaded):
    dev, _ = loaded
    dev.busy_timeout = 0.2
    dev.feed([1])
    gen = dev.generate(10_000)
    next(gen)
    with pytest.raises(DeviceNak, match="busy"):
        dev.reset_state()
    assert dev.info().regions                     # INFO and STATUS are served while generating
    assert dev.status().state == p.DeviceState.GENERATING
    assert dev.stop() >= 1


# --- the golden board at the frame level ---------------------------------------------------------

def _replies(board, data):
    board.receive(data)
    return [f for f in p.FrameReceiver().feed(board.transmit()) if isinstance(f, p.Frame)]


def test_repeated_command_is_answered_not_executed(image):
    board = GoldenBoard(image)
    feed = p.encode_frame(40, p.Cmd.FEED, p.FeedRequest((1, 2, 3)).pack())
    r1 = _replies(board, feed)
    r2 = _replies(board, feed)
    assert r1 == r2 and r1[0].code == p.Reply.ACK and p.FeedReply.unpack(r1[0].payload).position == 3
    assert board.position == 3
    r3 = _replies(board, p.encode_frame(41, p.Cmd.FEED, p.FeedRequest((1, 2, 3)).pack()))
    assert p.FeedReply.unpack(r3[0].payload).position == 6
    # same seq, different contents: a new command
    r4 = _replies(board, p.encode_frame(41, p.Cmd.FEED, p.FeedRequest((4,)).pack()))
    assert p.FeedReply.unpack(r4[0].payload).position == 7


def test_resend_and_done_query(image, reference):
    board = GoldenBoard(image, token_history=4)
    _replies(board, p.encode_frame(1, p.Cmd.FEED, p.FeedRequest(tuple(PROMPT)).pack()))
    _replies(board, p.encode_frame(2, p.Cmd.GENERATE, p.GenerateRequest(6).pack()))
    stream = bytearray()
    while board.poll():
        stream += board.transmit()
    frames = p.FrameReceiver().feed(stream)
    assert [p.Token.unpack(f.payload).token for f in frames[:-1]] == reference[:6]
    assert frames[-1].code == p.Reply.DONE and p.Done.unpack(frames[-1].payload).count == 6
    r = _replies(board, p.encode_frame(3, p.Cmd.RESEND, p.ResendRequest(5).pack()))[0]
    assert r.seq == 3 and r.code == p.Reply.TOKEN and p.Token.unpack(r.payload) == p.Token(5, reference[5], 0)
    r = _replies(board, p.encode_frame(4, p.Cmd.RESEND, p.ResendRequest(1).pack()))[0]
    assert r.code == p.Reply.NAK and p.Nak.unpack(r.payload).error == p.Err.GONE     # beyond the history
    r = _replies(board, p.encode_frame(5, p.Cmd.RESEND, p.ResendRequest(0xFFFFFFFF).pack()))[0]
    assert r.code == p.Reply.DONE and p.Done.unpack(r.payload) == p.Done(6, p.DoneReason.COMPLETE)


def test_ten_thousand_malformed_frames(image):
    """Random bytes, truncated, bit-flipped, overlong and well-formed-but-wrong frames: after every burst
    a valid INFO is answered, and the board never faults."""
    board = GoldenBoard(image)
    _replies(board, p.encode_frame(1, p.Cmd.FEED, p.FeedRequest((1, 2)).pack()))
    rng = random.Random(7)
    valid = valid_frames(rng)
    for burst in range(100):
        chunk = malformed_burst(rng, valid)
        board.receive(chunk)
        board.transmit()
        seq = burst & 0xFF
        replies = _replies(board, p.encode_frame(seq, p.Cmd.INFO))
        infos = [f for f in replies if f.seq == seq and f.code == p.Reply.ACK]
        assert infos and p.Info.unpack(infos[-1].payload).protocol_version == p.PROTOCOL_VERSION, burst
    assert board.internal_errors == 0 and board.frames_rejected > 3000


# --- a damaged link ------------------------------------------------------------------------------

def test_faulty_channel_upload_and_200_tokens(image, reference):
    board = GoldenBoard()
    link = FaultyTransport(board, rate=1e-3, seed=2024)
    dev = fast_device(link)
    dev.upload(image)
    dev.feed(PROMPT)
    tokens = list(dev.generate(200))
    assert tokens == reference
    assert link.faults > 10 and dev.stats.retransmissions > 0
    assert bytes(board.memory[0][:len(image)]) == image


def test_very_noisy_link_upload_splits_frames(image):
    """At 5e-3 most full WRITE frames are damaged; halving them after two failures gets through."""
    board = GoldenBoard()
    link = FaultyTransport(board, rate=5e-3, seed=5)
    report = fast_device(link).upload(image)
    assert bytes(board.memory[0][:len(image)]) == image and report.bytes == len(image)
    assert link.faults > 100


class _DropFrames:
    """Drops the device's frames number ``drop`` (counted from 1) entirely."""

    def __init__(self, board, drop):
        self.board, self.drop, self.n = board, set(drop), 0

    def write(self, data):
        self.board.write(data)

    def read(self, size):
        data = self.board.read(size)
        out = bytearray()
        for part in data.split(b"\x00"):
            if part:
                self.n += 1
                if self.n not in self.drop:
                    out += b"\x00" + part + b"\x00"
        return bytes(out)


def test_lost_token_frames_are_asked_for_again(image, reference):
    board = GoldenBoard(image)
    dev = fast_device(board)
    dev.feed(PROMPT)
    dev.transport = _DropFrames(board, drop={4, 9, 10})
    tokens = list(dev.generate(20))
    assert tokens == reference[:20] and dev.stats.resends >= 2


def test_token_gone_from_history_is_an_error(image):
    board = GoldenBoard(image, token_history=1)
    dev = fast_device(board)
    dev.feed(PROMPT)
    gen = dev.generate(10)
    next(gen)
    gen.pending.clear()
    board.poll(), board.poll(), board.transmit()            # two more tokens vanish on the link
    with pytest.raises(TokenLost, match="token 1 was lost"):
        next(gen)


class _DamageNextReply:
    """The golden board behind a link that flips one byte of the next reply once ``armed``."""

    def __init__(self, board):
        self.board, self.armed = board, False

    def write(self, data):
        return self.board.write(data)

    def read(self, size):
        data = self.board.read(size)
        if self.armed and len(data) > 4:
            self.armed = False
            data = data[:4] + bytes([data[4] ^ 0x40]) + data[5:]
        return data


def test_damaged_reply_to_a_long_feed_is_asked_for_again_soon(image, reference, clock):
    """A FEED's reply damaged on the way: the FEED is sent again ``timeout`` seconds later and
    answered from the stored reply, instead of after the FEED's whole allowance (here 150 s)."""
    link = _DamageNextReply(GoldenBoard(image))
    dev = fast_device(link, token_timeout=30.0)
    link.armed = True
    reply = dev.feed(PROMPT)
    # the driver's waits: the damaged reply's ``timeout`` (0.05 s) and its polling, nothing longer
    assert dev.timeout <= clock.now < 2 * dev.timeout
    assert reply.argmax == reference[0]
    assert dev.stats.frames_rejected == 1 and dev.stats.retransmissions == 1
    assert list(dev.generate(5)) == reference[:5]


def test_silent_device_mid_generation_times_out(image, clock):
    board = GoldenBoard(image)
    link = FaultyTransport(board, rate=0)
    dev = fast_device(link, token_timeout=0.1, retries=3)
    dev.feed(PROMPT)
    gen = dev.generate(100)
    next(gen), next(gen)
    link.mute()
    t = clock.now
    with pytest.raises(DeviceTimeout) as e:
        list(gen)
    assert "\n" not in str(e.value)
    # a token's wait, then a RESEND that gets no reply in any of its attempts
    assert clock.now - t == pytest.approx(dev.token_timeout + (dev.retries + 1) * dev.timeout, abs=0.01)


# --- transports ----------------------------------------------------------------------------------

def test_socket_url_to_served_board(image, reference):
    with BoardServer() as server:
        with Device(server.url, timeout=0.5, token_timeout=2.0) as dev:
            dev.upload(image)
            dev.feed(PROMPT)
            assert list(dev.generate(10)) == reference[:10]
            assert "".join(dev.generate(0).text()) == ""


def test_unreachable_port_is_one_line():
    with pytest.raises(DeviceError, match="cannot open socket://127.0.0.1:1") as e:
        Device("socket://127.0.0.1:1")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("url", ["socket://localhost", "socket://localhost:99999", "socket://:7000",
                                 "socket://localhost:0", "rfc2217://localhost"])
def test_network_url_without_a_usable_port_is_named(url):
    """pyserial's own messages for these say nothing of the port (one is a list of logging levels)."""
    with pytest.raises(DeviceError) as e:
        Device(url)
    scheme = url.split(":")[0]
    assert str(e.value) == (f"cannot open {url}: a {scheme}:// URL needs a host and a port of 1 to 65535, "
                            f"as in {scheme}://localhost:7000")


def test_loop_url_gets_no_reply(clock):
    dev = Device("loop://", timeout=0.02, retries=1)
    with pytest.raises(DeviceTimeout, match="no valid reply to INFO after 2 attempts"):
        dev.info()
    assert clock.now == pytest.approx(2 * 0.02, abs=0.005)        # two attempts of ``timeout`` each


# --- images that do not fit ----------------------------------------------------------------------

def test_incompatible_images_refused_before_writing(image):
    board = GoldenBoard(max_hidden=16)
    dev = fast_device(board)
    with pytest.raises(IncompatibleImage, match="hidden size 32 > 16"):
        dev.upload(image)
    assert board.frames_ok == 1                              # only the INFO
    with pytest.raises(IncompatibleImage, match="needs 28"):
        fast_device(GoldenBoard(image_region_size=4096)).upload(image)
    bad = bytearray(image)
    bad[5000] ^= 1
    with pytest.raises(ImageError, match="CRC mismatch"):
        fast_device(GoldenBoard()).upload(bytes(bad))
    with pytest.raises(ImageError, match="truncated"):
        fast_device(GoldenBoard()).upload(image[:1000])
    # a value no model holds behind correct CRCs: refused for the golden board too, whose map sends
    # the image file as it is (the accelerator's map decodes it anyway)
    from malformed import image_with_bad_value
    data, name = image_with_bad_value()
    board = GoldenBoard()
    with pytest.raises(ImageError, match=f"section {name}: invalid base-3 trit byte"):
        fast_device(board).upload(data)
    assert board.frames_ok == 1                              # only the INFO


def test_version_mismatch_refused(image):
    from dataclasses import replace
    info = GoldenBoard().info
    check_image(info, image)
    with pytest.raises(IncompatibleImage, match="numeric-spec version 7; the image needs version 1"):
        check_image(replace(info, numeric_spec_version=7), image)
    with pytest.raises(IncompatibleImage, match="image format version 2"):
        check_image(replace(info, image_format_version=2), image)
    with pytest.raises(IncompatibleImage, match="match no known memory map"):
        check_image(replace(info, regions=(p.Region(b"XYZ\0", 1 << 20),)), image)
    from mmfree.driver import DEFAULT_MAP
    with pytest.raises(IncompatibleImage, match="region 0 is 'TRIT'"):
        check_image(replace(info, regions=(p.Region(b"TRIT", 1 << 20),)), image, DEFAULT_MAP)


def test_text_stream(loaded, reference):
    dev, _ = loaded
    dev.feed(PROMPT)
    text = "".join(dev.generate(30).text())
    assert text == bytes(reference[:30]).decode("utf-8", "replace")


# --- the accelerator's memory layout -------------------------------------------------------------

def accelerator_board(lanes=16):
    return GoldenBoard(layout="accelerator", lanes=lanes, max_vocab=256, max_hidden=64, max_layers=2,
                       max_intermediate=128)


def test_accelerator_layout_upload_and_generate(image, reference):
    from mmfree import memory_map as mm
    from mmfree.driver import AcceleratorMap, memory_map_for
    board = accelerator_board()
    dev = fast_device(board)
    info = dev.info()
    assert [r.tag.rstrip(b"\0") for r in info.regions] == [mm.REGION_TAGS[i] for i in range(4)]
    assert isinstance(memory_map_for(info), AcceleratorMap)
    report = dev.upload(image)
    assert [pl.name for pl in report.placements] == ["trits", "params", "gates", "scalars"]
    dev.reset_state()
    dev.feed(PROMPT)
    assert list(dev.generate(40)) == reference[:40]


def test_accelerator_layout_refuses_lanes_that_do_not_divide_rows(image):
    board = accelerator_board(lanes=64)        # rows of 32 trits
    dev = fast_device(board)
    with pytest.raises(IncompatibleImage, match="lanes"):
        dev.upload(image)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(lanes=30), "lanes must be a multiple of 4 for the accelerator layout, not 30"),
    (dict(lanes=32, rows=3), "rows must be a power of two from 1 to 64, not 3"),
    (dict(lanes=32, rows=128), "rows must be a power of two from 1 to 64, not 128"),
])
def test_golden_board_refuses_a_device_that_cannot_be(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        GoldenBoard(layout="accelerator", **kwargs)
