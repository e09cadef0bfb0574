"""The accelerator's memory map: which device memory holds which part of a model, and in what order.

This is the single definition that the host driver (uploading an image), the golden board (answering the
protocol from the golden model) and the gateware generator (address counters of the sequencer) use.

The device has four byte-addressed regions, written with the protocol's WRITE command:

=========  ======================  ===========================================================================
region     word                    contents, in order
=========  ======================  ===========================================================================
TRITS (0)  :func:`trit_word_bytes`  every ternary matrix in execution order (per layer ``i, f, g, o, gate,
           (9 bytes up to 45       down``, then ``lm_head``), each row-major, all of them one continuous
           lanes)                  sequence of trits packed five to a byte in base 3
                                   (:func:`~mmfree.numerics.pack_trits_base3`: 1.6 bits per trit), the
                                   last word padded with zero trits. Matrices need not start on a word
                                   or a byte: the sequencer reads this region with one pointer that only
                                   ever increments, from word 0 once per token, and turns the words
                                   into beats of ``lanes`` trits.
PARAMS (1) 2 bytes (int16)         BFP16 mantissas: ``embeddings [V, H]``, then per layer ``attn_norm,
                                   i.norm, f.norm, g.norm, g_norm, o.norm, mlp_norm, gate.norm`` (``H`` each)
                                   and ``down.norm`` (``I``), then ``norm, lm_head.norm`` (``H`` each)
GATES (2)  4 bytes (uint32)        GATE codes of the lower bounds, ``[L, H]``
SCALARS(3) 4 bytes (uint32)        the model descriptor: ``V, H, L, I``, then per layer the BFP16 exponents
                                   and PFloat weight scales listed by :func:`scalar_names`
=========  ======================  ===========================================================================

All multi-byte words are little-endian. A TRITS word is :data:`TRIT_UNIT_BYTES` (9) bytes, 45 trits,
72 bits (the width of two 36-bit block RAM columns), or as many such units as it takes to hold at
least ``lanes`` trits, so that one word a clock keeps every lane busy.

A device with ``rows = R`` *row units* (``R`` rows of a matrix computed at once, each on its own
``lanes`` lanes) reads TRITS as ``R`` streams side by side: row ``r`` of every matrix belongs to
stream ``r mod R`` (every matrix has a multiple of ``R`` rows), each stream is its rows in the order
above, packed on its own, and a TRITS word is ``R`` such sub-words, stream 0's first.
With ``R = 1`` that is the one sequence above. A PFloat is stored as ``mant | (exp & 0xffff) << 16``; a BFP16
exponent as a sign-extended 32-bit integer.
"""

from dataclasses import dataclass
import struct

import torch

from . import numerics as nx
from .golden import BFP16, TernaryMatrix, QuantizedModel, ModelShape

__all__ = ["REGION_TRITS", "REGION_PARAMS", "REGION_GATES", "REGION_SCALARS", "REGION_NAMES",
           "REGION_TAGS", "WORD_BYTES", "TRITS_PER_BYTE", "TRIT_UNIT_BYTES", "trit_word_bytes",
           "word_bytes", "trit_region_bytes", "matrix_order", "param_order", "scalar_names", "region_sizes", "to_regions",
           "from_regions", "trit_subword_bytes", "LAYER_MATRICES", "LAYER_NORMS", "norm_length", "MAX_ROWS",
           "check_rows", "MemoryMapError"]

REGION_TRITS, REGION_PARAMS, REGION_GATES, REGION_SCALARS = 0, 1, 2, 3
REGION_NAMES = {REGION_TRITS: "trits", REGION_PARAMS: "params", REGION_GATES: "gates",
                REGION_SCALARS: "scalars"}
REGION_TAGS = {REGION_TRITS: b"TRIT", REGION_PARAMS: b"PARM", REGION_GATES: b"GATE",
               REGION_SCALARS: b"SCAL"}
"""The four-byte tags a device reports for its regions in INFO (the host checks them before writing)."""
WORD_BYTES = {REGION_PARAMS: 2, REGION_GATES: 4, REGION_SCALARS: 4}   # TRITS: trit_word_bytes(lanes)
TRITS_PER_BYTE = 5
"""Trits in one byte of the TRITS region (base 3: ``3**5 = 243 <= 256``)."""
TRIT_UNIT_BYTES = 9
"""Bytes of the smallest TRITS word: 45 trits in 72 bits."""

LAYER_MATRICES = ("i_proj", "f_proj", "g_proj", "o_proj", "gate_proj", "down_proj")
LAYER_NORMS = ("attn_norm", "i_proj.norm", "f_proj.norm", "g_proj.norm", "g_norm", "o_proj.norm",
               "mlp_norm", "gate_proj.norm", "down_proj.norm")


MAX_ROWS = 64
"""The most row units a device has: its TRITS words hold a sub-word per row unit."""


def check_rows(rows):
    """Raise ``ValueError`` unless ``rows`` (a device's row units) is a power of two from 1 to
    :data:`MAX_ROWS`."""
    if rows < 1 or rows > MAX_ROWS or rows & (rows - 1):
        raise ValueError(f"rows must be a power of two from 1 to {MAX_ROWS}, not {rows}")


class MemoryMapError(ValueError):
    """A model that does not fit a device, or region contents that do not describe a model."""


def matrix_order(shape):
    """``(name, rows, cols)`` of every ternary matrix, in TRITS order."""
    H, I, V = shape.hidden_size, shape.intermediate_size, shape.vocab_size
    dims = {"i_proj": (H, H), "f_proj": (H, H), "g_proj": (H, H), "o_proj": (H, H),
            "gate_proj": (2 * I, H), "down_proj": (H, I)}
    out = []
    for l in range(shape.num_layers):
        out += [(f"layers.{l}.{m}", *dims[m]) for m in LAYER_MATRICES]
    out.append(("lm_head", V, H))
    return out


def norm_length(name, hidden, intermediate):
    """Elements of the norm weight ``name`` of :data:`LAYER_NORMS` (or ``norm``, ``lm_head.norm``):
    ``intermediate`` for ``down_proj.norm``, whose input is the GLU's output, ``hidden`` otherwise."""
    if name not in LAYER_NORMS + ("norm", "lm_head.norm"):
        raise ValueError(f"no norm weight {name!r}")
    return intermediate if name == "down_proj.norm" else hidden


def param_order(shape):
    """``(name, length)`` of every BFP16 tensor, in PARAMS order (embeddings: ``V * H``)."""
    H, I = shape.hidden_size, shape.intermediate_size
    out = [("embeddings", shape.vocab_size * H)]
    for l in range(shape.num_layers):
        out += [(f"layers.{l}.{n}", norm_length(n, H, I)) for n in LAYER_NORMS]
    out += [(n, norm_length(n, H, I)) for n in ("norm", "lm_head.norm")]
    return out


def scalar_names(shape):
    """Names of the SCALARS words after the 4-word descriptor: exponents (``*.exp``) and scales."""
    out = []
    for name, _ in param_order(shape):
        out.append(f"{name}.exp")
    for name, _, _ in matrix_order(shape):
        out.append(f"{name}.scale")
    return out


def trit_word_bytes(lanes, rows=1):
    """Bytes of one TRITS word on a device with ``lanes`` lanes and ``rows`` row units: ``rows``
    sub-words, each the fewest whole units of :data:`TRIT_UNIT_BYTES` that hold at least ``lanes``
    trits."""
    return rows * trit_subword_bytes(lanes)


def trit_subword_bytes(lanes):
    """Bytes of one row unit's part of a TRITS word (:func:`trit_word_bytes` with one row unit)."""
    unit = TRITS_PER_BYTE * TRIT_UNIT_BYTES
    return TRIT_UNIT_BYTES * max(1, -(-lanes // unit))


def word_bytes(region, lanes, rows=1):
    """Bytes of one word of ``region`` on a device with ``lanes`` lanes and ``rows`` row units."""
    return trit_word_bytes(lanes, rows) if region == REGION_TRITS else WORD_BYTES[region]


def trit_region_bytes(n, lanes, rows=1):
    """Bytes of the TRITS region that holds ``n`` trits (a multiple of ``rows``) on a device with
    ``lanes`` lanes and ``rows`` row units: whole words of :func:`trit_word_bytes`."""
    sub = TRITS_PER_BYTE * trit_subword_bytes(lanes)
    return trit_word_bytes(lanes, rows) * -(-(-(-n // rows)) // sub)


def region_sizes(shape, lanes, rows=1):
    """Bytes each region needs for a model of ``shape`` on a device with ``lanes`` lanes and ``rows``
    row units."""
    _check_lanes(shape, lanes, rows)
    trits = trit_region_bytes(shape.ternary_weights, lanes, rows)
    params = 2 * sum(n for _, n in param_order(shape))
    gates = 4 * shape.num_layers * shape.hidden_size
    scalars = 4 * (4 + len(scalar_names(shape)))
    return {REGION_TRITS: trits, REGION_PARAMS: params, REGION_GATES: gates, REGION_SCALARS: scalars}


def _check_lanes(shape, lanes, rows=1):
    if lanes % 4:
        raise MemoryMapError(f"lanes must be a multiple of 4, not {lanes}")
    if not isinstance(rows, int) or isinstance(rows, bool):
        raise MemoryMapError(f"rows must be an int, not {rows!r}")
    try:
        check_rows(rows)
    except ValueError as e:
        raise MemoryMapError(str(e)) from None
    for name, nrows, cols in matrix_order(shape)[:6] + matrix_order(shape)[-1:]:
        if cols % lanes:
            raise MemoryMapError(f"rows of {cols} trits ({name}) are not a multiple of {lanes} lanes")
        if nrows % rows:
            raise MemoryMapError(f"{nrows} rows ({name}) are not a multiple of {rows} row units")


def _pack_streams(mats, shape, lanes, rows):
    """The TRITS bytes of ``mats`` (name -> ``[rows, cols]`` trits): stream ``u`` (rows ``u``,
    ``u + rows``, ... of every matrix, in :func:`matrix_order`) for each row unit ``u``, each packed
    on its own, interleaved sub-word by sub-word."""
    size = trit_region_bytes(shape.ternary_weights, lanes, rows)
    sub = trit_subword_bytes(lanes)
    packed = []
    for u in range(rows):
        seq = torch.cat([mats[name][u::rows].reshape(-1).to(torch.int64)
                         for name, _, _ in matrix_order(shape)])
        seq = torch.cat([seq, seq.new_zeros(TRITS_PER_BYTE * size // rows - seq.numel())])
        packed.append(nx.pack_trits_base3(seq).reshape(-1, sub))
    return torch.stack(packed, dim=1).reshape(-1).numpy().tobytes()


def _unpack_streams(trit_bytes, shape, lanes, rows):
    """Inverse of :func:`_pack_streams`: name -> ``[rows, cols]`` trits."""
    n = shape.ternary_weights
    if rows == 1:
        # one stream: its bytes, whatever the word size (lanes may be None)
        nbytes = -(-n // TRITS_PER_BYTE)
        if nbytes > len(trit_bytes):
            raise MemoryMapError(f"the trits region holds {len(trit_bytes)} bytes, the model needs {nbytes}")
        streams = [_unpack(trit_bytes[:nbytes], n)]
    else:
        size = trit_region_bytes(n, lanes, rows)
        if size > len(trit_bytes):
            raise MemoryMapError(f"the trits region holds {len(trit_bytes)} bytes, the model needs {size}")
        sub = trit_subword_bytes(lanes)
        words = torch.frombuffer(bytearray(trit_bytes[:size]), dtype=torch.uint8).reshape(-1, rows, sub)
        streams = [_unpack(words[:, u].reshape(-1).numpy().tobytes(), n // rows) for u in range(rows)]
    dims = {name: (nrows, cols) for name, nrows, cols in matrix_order(shape)}
    parts = {name: [] for name in dims}
    for u in range(rows):
        pos = 0
        for name, (nrows, cols) in dims.items():
            k = (nrows // rows) * cols
            parts[name].append(streams[u][pos:pos + k].reshape(-1, cols))
            pos += k
    out = {}
    for name, (nrows, cols) in dims.items():
        t = torch.empty(nrows, cols, dtype=torch.int8)
        for u, part in enumerate(parts[name]):
            t[u::rows] = part.to(torch.int8)
        out[name] = t
    return out


def _unpack(data, n):
    try:
        return nx.unpack_trits_base3(torch.frombuffer(bytearray(data), dtype=torch.uint8), n)
    except ValueError as e:
        raise MemoryMapError(f"the trits region: {e}") from None


def _get(qmodel, name):
    parts = name.split(".")
    if parts[0] == "layers":
        obj, rest = qmodel.layers[int(parts[1])][parts[2]], parts[3:]
    else:
        obj, rest = getattr(qmodel, parts[0]), parts[1:]
    if rest:
        obj = getattr(obj, rest[0])
    return obj


def _pf_word(p):
    return p.mant | ((p.exp & 0xFFFF) << 16)


def _pf_from_word(w):
    exp = (w >> 16) & 0xFFFF
    return nx.PFloat(w & 0xFFFF, exp - 0x10000 if exp & 0x8000 else exp)


def to_regions(qmodel, lanes, rows=1):
    """The bytes to write into each region for ``qmodel`` (a :class:`~mmfree.golden.QuantizedModel`)
    on a device with ``lanes`` lanes and ``rows`` row units."""
    shape = qmodel.shape
    _check_lanes(shape, lanes, rows)
    trits = _pack_streams({n: _get(qmodel, n).trits for n, _, _ in matrix_order(shape)}, shape, lanes,
                          rows)
    params = b"".join(_get(qmodel, n).mant.reshape(-1).to(torch.int16).numpy().astype("<i2").tobytes()
                      for n, _ in param_order(shape))
    gates = b"".join(qmodel.layers[l]["lower_bound"].to(torch.int64).numpy().astype("<u4").tobytes()
                     for l in range(shape.num_layers))
    words = [shape.vocab_size, shape.hidden_size, shape.num_layers, shape.intermediate_size]
    for name in scalar_names(shape):
        base, kind = name.rsplit(".", 1)
        obj = _get(qmodel, base)
        words.append(obj.exp & 0xFFFFFFFF if kind == "exp" else _pf_word(obj.m))
    scalars = struct.pack(f"<{len(words)}I", *words)
    return {REGION_TRITS: trits, REGION_PARAMS: params, REGION_GATES: gates, REGION_SCALARS: scalars}


def from_regions(regions, lanes=None, rows=1):
    """Rebuild the :class:`~mmfree.golden.QuantizedModel` that region contents describe, laid out for
    ``rows`` row units of ``lanes`` lanes (``lanes`` matters only with more than one row unit)."""
    if rows != 1 and lanes is None:
        raise ValueError("lanes is needed to read TRITS laid out for several row units")
    sc = regions[REGION_SCALARS]
    if len(sc) < 16:
        raise MemoryMapError("the scalars region holds no model descriptor")
    V, H, L, I = struct.unpack_from("<4I", sc)
    if min(V, H, L, I) == 0 or max(V, H, I) > 1 << 20 or L > 1024:
        raise MemoryMapError(f"model descriptor V={V} H={H} L={L} I={I} is not valid")
    shape = ModelShape(V, H, L, I)
    names = scalar_names(shape)
    if len(sc) < 4 * (4 + len(names)):
        raise MemoryMapError("the scalars region is shorter than the model descriptor needs")
    words = struct.unpack_from(f"<{len(names)}I", sc, 16)
    scal = dict(zip(names, words))

    def signed32(w):
        return w - (1 << 32) if w & (1 << 31) else w

    params = regions[REGION_PARAMS]
    need = 2 * sum(n for _, n in param_order(shape))
    if len(params) < need:
        raise MemoryMapError(f"the params region holds {len(params)} bytes, the model needs {need}")
    bfp, pos = {}, 0
    for name, n in param_order(shape):
        mant = torch.frombuffer(bytearray(params[pos:pos + 2 * n]), dtype=torch.int16).clone()
        pos += 2 * n
        if name == "embeddings":
            mant = mant.reshape(V, H)
        bfp[name] = BFP16(mant, signed32(scal[f"{name}.exp"]))
    if rows != 1:
        try:
            _check_lanes(shape, lanes, rows)
        except MemoryMapError as e:
            raise MemoryMapError(f"the model descriptor does not fit the layout: {e}") from None
    trits = _unpack_streams(regions[REGION_TRITS], shape, lanes, rows)
    mats = {name: TernaryMatrix(trits[name], _pf_from_word(scal[f"{name}.scale"]), bfp[f"{name}.norm"])
            for name, _, _ in matrix_order(shape)}
    gates = regions[REGION_GATES]
    if len(gates) < 4 * L * H:
        raise MemoryMapError("the gates region is shorter than the model needs")
    g = torch.tensor(struct.unpack_from(f"<{L * H}I", gates), dtype=torch.int64).reshape(L, H)
    layers = []
    for l in range(L):
        p = f"layers.{l}"
        layer = {k: bfp[f"{p}.{k}"] for k in ("attn_norm", "g_norm", "mlp_norm")}
        layer["lower_bound"] = g[l]
        layer.update({m: mats[f"{p}.{m}"] for m in LAYER_MATRICES})
        layers.append(layer)
    return QuantizedModel(shape, bfp["embeddings"], layers, bfp["norm"], mats["lm_head"])
