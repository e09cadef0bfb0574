"""``mmfree run``: put a model on a device, feed a prompt, stream the generated text.

With ``--port`` it drives whatever answers there (``/dev/ttyUSB0`` for a board, ``socket://host:port``
for a simulated board started elsewhere). Without it, it starts the simulated board itself: the
accelerator's RTL in Verilator behind a local TCP socket (:mod:`mmfree.sim.board`), built and cached
on first use.
"""

import sys
import time

from .protocol import DEFAULT_BAUD

__all__ = ["register", "run"]


def _image_of(spec):
    """Weight image bytes of a model spec (bundled name, folder or image)."""
    from .registry import resolve
    src = resolve(spec)
    if src.image is not None:
        return src.image.read_bytes(), src
    from .image import image_bytes
    return image_bytes(src.quantized()), src


def _progress_bar(total, desc):
    from tqdm import tqdm
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=False,
               disable=None)                # shown on a terminal only

    def update(done, total_):
        bar.update(done - bar.n)
    return bar, update


def _build_args(config):
    """The `mmfree build` arguments (``model``, ``lanes``, ``rows``, ``arch``: those of
    :func:`~mmfree.boards.build.accelerator_design`) of the accelerator that the simulated board runs,
    or ``None`` when no bundled preset sizes it."""
    from .hw.config import PRESETS
    sizes = lambda c: (c.max_vocab, c.max_hidden, c.max_layers, c.max_intermediate)
    for name, preset in PRESETS.items():
        if preset == config:
            return {"model": name, "lanes": None, "rows": None, "arch": config.arch}
    for name, preset in PRESETS.items():
        if sizes(preset) == sizes(config):
            return {"model": name, "lanes": config.lanes, "rows": config.rows, "arch": config.arch}
    return None


def _board_fmax(board, config):
    """``(Fmax in Hz, build hash)`` measured by a cached `mmfree build` of the accelerator that the
    simulated board runs, for ``board``; ``None`` without one."""
    from .boards.build import accelerator_design, cached_build
    args = _build_args(config)
    hit = cached_build(board, accelerator_design(**args)) if args else None
    if hit is None:
        return None
    manifest, report = hit
    return report["fmax"]["sync"]["achieved_mhz"] * 1e6, manifest["build_hash"]


def run(args):
    from .driver import Device
    from .commands import encode_prompt
    image, src = _image_of(args.model)
    from .image import ImageError, parse_image
    try:
        # checked whole now, as the upload's check_image does, but before a simulated board is built
        shape = parse_image(image, values=True)[0].shape
    except ImageError as e:
        raise ImageError(f"{args.model}: {e}") from None
    prompt = encode_prompt(args.prompt, shape.vocab_size)

    board = None
    if args.port is not None and not args.port.strip():
        raise ValueError("--port is empty: give a serial port or a socket:// URL, or leave it out to run "
                         "on the simulated board")
    if args.port:
        given = [f"--{name}" for name in ("lanes", "rows", "arch", "board") if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to the "
                             f"simulated board: a device at --port runs the accelerator it was built with")
    elif args.baud is not None:
        raise ValueError("--baud only applies with --port (the simulated board has no baud rate)")
    if args.arch is None:
        args.arch = "core"
    if args.board is None:
        args.board = "icebreaker" if args.arch == "compact" else "ulx3s-85f"
    t_start = time.perf_counter()
    if args.port:
        url = args.port
        device = Device(url, baudrate=args.baud or DEFAULT_BAUD)
    else:
        from .sim.board import SimulatedBoard
        board = SimulatedBoard.for_model(shape, progress=True, lanes=args.lanes, arch=args.arch,
                                         rows=args.rows)
    try:
        if board is not None:
            board.start()
            # a simulation runs some ten thousand clock cycles a second: wait accordingly
            device = Device(board.url, timeout=10.0, token_timeout=600.0, busy_timeout=600.0,
                            verify_rate=2e3)
        with device:
            info = device.info()
            bar, update = _progress_bar(len(image), "upload")
            try:
                report = device.upload(image, progress=update)
            finally:
                bar.close()
            device.reset_state()
            t_gen = time.perf_counter()
            device.feed(prompt)
            out = sys.stdout.buffer
            out.write(args.prompt.encode("utf-8"))
            out.flush()
            gen = device.generate(args.n, args.temperature, args.top_k, args.seed)
            try:
                for token in gen:
                    out.write(bytes([token]))
                    out.flush()
            except (BrokenPipeError, KeyboardInterrupt):   # the reader went away (`| head`), or Ctrl-C:
                try:                                          # leave the device idle
                    gen.stop()
                except Exception:
                    pass
                raise
            out.write(b"\n")
            out.flush()
            t_end = time.perf_counter()
            status = device.status()
    finally:
        if board is not None:
            board.stop()

    note = None
    cycles = [c for c in gen.cycles if c]
    per_token = sum(cycles) / len(cycles) if cycles else 0
    parts = [f"{len(gen.tokens)} tokens"]
    if per_token:
        parts.append(f"{per_token:,.0f} cycles/token")
        fmax = _board_fmax(args.board, board.config) if board is not None else None
        if fmax is not None:
            clock, build_hash = fmax
            parts.append(f"{clock / per_token:,.0f} tokens/s at the {args.board} Fmax of "
                         f"{clock / 1e6:.1f} MHz (build {build_hash})")
        elif info.clock_hz:
            clock = info.clock_hz
            parts.append(f"{clock / per_token:,.0f} tokens/s at {clock / 1e6:.1f} MHz")
            if board is not None:
                build = _build_args(board.config)
                how = (f"`mmfree build --board {args.board} --model {build['model']}"
                       + (f" --lanes {build['lanes']}" if build["lanes"] else "")
                       + (f" --rows {build['rows']}" if build["rows"] else "") + f" --arch {build['arch']}`"
                       + " measures its Fmax"
                       if build else "no bundled preset sizes it")
                note = f"design clock: no {args.board} build of this design is cached; {how}"
    parts.append(f"upload {report.bytes:,} bytes in {report.seconds:.1f} s")
    what = "simulation" if board is not None else "wall"
    parts.append(f"{what} time {t_end - t_gen:.1f} s")
    print("mmfree run: " + ", ".join(parts), file=sys.stderr)
    if note:
        print(f"mmfree run: ({note})", file=sys.stderr)
    return 0


def _board_arg(name):
    import argparse
    from .boards.targets import get_board
    try:
        get_board(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def register(sub):
    from .commands import _nonneg_float, _positive_arg, _uint_arg
    from .sampler import TOP_K_BITS
    p = sub.add_parser("run", help="run a model on a board (or the simulated board) and stream text")
    p.add_argument("--prompt", required=True, help="text to feed (bytes of UTF-8 for a byte-level model)")
    p.add_argument("-n", type=_positive_arg, default=100, help="tokens to generate (default 100)")
    p.add_argument("--model", default="demo", help="bundled name, model folder or weight image (default demo)")
    p.add_argument("--port", default=None,
                   help="serial port or pyserial URL of a device; default: start the simulated board")
    p.add_argument("--baud", type=_positive_arg, default=None,
                   help=f"serial baud rate with --port (default {DEFAULT_BAUD})")
    p.add_argument("--lanes", type=_positive_arg, default=None,
                   help="lanes of each row unit of the simulated board")
    p.add_argument("--rows", type=_positive_arg, default=None, help="row units of the simulated board")
    p.add_argument("--arch", choices=("core", "compact"), default=None,
                   help="the accelerator of the simulated board: core (default) or compact (processor "
                        "and ternary unit, as built for the iCEBreaker)")
    p.add_argument("--board", type=_board_arg, default=None,
                   help="with the simulated board: the board whose measured Fmax (from a cached "
                        "`mmfree build`) projects tokens/s (default ulx3s-85f; icebreaker with "
                        "--arch compact)")
    p.add_argument("--temperature", type=_nonneg_float, default=0.0,
                   help="0 (default): the argmax; otherwise the device samples (8.8 fixed point)")
    p.add_argument("--top-k", type=_uint_arg(TOP_K_BITS), default=0,
                   help="with a temperature: sample from the k largest logits only (default 0: all)")
    p.add_argument("--seed", type=_uint_arg(32), default=0, help="the device's LFSR seed (default 0)")
    p.set_defaults(func=run)
