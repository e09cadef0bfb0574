"""Random damaged and ill-formed link traffic for the protocol's robustness tests (the golden board's,
tests/test_driver.py, and the firmware's, tests/test_firmware_link.py), and a weight image that only
its values betray."""

import struct
import zlib

from mmfree import image as im
from mmfree import protocol as p


def valid_frames(rng):
    """One intact command of each code, with a payload of its shortest legal length."""
    return [p.Frame(rng.randrange(256), c, bytes(rng.randrange(256) for _ in range(lo)))
            for c, (lo, _) in p.REQUEST_LENGTHS.items()]


def _write_region(rng, code, payload):
    if code == p.Cmd.WRITE:
        payload[0] = rng.randrange(3)


def malformed_burst(rng, valid, count=100, shape=_write_region):
    """``count`` pieces of traffic, each random bytes, a truncated or damaged frame of ``valid``, an
    overlong frame, an intact frame of any code, an intact command of a legal length (its payload
    adjusted in place by ``shape(rng, code, payload)``), or a body too short to be a frame."""
    chunk = bytearray()
    for _ in range(count):
        kind = rng.randrange(7)
        if kind == 0:                       # random bytes, zeros included
            chunk += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        elif kind == 1:                     # truncated frame
            w = rng.choice(valid).encode()
            chunk += w[:rng.randrange(1, len(w) - 1)]
        elif kind == 2:                     # one damaged byte
            w = bytearray(rng.choice(valid).encode())
            w[rng.randrange(1, len(w) - 1)] ^= rng.randrange(1, 256)
            chunk += w
        elif kind == 3:                     # overlong
            chunk += b"\x00" + bytes(rng.randrange(1, 256) for _ in range(rng.randrange(273, 400))) + b"\x00"
        elif kind == 4:                     # intact frame, any code, any payload length
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
            chunk += p.encode_frame(rng.randrange(256), rng.randrange(256), payload)
        elif kind == 5:                     # intact command with a random payload of a legal length
            code = rng.choice(list(p.REQUEST_LENGTHS))
            lo, hi = p.REQUEST_LENGTHS[code]
            n = lo if code != p.Cmd.WRITE else rng.randrange(lo, hi + 1)
            payload = bytearray(rng.randrange(256) for _ in range(n))
            shape(rng, code, payload)
            chunk += p.encode_frame(rng.randrange(256), code, bytes(payload))
        else:                               # COBS-valid body too short to be a frame
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 6)))
            chunk += b"\x00" + p.cobs_encode(body) + b"\x00"
    return bytes(chunk)


def image_with_bad_value():
    """The tiny model's base-3 image with its first trit byte 250 (above 242, no five trits) behind
    correct CRCs of the section, the table and the file; returns ``(bytes, the section's name)``."""
    from mmfree.registry import resolve
    data = bytearray(im.image_bytes(resolve("tiny").quantized(), "base3"))
    hdr, sections = im.parse_image(bytes(data))
    i, sec = next((k, s) for k, s in enumerate(sections) if s.name.endswith(".trits"))
    data[sec.offset] = 250
    entry = im.HEADER_SIZE + i * im.ENTRY_SIZE
    fields = list(im._ENTRY.unpack_from(data, entry))
    fields[-1] = zlib.crc32(bytes(data[sec.offset:sec.offset + len(sec.data)]))
    im._ENTRY.pack_into(data, entry, *fields)
    table_end = im.HEADER_SIZE + im.ENTRY_SIZE * hdr.section_count
    struct.pack_into("<I", data, table_end, zlib.crc32(bytes(data[im.HEADER_SIZE:table_end])))
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return bytes(data), sec.name
