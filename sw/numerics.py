"""The numeric specification: every fixed-point format, table and rounding rule of the integer model.

This module is the single definition that the integer golden model (:mod:`mmfree.golden`), the weight
image (:mod:`mmfree.image`), the hardware generators (:mod:`mmfree.hw`) and docs/numerics.md all use.
It depends on nothing but the standard library and (for the vector forms) torch.

Conventions
-----------
* A fixed-point value ``v`` of format ``Fixed(width, frac)`` is the integer ``v`` standing for
  ``v / 2**frac``. Stores saturate to the format's range; nothing wraps.
* Rounding is *half up* (``floor(x + 1/2)``: add half an LSB, arithmetic shift right) everywhere in the
  datapath, except the activation quantiser, which rounds *half away from zero* exactly like the float
  reference.
* Per-token scalars (norm scales, output scales) are :class:`PFloat`: a 16-bit mantissa in
  ``[2**15, 2**16)`` times a power of two. They are computed once per vector by a small sequential unit.
* Stored float tensors (norm weights, embeddings) are BFP16: int16 mantissas sharing one exponent per
  tensor, ``value = mant * 2**-exp``.

Every function with a ``torch.Tensor`` argument works elementwise on int64 tensors and is the exact
definition of the hardware operation of the same name.
"""

from dataclasses import dataclass
import math

import torch

__all__ = [
    "NUMERIC_SPEC_VERSION", "Fixed", "ACT", "STATE", "GATE", "ACC", "CODE", "BFP_MANT",
    "PFloat", "pf_from_int", "pf_from_float", "pf_mul", "pf_recip", "pf_rsqrt", "INV_127",
    "shift_round", "bfp16_encode", "bfp16_decode", "embedding_to_act", "bit_length", "quantize_activations", "output_scale", "rescale",
    "SIGMOID_IN_MIN", "SIGMOID_STEP_LOG2", "SIGMOID_TABLE", "sigmoid", "silu", "silu_state", "mul_act",
    "apply_norm_weight", "lower_bound_blend", "state_update", "gate_encode", "argmax",
    "TRIT_CODE", "pack_trits", "unpack_trits", "pack_trits_base3", "unpack_trits_base3",
]

NUMERIC_SPEC_VERSION = 1
"""Bumped whenever any definition in this module changes what the integer model computes."""


@dataclass(frozen=True)
class Fixed:
    """A two's complement (or unsigned) fixed-point format of ``width`` bits, ``frac`` of them fractional."""

    width: int
    frac: int
    signed: bool = True

    @property
    def min(self):
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max(self):
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def saturate(self, x):
        if isinstance(x, torch.Tensor):
            return x.clamp(self.min, self.max)
        return min(max(x, self.min), self.max)

    def from_float(self, x):
        """Nearest code, ties up, saturated."""
        if isinstance(x, torch.Tensor):
            return self.saturate(torch.floor(x.double() * (1 << self.frac) + 0.5).long())
        return self.saturate(math.floor(x * (1 << self.frac) + 0.5))

    def to_float(self, x):
        if isinstance(x, torch.Tensor):
            return x.double() / (1 << self.frac)
        return x / (1 << self.frac)

    def __str__(self):
        kind = "s" if self.signed else "u"
        return f"{kind}Q{self.width - self.frac - int(self.signed)}.{self.frac} ({self.width} bits)"


ACT = Fixed(24, 12)
"""The datapath format: residual stream, projection outputs, SiLU/GLU outputs, logits (range +-2048)."""
STATE = Fixed(32, 20)
"""The MLGRU recurrent state ``h`` (range +-2048, 20 fraction bits so that slow decay stays exact)."""
GATE = Fixed(17, 16, signed=False)
"""Sigmoid outputs, forget gates and lower bounds: ``[0, 1]`` with 1.0 representable."""
CODE = Fixed(8, 0)
"""Quantised activations fed to the ternary products (the quantiser produces -127..127)."""
ACC = Fixed(32, 0)
"""Ternary-product accumulators: at most 127 * K in magnitude (K <= 2**24 / 127 keeps them exact)."""
BFP_MANT = Fixed(16, 0)
"""Mantissas of BFP16 tensors (norm weights, embeddings)."""

QUANT_BITS = 24
"""The quantiser divides |z| and max|z| after both are shifted right to at most this many bits."""


# --- rounding ------------------------------------------------------------------------------------

def shift_round(x, sh):
    """``x * 2**-sh`` rounded half up (``sh > 0``), or the exact ``x * 2**-sh`` (``sh <= 0``)."""
    if sh > 0:
        return (x + (1 << (sh - 1))) >> sh
    return x << (-sh)


# --- PFloat: per-vector scalars ------------------------------------------------------------------

@dataclass(frozen=True)
class PFloat:
    """``mant * 2**exp`` with ``mant`` in ``[2**15, 2**16)``; ``mant == 0`` stands for zero."""

    mant: int
    exp: int

    def __float__(self):
        return math.ldexp(self.mant, self.exp)


PF_ZERO = PFloat(0, 0)


def pf_from_int(n, exp=0):
    """Normalise the positive integer ``n * 2**exp`` to a PFloat (mantissa rounded half up)."""
    n = int(n)
    if n < 0:
        raise ValueError(f"pf_from_int needs n >= 0, not {n}")
    if n == 0:
        return PF_ZERO
    b = n.bit_length()
    if b > 16:
        sh = b - 16
        m = (n + (1 << (sh - 1))) >> sh
        exp += sh
        if m == 1 << 16:
            m >>= 1
            exp += 1
    else:
        m = n << (16 - b)
        exp -= 16 - b
    return PFloat(m, exp)


def pf_from_float(x):
    """The PFloat nearest a non-negative float (mantissa rounded half up)."""
    if not (x >= 0 and math.isfinite(x)):
        raise ValueError(f"pf_from_float needs a finite x >= 0, not {x}")
    if x == 0:
        return PF_ZERO
    fr, k = math.frexp(x)                       # x = fr * 2**k, fr in [0.5, 1)
    m = math.floor(fr * (1 << 16) + 0.5)
    if m == 1 << 16:
        return PFloat(1 << 15, k - 15)
    return PFloat(m, k - 16)


def pf_mul(a, b):
    if a.mant == 0 or b.mant == 0:
        return PF_ZERO
    return pf_from_int(a.mant * b.mant, a.exp + b.exp)


def pf_recip(k):
    """``1 / k`` for a positive integer ``k``: ``round(2**40 / k) * 2**-40``, normalised."""
    return pf_from_int(((1 << 40) + k // 2) // k, -40)


def pf_rsqrt(a):
    """``a**-1/2``: with ``a = m * 2**e`` (``e`` made even), ``isqrt(2**62 // m) * 2**(-31 - e/2)``."""
    if a.mant == 0:
        raise ZeroDivisionError("pf_rsqrt of zero")
    m, e = a.mant, a.exp
    if e & 1:
        m, e = m << 1, e - 1
    return pf_from_int(math.isqrt((1 << 62) // m), -31 - e // 2)


INV_127 = pf_recip(127)


# --- BFP16: stored float tensors ------------------------------------------------------------------

BFP_EXP_MIN, BFP_EXP_MAX = -32, 63


def bfp16_encode(t):
    """``(mantissas int16, exp)`` with ``t ~= mant * 2**-exp``: the largest exp that fits max|t|."""
    t = torch.as_tensor(t).double()
    amax = float(t.abs().max()) if t.numel() else 0.0
    if not math.isfinite(amax):
        raise ValueError("cannot encode a tensor holding inf or nan")
    if amax == 0:
        return torch.zeros(t.shape, dtype=torch.int16), 15
    _, k = math.frexp(amax)                     # amax in [2**(k-1), 2**k)
    exp = 15 - k
    if math.floor(amax * 2.0 ** exp + 0.5) > BFP_MANT.max:
        exp -= 1
    exp = min(max(exp, BFP_EXP_MIN), BFP_EXP_MAX)
    mant = torch.floor(t * 2.0 ** exp + 0.5).clamp(BFP_MANT.min, BFP_MANT.max)
    return mant.to(torch.int16), exp


def bfp16_decode(mant, exp):
    return mant.double() * 2.0 ** -exp


def embedding_to_act(mant, exp):
    """An embedding row (BFP16) as ACT: ``mant * 2**(ACT.frac - exp)``, rounded half up, saturated."""
    return ACT.saturate(shift_round(mant.long(), exp - ACT.frac))


# --- the BitLinear datapath ----------------------------------------------------------------------

def apply_norm_weight(x, w_mant, w_exp):
    """``x * w`` for ACT ``x`` and a BFP16 weight: ACT, rounded half up, saturated."""
    # a left shift of 24 or more saturates any non-zero product; capping it keeps int64 exact
    return ACT.saturate(shift_round(x * w_mant.long(), max(w_exp, -24)))


def bit_length(x):
    """Bits needed for the non-negative int64 tensor ``x`` (0 for 0), exactly."""
    pow2 = torch.tensor([1 << j for j in range(63)], dtype=torch.int64)
    return (x.unsqueeze(-1) >= pow2).sum(-1)


def quantize_activations(z):
    """Absmax 8-bit codes of the int64 vectors ``z [..., K]``: ``round_half_away(127 z / max|z|)``.

    Returns ``(codes, zmax)`` with ``zmax = max|z|`` per vector (shape ``[...]``). Both |z| and max|z|
    are first shifted right by ``s = max(0, bitlen(max|z|) - QUANT_BITS)`` (truncating), then the code
    is the exact quotient ``(254 |z| + A) // (2 A)`` with the sign of z: one pipelined 8-bit divider in
    hardware. A zero vector gives zero codes.
    """
    a = z.abs()
    zmax = a.amax(-1) if z.shape[-1] else torch.zeros(z.shape[:-1], dtype=torch.int64)
    s = (bit_length(zmax) - QUANT_BITS).clamp(min=0).unsqueeze(-1)
    a_s, zmax_s = a >> s, zmax.unsqueeze(-1) >> s
    codes = (254 * a_s + zmax_s) // (2 * zmax_s).clamp(min=1)
    return torch.where(z < 0, -codes, codes), zmax


def output_scale(zmax, z_exp, ss, k, m):
    """The PFloat that turns accumulators into values: ``max|x_n| / 127 * m``.

    ``zmax * 2**-z_exp`` is max|v * w_norm|, ``ss * 2**-24`` is sum(v**2) over the ``k`` inputs of the
    ACT vector ``v`` (the RMSNorm's input), ``m`` the weight scale (PFloat). Because the quantiser is
    scale invariant, the RMSNorm only enters here: ``max|x_n| = max|v w| * rsqrt(mean(v**2))``.
    A zero vector (``ss == 0`` or ``zmax == 0``) has scale zero.
    """
    if ss == 0 or zmax == 0:
        return PF_ZERO
    r = pf_rsqrt(pf_mul(pf_from_int(ss, -2 * ACT.frac), pf_recip(k)))
    return pf_mul(pf_mul(pf_mul(pf_from_int(zmax, -z_exp), r), m), INV_127)


def rescale(acc, scale):
    """Accumulators (int64) times a PFloat scale, to ACT: rounded half up, saturated.

    Exactly ``saturate(floor(acc * mant * 2**(exp + 12) + 1/2))`` for every accumulator and exponent:
    a left shift that must saturate does, and a right shift of 48 bits or more gives 0.
    """
    if scale.mant == 0:
        return torch.zeros_like(acc)
    sh = -(scale.exp + ACT.frac)
    p = acc * scale.mant                        # |acc| < 2**31, mant < 2**16
    if sh <= 0:
        # |p| > 2**39 saturates whatever the shift; clamping first keeps the shift inside int64
        p = p.clamp(-(1 << 39), 1 << 39) << min(-sh, 23)
        return ACT.saturate(p)
    return ACT.saturate(shift_round(p, min(sh, 60)))


# --- element-wise functions ----------------------------------------------------------------------

SIGMOID_IN_MIN = -16
"""The sigmoid table covers ``[-16, 16)``; inputs outside are clamped to it."""
SIGMOID_STEP_LOG2 = 4
"""Table step ``2**-4``: 512 intervals, 513 entries, linear interpolation between them."""
_SIG_FRAC_BITS = ACT.frac - SIGMOID_STEP_LOG2          # interpolation weight bits (8)
_SIG_ENTRIES = (-2 * SIGMOID_IN_MIN << SIGMOID_STEP_LOG2) + 1


def _sigmoid_table():
    out = []
    for i in range(_SIG_ENTRIES):
        x = SIGMOID_IN_MIN + i / (1 << SIGMOID_STEP_LOG2)
        out.append(math.floor((1 << GATE.frac) / (1.0 + math.exp(-x)) + 0.5))
    return tuple(out)


SIGMOID_TABLE = _sigmoid_table()
"""``round(2**16 * sigmoid(-16 + i/16))`` for i in 0..512 (GATE codes)."""
_SIG_T = torch.tensor(SIGMOID_TABLE, dtype=torch.int64)


def sigmoid(x):
    """GATE sigmoid of ACT ``x``: table lookup with linear interpolation (one small multiply)."""
    lo = SIGMOID_IN_MIN << ACT.frac
    off = x.clamp(lo, -lo - 1) - lo
    i = off >> _SIG_FRAC_BITS
    fr = off & ((1 << _SIG_FRAC_BITS) - 1)
    t0, t1 = _SIG_T[i], _SIG_T[i + 1]
    return t0 + (((t1 - t0) * fr + (1 << (_SIG_FRAC_BITS - 1))) >> _SIG_FRAC_BITS)


def silu(x):
    """ACT ``x * sigmoid(x)``."""
    return ACT.saturate(shift_round(x * sigmoid(x), GATE.frac))


def silu_state(h):
    """SiLU of a STATE value, as ACT: ``silu(round(h to ACT))``."""
    return silu(ACT.saturate(shift_round(h, STATE.frac - ACT.frac)))


def mul_act(a, b):
    """The product of two ACT values, ACT."""
    return ACT.saturate(shift_round(a * b, ACT.frac))


def lower_bound_blend(lb, f):
    """``lb + (1 - lb) f`` on GATE values."""
    return lb + shift_round(((1 << GATE.frac) - lb) * f, GATE.frac)


def state_update(h, f, c):
    """``f h + (1 - f) c``: STATE ``h``, GATE ``f``, ACT ``c`` -> STATE."""
    c_s = c << (STATE.frac - ACT.frac)
    return STATE.saturate(shift_round(f * h + ((1 << GATE.frac) - f) * c_s, GATE.frac))


def gate_encode(x):
    """GATE codes of floats in [0, 1] (lower bounds), rounded half up."""
    return GATE.from_float(torch.as_tensor(x).clamp(0.0, 1.0))


def argmax(x):
    """Index of the largest value, the lowest index among equals."""
    return int(torch.argmax(x))        # torch returns the first maximal index


# --- trit packing --------------------------------------------------------------------------------

TRIT_CODE = {0: 0b00, 1: 0b01, -1: 0b11}
"""2-bit trit codes: two's complement of the trit; ``0b10`` is invalid."""


def pack_trits(trits):
    """Pack trits (-1/0/1, row-major) four to a byte, trit ``k`` in bits ``2(k%4)+1 .. 2(k%4)``."""
    t = torch.as_tensor(trits).reshape(-1).to(torch.int64)
    n = t.numel()
    codes = (t & 3).to(torch.uint8)
    pad = (-n) % 4
    if pad:
        codes = torch.cat([codes, torch.zeros(pad, dtype=torch.uint8)])
    c = codes.reshape(-1, 4).to(torch.int32)
    return (c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6)).to(torch.uint8)


def unpack_trits(data, n):
    """Inverse of :func:`pack_trits`. Raises ``ValueError`` on the invalid code ``0b10``."""
    b = torch.as_tensor(data).to(torch.int64)
    codes = torch.stack([(b >> s) & 3 for s in (0, 2, 4, 6)], dim=1).reshape(-1)
    if codes.numel() < n:
        raise ValueError(f"{codes.numel()} packed trits, {n} expected")
    codes = codes[:n]
    if bool((codes == 2).any()):
        raise ValueError("invalid trit code 0b10")
    return torch.where(codes == 3, -1, codes)


def pack_trits_base3(trits):
    """Pack trits five to a byte: ``sum((t_k + 1) * 3**k)``, k = 0..4 (1.6 bits per trit)."""
    t = torch.as_tensor(trits).reshape(-1).to(torch.int64) + 1
    pad = (-t.numel()) % 5
    if pad:
        t = torch.cat([t, torch.ones(pad, dtype=torch.int64)])
    t = t.reshape(-1, 5)
    return (t[:, 0] + 3 * t[:, 1] + 9 * t[:, 2] + 27 * t[:, 3] + 81 * t[:, 4]).to(torch.uint8)


def unpack_trits_base3(data, n):
    """Inverse of :func:`pack_trits_base3`. Raises ``ValueError`` on a byte above 242."""
    b = torch.as_tensor(data).to(torch.int64)
    if bool((b > 242).any()):
        raise ValueError("invalid base-3 trit byte (above 242)")
    digits = []
    for _ in range(5):
        digits.append(b % 3)
        b = b // 3
    t = torch.stack(digits, dim=1).reshape(-1)
    if t.numel() < n:
        raise ValueError(f"{t.numel()} packed trits, {n} expected")
    return t[:n] - 1
