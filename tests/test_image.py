"""The weight image: round trip, validation, every single-bit flip detected."""

import struct

import pytest
import torch

from mmfree import image as im
from mmfree.golden import GoldenModel, quantize_model
from conftest import small_model


@pytest.fixture(scope="module")
def qmodel():
    return quantize_model(small_model(11, hidden=32, layers=2, intermediate=32, vocab=48))


@pytest.mark.parametrize("packing", ["2bit", "base3"])
def test_round_trip_tokens_identical(qmodel, packing):
    data = im.image_bytes(qmodel, packing)
    q2 = im.read_image(data)
    a, b = GoldenModel(qmodel), GoldenModel(q2)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    ta = list(a.generate(prompt, 40))
    tb = list(b.generate(prompt, 40))
    assert ta == tb
    for t in ta[:10]:
        la, _ = a.step(t)
        lb, _ = b.step(t)
        assert torch.equal(la, lb)


def test_image_sizes_and_header(qmodel):
    d2, d3 = im.image_bytes(qmodel, "2bit"), im.image_bytes(qmodel, "base3")
    h2, h3 = im.parse_header(d2), im.parse_header(d3)
    n = qmodel.shape.ternary_weights
    assert h2.capacity.trit_bytes >= n // 4 and h3.capacity.trit_bytes < h2.capacity.trit_bytes
    assert h2.shape == qmodel.shape and h2.file_size == len(d2)
    assert d2[:4] == b"MMFW"


def test_every_single_bit_flip_is_detected():
    q = quantize_model(small_model(12, hidden=8, layers=1, intermediate=8, vocab=8))
    data = im.image_bytes(q)
    im.parse_image(data)
    undetected = []
    buf = bytearray(data)
    for i in range(len(buf)):
        for bit in range(8):
            buf[i] ^= 1 << bit
            try:
                im.parse_image(bytes(buf))
                undetected.append((i, bit))
            except im.ImageError:
                pass
            buf[i] ^= 1 << bit
    assert len(data) > 1000 and not undetected


@pytest.mark.parametrize("cut", [0, 10, 63, 64, 200, -5, -1])
def test_truncated_images_refused(qmodel, cut):
    data = im.image_bytes(qmodel)
    with pytest.raises(im.ImageError, match="truncated|CRC|bad magic"):
        im.read_image(data[:cut])


def test_wrong_versions_named(qmodel):
    data = bytearray(im.image_bytes(qmodel))
    import zlib
    def reseal(b):
        b[60:64] = struct.pack("<I", zlib.crc32(bytes(b[:60])))
        return bytes(b)
    bad = bytearray(data); bad[4:6] = struct.pack("<H", 99)
    with pytest.raises(im.ImageError, match="format version 99"):
        im.parse_image(reseal(bad))
    bad = bytearray(data); bad[6:8] = struct.pack("<H", 42)
    with pytest.raises(im.ImageError, match="numeric-spec version 42"):
        im.parse_image(reseal(bad))
    bad = bytearray(data); bad[8:12] = struct.pack("<I", 49)   # vocab differs from the sections
    with pytest.raises(im.ImageError, match="capacity|sections|shape"):
        im.parse_image(reseal(bad))


def test_invalid_trit_code_refused_even_with_good_crcs(qmodel):
    """An image written by a broken tool (valid CRCs, invalid content) is refused by content checks."""
    hdr, sections = im.parse_image(im.image_bytes(qmodel))
    sec = next(s for s in sections if s.name.endswith("trits"))
    sec.data = bytes([0b10101010]) + sec.data[1:]
    with pytest.raises(im.ImageError, match="invalid trit code"):
        im._decode(sec)


def test_bad_packing_name(qmodel):
    with pytest.raises(ValueError, match="packing"):
        im.image_bytes(qmodel, "3bit")


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_shipped_images_are_reproducible_from_their_checkpoints(name):
    """The .mfw inside the package is exactly what `mmfree export` makes of the shipped checkpoint."""
    from mmfree.registry import resolve
    src = resolve(name)
    assert src.image is not None and src.image.is_file()
    assert src.image.read_bytes() == im.image_bytes(quantize_model(src.float_model()))
