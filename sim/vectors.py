"""Stream test vectors for the units of :mod:`mmfree.hw`, computed from :mod:`mmfree.numerics`.

Each function returns a dict of numpy arrays in the format that :mod:`mmfree.sim.tb_streams` reads
(``in__<port>``/``out__<port>`` payloads as little-endian bytes, ``fields__<port>`` for messages) and
that :func:`mmfree.sim.runner.run_cocotb` writes to the vector file. The same payload integers drive
the Amaranth-simulator tests.

A *job* is ``(codes, trits, scale)``: one int8 activation vector ``codes [K]``, the ternary matrix
``trits [N, K]`` that multiplies it (row-major, as the weight image stores it) and, for the rescaled
output, the vector's :class:`~mmfree.numerics.PFloat` scale (or ``None``).
"""

import numpy as np
import torch

from .. import numerics as nx

__all__ = ["payload_rows", "ternary_beats", "rescale_beats", "ternary_vectors", "rescale_vectors",
           "linear_vectors", "reference_acc"]


def payload_rows(values, width):
    """``uint8 [len(values), ceil(width / 8)]``: unsigned payload integers, little-endian."""
    n = max(1, (width + 7) // 8)
    out = np.zeros((len(values), n), dtype=np.uint8)
    for i, v in enumerate(values):
        out[i] = np.frombuffer(int(v).to_bytes(n, "little"), dtype=np.uint8)
    return out


def _field(value, width):
    return int(value) & ((1 << width) - 1)


def reference_acc(codes, trits):
    """Exact ``trits @ codes`` (int64)."""
    return torch.as_tensor(trits, dtype=torch.int64) @ torch.as_tensor(codes, dtype=torch.int64)


def ternary_beats(jobs, lanes):
    """Payload integers of the ``act`` and ``w`` streams of :class:`~mmfree.hw.ternary.TernaryMatVec`.

    The weight beats are cut from ``numerics.pack_trits`` of each matrix, ``2 * lanes`` bits at a time.
    """
    act, w = [], []
    for codes, trits, _ in jobs:
        codes = [int(c) for c in codes]
        trits = torch.as_tensor(trits, dtype=torch.int64)
        n, k = trits.shape
        if k != len(codes) or k % lanes:
            raise ValueError(f"a job's row length {k} must equal its vector length {len(codes)} "
                             f"and be a multiple of {lanes}")
        words = k // lanes
        for b in range(words):
            v = 0
            for j, c in enumerate(codes[b * lanes:(b + 1) * lanes]):
                v |= _field(c, 8) << (8 * j)
            act.append(v | (int(b == words - 1) << (8 * lanes)))
        bits = int.from_bytes(nx.pack_trits(trits).numpy().tobytes(), "little")
        beats = n * words
        mask = (1 << (2 * lanes)) - 1
        for b in range(beats):
            w.append(((bits >> (2 * lanes * b)) & mask) | (int(b == beats - 1) << (2 * lanes)))
    return act, w


def _acc_payloads(jobs, acc_width):
    out = []
    for codes, trits, _ in jobs:
        acc = reference_acc(codes, trits).tolist()
        for i, a in enumerate(acc):
            out.append(_field(a, acc_width) | (int(i == len(acc) - 1) << acc_width))
    return out


def _scale_payload(scale, exp_width):
    lo, hi = -(1 << (exp_width - 1)), (1 << (exp_width - 1)) - 1
    if not lo <= scale.exp <= hi:
        raise ValueError(f"scale exponent {scale.exp} does not fit {exp_width} bits")
    return scale.mant | (_field(scale.exp, exp_width) << 16)


def _value_payloads(accs, lasts, scales):
    out = []
    for acc, last, scale in zip(accs, lasts, scales):
        v = int(nx.rescale(torch.tensor([acc], dtype=torch.int64), scale)[0])
        out.append(_field(v, nx.ACT.width) | (int(last) << nx.ACT.width))
    return out


def _acc_fields(acc_width):
    return np.array([f"acc:0:{acc_width}:s", f"last:{acc_width}:1:u"])


_VALUE_FIELDS = np.array([f"value:0:{nx.ACT.width}:s", f"last:{nx.ACT.width}:1:u"])


def ternary_vectors(jobs, lanes, acc_width, **extra):
    """Vectors for :class:`~mmfree.hw.ternary.TernaryMatVec`: ``act`` and ``w`` in, ``o`` expected."""
    act, w = ternary_beats(jobs, lanes)
    return dict(in__act=payload_rows(act, 8 * lanes + 1), in__w=payload_rows(w, 2 * lanes + 1),
                out__o=payload_rows(_acc_payloads(jobs, acc_width), acc_width + 1),
                fields__o=_acc_fields(acc_width), **extra)


def rescale_beats(accs, lasts, scales, acc_width, exp_width):
    """Payloads for :class:`~mmfree.hw.ternary.Rescale`: ``(i, scale, o)``.

    ``scales[j]`` applies to every accumulator up to and including the ``j``-th one with ``last`` set.
    """
    per_acc, j = [], 0
    for last in lasts:
        per_acc.append(scales[j])
        j += int(bool(last))
    i = [_field(a, acc_width) | (int(l) << acc_width) for a, l in zip(accs, lasts)]
    s = [_scale_payload(sc, exp_width) for sc in scales[:j]]
    return i, s, _value_payloads(accs, lasts, per_acc)


def rescale_vectors(accs, lasts, scales, acc_width, exp_width, **extra):
    i, s, o = rescale_beats(accs, lasts, scales, acc_width, exp_width)
    return dict(in__i=payload_rows(i, acc_width + 1), in__scale=payload_rows(s, 16 + exp_width),
                out__o=payload_rows(o, nx.ACT.width + 1), fields__o=_VALUE_FIELDS, **extra)


def linear_vectors(jobs, lanes, exp_width, **extra):
    """Vectors for :class:`~mmfree.hw.ternary.TernaryLinear`: every job needs its scale."""
    act, w = ternary_beats(jobs, lanes)
    accs, lasts, scales = [], [], []
    for codes, trits, scale in jobs:
        acc = reference_acc(codes, trits).tolist()
        accs += acc
        lasts += [0] * (len(acc) - 1) + [1]
        scales.append(scale)
    s = [_scale_payload(sc, exp_width) for sc in scales]
    per_acc = [sc for (_, t, sc) in jobs for _ in range(len(t))]
    o = _value_payloads(accs, lasts, per_acc)
    return dict(in__act=payload_rows(act, 8 * lanes + 1), in__w=payload_rows(w, 2 * lanes + 1),
                in__scale=payload_rows(s, 16 + exp_width),
                out__o=payload_rows(o, nx.ACT.width + 1), fields__o=_VALUE_FIELDS, **extra)
