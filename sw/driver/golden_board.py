"""The golden board: a device in software that answers the whole protocol from the integer golden model.

It is driven by bytes: :meth:`GoldenBoard.receive` takes what a host sends, :meth:`GoldenBoard.transmit`
returns what the device sends back, :meth:`GoldenBoard.poll` produces the next token of a running
generation. It is also a transport (``write``/``read``), so ``Device(GoldenBoard())`` talks to it in
process; used that way it produces a token only when the host reads and nothing else is waiting, which
keeps tests deterministic. :func:`serve` puts it behind a TCP socket (``socket://host:port``), where it
generates as fast as it can, like hardware.

Memory, ``layout="image"`` (the default): region 0 (tag ``IMG``) holds a weight image file as it is
(:data:`mmfree.driver.DEFAULT_MAP`). ``layout="accelerator"``: the four regions of the accelerator
(:mod:`mmfree.memory_map`, tags ``TRIT PARM GATE SCAL``), sized and laid out for ``lanes`` and
``rows`` (row units) and the ``max_*`` limits, so the board is a software twin of the hardware down to where every byte goes. The model is
rebuilt from memory when a FEED or GENERATE first needs it after a WRITE; if the memory does not hold a
valid model, those commands get ``NOT_LOADED``. Cycle counts are reported as 0 (INFO
flag ``EMULATED``).
"""

import select
import socket
import threading
import zlib

from .. import protocol as p
from ..sampler import Sampler, argmax

__all__ = ["GoldenBoard", "BoardServer", "serve", "GOLDEN_BUILD_HASH"]

GOLDEN_BUILD_HASH = zlib.crc32(b"mmfree golden board")


class _Nak(Exception):
    def __init__(self, error, arg=0):
        self.error = error
        self.arg = arg


class _Generation:
    def __init__(self, seq, n, sampler, history):
        self.seq = seq
        self.n = n
        self.sampler = sampler
        self.produced = 0
        self.tokens = {}              # index -> token, the last `history` of them
        self.history = history
        self.stop = False
        self.finished = False
        self.reason = p.DoneReason.COMPLETE


class OutputQueue:
    """The bytes a software device has sent and the host has not read yet (``self._out``)."""

    def transmit(self, size=-1):
        """Take up to ``size`` (all if negative) queued bytes for the host."""
        if size < 0 or size >= len(self._out):
            out, self._out = bytes(self._out), bytearray()
        else:
            out = bytes(self._out[:size])
            del self._out[:size]
        return out

    @property
    def pending(self):
        return len(self._out)


class GoldenBoard(OutputQueue):
    """An in-process mmfree device backed by :class:`mmfree.golden.GoldenModel`.

    ``image``: optional weight image bytes preloaded into region 0. The other arguments are what INFO
    reports; the ``max_*`` limits are enforced by the host's upload check, not by the board, which runs
    any image that fits its region.
    """

    IMAGE_REGION = 0

    def __init__(self, image=None, *, image_region_size=1 << 22, lanes=1, max_vocab=65536,
                 max_hidden=4096, max_layers=64, max_intermediate=16384, clock_hz=0,
                 token_history=256, build_hash=GOLDEN_BUILD_HASH, layout="image", rows=1):
        from ..image import FORMAT_VERSION
        from ..numerics import NUMERIC_SPEC_VERSION
        if layout not in ("image", "accelerator"):
            raise ValueError(f"layout must be 'image' or 'accelerator', not {layout!r}")
        self.layout = layout
        if layout == "image":
            regions = (p.Region(b"IMG\0", image_region_size),)
        else:
            from .. import memory_map as mm
            from ..golden import ModelShape
            if lanes % 4:
                raise ValueError(f"lanes must be a multiple of 4 for the accelerator layout, not {lanes}")
            mm.check_rows(rows)
            biggest = ModelShape(max_vocab, max_hidden, max_layers, max_intermediate)
            sizes = mm.region_sizes(biggest, 4)
            sizes[mm.REGION_TRITS] = mm.trit_region_bytes(biggest.ternary_weights, lanes, rows)
            regions = tuple(p.Region(mm.REGION_TAGS[r], sizes[r]) for r in sorted(sizes))
        self.memory = [bytearray(r.size) for r in regions]
        self.info = p.Info(p.PROTOCOL_VERSION, lanes, FORMAT_VERSION, NUMERIC_SPEC_VERSION, max_vocab,
                           max_hidden, max_intermediate, max_layers, clock_hz, build_hash, p.MAX_WRITE,
                           token_history, p.InfoFlag.SAMPLING | p.InfoFlag.EMULATED, regions, rows)
        self._rx = p.FrameReceiver()
        self._out = bytearray()
        self._last = None             # (seq, crc, reply bytes) of the last command executed
        self.frames_ok = self.frames_rejected = self.naks_sent = self.internal_errors = 0
        self.last_error = 0
        self.cycles_last_token = 0
        self.position = 0
        self._golden = None
        self._dirty = True
        self._logits = None
        self._gen = None
        if image is not None:
            if layout != "image":
                raise ValueError("a preloaded image needs layout='image'")
            if len(image) > image_region_size:
                raise ValueError(f"image of {len(image)} bytes exceeds the region ({image_region_size})")
            self.memory[0][:len(image)] = image

    # --- byte stream -------------------------------------------------------------------------------

    def receive(self, data):
        """Process bytes from the host; replies are queued for :meth:`transmit`."""
        for item in self._rx.feed(data):
            if isinstance(item, p.FrameError):
                self.frames_rejected += 1
                self._send_nak(item.seq, item.error, item.code)
            else:
                self._command(item)

    @property
    def generating(self):
        return self._gen is not None and not self._gen.finished

    def poll(self):
        """One step of a running generation (a TOKEN, or the final DONE); False when idle."""
        g = self._gen
        if g is None or g.finished:
            return False
        if g.stop or g.produced >= g.n:
            g.finished = True
            g.reason = p.DoneReason.STOPPED if g.produced < g.n else p.DoneReason.COMPLETE
            self._out += p.encode_frame(g.seq, p.Reply.DONE, p.Done(g.produced, g.reason).pack())
            return True
        tok = g.sampler.pick(self._logits)
        index = g.produced
        g.tokens[index] = tok
        g.tokens.pop(index - g.history, None)
        g.produced += 1
        self._out += p.encode_frame(g.seq, p.Reply.TOKEN, p.Token(index, tok, 0).pack())
        self._step(tok)
        return True

    # transport interface: the host's write is our receive, the host's read our transmit
    def write(self, data):
        self.receive(data)
        return len(data)

    def read(self, size=1):
        if not self._out:
            self.poll()
        return self.transmit(size)

    # --- command execution -------------------------------------------------------------------------

    def _send_nak(self, seq, error, command=0xFF, arg=0):
        self.naks_sent += 1
        self.last_error = int(error)
        self._out += p.encode_frame(seq, p.Reply.NAK, p.Nak(error, command, arg & 0xFFFFFFFF).pack())

    def _command(self, f):
        self.frames_ok += 1
        crc = f.crc
        if self._last is not None and self._last[0] == f.seq and self._last[1] == crc:
            self._out += self._last[2]
            return
        try:
            handler = self._HANDLERS.get(f.code)
            if handler is None:
                raise _Nak(p.Err.UNKNOWN_COMMAND, f.code)
            lo, hi = p.REQUEST_LENGTHS[p.Cmd(f.code)]
            if not lo <= len(f.payload) <= hi:
                raise _Nak(p.Err.BAD_LENGTH, len(f.payload))
            code, payload = handler(self, f)
        except _Nak as e:
            self._send_nak(f.seq, e.error, f.code, e.arg)
            return
        except p.PayloadError as e:
            self._send_nak(f.seq, e.error, f.code, e.arg)
            return
        except Exception:                 # a fault of the board itself: report it, keep serving
            self.internal_errors += 1
            self._send_nak(f.seq, p.Err.INTERNAL, f.code)
            return
        reply = p.encode_frame(f.seq, code, payload)
        self._last = (f.seq, crc, reply)
        self._out += reply

    def _not_busy(self):
        if self.generating:
            raise _Nak(p.Err.BUSY)

    def _region(self, rid, offset, length):
        if rid >= len(self.memory):
            raise _Nak(p.Err.BAD_REGION, rid)
        if offset + length > len(self.memory[rid]):
            raise _Nak(p.Err.BAD_RANGE, offset)
        return self.memory[rid]

    def _info(self, f):
        return p.Reply.ACK, self.info.pack()

    def _status(self, f):
        if self.generating:
            state = p.DeviceState.GENERATING
        else:
            state = p.DeviceState.IDLE
        flags = p.StatusFlag(0)
        if not self.generating:
            try:
                self._model()
            except _Nak:
                pass
        if self._golden is not None:
            flags |= p.StatusFlag.LOADED
        if self._logits is not None:
            flags |= p.StatusFlag.CONTEXT
        produced = self._gen.produced if self._gen is not None else 0
        m = 0xFFFFFFFF
        st = p.Status(self.cycles_last_token, produced, self.position & m, self.frames_ok & m,
                      self.frames_rejected & m, self.naks_sent & m, self.last_error, state, flags)
        return p.Reply.ACK, st.pack()

    def _write(self, f):
        self._not_busy()
        req = p.WriteRequest.unpack(f.payload)
        mem = self._region(req.region, req.offset, len(req.data))
        mem[req.offset:req.offset + len(req.data)] = req.data
        if self.layout == "accelerator" or req.region == self.IMAGE_REGION:
            self._dirty = True
        return p.Reply.ACK, b""

    def _verify(self, f):
        self._not_busy()
        req = p.VerifyRequest.unpack(f.payload)
        mem = self._region(req.region, req.offset, req.length)
        crc = zlib.crc32(memoryview(mem)[req.offset:req.offset + req.length])
        return p.Reply.ACK, p.VerifyReply(crc).pack()

    def _reset_state(self, f):
        self._not_busy()
        if self._golden is not None:
            self._golden.reset(1)
        self._logits = None
        self.position = 0
        return p.Reply.ACK, b""

    def _model(self):
        """The golden model of the image in memory, parsed again after any WRITE; None if invalid."""
        if self._dirty:
            from ..golden import GoldenModel
            from ..image import ImageError, parse_header, read_image
            old = self._golden
            self._golden = None
            try:
                if self.layout == "accelerator":
                    from ..memory_map import from_regions
                    self._golden = GoldenModel(from_regions({i: bytes(m) for i, m in enumerate(self.memory)},
                                                            self.info.lanes, self.info.rows))
                else:
                    mem = self.memory[self.IMAGE_REGION]
                    hdr = parse_header(bytes(mem[:64]))
                    if hdr.file_size <= len(mem):
                        self._golden = GoldenModel(read_image(bytes(mem[:hdr.file_size])))
            except (ImageError, ValueError):
                pass
            self._dirty = False
            if self._golden is not None and old is not None and old.shape == self._golden.shape:
                self._golden.state = old.state         # WRITE does not touch the recurrent state
            else:
                self._logits = None
                self.position = 0
        if self._golden is None:
            raise _Nak(p.Err.NOT_LOADED)
        return self._golden

    def _step(self, token):
        self._logits, _ = self._golden.step(token)
        self.position += 1
        self.cycles_last_token = 0

    def _feed(self, f):
        self._not_busy()
        req = p.FeedRequest.unpack(f.payload)
        g = self._model()
        for t in req.tokens:
            if t >= g.shape.vocab_size:
                raise _Nak(p.Err.BAD_TOKEN, t)
        for t in req.tokens:
            self._step(t)
        return p.Reply.ACK, p.FeedReply(self.position, argmax(self._logits.tolist()), 0).pack()

    def _generate(self, f):
        self._not_busy()
        req = p.GenerateRequest.unpack(f.payload)
        self._model()
        if self._logits is None:
            raise _Nak(p.Err.NO_CONTEXT)
        sampler = Sampler(req.temperature, req.top_k, req.seed)
        self._gen = _Generation(f.seq, req.n, sampler, self.info.token_history)
        return p.Reply.ACK, b""

    def _stop(self, f):
        running = self.generating
        if running:
            self._gen.stop = True
        return p.Reply.ACK, p.StopReply(int(running)).pack()

    def _resend(self, f):
        req = p.ResendRequest.unpack(f.payload)
        g = self._gen
        if g is None:
            raise _Nak(p.Err.GONE, req.index)
        if req.index < g.produced:
            if req.index not in g.tokens:
                raise _Nak(p.Err.GONE, req.index)
            return p.Reply.TOKEN, p.Token(req.index, g.tokens[req.index], 0).pack()
        if g.finished:
            return p.Reply.DONE, p.Done(g.produced, g.reason).pack()
        return p.Reply.ACK, b""

    _HANDLERS = {
        p.Cmd.INFO: _info, p.Cmd.STATUS: _status, p.Cmd.WRITE: _write, p.Cmd.VERIFY: _verify,
        p.Cmd.RESET_STATE: _reset_state, p.Cmd.FEED: _feed, p.Cmd.GENERATE: _generate,
        p.Cmd.STOP: _stop, p.Cmd.RESEND: _resend,
    }


class BoardServer:
    """A :class:`GoldenBoard` behind a TCP socket, served from a background thread: connect with
    ``Device("socket://127.0.0.1:PORT")``. One connection at a time; the board (its memory and state)
    outlives connections, like a board on a desk. ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, board=None, port=0, host="127.0.0.1"):
        self.board = GoldenBoard() if board is None else board
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(1)
        self.host = host
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = None

    @property
    def url(self):
        return f"socket://{self.host}:{self.port}"

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, name="golden-board", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        while not self._stop.is_set():
            r, _, _ = select.select([self._sock], [], [], 0.1)
            if not r:
                continue
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._serve_connection(conn)

    def _serve_connection(self, conn):
        board = self.board
        while not self._stop.is_set():
            r, _, _ = select.select([conn], [], [], 0 if board.generating else 0.05)
            if r:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                board.receive(data)
            if not board.pending:
                board.poll()
            out = board.transmit()
            if out:
                try:
                    conn.sendall(out)
                except OSError:
                    return

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def serve(port, board=None, host="127.0.0.1"):
    """Serve a golden board on ``host:port`` until interrupted (blocking)."""
    server = BoardServer(board, port, host)
    try:
        server.serve_forever()
    finally:
        server.close()
