"""The weight image (``.mfw``): one model, versioned, checksummed, ready to send to a device.

Layout (all integers little-endian; the authoritative description is docs/image-format.md)::

    header      64 bytes   magic "MMFW", format version, numeric-spec version, dimensions, packing,
                           the capacity a device needs, file size, CRC32 of the header
    table       64 bytes per section + CRC32 of the table
    data        the sections, each starting on a 4-byte boundary
    trailer     CRC32 of everything before it

Section kinds: ternary matrices (2 bits per trit, or 5 trits per byte), BFP16 tensors (int16 mantissas
and one exponent, in the table entry), GATE vectors (uint32 codes) and PFloat scalars. Every section
has its own CRC32. The reader checks everything and raises :class:`ImageError` with a one-line message
naming what is wrong.
"""

from dataclasses import dataclass
import struct
import zlib

import torch

from . import numerics as nx
from .golden import BFP16, TernaryMatrix, QuantizedModel, ModelShape

__all__ = ["FORMAT_VERSION", "MAGIC", "ImageError", "Section", "ImageHeader", "write_image", "image_bytes",
           "read_image", "parse_image", "Capacity", "MAX_LAYERS"]

MAGIC = b"MMFW"
FORMAT_VERSION = 1

KIND_TRITS2, KIND_TRITS3, KIND_BFP16, KIND_GATE, KIND_PFLOAT = 1, 2, 3, 4, 5
KIND_NAMES = {KIND_TRITS2: "trits2", KIND_TRITS3: "trits5/8", KIND_BFP16: "bfp16", KIND_GATE: "gate",
              KIND_PFLOAT: "pfloat"}
PACKINGS = {"2bit": KIND_TRITS2, "base3": KIND_TRITS3}

FLAG_BASE3 = 1

MAX_LAYERS = 1024
"""The most layers an image may hold (the format's limit; a reader checks it before it sizes anything
per layer, so that a damaged or hostile header cannot make it work for ever)."""

_HEADER = struct.Struct("<4sHHIIIIIIIIIIQ")     # up to the padding; CRC at byte 60
HEADER_SIZE = 64
ENTRY_SIZE = 64
_ENTRY = struct.Struct("<32sBbHIIIII")          # name kind exp reserved rows cols offset length crc
assert _ENTRY.size <= ENTRY_SIZE


class ImageError(ValueError):
    """A weight image that is damaged, truncated or inconsistent."""


@dataclass(frozen=True)
class Capacity:
    """What a device must hold to run the model of an image."""

    trit_bytes: int        # packed ternary weights
    param_bytes: int       # everything else: norms, embeddings, lower bounds, scales
    state_words: int       # recurrent state, L * H
    max_row: int           # the longest row (inputs of a projection)
    max_rows: int          # the most rows of one projection


@dataclass
class Section:
    name: str
    kind: int
    rows: int
    cols: int
    exp: int
    offset: int
    data: bytes
    crc: int

    @property
    def kind_name(self):
        return KIND_NAMES.get(self.kind, f"?{self.kind}")


@dataclass
class ImageHeader:
    format_version: int
    numeric_version: int
    shape: ModelShape
    flags: int
    section_count: int
    capacity: Capacity
    file_size: int


def _section_names(shape):
    """``(name, kind-class, rows, cols)`` of every section of a model of this shape, in file order."""
    V, H, L, I = shape.vocab_size, shape.hidden_size, shape.num_layers, shape.intermediate_size
    out = [("embeddings", KIND_BFP16, V, H)]

    def proj(prefix, n, k):
        out.append((f"{prefix}.trits", "trits", n, k))
        out.append((f"{prefix}.scale", KIND_PFLOAT, 1, 1))
        out.append((f"{prefix}.norm", KIND_BFP16, 1, k))

    for l in range(L):
        p = f"layers.{l}"
        out.append((f"{p}.attn_norm", KIND_BFP16, 1, H))
        out.append((f"{p}.lower_bound", KIND_GATE, 1, H))
        for name in ("i_proj", "f_proj", "g_proj", "o_proj"):
            proj(f"{p}.{name}", H, H)
        out.append((f"{p}.g_norm", KIND_BFP16, 1, H))
        out.append((f"{p}.mlp_norm", KIND_BFP16, 1, H))
        proj(f"{p}.gate_proj", 2 * I, H)
        proj(f"{p}.down_proj", H, I)
    out.append(("norm", KIND_BFP16, 1, H))
    proj("lm_head", V, H)
    return out


def _trit_bytes(n, kind):
    return (n + 3) // 4 if kind == KIND_TRITS2 else (n + 4) // 5


def capacity_of(shape, kind):
    trit_bytes = param_bytes = 0
    for _, k, rows, cols in _section_names(shape):
        if k == "trits":
            trit_bytes += _trit_bytes(rows * cols, kind)
        else:
            param_bytes += _payload_size(k, rows, cols)
    H, I = shape.hidden_size, shape.intermediate_size
    return Capacity(trit_bytes, param_bytes, shape.num_layers * H, max(H, I),
                    max(2 * I, shape.vocab_size, H))


def _payload_size(kind, rows, cols):
    if kind == KIND_BFP16:
        return 2 * rows * cols
    if kind == KIND_GATE:
        return 4 * rows * cols
    if kind == KIND_PFLOAT:
        return 4
    raise AssertionError(kind)


def _tensor_of(qmodel, name):
    parts = name.split(".")
    if parts[0] == "layers":
        obj = qmodel.layers[int(parts[1])][parts[2]]
        rest = parts[3:]
    else:
        obj = getattr(qmodel, parts[0])
        rest = parts[1:]
    if rest:
        obj = {"trits": obj.trits, "scale": obj.m, "norm": obj.norm}[rest[0]]
    return obj


def image_bytes(qmodel, packing="2bit"):
    """The image of a :class:`~mmfree.golden.QuantizedModel` as bytes."""
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {', '.join(PACKINGS)}, not {packing!r}")
    tkind = PACKINGS[packing]
    shape = qmodel.shape
    if shape.num_layers > MAX_LAYERS:
        raise ValueError(f"{shape.num_layers} layers; an image holds at most {MAX_LAYERS}")
    names = _section_names(shape)
    payloads = []
    for name, kind, rows, cols in names:
        obj = _tensor_of(qmodel, name)
        if kind == "trits":
            kind = tkind
            if tuple(obj.shape) != (rows, cols):
                raise ValueError(f"{name}: shape {tuple(obj.shape)}, expected {(rows, cols)}")
            packed = nx.pack_trits(obj) if kind == KIND_TRITS2 else nx.pack_trits_base3(obj)
            payloads.append((name, kind, rows, cols, 0, packed.numpy().tobytes()))
        elif kind == KIND_BFP16:
            payloads.append((name, kind, rows, cols, obj.exp,
                             obj.mant.reshape(-1).to(torch.int16).numpy().astype("<i2").tobytes()))
        elif kind == KIND_GATE:
            payloads.append((name, kind, rows, cols, 0,
                             obj.reshape(-1).to(torch.int64).numpy().astype("<u4").tobytes()))
        else:
            payloads.append((name, kind, rows, cols, 0, struct.pack("<Hh", obj.mant, obj.exp)))
    table_size = ENTRY_SIZE * len(payloads) + 4
    offset = HEADER_SIZE + table_size
    entries, data = [], []
    for name, kind, rows, cols, exp, payload in payloads:
        pad = (-offset) % 4
        data.append(b"\0" * pad)
        offset += pad
        entry = _ENTRY.pack(name.encode(), kind, exp, 0, rows, cols, offset, len(payload),
                            zlib.crc32(payload))
        entries.append(entry.ljust(ENTRY_SIZE, b"\0"))
        data.append(payload)
        offset += len(payload)
    file_size = offset + 4
    cap = capacity_of(shape, tkind)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, nx.NUMERIC_SPEC_VERSION, shape.vocab_size,
                          shape.hidden_size, shape.num_layers, shape.intermediate_size, len(payloads),
                          FLAG_BASE3 if tkind == KIND_TRITS3 else 0, cap.trit_bytes, cap.param_bytes,
                          cap.state_words, cap.max_row, file_size)
    header = header.ljust(HEADER_SIZE - 4, b"\0")
    header += struct.pack("<I", zlib.crc32(header))
    table = b"".join(entries)
    table += struct.pack("<I", zlib.crc32(table))
    body = header + table + b"".join(data)
    return body + struct.pack("<I", zlib.crc32(body))


def write_image(qmodel, path, packing="2bit"):
    data = image_bytes(qmodel, packing)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def parse_header(data):
    """Check and decode the header; raises :class:`ImageError`."""
    if len(data) < HEADER_SIZE:
        raise ImageError(f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    if data[:4] != MAGIC:
        raise ImageError("not a weight image (bad magic; expected MMFW)")
    (crc,) = struct.unpack_from("<I", data, HEADER_SIZE - 4)
    if zlib.crc32(data[:HEADER_SIZE - 4]) != crc:
        raise ImageError("header CRC mismatch (the header is damaged)")
    (_, fmt, numv, V, H, L, I, count, flags, trit_bytes, param_bytes, state_words, max_row,
     file_size) = _HEADER.unpack_from(data, 0)
    if fmt != FORMAT_VERSION:
        raise ImageError(f"image format version {fmt}; this software reads version {FORMAT_VERSION}")
    if numv != nx.NUMERIC_SPEC_VERSION:
        raise ImageError(f"numeric-spec version {numv}; this software implements version "
                         f"{nx.NUMERIC_SPEC_VERSION}")
    if min(V, H, L, I) <= 0:
        raise ImageError("header has a zero model dimension")
    if L > MAX_LAYERS:
        raise ImageError(f"header says {L} layers; the format holds at most {MAX_LAYERS}")
    shape = ModelShape(V, H, L, I)
    tkind = KIND_TRITS3 if flags & FLAG_BASE3 else KIND_TRITS2
    if flags & ~FLAG_BASE3:
        raise ImageError(f"unknown header flags 0x{flags:x}")
    cap = capacity_of(shape, tkind)
    if (trit_bytes, param_bytes, state_words, max_row) != (cap.trit_bytes, cap.param_bytes,
                                                           cap.state_words, cap.max_row):
        raise ImageError("header capacity fields disagree with the model dimensions")
    return ImageHeader(fmt, numv, shape, flags, count, cap, file_size)


def parse_image(data, values=False):
    """Check an image's structure and every CRC; returns ``(header, sections)``. With ``values``,
    decode every section too, so that a value no model holds (a base-3 trit byte above 242, say) is
    refused as well. Raises :class:`ImageError`."""
    data = bytes(data)
    hdr = parse_header(data)
    if len(data) != hdr.file_size:
        what = "truncated" if len(data) < hdr.file_size else "has trailing bytes"
        raise ImageError(f"{what}: {len(data)} bytes, the header says {hdr.file_size}")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise ImageError("file CRC mismatch (the image is damaged)")
    expected = _section_names(hdr.shape)
    if hdr.section_count != len(expected):
        raise ImageError(f"{hdr.section_count} sections, a model of this shape has {len(expected)}")
    table_end = HEADER_SIZE + ENTRY_SIZE * hdr.section_count
    table = data[HEADER_SIZE:table_end]
    (tcrc,) = struct.unpack_from("<I", data, table_end)
    if zlib.crc32(table) != tcrc:
        raise ImageError("section table CRC mismatch (the table is damaged)")
    tkind = KIND_TRITS3 if hdr.flags & FLAG_BASE3 else KIND_TRITS2
    sections = []
    pos = table_end + 4
    for i, (ename, ekind, erows, ecols) in enumerate(expected):
        raw_name, kind, exp, _, rows, cols, offset, length, scrc = _ENTRY.unpack_from(table, i * ENTRY_SIZE)
        name = raw_name.rstrip(b"\0").decode("utf-8", "replace")
        if name != ename:
            raise ImageError(f"section {i} is {name!r}, expected {ename!r}")
        want_kind = tkind if ekind == "trits" else ekind
        if kind != want_kind:
            raise ImageError(f"section {name}: kind {KIND_NAMES.get(kind, kind)}, expected "
                             f"{KIND_NAMES[want_kind]}")
        if (rows, cols) != (erows, ecols):
            raise ImageError(f"section {name}: shape {rows}x{cols}, expected {erows}x{ecols}")
        want_len = (_trit_bytes(rows * cols, kind) if ekind == "trits" else _payload_size(kind, rows, cols))
        if length != want_len:
            raise ImageError(f"section {name}: {length} bytes, expected {want_len}")
        if offset < pos or offset + length > len(data) - 4:
            raise ImageError(f"section {name}: offset {offset} outside the data area")
        payload = data[offset:offset + length]
        if zlib.crc32(payload) != scrc:
            raise ImageError(f"section {name}: CRC mismatch (its data is damaged)")
        if kind == KIND_BFP16 and not (nx.BFP_EXP_MIN <= exp <= nx.BFP_EXP_MAX):
            raise ImageError(f"section {name}: exponent {exp} out of range")
        pos = offset + length
        sections.append(Section(name, kind, rows, cols, exp, offset, payload, scrc))
    if values:
        for s in sections:
            _decode(s)
    return hdr, sections


def _decode(section):
    import numpy as np
    n = section.rows * section.cols
    buf = np.frombuffer(section.data, dtype=np.uint8)
    try:
        if section.kind == KIND_TRITS2:
            t = nx.unpack_trits(torch.from_numpy(buf.copy()), n)
        elif section.kind == KIND_TRITS3:
            t = nx.unpack_trits_base3(torch.from_numpy(buf.copy()), n)
        elif section.kind == KIND_BFP16:
            mant = torch.from_numpy(np.frombuffer(section.data, dtype="<i2").astype(np.int16))
            return BFP16(mant.reshape(section.rows, section.cols).squeeze(0) if section.rows == 1
                         else mant.reshape(section.rows, section.cols), section.exp)
        elif section.kind == KIND_GATE:
            g = torch.from_numpy(np.frombuffer(section.data, dtype="<u4").astype(np.int64))
            if bool((g > (1 << nx.GATE.frac)).any()):
                raise ValueError("gate code above 1.0")
            return g
        else:
            mant, exp = struct.unpack("<Hh", section.data)
            if mant != 0 and not (1 << 15) <= mant < (1 << 16):
                raise ValueError(f"scale mantissa 0x{mant:04x} is not normalised")
            return nx.PFloat(mant, exp)
    except ValueError as e:
        raise ImageError(f"section {section.name}: {e}") from None
    return t.reshape(section.rows, section.cols).to(torch.int8)


def read_image(source):
    """A :class:`~mmfree.golden.QuantizedModel` from an image file path or bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(source, "rb") as f:
            data = f.read()
        try:
            return read_image(data)
        except ImageError as e:
            raise ImageError(f"{source}: {e}") from None
    hdr, sections = parse_image(data)
    values = {s.name: _decode(s) for s in sections}

    def proj(p):
        return TernaryMatrix(values[f"{p}.trits"], values[f"{p}.scale"], values[f"{p}.norm"])

    layers = []
    for l in range(hdr.shape.num_layers):
        p = f"layers.{l}"
        layer = {k: values[f"{p}.{k}"] for k in ("attn_norm", "lower_bound", "g_norm", "mlp_norm")}
        layer.update({k: proj(f"{p}.{k}") for k in QuantizedModel.PROJECTIONS})
        layers.append(layer)
    return QuantizedModel(hdr.shape, values["embeddings"], layers, values["norm"], proj("lm_head"))
