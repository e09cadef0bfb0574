"""What the cocotb runs of the compute units cover: counts and edge cases, checked on the vectors themselves.

The cocotb tests (``tests/test_hw_ternary.py``, ``tests/test_hw_units.py``) compare every output bit with
:mod:`mmfree.numerics` on Verilator and on Icarus, with random valid/ready stalls on every stream. These
tests make sure that the vectors they send keep holding what the specification of the units asks for:
at least 10,000 vectors per unit on each simulator, all-zero, all +1 and all -1 rows, the extremes of
every format, a zero vector into the norm. They build the same vectors as those tests (the same
seeds and counts, taken from them) and need no simulator.
"""


import pytest
import torch

from mmfree import numerics as nx
from mmfree.numerics import ACT, BFP_MANT, GATE, STATE
from mmfree.sim.unit_vectors import ELEMENTS, UnitsBench, bench_cases, bench_vectors
from conftest import unused
from test_hw_ternary import (
    MATVEC_ECP5_RUN, MATVEC_RUNS, RESCALE_RUN, edge_jobs, random_jobs, rescale_cases, steady_jobs,
)
from test_hw_units import FULL_RUN_SEED, FULL_RUN_VECTORS, full_run_counts

MIN_VECTORS = 10_000
"""What the specification of the units asks for, per unit and simulator."""


def _edges(fmt):
    return {fmt.min, fmt.max, 0} | ({-1, 1} if fmt.signed else {1})


# --- ternary matrix-vector unit and rescale ------------------------------------------------------

def _matvec_jobs():
    for seed, lanes, max_k, rows in MATVEC_RUNS + [MATVEC_ECP5_RUN]:
        yield lanes, max_k, random_jobs(seed, lanes, max_k, rows) + edge_jobs(lanes, max_k)


def test_matvec_count():
    rows = sum(t.shape[0] for _, _, jobs in _matvec_jobs() for _, t, _ in jobs)
    rows += sum(t.shape[0] for _, t, _ in steady_jobs(16, 64)) * 3
    assert rows >= MIN_VECTORS


def test_matvec_edges():
    for lanes, max_k, jobs in _matvec_jobs():
        rows = torch.cat([torch.as_tensor(t) for _, t, _ in jobs if len(t[0]) == max_k])
        assert (rows == 0).all(1).any(), "an all-zero row"
        assert (rows == 1).all(1).any(), "an all +1 row"
        assert (rows == -1).all(1).any(), "an all -1 row"
        vectors = [c for c, _, _ in jobs]
        for value in (nx.CODE.min, nx.CODE.max, -nx.CODE.max, 0):
            assert [value] * max_k in vectors, f"a vector of {value}"
        assert any(len(c) == lanes for c in vectors), "a vector of one beat"
        accs = [a for c, t, _ in jobs for a in (torch.as_tensor(t) @ torch.tensor(c)).tolist()]
        assert min(accs) == -128 * max_k and max(accs) == 128 * max_k, "the accumulator's extremes"


def test_rescale_count_and_edges():
    accs, lasts, scales = rescale_cases(*RESCALE_RUN, 21)
    assert len(accs) >= MIN_VECTORS
    lim = 1 << 20
    assert {0, 1, -1, lim - 1, -lim} <= set(accs)
    assert nx.PF_ZERO in scales
    assert any(s.mant == 0xFFFF and s.exp == 127 for s in scales), "the largest scale"
    assert any(s.mant == 1 << 15 and s.exp == -74 for s in scales), "a scale that rounds all to 0"


# --- the units of tests/test_hw_units.py ---------------------------------------------------------

@pytest.fixture(scope="module")
def bench():
    bench = UnitsBench()
    for unit in (bench, *bench.units.values()):         # built for their vectors, not elaborated
        unused(unit)
    return bench


@pytest.fixture(scope="module")
def run_cases(bench):
    """The inputs of ``test_units_cocotb``: its seed and counts."""
    return bench_cases(bench, FULL_RUN_SEED, **full_run_counts(bench))


@pytest.fixture(scope="module")
def bench_vec(bench):
    """The vectors of ``test_units_cocotb``, payload rows per port."""
    return bench_vectors(bench, FULL_RUN_SEED, **full_run_counts(bench), stall=0.25)


@pytest.mark.slow
def test_units_counts(bench_vec):
    outputs = [k for k in bench_vec if k.startswith("out__") and k != "out__rmsnorm_scale"]
    units = {k[5:].rsplit("_", 1)[0] for k in outputs}
    assert units == set(ELEMENTS) | {"rmsnorm", "mlgru", "glu"}
    for k in outputs:
        assert len(bench_vec[k]) >= MIN_VECTORS, k
    assert 0 < float(bench_vec["stall"]) < 1, "random stalls on every stream"


ELEMENT_FIELDS = {
    "sigmoid": {None: ACT}, "silu": {None: ACT}, "silu_state": {None: STATE},
    "mul_act": {"a": ACT, "b": ACT}, "lb_blend": {"lb": GATE, "f": GATE},
    "state_update": {"h": STATE, "f": GATE, "c": ACT},
    "norm_weight": {"x": ACT, "w_mant": BFP_MANT},
}


def test_the_runs_ask_for_enough():
    assert FULL_RUN_VECTORS >= MIN_VECTORS


@pytest.mark.parametrize("name", list(ELEMENTS))
def test_element_extremes(run_cases, name):
    """Every input at every extreme of its format, and for several inputs every combination of them."""
    cases = run_cases[name]
    fields = ELEMENT_FIELDS[name]
    if None in fields:
        assert _edges(fields[None]) <= set(cases)
        return
    for key, fmt in fields.items():
        assert _edges(fmt) <= {c[key] for c in cases}, key
    combos = {tuple(c[k] for k in fields) for c in cases}
    corners = {tuple(v) for v in torch.cartesian_prod(
        *[torch.tensor(sorted(_edges(f))) for f in fields.values()]).tolist()}
    assert corners <= combos
    if name == "norm_weight":
        assert {nx.BFP_EXP_MIN, nx.BFP_EXP_MAX} <= {c["w_exp"] for c in cases}


def test_norm_edges(run_cases, bench):
    cases = run_cases["rmsnorm"]
    assert any(all(x == 0 for x in v) for v, _, _, _ in cases), "a zero vector"
    assert any(all(x == 0 for x in w) for _, w, _, _ in cases), "a zero norm weight"
    assert any(all(x == ACT.min for x in v) for v, _, _, _ in cases)
    assert any(all(x == ACT.max for x in v) for v, _, _, _ in cases)
    assert {BFP_MANT.min, BFP_MANT.max} <= {x for _, w, _, _ in cases for x in w}
    assert {nx.BFP_EXP_MIN, nx.BFP_EXP_MAX} <= {e for _, _, e, _ in cases}
    assert set(bench.norm_lengths) <= {len(v) for v, _, _, _ in cases}


def test_mlgru_edges(run_cases, bench):
    layers = bench.layers
    steps = run_cases["mlgru"]
    for pos, fmt in ((2, ACT), (3, ACT), (4, ACT), (5, GATE), (6, BFP_MANT)):
        values = {x for s in steps for x in s[pos]}
        assert {fmt.min, fmt.max} <= values, pos
    assert any(all(x == ACT.max for x in s[2]) for s in steps), "a forget gate held open"
    assert {nx.BFP_EXP_MIN, nx.BFP_EXP_MAX} <= {s[7] for s in steps}
    assert sum(s[1] for s in steps) > 1, "state resets (first tokens)"
    assert {s[0] for s in steps} == set(range(layers))


def test_glu_edges(run_cases, bench):
    n = bench.intermediate
    tokens = run_cases["glu"]
    pairs = {(u[j], u[n + j]) for u in tokens for j in range(n)}
    edges = sorted(_edges(ACT))
    assert {(a, b) for a in edges for b in edges} <= pairs
