"""The device memory map round-trips a model exactly."""

import pytest
import torch

from mmfree import memory_map as mm
from mmfree.golden import GoldenModel, quantize_model
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
