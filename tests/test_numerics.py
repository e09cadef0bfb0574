"""The numeric specification's building blocks against exact or float references."""

import math
import random

import pytest
import torch

from mmfree import numerics as nx
from mmfree.model.modeling import round_half_away


def test_pfloat_normalisation_and_mul():
    for n in [1, 2, 3, 65535, 65536, 65537, 2**40 + 12345, 123456789]:
        p = nx.pf_from_int(n, -5)
        assert (1 << 15) <= p.mant < (1 << 16)
        assert abs(float(p) - n * 2**-5) <= 2**-16 * n * 2**-5
    assert nx.pf_from_int(0) == nx.PF_ZERO
    a, b = nx.pf_from_float(3.0), nx.pf_from_float(0.125)
    assert float(nx.pf_mul(a, b)) == 0.375


def test_pfloat_from_float_edges():
    assert float(nx.pf_from_float(1.0)) == 1.0
    assert nx.pf_from_float(1 - 2**-20) == nx.PFloat(1 << 15, -15)      # rounds up to 1.0
    with pytest.raises(ValueError):
        nx.pf_from_float(-1.0)


def test_rsqrt_accuracy():
    rng = random.Random(0)
    for _ in range(2000):
        x = rng.uniform(0.5, 2.0) * 2.0 ** rng.randint(-40, 40)
        r = float(nx.pf_rsqrt(nx.pf_from_float(x)))
        assert abs(r * math.sqrt(x) - 1) < 3e-5
    with pytest.raises(ZeroDivisionError):
        nx.pf_rsqrt(nx.PF_ZERO)


def test_recip():
    for k in [1, 3, 64, 160, 1024, 2816, 6912]:
        assert abs(float(nx.pf_recip(k)) * k - 1) < 2e-5


def test_sigmoid_table_is_the_function():
    assert len(nx.SIGMOID_TABLE) == 513
    for i, t in enumerate(nx.SIGMOID_TABLE):
        x = -16 + i / 16
        assert abs(t / 65536 - 1 / (1 + math.exp(-x))) <= 0.5 / 65536 + 1e-12


def test_sigmoid_and_silu_accuracy():
    x = torch.arange(-20 * 4096, 20 * 4096, 37)
    xf = x.double() / 4096
    s = nx.sigmoid(x).double() / 65536
    assert (s - torch.sigmoid(xf)).abs().max() < 1e-4
    y = nx.silu(x).double() / 4096
    assert (y - torch.nn.functional.silu(xf)).abs().max() < 2e-3


def test_sigmoid_extremes_stay_in_gate_range():
    x = torch.tensor([nx.ACT.min, -16 * 4096 - 1, -16 * 4096, 0, 16 * 4096 - 1, 16 * 4096, nx.ACT.max])
    s = nx.sigmoid(x)
    assert int(s.min()) >= 0 and int(s.max()) <= 65536
    assert int(s[3]) == 32768
    assert torch.all(s[1:] >= s[:-1])


def test_quantizer_equals_float_rule_on_exact_values():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        z = torch.randint(-(1 << 20), 1 << 20, (4, 97), generator=gen)
        codes, zmax = nx.quantize_activations(z)
        ref = round_half_away(z.double() * 127 / z.abs().amax(-1, keepdim=True).double())
        assert torch.equal(codes, ref.long())
        assert torch.equal(zmax, z.abs().amax(-1))


def test_quantizer_ties_round_away():
    z = torch.tensor([[254, 1, -1, 3, -3]])        # 127 * 1/254 = 0.5, 127 * 3/254 = 1.5
    codes, _ = nx.quantize_activations(z)
    assert codes.tolist() == [[127, 1, -1, 2, -2]]


def test_quantizer_zero_and_wide_vectors():
    codes, zmax = nx.quantize_activations(torch.zeros(2, 8, dtype=torch.int64))
    assert codes.abs().sum() == 0 and zmax.tolist() == [0, 0]
    z = torch.tensor([[(1 << 39) - 1, -(1 << 38), 5]])
    codes, _ = nx.quantize_activations(z)
    assert codes.tolist() == [[127, -64, 0]]


def test_rescale_rounding_and_saturation():
    acc = torch.tensor([0, 1, -1, 3000, -3000, 1 << 24])
    s = nx.pf_from_float(1.0)
    assert nx.rescale(acc, s).tolist() == [0, 4096, -4096, nx.ACT.max, nx.ACT.min, nx.ACT.max]
    half = nx.PFloat(1 << 15, -15 - 13)             # 2**-13: acc * 0.5 LSB
    assert nx.rescale(torch.tensor([1, -1, 3]), half).tolist() == [1, 0, 2]   # half up
    assert nx.rescale(acc, nx.PF_ZERO).abs().sum() == 0


def test_bfp16():
    t = torch.tensor([0.5, -1.25, 3.0, 1e-3])
    mant, exp = nx.bfp16_encode(t)
    assert int(mant.abs().max()) <= 32767 and int(mant.abs().max()) >= 16384
    assert (nx.bfp16_decode(mant, exp) - t.double()).abs().max() <= 2.0 ** -exp / 2
    mant, exp = nx.bfp16_encode(torch.zeros(3))
    assert mant.abs().sum() == 0
    with pytest.raises(ValueError):
        nx.bfp16_encode(torch.tensor([float("inf")]))


def test_state_update_is_a_convex_blend():
    h = torch.tensor([nx.STATE.max, nx.STATE.min, 0, 1 << 20])
    c = torch.tensor([nx.ACT.min, nx.ACT.max, 4096, -4096])
    for f in [0, 1, 32768, 65535, 65536]:
        out = nx.state_update(h, torch.tensor(f), c)
        lo = torch.minimum(h, c << 8)
        hi = torch.maximum(h, c << 8)
        assert torch.all(out >= lo - 1) and torch.all(out <= hi + 1)
    assert torch.equal(nx.state_update(h, torch.tensor(65536), c), h)


def test_lower_bound_blend_identity_at_zero():
    f = torch.arange(0, 65537, 97)
    assert torch.equal(nx.lower_bound_blend(torch.tensor(0), f), f)
    assert torch.all(nx.lower_bound_blend(torch.tensor(40000), f) >= 40000)


@pytest.mark.parametrize("n", [1, 4, 5, 7, 103, 1000])
def test_trit_packing_round_trip(n):
    t = torch.randint(-1, 2, (n,), generator=torch.Generator().manual_seed(n))
    assert torch.equal(nx.unpack_trits(nx.pack_trits(t), n), t)
    assert torch.equal(nx.unpack_trits_base3(nx.pack_trits_base3(t), n), t)
    assert nx.pack_trits(t).numel() == -(-n // 4)
    assert nx.pack_trits_base3(t).numel() == -(-n // 5)


def test_trit_packing_bit_layout_and_invalid_codes():
    assert nx.pack_trits(torch.tensor([1, -1, 0, 1])).tolist() == [0b01_00_11_01]
    with pytest.raises(ValueError, match="0b10"):
        nx.unpack_trits(torch.tensor([0b10], dtype=torch.uint8), 1)
    with pytest.raises(ValueError, match="242"):
        nx.unpack_trits_base3(torch.tensor([243], dtype=torch.uint8), 5)


def test_rescale_extremes_saturate_or_vanish():
    assert nx.rescale(torch.tensor([1 << 24, -(1 << 24)]), nx.PFloat(65535, 12)).tolist() == [nx.ACT.max, nx.ACT.min]
    assert nx.rescale(torch.tensor([(1 << 31) - 1, -(1 << 31)]), nx.PFloat(65535, -100)).tolist() == [0, 0]
    assert nx.rescale(torch.tensor([1, -1]), nx.PFloat(32768, 200)).tolist() == [nx.ACT.max, nx.ACT.min]
