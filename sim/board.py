"""The simulated board: the whole accelerator's RTL in Verilator behind a TCP socket.

The unchanged host driver talks to it with ``socket://127.0.0.1:PORT``, exactly as it talks to a board
on ``/dev/ttyUSB0``: the socket carries the byte stream a UART would carry (the accelerator is built
with its byte port, ``phy="bytes"``; the UART itself is verified on its own). Verilog and the Verilator
build are cached (:mod:`mmfree.sim.runner`), so only the first start of a configuration compiles.

``SimulatedBoard(config).start()`` runs the simulation in a child process; ``url`` is where it
listens; ``stop()`` ends it. ``mmfree sim-board`` serves one in the foreground.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["SimulatedBoard", "BoardStartError", "register", "accelerator_verilog", "accelerator_sources"]


class BoardStartError(OSError):
    """The simulated board could not start: its address is taken or invalid, or its process stopped."""

_HW_SOURCES = ("hw", "sw/numerics.py", "sw/protocol.py", "sw/memory_map.py", "sw/sampler.py")
_SOURCE_SUFFIXES = (".py", ".c", ".h", ".S")         # the gateware generators and the firmware


DEFAULT_LANES = {"core": 32, "compact": 4}


def _config_for(shape, lanes=None, arch="core", rows=None):
    """The bundled preset of ``arch`` sized exactly for ``shape`` (and ``lanes`` and ``rows``, if
    given), else one made for it."""
    from mmfree.hw.config import COMPACT_CLOCK_HZ, HwConfig, PRESETS
    for preset in PRESETS.values():
        sizes = (preset.max_vocab, preset.max_hidden, preset.max_layers, preset.max_intermediate)
        if sizes == (shape.vocab_size, shape.hidden_size, shape.num_layers, shape.intermediate_size) \
                and lanes in (None, preset.lanes) and rows in (None, preset.rows) and preset.arch == arch:
            return preset
    clock = {"clk_freq": COMPACT_CLOCK_HZ} if arch == "compact" else {}
    return HwConfig.for_model(shape, lanes=lanes or DEFAULT_LANES[arch], rows=rows or 1, arch=arch, **clock)


def _source_digest():
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    import amaranth
    h.update(amaranth.__version__.encode())
    for rel in _HW_SOURCES:
        path = root / rel
        files = sorted(f for f in path.rglob("*") if f.suffix in _SOURCE_SUFFIXES) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def accelerator_verilog(config, build_hash=0):
    """Verilog of the accelerator ``config.arch`` names, with its byte port (``phy="bytes"``), cached by
    the configuration and the sources."""
    from mmfree.sim.runner import cache_dir, to_verilog_text
    key = hashlib.sha256(json.dumps([config.to_dict(), build_hash, _source_digest()],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"board-verilog-{key}.v"
    if path.is_file():
        return path.read_text()
    from mmfree.hw.accelerator import make_accelerator
    text = to_verilog_text(make_accelerator(config, build_hash, phy="bytes"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


def accelerator_sources(config):
    """Further Verilog files a simulation of the accelerator for ``config`` needs (the compact one's
    processor)."""
    if config.arch == "compact":
        from mmfree.hw.soc import picorv32_source
        return (str(picorv32_source()),)
    return ()


class SimulatedBoard:
    """One accelerator simulation serving the protocol on a local TCP port.

    ``byte_cycles``: clock cycles per byte in each direction (1: as fast as the byte port goes;
    ``clk_freq * 10 // baud`` models a UART line in simulated time).
    """

    def __init__(self, config, *, port=0, host="127.0.0.1", byte_cycles=1, progress=False, stats=None):
        self.config = config
        self.host = host
        self.requested_port = port
        self.byte_cycles = byte_cycles
        self.progress = progress
        self.stats = stats
        self.port = None
        self.process = None
        self._dir = None

    @classmethod
    def for_model(cls, shape, *, lanes=None, arch="core", rows=None, **kwargs):
        """A board whose configuration holds a model of ``shape`` (a bundled preset when one fits)."""
        return cls(_config_for(shape, lanes, arch, rows), **kwargs)

    @property
    def url(self):
        return f"socket://{self.host}:{self.port}"

    def _say(self, msg):
        if self.progress:
            print(f"sim-board: {msg}", file=sys.stderr, flush=True)

    def start(self, timeout=1800):
        """Build (cached) and start the simulation; returns once it listens. Raises
        :class:`BoardStartError` (the child process stopped) if it does not, having stopped it."""
        self._check_address()
        self._dir = Path(tempfile.mkdtemp(prefix="mmfree-board-"))
        portfile = self._dir / "port"
        cfg = self._dir / "config.json"
        cfg.write_text(json.dumps(self.config.to_dict()))
        env = dict(os.environ, MMFREE_BOARD_HOST=self.host, MMFREE_BOARD_PORT=str(self.requested_port),
                   MMFREE_BOARD_PORTFILE=str(portfile), MMFREE_BOARD_BYTE_CYCLES=str(self.byte_cycles))
        if self.stats:
            env["MMFREE_BOARD_STATS"] = str(self.stats)
        with open(self._dir / "child.log", "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "mmfree.sim.board", "--child", str(cfg)],
                                            env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._say(f"starting the {self.config.arch} accelerator simulation ({self.config.lanes} lanes; "
                  f"the first start of a configuration converts and compiles it, which takes minutes)")
        t0 = time.monotonic()
        shown = 0
        try:                                # whatever ends the wait (Ctrl-C too) stops the child
            while not portfile.exists():
                if self.process.poll() is not None:
                    lines = [l for l in (self._dir / "child.log").read_text().splitlines() if l.strip()]
                    raise BoardStartError(f"the simulated board did not start: "
                                          f"{lines[-1].strip() if lines else 'no output'} "
                                          f"(log: {self._dir / 'child.log'})")
                waited = time.monotonic() - t0
                if waited > timeout:
                    raise BoardStartError(f"the simulated board did not start within {timeout} s")
                if self.progress and waited - shown >= 15:
                    shown = waited
                    self._say(f"still building ... {waited:.0f} s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.port = int(portfile.read_text())
        self._say(f"listening on {self.url} (ready after {time.monotonic() - t0:.0f} s)")
        return self

    def _check_address(self):
        """Refuse, before minutes of building, an address the board could not listen on."""
        import socket
        try:
            with socket.create_server((self.host, self.requested_port)):
                pass
        except (OSError, OverflowError) as e:
            raise BoardStartError(f"cannot listen on {self.host}:{self.requested_port}: "
                                  f"{(getattr(e, 'strerror', None) or str(e)).split(' (while')[0]}") from None

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _child(config_path):
    """In the child process: build (cached) and run the cocotb bridge until killed."""
    from mmfree.hw.config import HwConfig
    from mmfree.sim.runner import run_cocotb
    config = HwConfig.from_dict(json.loads(Path(config_path).read_text()))
    text = accelerator_verilog(config)
    run_cocotb(text, simulator="verilator", test_module="mmfree.sim.tb_board", name="accel",
               quiet=True, opt_fast="-O2", sources=accelerator_sources(config))


# --- mmfree sim-board ------------------------------------------------------------------------------

def cmd_sim_board(args):
    from mmfree.registry import resolve
    from mmfree.image import parse_header
    src = resolve(args.model)
    if src.image is not None:
        shape = parse_header(src.image.read_bytes()[:64]).shape
    else:
        shape = src.quantized().shape
    byte_cycles = 1
    board = SimulatedBoard.for_model(shape, lanes=args.lanes, arch=args.arch, rows=args.rows, port=args.port,
                                     host=args.host, byte_cycles=byte_cycles, progress=True)
    board.start()
    print(f"simulated board for {args.model} ({board.config.lanes} lanes x {board.config.rows} row "
          f"units) on {board.url}; "
          f"Ctrl-C stops it", flush=True)
    try:
        while board.process.poll() is None:
            time.sleep(0.5)
        print("mmfree: error: the simulation ended", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        board.stop()


def register(sub):
    from mmfree.commands import _positive_arg, _uint_arg
    p = sub.add_parser("sim-board", help="serve the accelerator's RTL simulation on a TCP port")
    p.add_argument("--model", default="demo", help="the model the board must hold (sizes the hardware)")
    p.add_argument("--port", type=_uint_arg(16), default=0, help="TCP port (default: any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--lanes", type=_positive_arg, default=None, help="lanes of each row unit")
    p.add_argument("--rows", type=_positive_arg, default=None, help="row units")
    p.add_argument("--arch", choices=("core", "compact"), default="core",
                   help="the accelerator: core (default) or compact (processor and ternary unit)")
    p.set_defaults(func=cmd_sim_board)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        sys.exit("usage: python -m mmfree.sim.board --child CONFIG_JSON")
