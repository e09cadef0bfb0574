"""``mmfree bench``: the full-system simulation of the accelerator, with its figures.

It builds the accelerator for a model (a bundled preset when one fits), simulates it on Verilator
behind its byte port, talks the protocol to it (INFO, upload, RESET_STATE, VERIFY, FEED, GENERATE),
checks every reply and every generated token against the integer golden model, and prints cycles per
token and lane utilisation (ternary weights per token / (lanes x cycles per token)) next to the ideal.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from mmfree.protocol import DEFAULT_BAUD

__all__ = ["bench", "register"]


def bench(model="tiny", *, tokens=32, prompt="ROMEO:", lanes=None, arch="core", rows=None, progress=False):
    """Run the full-system simulation; returns the report dict (raises on any mismatch)."""
    from mmfree.registry import resolve
    from mmfree.sim.board import _config_for, accelerator_sources, accelerator_verilog
    from mmfree.sim.runner import run_cocotb
    from mmfree.sim.tb_accelerator import make_vectors

    q = resolve(model).quantized()
    config = _config_for(q.shape, lanes, arch, rows)
    ids = list(prompt.encode("utf-8"))
    t0 = time.monotonic()
    if progress:
        print(f"bench: golden reference for {tokens} tokens ...", file=sys.stderr, flush=True)
    vec = make_vectors(q, config, ids, tokens)
    if progress:
        print(f"bench: simulating the accelerator ({_lanes_text(config)}; a first build of a "
              f"configuration takes minutes) ...", file=sys.stderr, flush=True)
    text = accelerator_verilog(config)
    with tempfile.TemporaryDirectory(prefix="mmfree-bench-") as d:
        t1 = time.monotonic()
        run_cocotb(text, simulator="verilator", test_module="mmfree.sim.tb_accelerator", name="accel",
                   vectors=vec, run_dir=d, opt_fast="-O2", sources=accelerator_sources(config))
        report = json.loads((Path(d) / "accelerator_report.json").read_text())
    report.update(model=model, lanes=config.total_lanes, lanes_per_row=config.lanes, rows=config.rows,
                  clock_hz=config.clk_freq, prompt_tokens=len(ids),
                  ideal_cycles_per_token=report["weights_per_token"] / config.total_lanes,
                  all_tokens_match=report["matched"] == report["tokens"],
                  simulation_s=time.monotonic() - t1, total_s=time.monotonic() - t0)
    report["tokens_per_s_at_clock"] = config.clk_freq / report["cycles_per_token"]
    report["compute_bound_tokens_per_s"] = config.clk_freq * config.total_lanes / report["weights_per_token"]
    return report


def _lanes_text(config):
    """``32 lanes``, or with row units ``128 lanes (4 row units of 32)``."""
    if config.rows == 1:
        return f"{config.lanes} lanes"
    return f"{config.total_lanes} lanes ({config.rows} row units of {config.lanes})"


def link_throughput(nbytes=None, baud=DEFAULT_BAUD, progress=False):
    """Upload ``nbytes`` (default: as many as the region holds) of the demo model's TRITS region with
    WRITE frames to the simulated board (the ``tiny`` configuration) whose byte port is paced like a
    UART at ``baud`` (10 bits a byte) in simulated time. Returns the payload bytes per second of
    simulated time as a fraction of the line's byte rate."""
    import math
    from mmfree import memory_map as mm
    from mmfree.driver import Device
    from mmfree.hw.config import PRESETS
    from mmfree.hw.link import region_sizes
    from mmfree.registry import resolve
    from mmfree.sim.board import SimulatedBoard
    config = PRESETS["tiny"]
    room = region_sizes(config)[mm.REGION_TRITS]
    if nbytes is None:
        nbytes = room
    if not 1 <= nbytes <= room:
        raise ValueError(f"nbytes must be 1 to {room} (the TRITS region of the tiny board), not {nbytes}")
    byte_cycles = math.ceil(config.clk_freq * 10 / baud)
    data = mm.to_regions(resolve("demo").quantized(), config.lanes, config.rows)[mm.REGION_TRITS][:nbytes]
    with tempfile.TemporaryDirectory(prefix="mmfree-link-") as d:
        stats = Path(d) / "stats.jsonl"
        with SimulatedBoard(config, byte_cycles=byte_cycles, stats=stats, progress=progress) as board:
            with Device(board.url, timeout=60.0, token_timeout=60.0) as dev:
                dev.write(mm.REGION_TRITS, 0, data)
                retransmissions = dev.stats.retransmissions
        # the connection closes when the device object does; give the bridge a moment to log it
        deadline = time.monotonic() + 10
        while not stats.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not stats.exists():
            from mmfree.sim.runner import SimulationError
            raise SimulationError("the simulated board did not log the connection's byte counts within 10 s")
        st = json.loads(stats.read_text().splitlines()[-1])
    line_cycles = st["last_out"] - st["first_in"]
    seconds = line_cycles / config.clk_freq
    rate = len(data) / seconds
    return dict(payload_bytes=len(data), wire_bytes_in=st["bytes_in"], wire_bytes_out=st["bytes_out"],
                simulated_s=seconds, payload_bytes_per_s=rate, line_bytes_per_s=baud / 10,
                efficiency=rate / (baud / 10), cycles_per_byte=byte_cycles, clock_hz=config.clk_freq,
                retransmissions=retransmissions)


BENCH_DEFAULTS = dict(model="tiny", n=32, prompt="ROMEO:", arch="core")


def cmd_bench(args):
    from mmfree.cli import UsageError
    from mmfree.protocol import MAX_FEED
    from mmfree.sim.runner import SimulationError
    given = [k for k in ("model", "n", "prompt", "lanes", "rows", "arch") if getattr(args, k) is not None]
    if args.link:
        if given:
            raise UsageError(f"--link measures the upload link of the tiny board alone; it takes no "
                             f"{', '.join('-n' if k == 'n' else '--' + k for k in given)}")
        try:
            r = link_throughput(progress=not args.json)
        except SimulationError as e:
            print(f"mmfree: error: the link simulation failed: {str(e).strip().splitlines()[0]}",
                  file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print(f"upload of {r['payload_bytes']:,} bytes through the simulated UART at 3 Mbaud "
                  f"({r['cycles_per_byte']} clocks a byte at {r['clock_hz'] / 1e6:.0f} MHz): "
                  f"{r['payload_bytes_per_s']:,.0f} bytes/s of {r['line_bytes_per_s']:,.0f}, "
                  f"{100 * r['efficiency']:.1f}% of the line rate ({r['wire_bytes_in']:,} bytes on the wire, "
                  f"{r['retransmissions']} retransmissions)")
        return 0
    for k, v in BENCH_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not args.prompt or len(args.prompt.encode("utf-8")) > MAX_FEED:
        raise UsageError(f"--prompt: the bench feeds its prompt in one FEED frame: 1 to {MAX_FEED} bytes, "
                         f"not {len(args.prompt.encode('utf-8'))}")
    try:
        r = bench(args.model, tokens=args.n, prompt=args.prompt, lanes=args.lanes, arch=args.arch,
                  rows=args.rows, progress=sys.stderr.isatty() or not args.json)
    except SimulationError as e:
        lines = [l for l in str(e).splitlines() if "Error" in l or "assert" in l.lower()]
        print(f"mmfree: error: the full-system simulation failed: {(lines or [str(e)])[0].strip()}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "cycles"}, indent=2))
        return 0
    f = r["clock_hz"] / 1e6
    lanes = f"{r['lanes']} lanes" + (f" ({r['rows']} row units of {r['lanes_per_row']})" if r["rows"] > 1 else "")
    print(f"{r['model']}: {r['weights_per_token']:,} ternary weights per token, {lanes}")
    print(f"  tokens generated      {r['tokens']} after a {r['prompt_tokens']}-token prompt, "
          f"{r['matched']} identical to the golden model")
    print(f"  cycles per token      {r['cycles_per_token']:,.0f}   (ideal {r['ideal_cycles_per_token']:,.0f}: "
          f"weights / lanes)")
    print(f"  lane utilisation      {100 * r['utilisation']:.1f}%")
    print(f"  tokens/s at {f:.0f} MHz   {r['tokens_per_s_at_clock']:,.0f}   (compute bound "
          f"{r['compute_bound_tokens_per_s']:,.0f})")
    print(f"  simulation            {r['simulation_s']:.0f} s wall")
    return 0 if r["all_tokens_match"] else 1


def register(sub):
    from mmfree.commands import _positive_arg
    p = sub.add_parser("bench", help="full-system simulation: cycles per token and lane utilisation")
    p.add_argument("--model", default=None, help="bundled name, folder or image (default tiny)")
    p.add_argument("-n", type=_positive_arg, default=None, help="tokens to generate (default 32)")
    p.add_argument("--prompt", default=None, help="1 to 64 bytes (default ROMEO:)")
    p.add_argument("--lanes", type=_positive_arg, default=None, help="lanes of each row unit")
    p.add_argument("--rows", type=_positive_arg, default=None,
                   help="row units: rows computed at once, each on --lanes lanes (a power of two)")
    p.add_argument("--arch", choices=("core", "compact"), default=None,
                   help="the accelerator: core (default) or compact (processor and ternary unit, iCE40)")
    p.add_argument("--link", action="store_true",
                   help="instead: upload efficiency through the simulated UART at 3 Mbaud")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
