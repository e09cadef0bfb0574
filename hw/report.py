"""``mmfree report units``: every compute unit synthesised on its own for the ECP5-85F, against the goals.

Each unit is placed and routed out of context by :func:`mmfree.hw.synth.synthesize` (Yosys
``synth_ecp5``, nextpnr-ecp5 ``--85k --speed 6``; results cached by design and tool versions) and
reported with its LUT4, flip-flops, block RAM, multipliers and Fmax, next to the goals:

* every unit alone closes at :data:`GOAL_FMAX_MHZ` or more;
* the ternary matrix-vector unit uses no DSP block and, at :data:`GOAL_LANES` lanes, at most
  :data:`GOAL_LUT4_PER_LANE` LUT4 per lane.

The matrix-vector unit is measured at each ``--lanes`` value with ``--max-k``. Its activation buffer
is read ``8P`` bits per clock, so in block RAM it takes ``ceil(8P / 36)`` DP16KD however short the
rows are: where that is more than the device has (1024 lanes need 228 of 208), the report keeps the
codes of some lanes in LUT RAM instead (``act_lut_lanes``, see :func:`act_lut_lanes_for`) and says so.
Above :data:`SPREAD_ABOVE_LANES` lanes the buffer spans the die and the unit is built with
``spread_control`` (registered copies of the buffer's control per memory). The units sized by a
model (RMSNorm and quantiser, MLGRU, GLU) take their sizes from ``--shape``.
"""

import dataclasses
import json
import math
import re
import sys
import time
from pathlib import Path

__all__ = ["register", "UNITS", "act_lut_lanes_for", "SPREAD_ABOVE_LANES", "GOAL_FMAX_MHZ", "GOAL_LUT4_PER_LANE", "GOAL_LANES", "Row", "plan",
           "measure", "format_table"]

GOAL_FMAX_MHZ = 100.0
GOAL_LUT4_PER_LANE = 30
SPREAD_ABOVE_LANES = 256
"""Matrix-vector units of more lanes are built with ``spread_control`` (their buffer spans the die)."""
GOAL_LANES = 256

DEVICE = "LFE5U-85F"
DEVICE_DP16KD = 208
DEVICE_LUT4 = 83_640

DEFAULT_LANES = (64, 256, 1024)
DEFAULT_MAX_K = 4096
DEFAULT_SHAPE = "demo"
SHAPES = ("tiny", "demo", "370M", "1.3B")
"""Model shapes ``--shape`` takes: the bundled models and published ones (:data:`mmfree.commands.SHAPES`)."""

UNITS = ("ternary_matvec", "trit_stream", "trit_decode", "rescale", "rmsnorm", "output_scale", "mlgru", "glu",
         "sigmoid", "silu", "silu_state", "mul_act", "lb_blend", "state_update", "norm_weight", "sampler")
"""Unit names, in the order the report lists them: the matrix-vector unit and what feeds it its
weights (a row unit's :class:`~mmfree.hw.trits.TritStream`, and the base-3 decoding of a beat's bytes
inside it, both as the ``--shape``'s hardware preset has them), the four units of a layer (with the
rescale stage and the quantiser's scalar unit), the element-wise stream components they are built
from, and the accelerator's on-device sampler."""


def _shapes():
    from ..golden import ModelShape
    from ..commands import SHAPES
    from .config import TINY_SHAPE, DEMO_SHAPE
    out = {"tiny": TINY_SHAPE, "demo": DEMO_SHAPE}
    for name, c in SHAPES.items():
        out[name] = ModelShape(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                               num_layers=c["num_hidden_layers"], intermediate_size=c["intermediate_size"])
    return out


_DP16KD_MODES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def dp16kd_for(width, depth):
    """DP16KD blocks a ``width x depth`` bit memory needs in the cheapest of the block's aspect ratios."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in _DP16KD_MODES)


def act_lut_lanes_for(lanes, max_k):
    """``act_lut_lanes`` of a :class:`~mmfree.hw.ternary.TernaryMatVec` that fits the device's block RAM:
    0 if the whole activation buffer does, else the smallest multiple of 64 lanes whose codes must move
    to LUT RAM (the buffer is read ``8P`` bits per clock: its block count grows with ``P``, not
    ``max_k``)."""
    depth = 2 << (max_k // lanes - 1).bit_length()
    lut = 0
    while lut < lanes and dp16kd_for(8 * (lanes - lut), depth) > DEVICE_DP16KD:
        lut = min(lanes, lut + 64)
    return lut


@dataclasses.dataclass
class Row:
    """One line of the report: a unit, how it was built, what it costs, which goals it meets."""

    unit: str
    params: str
    lanes: int = None
    note: str = None
    result: object = None           # SynthResult
    factory: object = dataclasses.field(default=None, repr=False)
    cached: bool = None
    seconds: float = None

    @property
    def critical_path(self):
        """``{"from", "to", "logic_ns", "routing_ns", "limit"}`` of nextpnr's critical path, or None.

        ``limit`` is ``"BRAM output"`` when the path starts at a block RAM's data output (its
        clock-to-out alone is most of a 10 ns cycle on the ECP5), ``"DSP multiplier"`` when it runs
        through a MULT18X18D, else ``"logic"`` or ``"routing"``, whichever takes longer.
        """
        try:
            log = (Path(self.result.build_dir) / "nextpnr.log").read_text(errors="replace")
        except (OSError, TypeError):
            return None
        return critical_path(log)

    @property
    def lut4_per_lane(self):
        return round(self.result.lut4 / self.lanes, 1) if self.lanes else None

    def goals(self):
        """``[(goal, met)]`` for this row."""
        r = self.result
        out = [(f"Fmax >= {GOAL_FMAX_MHZ:g} MHz", r.fmax_mhz >= GOAL_FMAX_MHZ)]
        if self.unit == "ternary_matvec":
            out.append(("0 DSP", r.dsp == 0))
            if self.lanes == GOAL_LANES:
                out.append((f"<= {GOAL_LUT4_PER_LANE} LUT4/lane", self.lut4_per_lane <= GOAL_LUT4_PER_LANE))
        return out

    def as_dict(self):
        r = self.result.as_dict()
        for k in ("cells", "build_dir"):
            r.pop(k)
        return dict(unit=self.unit, params=self.params, lanes=self.lanes, note=self.note,
                    lut4=r.pop("lut4"), lut4_per_lane=self.lut4_per_lane, ff=r.pop("ff"),
                    bram=r.pop("bram"), dsp=r.pop("dsp"), fmax_mhz=r.pop("fmax_mhz"), **r,
                    critical_path=self.critical_path,
                    goals=[{"goal": g, "met": met} for g, met in self.goals()],
                    met=all(met for _, met in self.goals()), cached=self.cached)


def plan(units=None, lanes=DEFAULT_LANES, max_k=DEFAULT_MAX_K, shape=DEFAULT_SHAPE):
    """The rows to measure, unsynthesised: ``units`` (names of :data:`UNITS`; default all) built with
    these lane counts, longest row and model shape. Raises ``ValueError`` on sizes no unit takes."""
    from . import ternary, rmsnorm, mlgru, glu, activations, sampler, trits
    from .config import HwConfig, PRESETS
    from .core import REGION_READ_LATENCY
    from .. import memory_map

    units = list(units or UNITS)
    for u in units:
        if u not in UNITS:
            raise ValueError(f"no unit {u!r} (units: {', '.join(UNITS)})")
    units = [u for u in UNITS if u in units]
    shapes = _shapes()
    if shape not in shapes:
        raise ValueError(f"no model shape {shape!r} (shapes: {', '.join(shapes)})")
    ms = shapes[shape]
    H, L, I = ms.hidden_size, ms.num_layers, ms.intermediate_size
    if not isinstance(max_k, int) or not 1 <= max_k <= ternary.MAX_K:
        raise ValueError(f"--max-k must be between 1 and {ternary.MAX_K}, not {max_k}")
    if "ternary_matvec" in units:
        for p in lanes:
            if not isinstance(p, int) or not 1 <= p <= ternary.MAX_LANES:
                raise ValueError(f"--lanes must be between 1 and {ternary.MAX_LANES}, not {p}")
            if max_k % p:
                raise ValueError(f"--max-k {max_k} is not a multiple of --lanes {p}")

    rows = []
    elements = {"sigmoid": activations.Sigmoid, "silu": activations.SiLU,
                "silu_state": activations.SiLUState, "mul_act": activations.MulAct,
                "lb_blend": activations.LowerBoundBlend, "state_update": activations.StateUpdate,
                "norm_weight": activations.ApplyNormWeight}
    for u in units:
        if u == "ternary_matvec":
            for p in dict.fromkeys(lanes):
                lut = act_lut_lanes_for(p, max_k)
                params = f"P={p} max_k={max_k}"
                note = None
                if lut:
                    depth = 2 << (max_k // p - 1).bit_length()
                    params += f" lut_lanes={lut}"
                    note = (f"the codes of {lut} lanes in LUT RAM, {p - lut} in block RAM "
                            f"({dp16kd_for(8 * (p - lut), depth)} DP16KD): all in block RAM would need "
                            f"{dp16kd_for(8 * p, depth)} DP16KD, the {DEVICE} has {DEVICE_DP16KD}")
                spread = p > SPREAD_ABOVE_LANES
                if spread:
                    params += " spread_control"
                rows.append(Row(u, params, lanes=p, note=note,
                                factory=lambda p=p, lut=lut, spread=spread: ternary.TernaryMatVec(
                                    p, max_k, act_lut_lanes=lut, spread_control=spread)))
        elif u in ("trit_stream", "trit_decode"):
            # a row unit's stream, as the shape's preset (or, for a shape without one, the default
            # configuration that holds it) builds it
            cfg = HwConfig.preset(shape) if shape in PRESETS else HwConfig.for_model(ms)
            wb = memory_map.trit_subword_bytes(cfg.lanes)
            if u == "trit_stream":
                rows.append(Row(u, f"P={cfg.lanes} word_bytes={wb} depth={cfg.trit_words} ({shape})",
                                lanes=cfg.lanes,
                                factory=lambda cfg=cfg, wb=wb: trits.TritStream(
                                    cfg.lanes, wb, cfg.trit_words, latency=REGION_READ_LATENCY)))
            else:
                nb = trits.window_bytes(cfg.lanes)
                rows.append(Row(u, f"word_bytes={nb} ({shape}: a beat of {cfg.lanes} trits)",
                                lanes=cfg.lanes, factory=lambda nb=nb: trits.WordDecoder(nb)))
        elif u == "rescale":
            w = ternary.acc_width_for(max_k)
            rows.append(Row(u, f"acc_width={w} (max_k={max_k})",
                            factory=lambda w=w: ternary.Rescale(acc_width=w)))
        elif u == "rmsnorm":
            lengths = tuple(sorted({H, I}))
            rows.append(Row(u, f"lengths={','.join(map(str, lengths))} ({shape})",
                            factory=lambda lengths=lengths: rmsnorm.RMSNormQuantizer(lengths)))
        elif u == "output_scale":
            k = max(H, I)
            rows.append(Row(u, f"max_length={k} ({shape})", factory=lambda k=k: rmsnorm.OutputScale(k)))
        elif u == "mlgru":
            rows.append(Row(u, f"hidden={H} layers={L} ({shape})", factory=lambda: mlgru.MLGRU(H, L)))
        elif u == "glu":
            rows.append(Row(u, f"intermediate={I} ({shape})", factory=lambda: glu.GLU(I)))
        elif u == "sampler":
            V = ms.vocab_size
            rows.append(Row(u, f"max_vocab={V} ({shape})", factory=lambda: sampler.Sampler(V, V)))
        else:
            rows.append(Row(u, "", factory=elements[u]))
    return rows


def critical_path(log):
    """The critical path of a nextpnr-ecp5 log (see :attr:`Row.critical_path`), or None."""
    at = log.rfind("Critical path report for clock")
    if at < 0:
        return None
    text = log[at:]
    end = re.search(r"^Info: ([\d.]+) ns logic, ([\d.]+) ns routing", text, re.M)
    if end is None:
        return None
    path = text[:end.start()]
    sources = re.findall(r"Source (\S+)", path)
    sinks = re.findall(r"Sink (\S+)", path)
    if not sources or not sinks:
        return None
    logic_ns, routing_ns = float(end.group(1)), float(end.group(2))
    if re.search(r"\.DO[AB]\d+$", sources[0]):
        limit = "BRAM output"
    elif any("MULT18X18D" in name for name in sources):
        limit = "DSP multiplier"
    else:
        limit = "logic" if logic_ns >= routing_ns else "routing"
    return {"from": sources[0], "to": sinks[-1], "logic_ns": logic_ns, "routing_ns": routing_ns,
            "limit": limit}


def _design_name(row):
    return row.unit if row.lanes is None else f"{row.unit}_{row.lanes}"


def _synth_error(row, e):
    """One line from a failed tool run: its first ``ERROR`` line, else the exception's first line."""
    text = str(e)
    m = re.search(r"^(?:ERROR|Error)[: ].*$", text, re.M)
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"{row.unit} {row.params}: {first}" + (f": {m.group(0).strip()}" if m else "")


def measure(rows, *, cache=True, progress=None):
    """Synthesise every row (in order, one at a time); fills ``result``, ``cached``, ``seconds``."""
    from .synth import synthesize
    say = progress or (lambda s: None)
    for n, row in enumerate(rows, 1):
        head = f"[{n}/{len(rows)}] {row.unit} {row.params}".rstrip()
        steps = []

        def step(s, head=head, steps=steps):
            steps.append(s)
            say(f"{head}: {s} ...")
        t0 = time.monotonic()
        try:
            row.result = synthesize(row.factory(), name=_design_name(row), cache=cache, progress=step)
        except RuntimeError as e:
            raise SynthesisFailed(_synth_error(row, e)) from None
        row.seconds = time.monotonic() - t0
        row.cached = not steps
        r = row.result
        say(f"{head}: {'cached' if row.cached else f'{row.seconds:.0f} s'}: {r.lut4} LUT4, {r.ff} FF, "
            f"{r.bram} BRAM, {r.dsp} DSP, {r.fmax_mhz} MHz")
    return rows


class SynthesisFailed(Exception):
    """A tool failed on a unit: the message is one line naming the unit."""


def format_table(rows):
    """The report as text: one line per unit, the goals, and which of them are missed."""
    head = ["unit", "parameters", "LUT4", "LUT4/lane", "FF", "BRAM", "DSP", "Fmax MHz", "limited by",
            "goals"]
    body = []
    for row in rows:
        r = row.result
        missed = [g for g, met in row.goals() if not met]
        path = row.critical_path
        body.append([row.unit, row.params or "-", str(r.lut4),
                     "" if row.lanes is None else f"{row.lut4_per_lane:.1f}",
                     str(r.ff), str(r.bram), str(r.dsp), f"{r.fmax_mhz:.1f}",
                     path["limit"] if path else "?",
                     "met" if not missed else "MISSED: " + ", ".join(missed)])
    width = [max(len(x) for x in col) for col in zip(head, *body)]
    left = {0, 1, 8, 9}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, width))).rstrip()
    out = [line(head), line(["-" * w for w in width])]
    out += [line(cells) for cells in body]
    out.append("")
    out.append(f"{DEVICE} speed 6, out of context (YoWASP Yosys synth_ecp5, nextpnr-ecp5); "
               f"LUT4 = logic + carry + LUT-RAM LUT4 of {DEVICE_LUT4:,}; BRAM = DP16KD, DSP = MULT18X18D.")
    out.append("limited by: the critical path; \"BRAM output\" starts at a block RAM's data output "
               "(clock-to-out about 5.8 ns), \"DSP multiplier\" runs through a MULT18X18D.")
    out.append(f"goals: every unit >= {GOAL_FMAX_MHZ:g} MHz; ternary_matvec 0 DSP and "
               f"<= {GOAL_LUT4_PER_LANE} LUT4 per lane at P = {GOAL_LANES}.")
    for row in rows:
        if row.note:
            out.append(f"{row.unit} {row.params}: {row.note}.")
    missed = sum(1 for row in rows for _, met in row.goals() if not met)
    out.append("all goals met." if not missed else f"{missed} goal(s) missed.")
    return "\n".join(out)


def _as_json(rows, args):
    from .synth import _versions
    return {
        "device": DEVICE, "speed": 6, "tools": _versions(),
        "goals": {"fmax_mhz": GOAL_FMAX_MHZ, "lut4_per_lane": GOAL_LUT4_PER_LANE,
                  "lut4_per_lane_at_lanes": GOAL_LANES, "ternary_matvec_dsp": 0},
        "shape": args.shape, "max_k": args.max_k,
        "units": [row.as_dict() for row in rows],
        "met": all(met for row in rows for _, met in row.goals()),
    }


# --- command line ----------------------------------------------------------------------------------

def _lanes_arg(value):
    import argparse
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {value!r}") from None


def cmd_report_units(args):
    from ..cli import UsageError
    try:
        rows = plan(args.unit, args.lanes, args.max_k, args.shape)
    except ValueError as e:
        raise UsageError(str(e)) from None
    say = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    if say:
        say(f"synthesising {len(rows)} unit(s) for the {DEVICE} (cached results are reused; "
            f"a large unit takes minutes)")
    try:
        measure(rows, cache=not args.no_cache, progress=say)
    except SynthesisFailed as e:
        print(f"mmfree: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_as_json(rows, args), indent=2))
    else:
        print(format_table(rows))
    if args.check and not all(met for row in rows for _, met in row.goals()):
        return 1
    return 0


def register(sub):
    p = sub.add_parser("report", help="measure the hardware: resources and speed of the compute units",
                       description="Reports on the hardware.")
    what = p.add_subparsers(dest="report", metavar="REPORT")
    what.required = True
    u = what.add_parser(
        "units", help="synthesise each compute unit for the ECP5-85F and print LUT4, FF, BRAM, DSP, Fmax",
        description=f"Synthesise, place and route each compute unit on its own (out of context) for the "
                    f"{DEVICE}, speed grade 6, with the YoWASP tools, and print its resources and Fmax "
                    f"next to the goals (>= {GOAL_FMAX_MHZ:g} MHz each; the ternary matrix-vector unit "
                    f"with 0 DSP and <= {GOAL_LUT4_PER_LANE} LUT4 per lane at {GOAL_LANES} lanes). "
                    f"Results are cached under build/synth; a full run from scratch takes tens of minutes.")
    u.add_argument("--unit", nargs="+", choices=UNITS, metavar="UNIT",
                   help=f"units to report (default all): {', '.join(UNITS)}")
    u.add_argument("--lanes", nargs="+", type=_lanes_arg, default=list(DEFAULT_LANES), metavar="P",
                   help="lane counts of the ternary matrix-vector unit (default "
                        f"{' '.join(map(str, DEFAULT_LANES))})")
    u.add_argument("--max-k", type=_lanes_arg, default=DEFAULT_MAX_K, metavar="K",
                   help=f"longest row of the matrix-vector unit and its rescale stage (default {DEFAULT_MAX_K})")
    u.add_argument("--shape", default=DEFAULT_SHAPE, choices=SHAPES,
                   help=f"model shape that sizes rmsnorm, output_scale, mlgru and glu (default {DEFAULT_SHAPE})")
    u.add_argument("--json", action="store_true", help="print JSON instead of a table")
    u.add_argument("--check", action="store_true", help="exit with status 1 if a goal is missed")
    u.add_argument("--no-cache", action="store_true", help="synthesise again even if a result is cached")
    u.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    u.set_defaults(func=cmd_report_units)
