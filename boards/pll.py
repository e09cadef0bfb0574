"""PLL settings for the boards' FPGAs, computed in Python for a requested output frequency.

Each function searches every divider setting that keeps the PLL inside its operating ranges and
returns the one whose output is nearest the request (ties go to the VCO nearest the middle of its
range). The result states the frequency actually achieved: the design clock is that frequency, not
the one requested, and everything derived from it (baud divisors, timing constraints) must use it.

Frequencies are in Hz. Arithmetic is exact (:class:`fractions.Fraction`), so the achieved frequency
is the true ratio of the dividers, not a rounded float.

ECP5 ``EHXPLLL`` (the ranges ``ecppll`` of Project Trellis uses), feedback from ``CLKOP``::

    f_pfd = f_in / CLKI_DIV                 3.125 .. 400 MHz
    f_out = f_pfd * CLKFB_DIV               10 .. 400 MHz
    f_vco = f_out * CLKOP_DIV               400 .. 800 MHz

iCE40 ``SB_PLL40_*`` in ``SIMPLE`` feedback (the ranges of ``icepll``)::

    f_pfd = f_in / (DIVR + 1)               10 .. 133 MHz
    f_vco = f_pfd * (DIVF + 1)              533 .. 1066 MHz
    f_out = f_vco / 2**DIVQ                 16 .. 275 MHz, DIVQ 1 .. 6
"""

from dataclasses import dataclass, field
from fractions import Fraction

__all__ = ["PllError", "PllConfig", "ecp5_pll", "ice40_pll", "pll_for_family"]

MHZ = 1_000_000


class PllError(ValueError):
    """No divider setting reaches the requested frequency (or the input is out of range)."""


@dataclass(frozen=True)
class PllConfig:
    """One PLL setting: what was asked, what is achieved, and the primitive's parameters."""
    family: str                 #: ``"ecp5"`` or ``"ice40"``
    primitive: str              #: ``"EHXPLLL"`` or ``"SB_PLL40_PAD"``
    f_in: Fraction              #: input clock, Hz
    f_requested: Fraction       #: requested output, Hz
    f_out: Fraction             #: achieved output, Hz
    f_pfd: Fraction             #: phase detector frequency, Hz
    f_vco: Fraction             #: VCO frequency, Hz
    params: dict = field(default_factory=dict)  #: divider parameters, by the primitive's names

    @property
    def error_ppm(self):
        """Achieved minus requested, in parts per million of the request."""
        return float((self.f_out - self.f_requested) / self.f_requested * 1_000_000)

    @property
    def exact(self):
        return self.f_out == self.f_requested

    def describe(self):
        """One line for a log: ``25 MHz -> 100 MHz (requested 100 MHz, exact), VCO 600 MHz``."""
        req = "exact" if self.exact else f"requested {_mhz(self.f_requested)}, {self.error_ppm:+.0f} ppm"
        return (f"{self.primitive}: {_mhz(self.f_in)} -> {_mhz(self.f_out)} ({req}), "
                f"VCO {_mhz(self.f_vco)}, " + ", ".join(f"{k}={v}" for k, v in self.params.items()))

    def as_dict(self):
        return dict(family=self.family, primitive=self.primitive, f_in_hz=float(self.f_in),
                    f_requested_hz=float(self.f_requested), f_out_hz=float(self.f_out),
                    f_pfd_hz=float(self.f_pfd), f_vco_hz=float(self.f_vco), error_ppm=self.error_ppm,
                    params=dict(self.params))


def _mhz(f):
    return f"{float(f) / MHZ:.6g} MHz"


def _frequency(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise TypeError(f"{name} must be a frequency in Hz, not {value!r}")
    if not value > 0:
        raise PllError(f"{name} must be positive, not {value!r}")
    return Fraction(value)


def _check_range(what, f, lo, hi, family):
    if not lo * MHZ <= f <= hi * MHZ:
        raise PllError(f"{what} {_mhz(f)} is outside the {family} PLL's range of {lo:g} to {hi:g} MHz")


def _better(f_out, f_vco, best, target, vco_mid):
    if best is None:
        return True
    err, best_err = abs(f_out - target), abs(best[0] - target)
    return err < best_err or (err == best_err and abs(f_vco - vco_mid) < abs(best[1] - vco_mid))


def ecp5_pll(f_in, f_out):
    """The ``EHXPLLL`` setting nearest ``f_out`` from an ``f_in`` reference (both in Hz)."""
    f_in, target = _frequency("input frequency", f_in), _frequency("output frequency", f_out)
    _check_range("input frequency", f_in, 8, 400, "ECP5")
    _check_range("requested frequency", target, 10, 400, "ECP5")
    vco_lo, vco_hi, vco_mid = 400 * MHZ, 800 * MHZ, 600 * MHZ
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125 * MHZ <= f_pfd <= 400 * MHZ:
            continue
        for clkfb_div in range(1, 81):
            out = f_pfd * clkfb_div
            if not 10 * MHZ <= out <= 400 * MHZ:
                continue
            for clkop_div in range(1, 129):
                vco = out * clkop_div
                if vco > vco_hi:
                    break
                if vco >= vco_lo and _better(out, vco, best, target, vco_mid):
                    best = (out, vco, f_pfd, clki_div, clkfb_div, clkop_div)
    if best is None:
        raise PllError(f"no ECP5 PLL setting reaches {_mhz(target)} from {_mhz(f_in)}")
    out, vco, f_pfd, clki_div, clkfb_div, clkop_div = best
    # CLKOP_CPHASE = CLKOP_DIV - 1 is zero phase shift in Lattice's convention.
    params = dict(CLKI_DIV=clki_div, CLKFB_DIV=clkfb_div, CLKOP_DIV=clkop_div, CLKOP_CPHASE=clkop_div - 1)
    return PllConfig("ecp5", "EHXPLLL", f_in, target, out, f_pfd, vco, params)


def ice40_pll(f_in, f_out, *, pad=True):
    """The ``SB_PLL40_PAD`` (or ``_CORE``) setting nearest ``f_out`` from ``f_in``, SIMPLE feedback."""
    f_in, target = _frequency("input frequency", f_in), _frequency("output frequency", f_out)
    _check_range("input frequency", f_in, 10, 133, "iCE40")
    _check_range("requested frequency", target, 16, 275, "iCE40")
    vco_lo, vco_hi = 533 * MHZ, 1066 * MHZ
    vco_mid = (vco_lo + vco_hi) / 2
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10 * MHZ <= f_pfd <= 133 * MHZ:
            continue
        for divf in range(128):
            vco = f_pfd * (divf + 1)
            if not vco_lo <= vco <= vco_hi:
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if 16 * MHZ <= out <= 275 * MHZ and _better(out, vco, best, target, vco_mid):
                    best = (out, vco, f_pfd, divr, divf, divq)
    if best is None:
        raise PllError(f"no iCE40 PLL setting reaches {_mhz(target)} from {_mhz(f_in)}")
    out, vco, f_pfd, divr, divf, divq = best
    filter_range = next(i for i, lim in enumerate((17, 26, 44, 66, 101), start=1) if f_pfd < lim * MHZ) \
        if f_pfd < 101 * MHZ else 6
    params = dict(DIVR=divr, DIVF=divf, DIVQ=divq, FILTER_RANGE=filter_range)
    return PllConfig("ice40", "SB_PLL40_PAD" if pad else "SB_PLL40_CORE", f_in, target, out, f_pfd, vco,
                     params)


def pll_for_family(family, f_in, f_out):
    """:func:`ecp5_pll` or :func:`ice40_pll` by family name."""
    if family == "ecp5":
        return ecp5_pll(f_in, f_out)
    if family == "ice40":
        return ice40_pll(f_in, f_out)
    raise ValueError(f"no PLL calculator for FPGA family {family!r}")
