"""The device memory map round-trips a model exactly."""

import pytest
import torch

from mmfree import memory_map as mm
from mmfree.golden import GoldenModel, ModelShape, quantize_model
from conftest import small_model


def test_regions_round_trip_bit_exact():
    q = quantize_model(small_model(21, hidden=32, layers=2, intermediate=64, vocab=48))
    regions = mm.to_regions(q, lanes=16)
    sizes = mm.region_sizes(q.shape, 16)
    assert {k: len(v) for k, v in regions.items()} == sizes
    q2 = mm.from_regions(regions)
    a, b = GoldenModel(q), GoldenModel(q2)
    assert list(a.generate([1, 2, 3], 30)) == list(b.generate([1, 2, 3], 30))
    assert torch.equal(q2.embeddings.mant, q.embeddings.mant)


def test_lanes_must_divide_rows():
    q = quantize_model(small_model(22, hidden=32, layers=1, intermediate=64, vocab=48))
    with pytest.raises(mm.MemoryMapError, match="multiple of 4"):
        mm.to_regions(q, lanes=6)
    with pytest.raises(mm.MemoryMapError, match="not a multiple of 64 lanes"):
        mm.to_regions(q, lanes=64)


def test_trits_region_is_sequential_in_execution_order():
    q = quantize_model(small_model(23, hidden=16, layers=2, intermediate=32, vocab=16))
    names = [n for n, _, _ in mm.matrix_order(q.shape)]
    assert names[:6] == [f"layers.0.{m}" for m in ("i_proj", "f_proj", "g_proj", "o_proj", "gate_proj", "down_proj")]
    assert names[-1] == "lm_head"


def test_bad_descriptor_refused():
    with pytest.raises(mm.MemoryMapError, match="descriptor"):
        mm.from_regions({0: b"", 1: b"", 2: b"", 3: b"\0" * 16})


@pytest.mark.parametrize("lanes,rows", [(16, 2), (16, 4), (64, 2)])
def test_row_units_round_trip_bit_exact(lanes, rows):
    q = quantize_model(small_model(24, hidden=64, layers=2, intermediate=128, vocab=48))
    regions = mm.to_regions(q, lanes, rows)
    assert {k: len(v) for k, v in regions.items()} == mm.region_sizes(q.shape, lanes, rows)
    assert len(regions[mm.REGION_TRITS]) % mm.trit_word_bytes(lanes, rows) == 0
    q2 = mm.from_regions(regions, lanes, rows)
    for name, _, _ in mm.matrix_order(q.shape):
        assert torch.equal(mm._get(q2, name).trits, mm._get(q, name).trits), name


def test_row_units_layout():
    """Word k of TRITS is the k-th sub-word of every row unit's stream, stream 0 first; stream u is
    rows u, u + R, ... of each matrix in execution order."""
    q = quantize_model(small_model(25, hidden=32, layers=1, intermediate=64, vocab=48))
    lanes, rows = 16, 2
    blob = mm.to_regions(q, lanes, rows)[mm.REGION_TRITS]
    sub = mm.trit_subword_bytes(lanes)
    assert sub == 9 and mm.trit_word_bytes(lanes, rows) == 18
    for u in range(rows):
        part = b"".join(blob[k + u * sub:k + (u + 1) * sub] for k in range(0, len(blob), rows * sub))
        trits = mm.nx.unpack_trits_base3(torch.frombuffer(bytearray(part), dtype=torch.uint8),
                                         5 * len(part))
        expect = []
        for name, nrows, cols in mm.matrix_order(q.shape):
            t = mm._get(q, name).trits
            for r in range(u, nrows, rows):
                expect += t[r].tolist()
        assert trits[:len(expect)].tolist() == expect
        assert not trits[len(expect):].any()


def test_row_units_must_divide_rows():
    q = quantize_model(small_model(26, hidden=32, layers=1, intermediate=64, vocab=48))
    with pytest.raises(mm.MemoryMapError, match="48 rows .lm_head. are not a multiple of 32 row units"):
        mm.to_regions(q, 16, 32)
    # a count no device has is named as such, before any matrix is measured against it
    with pytest.raises(mm.MemoryMapError, match="rows must be a power of two from 1 to 64, not 3"):
        mm.to_regions(q, 16, 3)
    with pytest.raises(ValueError, match="lanes is needed"):
        mm.from_regions(mm.to_regions(q, 16, 2), rows=2)


def test_norm_lengths_and_the_core_passes():
    """Every norm weight's length comes from one rule, and the core's passes step through a layer's
    norm weights in PARAMS order."""
    from mmfree.hw.core import _PASS_NORMS, _Pass
    assert mm.norm_length("down_proj.norm", 160, 512) == 512
    assert all(mm.norm_length(n, 160, 512) == 160 for n in mm.LAYER_NORMS[:-1] + ("norm", "lm_head.norm"))
    with pytest.raises(ValueError, match="no norm weight 'up_proj.norm'"):
        mm.norm_length("up_proj.norm", 160, 512)
    layer = [n for p in (_Pass.NORM0, _Pass.FEED_F, _Pass.FEED_G, _Pass.MLGRU, _Pass.RES_O, _Pass.GLU)
             for n in _PASS_NORMS[p]]
    order = mm.param_order(ModelShape(vocab_size=256, hidden_size=160, num_layers=2, intermediate_size=512))
    assert [name for name, _ in order[1:1 + 2 * len(layer)]] == \
        [f"layers.{l}.{n}" for l in range(2) for n in layer]
    # RES_DOWN reads the next layer's first two, or after the last layer the final two
    assert [name for name, _ in order[-2:]] == ["norm", "lm_head.norm"]
    assert [n.split(".", 2)[-1] for n, _ in order[1:3]] == list(_PASS_NORMS[_Pass.RES_DOWN])
