"""The device sampler: how a device picks the next token from the logits, bit-exactly.

Pure integer arithmetic on the ACT logit codes (:data:`mmfree.numerics.ACT`, Q11.12), standard library
only, so that gateware implements the same function (:mod:`mmfree.hw.sampler`) and is checked against
it token for token. The golden board uses it for every GENERATE; docs/protocol.md (GENERATE) refers
to it.

Parameters (the GENERATE fields):

* ``temperature``: an unsigned 8.8 fixed-point code, ``T = code / 256``; ``0`` selects greedy decoding
  (argmax, the lowest index among equal logits, exactly :func:`mmfree.numerics.argmax`).
* ``top_k``: ``0`` (or ``>= V``) keeps every token; otherwise only tokens whose logit is at least the
  ``k``-th largest logit are candidates (ties at that value are all kept).
* ``seed``: the 32-bit LFSR seed; ``0`` stands for :data:`SEED_ZERO` (an LFSR must not hold zero).

One sampled token, for logits ``l[0..V-1]``:

1. ``lmax = max(l)``; with top-k, the threshold ``t`` = the ``k``-th largest value of ``l`` (counted
   with multiplicity; equivalently the largest ``t`` with ``#{i: l[i] >= t} >= k``), else ``t = min(l)``.
2. ``beta = (LOG2E_Q22 + code // 2) // code``, once per GENERATE (``LOG2E_Q22 = round(log2(e) * 2**22)``).
3. For every candidate (``l[i] >= t``): ``d = lmax - l[i]`` (``0 <= d < 2**24``),
   ``x = (d * beta) >> 20`` (the exponent ``d / T * log2(e)`` in 1/64 units), ``n = x >> 6``,
   ``w[i] = EXP2_TABLE[x & 63] >> n`` if ``n < 16`` else ``0``. Non-candidates have ``w[i] = 0``.
   ``w[argmax] = 32768``, so the total ``W = sum(w)`` is positive and below ``2**31``.
4. Advance the LFSR by 32 steps (:func:`lfsr_draw`); ``r`` is its new 32-bit state;
   ``u = (r * W) >> 32`` (so ``0 <= u < W``).
5. The token is the lowest ``i`` with ``w[0] + ... + w[i] > u``.

``EXP2_TABLE[f] = round(2**15 * 2**(-f/64))`` (half up), derived below in exact integer arithmetic.
The LFSR is a 32-bit Galois LFSR shifting right with toggle mask :data:`LFSR_MASK` (polynomial
``x^32 + x^22 + x^2 + x + 1``, maximal length): one step is ``s = (s >> 1) ^ (MASK if s & 1 else 0)``.
"""

__all__ = ["TEMPERATURE_FRAC", "TEMPERATURE_MAX", "LFSR_MASK", "SEED_ZERO", "LOG2E_Q22",
           "EXP2_FRAC_BITS", "EXP2_TABLE", "temperature_code", "seed_state", "lfsr_step", "lfsr_draw",
           "beta", "argmax", "top_k_threshold", "weights", "Sampler", "reference_generate"]

from .protocol import TEMPERATURE_FRAC
TEMPERATURE_MAX = 0xFFFF
TOP_K_BITS = 16
"""Width of ``top_k`` (GENERATE's ``u16``): 0 .. 65535."""
LFSR_MASK = 0x80200003
SEED_ZERO = 0xFFFFFFFF
"""The LFSR state used when the seed is 0."""
LOG2E_Q22 = 6051102
"""``round(log2(e) * 2**22)``."""
EXP2_FRAC_BITS = 6
BETA_SHIFT = 20


def _exp2_entry(f):
    """``floor(2**(15 - f/64) + 1/2)``: the largest ``w`` with ``(2w - 1)**64 <= 2**(1024 - f)``."""
    target = 1 << (1024 - f)
    w = int(2 ** (15 - f / 64) + 0.5) + 1      # a float guess, corrected exactly below
    while (2 * w - 1) ** 64 > target:
        w -= 1
    return w


EXP2_TABLE = tuple(_exp2_entry(f) for f in range(1 << EXP2_FRAC_BITS))
"""``2**15 * 2**(-f/64)`` for ``f = 0..63``, rounded half up (16-bit unsigned; entry 0 is 32768)."""


def temperature_code(temperature):
    """The 8.8 code of a temperature given as a float: 0 for ``temperature <= 0`` (greedy), else
    ``round(temperature * 256)`` clamped to 1..65535."""
    t = float(temperature)
    if t != t:
        raise ValueError("temperature is NaN")
    if t <= 0:
        return 0
    return min(max(int(t * (1 << TEMPERATURE_FRAC) + 0.5), 1), TEMPERATURE_MAX)


def seed_state(seed):
    """The LFSR's initial state for a 32-bit seed."""
    if not 0 <= seed <= 0xFFFFFFFF:
        raise ValueError(f"seed must be a 32-bit unsigned integer, not {seed}")
    return seed or SEED_ZERO


def lfsr_step(s):
    return (s >> 1) ^ (LFSR_MASK if s & 1 else 0)


def lfsr_draw(s):
    """The state 32 steps after ``s``: the next 32-bit random word."""
    for _ in range(32):
        s = (s >> 1) ^ (LFSR_MASK if s & 1 else 0)
    return s


def beta(code):
    """The per-GENERATE multiplier for temperature code ``code >= 1``."""
    if not 1 <= code <= TEMPERATURE_MAX:
        raise ValueError(f"temperature code must be 1..{TEMPERATURE_MAX}, not {code}")
    return (LOG2E_Q22 + code // 2) // code


def argmax(logits):
    """Index of the largest logit, the lowest index among equals."""
    best, bi = logits[0], 0
    for i, v in enumerate(logits):
        if v > best:
            best, bi = v, i
    return bi


def top_k_threshold(logits, k):
    """The ``k``-th largest logit (with multiplicity); ``min(logits)`` when ``k == 0`` or ``k >= V``."""
    if k <= 0 or k >= len(logits):
        return min(logits)
    return sorted(logits, reverse=True)[k - 1]


def weights(logits, code, top_k=0):
    """The integer weights ``w[i]`` of step 3 (see the module docstring)."""
    b = beta(code)
    lmax = max(logits)
    t = top_k_threshold(logits, top_k)
    out = []
    for v in logits:
        if v < t:
            out.append(0)
            continue
        x = ((lmax - v) * b) >> BETA_SHIFT
        n = x >> EXP2_FRAC_BITS
        out.append(EXP2_TABLE[x & ((1 << EXP2_FRAC_BITS) - 1)] >> n if n < 16 else 0)
    return out


class Sampler:
    """The state of one GENERATE's sampler. ``pick(logits)`` returns the next token id; logits are ACT
    codes as a sequence of ints (or anything with ``tolist()``, such as a torch tensor)."""

    def __init__(self, temperature=0, top_k=0, seed=0):
        if not 0 <= temperature <= TEMPERATURE_MAX:
            raise ValueError(f"temperature code must be 0..{TEMPERATURE_MAX}, not {temperature}")
        if not 0 <= top_k < 1 << TOP_K_BITS:
            raise ValueError(f"top_k must be 0..{(1 << TOP_K_BITS) - 1}, not {top_k}")
        self.temperature = temperature
        self.top_k = top_k
        self.state = seed_state(seed)
        self.beta = beta(temperature) if temperature else 0

    def pick(self, logits):
        if hasattr(logits, "tolist"):
            logits = logits.tolist()
        if not logits:
            raise ValueError("no logits")
        if self.temperature == 0:
            return argmax(logits)
        w = weights(logits, self.temperature, self.top_k)
        total = sum(w)
        self.state = lfsr_draw(self.state)
        u = (self.state * total) >> 32
        acc = 0
        for i, wi in enumerate(w):
            acc += wi
            if acc > u:
                return i
        raise AssertionError("unreachable: u < total")


def reference_generate(golden, prompt, n, temperature=0, top_k=0, seed=0):
    """What a device yields for ``RESET_STATE; FEED prompt; GENERATE n``: ``n`` token ids from a
    :class:`mmfree.golden.GoldenModel` (reset first), picked by :class:`Sampler`. Each produced token is
    fed back into the model before the next is picked."""
    golden.reset(1)
    logits = None
    for t in prompt:
        logits, _ = golden.step(int(t))
    if logits is None:
        raise ValueError("the prompt is empty")
    sampler = Sampler(temperature, top_k, seed)
    for _ in range(n):
        tok = sampler.pick(logits)
        yield tok
        logits, _ = golden.step(tok)
