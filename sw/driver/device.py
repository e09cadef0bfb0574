"""The host side of the link: :class:`Device` speaks docs/protocol.md over any transport.

Every call is bounded in time: a reply is awaited for ``timeout`` seconds (plus ``token_timeout`` per
model step the command implies), a command is sent at most ``retries + 1`` times, and a device that
keeps answering BUSY is given up on after ``busy_timeout`` (or the command's own wait, if longer). A
command is retransmitted on a timeout, on a NAK saying its frame was damaged, and ``timeout`` seconds
after a damaged frame arrives while its reply is awaited (the reply may have been that frame: a long
FEED then does not wait out its whole allowance); retransmission is safe because the device recognises the repeat
by its sequence number and CRC and sends its stored reply instead of executing it again.
"""

import collections
import random
import time

from .. import protocol as p
from ..sampler import temperature_code
from .errors import (DeviceError, DeviceTimeout, DeviceNak, DeviceBusy, TokenLost, ProtocolError,
                     IncompatibleDevice)
from .transport import open_transport

__all__ = ["Device", "Generation", "LinkStats"]

_READ_SIZE = 4096
VERIFY_RATE = 1e6 / p.VERIFY_CYCLES_PER_BYTE
"""Bytes per second a VERIFY is assumed to check, at least, on a device whose INFO gives no clock
(:data:`~mmfree.protocol.VERIFY_CYCLES_PER_BYTE` cycles a byte at 1 MHz); with a clock, that clock
divided by :data:`~mmfree.protocol.VERIFY_CYCLES_PER_BYTE`."""
RESEND_DONE = 0xFFFFFFFF
"""A RESEND index past any generation: the device answers with DONE once the generation has ended."""


MIN_WRITE_SPLIT = 16
"""WRITE chunks are not split below this many bytes."""


class _Write:
    __slots__ = ("offset", "data", "wire", "deadline", "attempts")

    def __init__(self, offset, data, wire):
        self.offset, self.data, self.wire = offset, data, wire
        self.deadline = 0.0
        self.attempts = 0


class LinkStats:
    """Host-side counters: what the link cost (retransmissions and damage seen)."""

    def __init__(self):
        self.commands = 0
        self.retransmissions = 0
        self.timeouts = 0
        self.frames_rejected = 0      # damaged frames from the device
        self.resends = 0              # RESEND requests for lost tokens
        self.bytes_sent = 0
        self.bytes_received = 0

    def __repr__(self):
        return "LinkStats(" + ", ".join(f"{k}={v}" for k, v in vars(self).items()) + ")"


class Generation:
    """The token ids of one GENERATE, as they arrive: an iterator of ints.

    Tokens come out in order, each exactly once; a token whose frame was damaged or lost is asked for
    again (RESEND) and never returned damaged. Iteration ends after the device's DONE: after ``n``
    tokens, or earlier if :meth:`Device.stop` was called. ``cycles`` holds the device's cycle count of
    each token yielded; ``count`` the number the device produced once DONE has arrived.
    """

    def __init__(self, device, seq, n):
        self.device = device
        self.seq = seq
        self.n = n
        self.next = 0
        self.pending = {}
        self.done = None
        self.tokens = []
        self.cycles = []

    def __iter__(self):
        return self

    def __next__(self):
        return self.device._next_token(self)

    def text(self, errors="replace"):
        """The same tokens as text, for byte-level models (vocabulary 256: token id = byte): yields
        ``str`` pieces as soon as they form complete UTF-8 characters."""
        import codecs
        dec = codecs.getincrementaldecoder("utf-8")(errors)
        for tok in self:
            if tok > 0xFF:
                raise ValueError(f"token {tok} is not a byte; text() needs a byte-level model")
            piece = dec.decode(bytes((tok,)))
            if piece:
                yield piece
        tail = dec.decode(b"", final=True)
        if tail:
            yield tail

    @property
    def finished(self):
        return self.done is not None and self.next >= self.done.count

    @property
    def count(self):
        return None if self.done is None else self.done.count

    def _accept(self, frame):
        try:
            if frame.code == p.Reply.TOKEN:
                tok = p.Token.unpack(frame.payload)
                if self.next <= tok.index < self.n:
                    self.pending.setdefault(tok.index, tok)
            elif frame.code == p.Reply.DONE:
                done = p.Done.unpack(frame.payload)
                if done.count > self.n:
                    raise ProtocolError(f"DONE reports {done.count} tokens for a GENERATE of {self.n}")
                self.done = done
        except p.PayloadError as e:
            raise ProtocolError(f"malformed {p.command_name(frame.code)} frame: {e}") from None

    def stop(self):
        """Stop this generation (see :meth:`Device.stop`); returns the number of tokens produced."""
        if self.done is not None:
            return self.done.count
        return self.device.stop()

    def __repr__(self):
        return f"Generation(n={self.n}, yielded={self.next}, count={self.count})"


class Device:
    """An mmfree device behind ``port``: a pyserial URL (``/dev/ttyUSB0``, ``socket://host:port``,
    ``loop://``) or any object with ``read``/``write`` (see :mod:`mmfree.driver.transport`).

    Opening does not talk to the device; call :meth:`info` first to check it.

    ``timeout``: seconds to wait for a reply before retransmitting; ``retries``: retransmissions before
    :class:`DeviceTimeout`; ``token_timeout``: seconds one model step may take (FEED waits this long per
    token; a GENERATE waits this long for each next token before asking for it again); ``busy_timeout``:
    how long a BUSY device is retried; ``window``: WRITE frames in flight at once; ``verify_rate``:
    bytes per second a VERIFY is allowed beyond ``timeout`` (default: from INFO's clock,
    :data:`~mmfree.protocol.VERIFY_CYCLES_PER_BYTE` cycles a byte).
    """

    def __init__(self, port, *, baudrate=p.DEFAULT_BAUD, timeout=0.5, retries=8, token_timeout=5.0,
                 busy_timeout=None, window=4, seed=None, verify_rate=None):
        for name, v in (("timeout", timeout), ("token_timeout", token_timeout)):
            if not v > 0:
                raise ValueError(f"{name} must be positive, not {v}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        if not 1 <= window <= 64:
            raise ValueError(f"window must be 1..64, not {window}")
        self.transport = open_transport(port, baudrate)
        self.timeout = timeout
        self.retries = retries
        self.token_timeout = token_timeout
        self.busy_timeout = token_timeout * 4 if busy_timeout is None else busy_timeout
        self.window = window
        if verify_rate is not None and not verify_rate > 0:
            raise ValueError(f"verify_rate must be positive, not {verify_rate}")
        self.verify_rate = verify_rate
        self.stats = LinkStats()
        self.device_info = None
        self._rx = p.FrameReceiver()
        self._inbox = collections.deque()
        self._seq = random.Random(seed).randrange(256)
        self._gen = None

    # --- life cycle --------------------------------------------------------------------------------

    def close(self):
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- frames ------------------------------------------------------------------------------------

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _send(self, wire):
        self.transport.write(wire)
        self.stats.bytes_sent += len(wire)

    def _receive(self, deadline, damaged_wait=None):
        """The next intact reply frame, or None once ``deadline`` (time.monotonic) has passed; with
        ``damaged_wait``, at most that many seconds after a damaged frame arrives."""
        while True:
            if self._inbox:
                return self._inbox.popleft()
            data = self.transport.read(_READ_SIZE)
            if data:
                self.stats.bytes_received += len(data)
                for item in self._rx.feed(data):
                    if isinstance(item, p.FrameError):
                        self.stats.frames_rejected += 1
                        if damaged_wait is not None:
                            deadline = min(deadline, time.monotonic() + damaged_wait)
                    elif item.code & 0x80:              # a reply; commands (a loopback) are ignored
                        self._inbox.append(item)
                if self._inbox:
                    continue
            now = time.monotonic()
            if now >= deadline:                         # also when only garbage keeps arriving
                return None
            if not data:
                time.sleep(min(0.0005, deadline - now))

    def _route(self, frame):
        """Hand TOKEN/DONE frames of the running generation to it; True if the frame was taken."""
        gen = self._gen
        if gen is not None and frame.seq == gen.seq and frame.code in (p.Reply.TOKEN, p.Reply.DONE):
            gen._accept(frame)
            return True
        return False

    def _transact(self, cmd, payload=b"", *, wait=None, seq=None, accept=(p.Reply.ACK,)):
        """Send one command until its reply arrives; returns the reply frame (one of ``accept``)."""
        seq = self._next_seq() if seq is None else seq
        wire = p.encode_frame(seq, cmd, payload)
        wait = self.timeout if wait is None else wait
        self.stats.commands += 1
        attempts = 0
        busy_deadline = time.monotonic() + max(self.busy_timeout, wait)
        while True:
            self._send(wire)
            deadline = time.monotonic() + wait
            retry_now = False
            while not retry_now:
                f = self._receive(deadline, damaged_wait=self.timeout)
                if f is None:
                    self.stats.timeouts += 1
                    break
                if self._route(f) or f.seq != seq:
                    continue
                if f.code == p.Reply.NAK:
                    nak = self._nak(f)
                    if nak.error in p.FRAME_ERRORS:
                        retry_now = True
                        continue
                    if nak.error == p.Err.BUSY:
                        if time.monotonic() >= busy_deadline:
                            raise DeviceBusy(cmd, nak)
                        time.sleep(min(0.01, wait))
                        self._send(wire)          # not counted: the command had no effect
                        deadline = time.monotonic() + wait
                        continue
                    raise DeviceNak(cmd, nak)
                if f.code not in accept:
                    raise ProtocolError(f"{p.command_name(cmd)} answered with {p.command_name(f.code)}")
                return f
            attempts += 1
            if attempts > self.retries:
                raise DeviceTimeout(f"no valid reply to {p.command_name(cmd)} after {attempts} attempts "
                                    f"({wait:g} s each)")
            self.stats.retransmissions += 1

    @staticmethod
    def _nak(frame):
        try:
            return p.Nak.unpack(frame.payload)
        except p.PayloadError as e:
            raise ProtocolError(f"malformed NAK: {e}") from None

    @staticmethod
    def _parse(cls, frame):
        try:
            return cls.unpack(frame.payload)
        except p.PayloadError as e:
            raise ProtocolError(f"malformed reply: {e}") from None

    # --- commands ----------------------------------------------------------------------------------

    def info(self):
        """The device's build configuration (:class:`mmfree.protocol.Info`); checks the protocol."""
        f = self._transact(p.Cmd.INFO)
        if f.payload[:4] != p.INFO_MAGIC:
            raise IncompatibleDevice(f"not an mmfree device (INFO magic {bytes(f.payload[:4])!r})")
        info = self._parse(p.Info, f)
        if info.protocol_version != p.PROTOCOL_VERSION:
            raise IncompatibleDevice(f"device speaks protocol version {info.protocol_version}; this "
                                     f"driver speaks version {p.PROTOCOL_VERSION}")
        self.device_info = info
        return info

    def status(self):
        """Counters and state (:class:`mmfree.protocol.Status`)."""
        return self._parse(p.Status, self._transact(p.Cmd.STATUS))

    def _max_write(self):
        if self.device_info is not None and self.device_info.max_write:
            return min(self.device_info.max_write, p.MAX_WRITE)
        return p.MAX_WRITE

    def write(self, region, offset, data, progress=None):
        """Write ``data`` into memory ``region`` from byte ``offset``, in frames of at most 256 bytes with
        up to ``window`` in flight. ``progress(n)`` is called with each chunk's size as it is
        acknowledged. A chunk whose frame is damaged twice is split in halves (down to
        ``MIN_WRITE_SPLIT`` bytes): shorter frames get through a noisy link more often."""
        data = bytes(data)
        if not 0 <= region <= 0xFF:
            raise ValueError(f"region must be 0..255, not {region}")
        if offset < 0 or offset + len(data) > 1 << 32:
            raise ValueError(f"offset {offset} with {len(data)} bytes is outside the 32-bit address space")
        step = self._max_write()
        chunks = collections.deque((offset + i, data[i:i + step]) for i in range(0, len(data), step))
        inflight = {}                      # seq -> _Write
        busy_until = None
        while chunks or inflight:
            while chunks and len(inflight) < self.window:
                off, chunk = chunks.popleft()
                seq = self._next_seq()
                w = _Write(off, chunk, p.encode_frame(seq, p.Cmd.WRITE, p.WriteRequest(region, off, chunk).pack()))
                self._send(w.wire)
                self.stats.commands += 1
                w.deadline = time.monotonic() + self.timeout
                inflight[seq] = w
            f = self._receive(min(w.deadline for w in inflight.values()))
            if f is None:
                self.stats.timeouts += 1
                now = time.monotonic()
                for seq, w in list(inflight.items()):
                    if w.deadline <= now:
                        self._write_failed(seq, inflight, chunks, "no valid reply")
                continue
            if self._route(f) or f.seq not in inflight:
                continue
            w = inflight[f.seq]
            if f.code == p.Reply.ACK:
                del inflight[f.seq]
                if progress is not None:
                    progress(len(w.data))
            elif f.code == p.Reply.NAK:
                nak = self._nak(f)
                if nak.error in p.FRAME_ERRORS:
                    self._write_failed(f.seq, inflight, chunks, "frame damaged")
                elif nak.error == p.Err.BUSY:
                    now = time.monotonic()
                    busy_until = busy_until or now + self.busy_timeout
                    if now >= busy_until:
                        raise DeviceBusy(p.Cmd.WRITE, nak)
                    time.sleep(0.01)
                    self._send(w.wire)
                    w.deadline = time.monotonic() + self.timeout
                else:
                    raise DeviceNak(p.Cmd.WRITE, nak)
            else:
                raise ProtocolError(f"WRITE answered with {p.command_name(f.code)}")

    def _write_failed(self, seq, inflight, chunks, why):
        w = inflight[seq]
        w.attempts += 1
        self.stats.retransmissions += 1
        if w.attempts >= 2 and len(w.data) >= 2 * MIN_WRITE_SPLIT:
            # idempotent: the halves may safely overlap whatever of the whole was written
            del inflight[seq]
            half = len(w.data) // 2
            chunks.appendleft((w.offset + half, w.data[half:]))
            chunks.appendleft((w.offset, w.data[:half]))
            return
        if w.attempts > self.retries:
            raise DeviceTimeout(f"WRITE failed {w.attempts} times ({why}; {self.timeout:g} s per attempt)")
        self._send(w.wire)
        w.deadline = time.monotonic() + self.timeout

    def verify(self, region, offset, length):
        """CRC-32 (``zlib.crc32``) of ``length`` bytes of ``region`` from ``offset``, computed by the
        device."""
        rate = self.verify_rate
        if rate is None:
            clock = self.device_info.clock_hz if self.device_info is not None else 0
            rate = clock / p.VERIFY_CYCLES_PER_BYTE if clock else VERIFY_RATE
        f = self._transact(p.Cmd.VERIFY, p.VerifyRequest(region, offset, length).pack(),
                           wait=self.timeout + length / rate)
        return self._parse(p.VerifyReply, f).crc

    def reset_state(self):
        """Zero the recurrent state: the next FEED starts a new sequence."""
        self._transact(p.Cmd.RESET_STATE)

    def feed(self, tokens):
        """Run prompt ``tokens`` (ints) through the model (prefill); returns the last FEED's
        :class:`mmfree.protocol.FeedReply` (position, greedy next token, cycles of the last token)."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("feed needs at least one token")
        for t in tokens:
            if not 0 <= t <= 0xFFFFFFFF:
                raise ValueError(f"token id {t} is not a 32-bit unsigned integer")
        reply = None
        for i in range(0, len(tokens), p.MAX_FEED):
            part = tokens[i:i + p.MAX_FEED]
            f = self._transact(p.Cmd.FEED, p.FeedRequest(tuple(part)).pack(),
                               wait=self.timeout + len(part) * self.token_timeout)
            reply = self._parse(p.FeedReply, f)
        return reply

    def generate(self, n, temperature=0.0, top_k=0, seed=0):
        """Start generating ``n`` tokens after what was fed; returns a :class:`Generation`, an iterator
        of token ids as they arrive. ``temperature`` 0 is greedy; otherwise the device samples
        (:mod:`mmfree.sampler`) with ``top_k`` (0: no limit) from an LFSR seeded with ``seed``."""
        if not 0 <= n <= 0xFFFFFFFF:
            raise ValueError(f"n must be 0..2**32-1, not {n}")
        if not 0 <= top_k <= 0xFFFF:
            raise ValueError(f"top_k must be 0..65535, not {top_k}")
        if not 0 <= seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be 0..2**32-1, not {seed}")
        code = temperature_code(temperature)
        seq = self._next_seq()
        gen = Generation(self, seq, n)
        previous, self._gen = self._gen, gen
        try:
            self._transact(p.Cmd.GENERATE, p.GenerateRequest(n, code, top_k, seed).pack(), seq=seq)
        except BaseException:
            self._gen = previous
            raise
        return gen

    def _resend(self, index):
        """Ask for token ``index`` of the running generation (or, past the end, for its DONE)."""
        gen = self._gen
        self.stats.resends += 1
        f = self._transact(p.Cmd.RESEND, p.ResendRequest(index).pack(),
                           accept=(p.Reply.ACK, p.Reply.TOKEN, p.Reply.DONE))
        if f.code != p.Reply.ACK and gen is not None:
            gen._accept(f)
        return f.code

    def _stream_budget(self):
        """Seconds to wait for the next token (or a DONE) before giving up, RESENDs included."""
        return (self.retries + 2) * (self.token_timeout + self.timeout)

    def _next_token(self, gen):
        give_up = time.monotonic() + self._stream_budget()
        while True:
            if gen.next in gen.pending:
                tok = gen.pending.pop(gen.next)
                gen.next += 1
                gen.tokens.append(tok.token)
                gen.cycles.append(tok.cycles)
                return tok.token
            if gen.done is not None and gen.next >= gen.done.count:
                if self._gen is gen:
                    self._gen = None
                raise StopIteration
            if self._gen is not gen:
                raise DeviceError("this generation was superseded by a later GENERATE")
            now = time.monotonic()
            if now >= give_up:
                raise DeviceTimeout(f"token {gen.next} did not arrive within {self._stream_budget():g} s")
            # a later token (or DONE) already here means the one wanted was lost: ask at once
            gap = gen.done is not None or any(i > gen.next for i in gen.pending)
            if not gap:
                f = self._receive(min(now + self.token_timeout, give_up))
                if f is not None:
                    self._route(f)      # anything else is a stale reply to an earlier command
                    continue
            try:
                self._resend(gen.next)
            except DeviceNak as e:
                if e.error == p.Err.GONE:
                    raise TokenLost(f"token {gen.next} was lost on the link and the device no longer "
                                    f"holds it") from None
                raise

    def stop(self):
        """End the running generation early; returns the number of tokens the device produced (the
        generation's iterator still yields any of them not yet taken). Safe to call when nothing runs."""
        f = self._transact(p.Cmd.STOP)
        self._parse(p.StopReply, f)
        gen = self._gen
        if gen is None:
            return 0
        give_up = time.monotonic() + self._stream_budget()
        while gen.done is None:
            now = time.monotonic()
            if now >= give_up:
                raise DeviceTimeout(f"no DONE within {self._stream_budget():g} s of STOP")
            f = self._receive(min(now + self.token_timeout, give_up))
            if f is not None:
                self._route(f)
                continue
            self._resend(RESEND_DONE)
        return gen.done.count

    def upload(self, image, memory_map=None, progress=None, verify=True):
        """Upload a weight image: see :func:`mmfree.driver.upload.upload`."""
        from .upload import upload
        return upload(self, image, memory_map, progress=progress, verify=verify)
