"""Seeded test cases and exact expected outputs for the non-ternary compute units, from :mod:`mmfree.numerics`.

Used by the Amaranth-simulator tests and, through :class:`UnitsBench` and :func:`bench_vectors`, by the
cocotb testbench :mod:`mmfree.sim.tb_units` (which reads the vector file and needs no torch).

Every generator mixes the extremes of each format with random values of several magnitudes; every
reference is the :mod:`mmfree.numerics` function of the same name.
"""

import itertools
import random

import torch
from amaranth.hdl import Module, Shape
from amaranth.lib import data, wiring

from .. import numerics as nx
from ..numerics import ACT, BFP_MANT, GATE, STATE, PFloat
from ..hw.activations import (
    ApplyNormWeight, LowerBoundBlend, MulAct, Sigmoid, SiLU, SiLUState, StateUpdate,
)
from ..hw.glu import GLU
from ..hw.mlgru import MLGRU
from ..hw.rmsnorm import RMSNormQuantizer
from ..hw.sampler import Sampler, cycle_bound
from .. import sampler as sampler_spec

__all__ = [
    "ELEMENTS", "element_cases", "element_reference",
    "norm_cases", "norm_reference", "norm_beats",
    "mlgru_steps", "mlgru_reference", "mlgru_beats",
    "glu_tokens", "glu_reference",
    "UnitsBench", "bench_vectors", "packer",
    "SamplerBench", "sampler_cases", "sampler_vectors",
]


def _t(xs):
    return torch.tensor(xs, dtype=torch.int64)


def _edges(fmt):
    return [fmt.min, fmt.min + 1, -1 if fmt.signed else 0, 0, 1, fmt.max - 1, fmt.max]


def _values(rng, fmt, n, small):
    """``n`` codes of ``fmt``: its edges, then half of them within ``+-small``, half anywhere."""
    out = _edges(fmt)[:n]
    while len(out) < n:
        if rng.random() < 0.5:
            out.append(rng.randint(max(fmt.min, -small), min(fmt.max, small)))
        else:
            out.append(rng.randint(fmt.min, fmt.max))
    rng.shuffle(out)
    return out


def _with_corners(cases, corners):
    """``cases`` whose first entries are ``corners`` (every combination of the inputs' extremes), as many
    of them as fit in half of the cases."""
    k = min(len(corners), len(cases) // 2)
    return corners[:k] + cases[k:]


def _corners(**edges):
    """Every combination of the given edge values, as field dicts."""
    names = list(edges)
    return [dict(zip(names, combo)) for combo in itertools.product(*(sorted(set(edges[k])) for k in names))]


def _gauss(rng, fmt, n, sigma):
    return [fmt.saturate(int(rng.gauss(0, sigma))) for _ in range(n)]


# --- element-wise units --------------------------------------------------------------------------

_SIG = -nx.SIGMOID_IN_MIN << ACT.frac         # |x| beyond which the sigmoid table is clamped

ELEMENTS = {
    "sigmoid": Sigmoid,
    "silu": SiLU,
    "silu_state": SiLUState,
    "mul_act": MulAct,
    "lb_blend": LowerBoundBlend,
    "state_update": StateUpdate,
    "norm_weight": ApplyNormWeight,
}
"""Element-wise stream units by test name."""


def element_cases(name, rng, n):
    """``n`` input payloads (ints or field dicts) for the element unit ``name``."""
    if name in ("sigmoid", "silu"):
        # every input around both clamp points, where the table's end intervals are interpolated, after
        # codes that hold the format's edges
        edge = list(range(-_SIG - 3, -_SIG + 260)) + list(range(_SIG - 260, _SIG + 3))
        if n >= 2 * len(edge):
            return _values(rng, ACT, n - len(edge), _SIG + 512) + edge
        return _values(rng, ACT, n, _SIG + 512)
    if name == "silu_state":
        # codes beside the ends of the format (where the input's rounding saturates), then codes that hold
        # the format's edges, when there is room for both
        near = [STATE.max - 128, STATE.max - 127, STATE.max - 129, STATE.min + 127]
        if n < len(near) + len(_edges(STATE)):
            near = []
        return near + _values(rng, STATE, n - len(near), _SIG << (STATE.frac - ACT.frac))
    # units of several inputs start with every combination of their inputs' extremes
    if name == "mul_act":
        a, b = _values(rng, ACT, n, 1 << 14), _values(rng, ACT, n, 1 << 14)
        return _with_corners([{"a": x, "b": y} for x, y in zip(a, b)], _corners(a=_edges(ACT), b=_edges(ACT)))
    if name == "lb_blend":
        lb, f = _values(rng, GATE, n, 1 << 16), _values(rng, GATE, n, 1 << 16)
        return _with_corners([{"lb": x, "f": y} for x, y in zip(lb, f)],
                             _corners(lb=_edges(GATE), f=_edges(GATE)))
    if name == "state_update":
        h = _values(rng, STATE, n, 1 << 24)
        f, c = _values(rng, GATE, n, 1 << 16), _values(rng, ACT, n, 1 << 16)
        return _with_corners([{"h": x, "f": y, "c": z} for x, y, z in zip(h, f, c)],
                             _corners(h=_edges(STATE), f=_edges(GATE), c=_edges(ACT)))
    if name == "norm_weight":
        x, w = _values(rng, ACT, n, 1 << 14), _values(rng, BFP_MANT, n, 1 << 12)
        special = [nx.BFP_EXP_MIN, nx.BFP_EXP_MAX, 0, 1, -1, 12, 13, 14, 15, 16, 39, 40, 41, -23, -24, -25]
        exps = [rng.choice(special) if rng.random() < 0.5 else
                rng.randint(nx.BFP_EXP_MIN, nx.BFP_EXP_MAX) for _ in range(n)]
        return _with_corners([{"x": a, "w_mant": b, "w_exp": e} for a, b, e in zip(x, w, exps)],
                             _corners(x=_edges(ACT), w_mant=_edges(BFP_MANT),
                                      w_exp=[nx.BFP_EXP_MIN, nx.BFP_EXP_MAX, 0, 14, -24]))
    raise ValueError(f"no element unit {name!r}")


def element_reference(name, cases):
    """Expected outputs (ints) of the element unit ``name`` for ``cases``."""
    col = lambda key: _t([c[key] for c in cases])          # noqa: E731
    if name == "sigmoid":
        return nx.sigmoid(_t(cases)).tolist()
    if name == "silu":
        return nx.silu(_t(cases)).tolist()
    if name == "silu_state":
        return nx.silu_state(_t(cases)).tolist()
    if name == "mul_act":
        return nx.mul_act(col("a"), col("b")).tolist()
    if name == "lb_blend":
        return nx.lower_bound_blend(col("lb"), col("f")).tolist()
    if name == "state_update":
        return nx.state_update(col("h"), col("f"), col("c")).tolist()
    if name == "norm_weight":
        # ``apply_norm_weight`` on int64 tensors wraps where ``x * w << -w_exp`` leaves int64 (only for
        # w_exp < -24); the same definition on Python integers saturates, as the hardware does.
        out = []
        for c in cases:
            a, b, e = c["x"], c["w_mant"], c["w_exp"]
            if abs(a * b) << max(0, -e) < 1 << 63:
                out.append(int(nx.apply_norm_weight(_t([a]), _t([b]), e)[0]))
            else:
                out.append(ACT.saturate(nx.shift_round(a * b, e)))
        return out
    raise ValueError(f"no element unit {name!r}")


# --- RMSNorm and quantiser -----------------------------------------------------------------------

def norm_cases(rng, lengths, count):
    """``count`` quantiser jobs ``(v, w_mant, w_exp, m)``: edge cases first, then random ones."""
    k0 = lengths[0]
    m0 = nx.pf_from_float(0.0213)
    cases = [
        ([0] * k0, [rng.randint(-30000, 30000) for _ in range(k0)], 14, m0),       # zero vector
        ([rng.randint(-5000, 5000) for _ in range(k0)], [0] * k0, 14, m0),         # zero weight
        ([ACT.min] * k0, [BFP_MANT.min] * k0, nx.BFP_EXP_MIN, m0),                  # extremes
        ([ACT.max] * k0, [BFP_MANT.max] * k0, nx.BFP_EXP_MAX, PFloat(65535, 300)),
        ([ACT.min, ACT.max] * (k0 // 2) + [1] * (k0 % 2), [1] * k0, 0, PFloat(32768, -300)),
        ([1] + [0] * (k0 - 1), [1] * k0, 15, PFloat(1, 0)),                        # tiny; odd m
        ([rng.choice([-1, 1]) for _ in range(k0)], [rng.randint(-3, 3) for _ in range(k0)], 3, m0),
        ([ACT.max] + [ACT.min] * (k0 - 1), [BFP_MANT.max] + [BFP_MANT.min] * (k0 - 1), 14, m0),
    ]
    while len(cases) < count:
        k = rng.choice(lengths)
        sigma = rng.choice([1, 1 << 6, 1 << 12, 1 << 16, 1 << 23])
        v = _gauss(rng, ACT, k, sigma)
        w = [BFP_MANT.saturate(int(rng.gauss(1 << 14, 1 << rng.randint(4, 14)))) for _ in range(k)]
        cases.append((v, w, rng.randint(nx.BFP_EXP_MIN, nx.BFP_EXP_MAX),
                      nx.pf_from_float(rng.uniform(1e-5, 0.1))))
    return cases[:count]


def norm_reference(case):
    """``(codes, (scale.mant, scale.exp))`` of one quantiser job."""
    v, w, w_exp, m = case
    vt, wt = _t(v), _t(w)
    codes, zmax = nx.quantize_activations(vt * wt)
    scale = nx.output_scale(int(zmax), ACT.frac + w_exp, int((vt * vt).sum()), len(v), m)
    return codes.tolist(), (scale.mant, scale.exp)


def norm_beats(cases):
    """Input payloads and expected ``codes`` (code, last) and ``scale`` (mant, exp) outputs."""
    items, codes, scales = [], [], []
    for case in cases:
        v, w, e, m = case
        for j, (a, b) in enumerate(zip(v, w)):
            items.append({"v": a, "w_mant": b, "w_exp": e, "m": {"mant": m.mant, "exp": m.exp},
                          "last": int(j == len(v) - 1)})
        c, s = norm_reference(case)
        codes += [{"code": x, "last": int(j == len(c) - 1)} for j, x in enumerate(c)]
        scales.append({"mant": s[0], "exp": s[1]})
    return items, codes, scales


# --- MLGRU ---------------------------------------------------------------------------------------

def mlgru_steps(rng, hidden, layers, tokens, *, one_layer=False):
    """Steps ``(layer, first, f, i, g, lb, g_mant, g_exp)``: each token through all layers in order,
    or (``one_layer``) every token through layer 0 back to back."""
    lbs = [[0] * hidden] + [[rng.randint(0, 1 << 16) for _ in range(hidden)]
                            for _ in range(layers - 1)]
    lbs[-1][:4] = [0, 1 << 16, GATE.max, 1]                          # extremes of GATE
    gms = [_values(rng, BFP_MANT, hidden, 1 << 14) for _ in range(layers)]
    gexp = [rng.choice([13, 14, 15, rng.randint(nx.BFP_EXP_MIN, nx.BFP_EXP_MAX)])
            for _ in range(layers)]
    steps = []
    for t in range(tokens):
        for layer in ([0] if one_layer else range(layers)):
            sigma = rng.choice([1 << 8, 1 << 12, 1 << 14, 1 << 16, 1 << 22])
            f, i, g = (_gauss(rng, ACT, hidden, sigma) for _ in range(3))
            ge = gexp[layer]
            u = rng.random()
            if u < 0.2:                                     # drive the state to its limits
                f = [ACT.min] * hidden
                i = [rng.choice([ACT.min, ACT.max]) for _ in range(hidden)]
            elif u < 0.25:                                  # forget gate wide open: the state holds
                f = [ACT.max] * hidden
            elif u < 0.3:                                   # extremes of every input format
                f, i, g = (_values(rng, ACT, hidden, 1 << 12) for _ in range(3))
                ge = rng.choice([nx.BFP_EXP_MIN, nx.BFP_EXP_MAX])
            steps.append((layer, int(t == 0 or rng.random() < 0.05), f, i, g, lbs[layer],
                          gms[layer], ge))
    return steps


def mlgru_reference(steps, hidden, layers):
    """Expected ``o_in`` values of every step, in order, and the final state of every layer."""
    h = [torch.zeros(hidden, dtype=torch.int64) for _ in range(layers)]
    out = []
    for layer, first, f, i, g, lb, gm, ge in steps:
        fg = nx.lower_bound_blend(_t(lb), nx.sigmoid(_t(f)))
        c = nx.silu(_t(i))
        prev = torch.zeros(hidden, dtype=torch.int64) if first else h[layer]
        h[layer] = nx.state_update(prev, fg, c)
        out += nx.mul_act(nx.apply_norm_weight(_t(g), _t(gm), ge), nx.silu_state(h[layer])).tolist()
    return out, h


def mlgru_beats(steps, hidden, layers):
    """Payloads of the ``f``, ``i``, ``g``, ``w`` streams and the expected ``o`` (data, last)."""
    beats = {"f": [], "i": [], "g": [], "w": []}
    for layer, first, f, i, g, lb, gm, ge in steps:
        beats["f"] += f
        beats["i"] += i
        beats["g"] += g
        beats["w"] += [{"lb": a, "g_mant": b, "g_exp": ge, "layer": layer, "first": first}
                       for a, b in zip(lb, gm)]
    ref, _ = mlgru_reference(steps, hidden, layers)
    out = [{"data": x, "last": int(j % hidden == hidden - 1)} for j, x in enumerate(ref)]
    return beats, out


# --- GLU -----------------------------------------------------------------------------------------

def glu_tokens(rng, intermediate, tokens):
    """``tokens`` fused ``gate_proj`` outputs of ``2 * intermediate`` ACT values each.

    The first ones (at most half of them) pair every extreme gate value with every extreme up value.
    """
    pairs = list(itertools.product(_edges(ACT), _edges(ACT)))
    out = []
    while pairs and len(out) < tokens // 2:
        chunk, pairs = pairs[:intermediate], pairs[intermediate:]
        chunk += [(rng.randint(ACT.min, ACT.max), rng.randint(ACT.min, ACT.max))
                  for _ in range(intermediate - len(chunk))]
        out.append([a for a, _ in chunk] + [b for _, b in chunk])
    while len(out) < tokens:
        sigma = rng.choice([1 << 8, 1 << 12, 1 << 16, 1 << 22])
        if rng.random() < 0.3:
            out.append(_values(rng, ACT, 2 * intermediate, sigma))
        else:
            out.append(_gauss(rng, ACT, 2 * intermediate, sigma))
    return out


def glu_reference(tokens, intermediate):
    """Expected outputs ``mul_act(silu(u[:I]), u[I:])`` of every token, in order."""
    out = []
    for u in tokens:
        out += nx.mul_act(nx.silu(_t(u[:intermediate])), _t(u[intermediate:])).tolist()
    return out


# --- all units in one design, for the HDL simulators ---------------------------------------------

class UnitsBench(wiring.Component):
    """Every non-ternary unit side by side, each port renamed ``<unit>_<port>``: one HDL build.

    Units: the :data:`ELEMENTS`, ``rmsnorm`` (:class:`~mmfree.hw.rmsnorm.RMSNormQuantizer` for
    ``norm_lengths``), ``mlgru`` (``MLGRU(hidden, layers)``) and ``glu`` (``GLU(intermediate)``).
    """

    def __init__(self, *, norm_lengths=(64, 96), hidden=16, layers=3, intermediate=48):
        self.norm_lengths = tuple(norm_lengths)
        self.hidden, self.layers, self.intermediate = hidden, layers, intermediate
        self.units = {name: cls() for name, cls in ELEMENTS.items()}
        self.units["rmsnorm"] = RMSNormQuantizer(self.norm_lengths)
        self.units["mlgru"] = MLGRU(hidden, layers)
        self.units["glu"] = GLU(intermediate)
        members = {}
        for uname, unit in self.units.items():
            for pname, member in unit.signature.members.items():
                members[f"{uname}_{pname}"] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for uname, unit in self.units.items():
            m.submodules[f"u_{uname}"] = unit
            for pname, member in unit.signature.members.items():
                outer, inner = getattr(self, f"{uname}_{pname}"), getattr(unit, pname)
                if member.is_signature:
                    wiring.connect(m, wiring.flipped(outer), inner)
                elif member.flow == wiring.Out:
                    m.d.comb += outer.eq(inner)
                else:
                    m.d.comb += inner.eq(outer)
        return m


def _leaves(shape, path=(), offset=0):
    if not isinstance(shape, data.Layout):
        return [(path, offset, Shape.cast(shape).width)]
    out = []
    for name, field in shape:
        out += _leaves(field.shape, path + (name,), offset + field.offset)
    return out


def packer(shape):
    """A function that turns a payload (an int, or nested dicts of fields) into its unsigned integer."""
    leaves = [(path, offset, (1 << width) - 1) for path, offset, width in _leaves(shape)]

    def pack(value):
        out = 0
        for path, offset, mask in leaves:
            v = value
            for name in path:
                v = v[name]
            out |= (int(v) & mask) << offset
        return out
    return pack


def _field_specs(shape, prefix="", offset=0):
    """``"name:offset:width:s|u"`` of every leaf field, for readable mismatch reports."""
    if not isinstance(shape, data.Layout):
        s = Shape.cast(shape)
        return [f"{prefix.rstrip('.') or 'value'}:{offset}:{s.width}:{'s' if s.signed else 'u'}"]
    out = []
    for name, field in shape:
        out += _field_specs(field.shape, f"{prefix}{name}.", offset + field.offset)
    return out


def bench_cases(bench, seed, *, elements=1500, norm=40, mlgru=20, glu=40):
    """The inputs of :func:`bench_vectors`, drawn in order from one generator seeded with ``seed``:
    ``{element name: element_cases, "rmsnorm": norm_cases, "mlgru": mlgru_steps, "glu": glu_tokens}``."""
    rng = random.Random(seed)
    cases = {name: element_cases(name, rng, elements) for name in ELEMENTS}
    cases["rmsnorm"] = norm_cases(rng, bench.norm_lengths, norm)
    cases["mlgru"] = mlgru_steps(rng, bench.hidden, bench.layers, mlgru)
    cases["glu"] = glu_tokens(rng, bench.intermediate, glu)
    return cases


def bench_vectors(bench, seed, *, elements=1500, norm=40, mlgru=20, glu=40, stall=0.3):
    """The vector dict (format of :mod:`mmfree.sim.tb_units`) for ``bench``: every port's payloads.

    ``elements`` inputs per element unit, ``norm`` quantiser jobs, ``mlgru`` tokens (each through all
    layers), ``glu`` tokens; ``stall`` is the probability of an idle cycle or a ``ready`` stall.
    """
    import numpy as np
    from .vectors import payload_rows

    cases = bench_cases(bench, seed, elements=elements, norm=norm, mlgru=mlgru, glu=glu)
    beats = {}                          # port -> (payloads, is_input)
    for name in ELEMENTS:
        beats[f"{name}_i"] = (cases[name], True)
        beats[f"{name}_o"] = (element_reference(name, cases[name]), False)
    items, codes, scales = norm_beats(cases["rmsnorm"])
    beats["rmsnorm_i"] = (items, True)
    beats["rmsnorm_codes"] = (codes, False)
    beats["rmsnorm_scale"] = (scales, False)
    m_in, m_out = mlgru_beats(cases["mlgru"], bench.hidden, bench.layers)
    for k, v in m_in.items():
        beats[f"mlgru_{k}"] = (v, True)
    beats["mlgru_o"] = (m_out, False)
    toks = cases["glu"]
    beats["glu_u"] = ([x for u in toks for x in u], True)
    beats["glu_o"] = ([{"data": x, "last": int(j % bench.intermediate == bench.intermediate - 1)}
                       for j, x in enumerate(glu_reference(toks, bench.intermediate))], False)

    vec = {"stall": np.float64(stall), "seed": np.int64(seed)}
    for port, (payloads, is_input) in beats.items():
        shape = bench.signature.members[port].signature.members["payload"].shape
        width = Shape.cast(shape).width
        pack = packer(shape)
        vec[("in__" if is_input else "out__") + port] = payload_rows([pack(p) for p in payloads], width)
        vec["fields__" + port] = np.array(_field_specs(shape))
    return vec


# --- the sampler ----------------------------------------------------------------------------------


class SamplerBench(wiring.Component):
    """:class:`~mmfree.hw.sampler.Sampler` with a logits memory of ``max_vocab`` ACT words that the
    testbench fills through ``wr_addr``, ``wr_data``, ``wr_en`` (the core's ``Y`` buffer in the
    accelerator). ``arch`` is the sampler's."""

    def __init__(self, max_vocab, arch=None):
        self.max_vocab = max_vocab
        self.unit = Sampler(max_vocab, max_vocab, arch=arch)
        members = {name: member for name, member in self.unit.signature.members.items() if name != "rd"}
        members.update({"wr_addr": wiring.In(range(max(max_vocab, 2))), "wr_data": wiring.In(ACT.width),
                        "wr_en": wiring.In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        from amaranth.lib import memory
        m = Module()
        m.submodules.unit = unit = self.unit
        m.submodules.logits = mem = memory.Memory(shape=ACT.width, depth=max(self.max_vocab, 2), init=[])
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(self.wr_addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en),
                     rp.addr.eq(unit.rd.addr)]
        m.d.sync += unit.rd.data.eq(rp.data)            # the core's Y: read, then registered
        for name, member in unit.signature.members.items():
            if name == "rd":
                continue
            if member.flow == wiring.Out:
                m.d.comb += getattr(self, name).eq(getattr(unit, name))
            else:
                m.d.comb += getattr(unit, name).eq(getattr(self, name))
        return m


def _logit_rows(rng, V):
    """Logits of one pick: the shapes a language model gives (one clear winner, a few close ones, a flat
    spread), ties, and the extremes of ACT."""
    lo, hi = -(1 << (ACT.width - 1)), (1 << (ACT.width - 1)) - 1
    kind = rng.randrange(6)
    if kind == 0:           # peaked, in logit units of 1/4096
        base = [int(rng.gauss(0, 3 << ACT.frac)) for _ in range(V)]
        base[rng.randrange(V)] += 12 << ACT.frac
    elif kind == 1:         # flat: many close candidates
        base = [int(rng.gauss(0, 1 << (ACT.frac - 2))) for _ in range(V)]
    elif kind == 2:         # few values: ties everywhere
        vals = [rng.randrange(-64, 64) << rng.randrange(4, 12) for _ in range(4)]
        base = [rng.choice(vals) for _ in range(V)]
    elif kind == 3:         # the format's extremes
        base = [rng.choice((lo, hi, 0, lo + 1, hi - 1, rng.randrange(lo, hi + 1))) for _ in range(V)]
    elif kind == 4:         # all equal
        base = [rng.randrange(lo, hi + 1)] * V
    else:                   # anything
        base = [rng.randrange(lo, hi + 1) for _ in range(V)]
    return [min(max(v, lo), hi) for v in base]


def sampler_cases(rng, generations, max_vocab):
    """``generations`` seeded GENERATEs of a few picks each: ``(load, seed, V, temperature code, top_k,
    logits)`` per pick, the seed loaded on a GENERATE's first pick only."""
    codes = (1, 2, 64, 128, 200, 256, 300, 512, 1000, 4096, 65535)
    cases = []
    for _ in range(generations):
        V = rng.choice((1, 2, 3, max_vocab, max_vocab, rng.randrange(1, max_vocab + 1)))
        code = rng.choice(codes) if rng.random() < 0.5 else rng.randrange(1, 65536)
        k = rng.choice((0, 0, 1, 2, 5, 40, V - 1, V, V + 1, 65535, rng.randrange(0, V + 2)))
        seed = rng.choice((0, 1, 0xFFFFFFFF, rng.getrandbits(32)))
        for j in range(rng.randrange(1, 5)):
            cases.append((j == 0, seed, V, code, min(max(k, 0), 65535), _logit_rows(rng, V)))
    return cases


def sampler_vectors(cases, max_vocab):
    """The vector file of :mod:`mmfree.sim.tb_sampler`: the cases and the tokens
    :class:`mmfree.sampler.Sampler` picks for them."""
    import numpy as np
    expect, sampler = [], None
    for load, seed, V, code, k, logits in cases:
        if load:
            sampler = sampler_spec.Sampler(code, k, seed)
        expect.append(sampler.pick(logits))
    rows = np.zeros((len(cases), max_vocab), dtype=np.int64)
    for n, c in enumerate(cases):
        rows[n, :c[2]] = c[5]
    col = lambda j: np.array([int(c[j]) for c in cases], dtype=np.int64)
    return {"logits": rows, "load": col(0), "seed": col(1), "vocab": col(2), "temperature": col(3),
            "top_k": col(4), "expect": np.array(expect, dtype=np.int64),
            "bound": np.array([cycle_bound(c[2], c[4]) for c in cases], dtype=np.int64)}
