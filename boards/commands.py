"""``mmfree build``: a bitstream, its report and manifest for a board (see :mod:`mmfree.boards.build`)."""

import json
import sys

from mmfree.protocol import DEFAULT_BAUD

__all__ = ["register"]


def _summary(result, board):
    r, m = result.report, result.manifest
    clock = m["clock"]
    lines = [f"{board.name}: {result.design}, build hash {result.build_hash}"
             + (" (cached)" if result.cached else "")]
    pll = clock.get("pll")
    if pll:
        exact = "exact" if pll["f_out_hz"] == pll["f_requested_hz"] else \
            f"requested {pll['f_requested_hz'] / 1e6:g} MHz, {pll['error_ppm']:+.0f} ppm"
        lines.append(f"  clock      {clock['achieved_hz'] / 1e6:g} MHz ({pll['primitive']} from "
                     f"{pll['f_in_hz'] / 1e6:g} MHz, {exact})")
    else:
        lines.append(f"  clock      {clock['achieved_hz'] / 1e6:g} MHz (supplied to clk)")
    labels = [("lut4", "LUT4"), ("ff", "FF"), ("bram", "block RAM"), ("spram", "SPRAM"), ("dsp", "DSP")]
    for key, label in labels:
        u = r.get("resources", {}).get(key)
        if u is not None:
            lines.append(f"  {label:<10} {u['used']:>7} / {u['available']:<7} ({u['percent']:.1f}%)")
    for name, f in r.get("fmax", {}).items():
        verdict = "met" if f["met"] else "NOT MET"
        lines.append(f"  Fmax {name:<5} {f['achieved_mhz']:.2f} MHz (needs {f['required_mhz']:g} MHz) {verdict}")
    for path in result.files:
        if path.name not in ("report.json", "manifest.json", "build.log"):
            lines.append(f"  wrote      {path}")
    lines.append(f"  report     {result.out_dir / 'report.json'}, {result.out_dir / 'manifest.json'}")
    if result.bitstream is not None and board.flash:
        lines.append(f"  flash      {board.flash[0].format(bitstream=result.bitstream)}")
    return "\n".join(lines)


def cmd_build(args):
    from ..cli import UsageError
    from .targets import get_board, UnknownBoardError
    from .pll import PllError
    from .build import build, selftest_design, accelerator_design, BuildError, TimingError

    try:
        board = get_board(args.board)
    except UnknownBoardError as e:
        raise UsageError(str(e)) from None
    if args.design == "selftest":
        if args.model is not None or args.lanes is not None or args.arch is not None or args.rows is not None:
            raise UsageError("--model, --lanes, --rows and --arch make the accelerator; the self-test "
                             "design takes none of them")
        design = selftest_design(baud=args.baud or DEFAULT_BAUD)
    else:
        try:
            design = accelerator_design(args.model or board.default_model, lanes=args.lanes, baud=args.baud,
                                        arch=args.arch or board.arch, rows=args.rows)
        except BuildError as e:
            print(f"mmfree: error: {e}", file=sys.stderr)
            return 1
        except (TypeError, ValueError) as e:         # an unknown preset, a lane count that does not fit
            raise UsageError(str(e)) from None
    try:
        result = build(board, design, clock_hz=None if args.clock is None else args.clock * 1e6,
                       out_dir=args.output, use_cache=not args.no_cache,
                       allow_timing_fail=args.allow_timing_fail, seed=args.seed,
                       progress=not args.quiet)
    except PllError as e:
        raise UsageError(f"--clock: {e}") from None
    except BuildError as e:
        # TimingError included: a clear line, a non-zero exit, the report left in the output folder
        print(f"mmfree: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"report": result.report, "manifest": result.manifest,
                          "bitstream": str(result.bitstream) if result.bitstream else None,
                          "cached": result.cached}, indent=2))
    else:
        print(_summary(result, board))
    return 0


def register(sub):
    from ..commands import _mhz_arg, _positive_arg, _uint_arg
    p = sub.add_parser(
        "build", help="synthesise, place and route a bitstream for a board (YoWASP tools)",
        description="Build a bitstream, report.json and manifest.json for a board with the YoWASP "
                    "tools (Yosys, nextpnr). Results are cached by build hash: a repeated build returns "
                    "at once. A build that does not reach its clock fails (exit 1).")
    p.add_argument("--board", required=True,
                   help="ulx3s-85f, ulx3s-45f, ulx3s-25f, ulx3s-12f, icebreaker or generic "
                        "(Verilog and a constraints template)")
    p.add_argument("--design", choices=("accelerator", "selftest"), default="accelerator",
                   help="what to build: the accelerator (default) or the flow's self-test design "
                        "(UART echo, LED status)")
    p.add_argument("--model", help="hardware preset the accelerator is sized for (default: demo on "
                                   "ulx3s-85f, tiny elsewhere)")
    p.add_argument("--lanes", type=_positive_arg, help="ternary lanes of each row unit of the accelerator")
    p.add_argument("--rows", type=_positive_arg,
                   help="row units: matrix rows computed at once, each on --lanes lanes (a power of two; "
                        "default: the preset's)")
    p.add_argument("--arch", choices=("core", "compact"),
                   help="the accelerator: core (the token in gateware) or compact (a processor running "
                        "the model beside a ternary unit); default compact on icebreaker, core elsewhere")
    p.add_argument("--clock", type=_mhz_arg, metavar="MHZ",
                   help="design clock in MHz; the PLL's nearest is used (default: the preset's clock for "
                        "the accelerator, the board's for the self-test)")
    p.add_argument("--baud", type=_positive_arg, help=f"UART baud rate (default {DEFAULT_BAUD})")
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (default build/BOARD-DESIGN)")
    p.add_argument("--seed", type=_uint_arg(31), default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--no-cache", action="store_true", help="rebuild even if the result is cached")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="keep the bitstream of a build that misses its clock (exit 0)")
    p.add_argument("--json", action="store_true", help="print the report and manifest as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_build)
