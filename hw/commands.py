"""``mmfree export-verilog``: the accelerator for a configuration as one Verilog file."""

import sys

from mmfree.protocol import DEFAULT_BAUD

__all__ = ["register"]


def cmd_export_verilog(args):
    from amaranth.back import verilog
    from .accelerator import make_accelerator
    from .config import HwConfig
    import re
    from mmfree.cli import UsageError
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.name):
        raise UsageError(f"--name {args.name!r} is not a Verilog module name (a letter or _, then "
                         f"letters, digits, _)")
    if args.preset:
        if args.lanes or args.rows:
            raise UsageError(f"--lanes and --rows size a configuration for --model; the preset "
                             f"{args.preset!r} has its own")
        config = HwConfig.preset(args.preset)
    else:
        from mmfree.registry import resolve
        shape = resolve(args.model).quantized().shape
        config = HwConfig.for_model(shape, lanes=args.lanes or 32, rows=args.rows or 1)
    if args.clock is not None:
        from dataclasses import replace
        config = replace(config, clk_freq=int(args.clock * 1e6))
    acc = make_accelerator(config, args.build_hash, baud=args.baud, phy=args.phy)
    print(f"converting the {config.arch} accelerator ({config.lanes} lanes x {config.rows} row units, H<={config.max_hidden}, L<={config.max_layers}, "
          f"I<={config.max_intermediate}, V<={config.max_vocab}) ...", file=sys.stderr, flush=True)
    text = verilog.convert(acc, name=args.name, emit_src=False)
    if config.arch == "compact":            # its processor, so that the file stands alone
        from .soc import picorv32_source
        text += f"\n// {picorv32_source().name}, from the pythondata-cpu-picorv32 package\n"
        text += picorv32_source().read_text()
    with open(args.output, "w") as f:
        f.write(text)
    ports = "uart_rx, uart_tx" if args.phy == "uart" else "rx/tx byte streams"
    print(f"wrote {args.output}: module {args.name} (clk, rst: synchronous, active high; {ports}; "
          f"status[3:0]), {len(text.splitlines()):,} lines")
    return 0


def register(sub):
    from mmfree.commands import _mhz_arg, _positive_arg, _uint_arg
    p = sub.add_parser("export-verilog", help="the accelerator as one Verilog file, for any flow")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=None,
                   help="a named hardware configuration (tiny, demo, ulx3s-85f, icebreaker)")
    g.add_argument("--model", default="demo", help="size the hardware for this model (default demo)")
    p.add_argument("--lanes", type=_positive_arg, default=None, help="lanes of each row unit (default 32)")
    p.add_argument("--rows", type=_positive_arg, default=None, help="row units (default 1)")
    p.add_argument("--clock", type=_mhz_arg, default=None, help="design clock in MHz (sets the UART timing)")
    p.add_argument("--baud", type=_positive_arg, default=DEFAULT_BAUD)
    p.add_argument("--phy", choices=["uart", "bytes"], default="uart")
    p.add_argument("--build-hash", type=_uint_arg(32), default=0, help="the hash INFO returns (32 bits)")
    p.add_argument("--name", default="mmfree_accelerator")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_export_verilog)
