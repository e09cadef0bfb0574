"""The compact accelerator's firmware (hw/fw) built for this computer: its numerics, sampler and model
against mmfree.numerics, mmfree.sampler and the golden model, bit for bit."""

import ctypes
import random
import struct

import pytest
import torch

from mmfree import memory_map as mm, numerics as nx, sampler as smp
from mmfree.golden import GoldenModel
from mmfree.hw.config import HwConfig, TINY_SHAPE, DEMO_SHAPE
from mmfree.hw.firmware import build_host, config_header, FirmwareError
from mmfree.image import read_image
from mmfree.registry import BUNDLED_DIR


class PF(ctypes.Structure):
    _fields_ = [("mant", ctypes.c_uint32), ("exp", ctypes.c_int32)]


class SamplerState(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("temperature", "top_k", "state", "beta")]


def _load(path):
    lib = ctypes.CDLL(str(path))
    for name in ("rescale", "silu", "silu_state", "mul_act", "state_update", "apply_norm_weight",
                 "embedding_to_act"):
        getattr(lib, name).restype = ctypes.c_int32
    for name in ("sigmoid", "lower_bound_blend", "sampler_pick", "model_vocab"):
        getattr(lib, name).restype = ctypes.c_uint32
    lib.rescale.argtypes = [ctypes.c_int32, PF]
    lib.output_scale.restype = PF
    lib.output_scale.argtypes = [ctypes.c_uint64, ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint32, PF]
    lib.quantize_activations.restype = ctypes.c_uint64
    lib.hal_region.restype = ctypes.c_void_p
    lib.model_logits.restype = ctypes.POINTER(ctypes.c_int32)
    return lib


@pytest.fixture(scope="module")
def tiny_fw(tmp_path_factory):
    cfg = HwConfig.for_model(TINY_SHAPE, lanes=4)
    return cfg, _load(build_host(tmp_path_factory.mktemp("fw_tiny"), cfg))


def T(v):
    return torch.tensor([v], dtype=torch.int64)


def test_elementwise_functions(tiny_fw):
    _, lib = tiny_fw
    R = random.Random(1)

    def act():
        return R.choice([R.randint(nx.ACT.min, nx.ACT.max), R.randint(-5000, 5000), nx.ACT.min, nx.ACT.max, 0])

    for _ in range(3000):
        a, b = act(), act()
        h = R.choice([R.randint(nx.STATE.min, nx.STATE.max), R.randint(-(1 << 22), 1 << 22)])
        f, lb = R.randint(0, 1 << 16), R.randint(0, 1 << 16)
        w, we = R.randint(-32768, 32767), R.randint(-40, 63)
        assert lib.sigmoid(a) == int(nx.sigmoid(T(a)))
        assert lib.silu(a) == int(nx.silu(T(a)))
        assert lib.silu_state(h) == int(nx.silu_state(T(h)))
        assert lib.mul_act(a, b) == int(nx.mul_act(T(a), T(b)))
        assert lib.state_update(h, f, a) == int(nx.state_update(T(h), T(f), T(a)))
        assert lib.lower_bound_blend(lb, f) == int(nx.lower_bound_blend(T(lb), T(f)))
        assert lib.apply_norm_weight(a, w, we) == int(nx.apply_norm_weight(T(a), T(w), we))
        assert lib.embedding_to_act(w, we) == int(nx.embedding_to_act(T(w), we))


def test_scales_and_rescale(tiny_fw):
    _, lib = tiny_fw
    R = random.Random(2)
    for _ in range(3000):
        acc = R.choice([R.randint(-(1 << 31), (1 << 31) - 1), R.randint(-30000, 30000)])
        sc = nx.PFloat(R.randint(1 << 15, (1 << 16) - 1), R.randint(-80, 40)) if R.random() < 0.95 \
            else nx.PF_ZERO
        assert lib.rescale(acc, PF(sc.mant, sc.exp)) == int(nx.rescale(T(acc), sc))
        zmax, ze = R.randint(0, 1 << 40), R.randint(-30, 40)
        ss, k = (R.randint(0, 1 << 54) if R.random() < 0.9 else 0), R.choice([4, 64, 160, 256, 512, 1000])
        m = nx.PFloat(R.randint(1 << 15, (1 << 16) - 1), R.randint(-30, 5))
        got, want = lib.output_scale(zmax, ze, ss, k, PF(m.mant, m.exp)), nx.output_scale(zmax, ze, ss, k, m)
        assert (got.mant, got.exp if got.mant else 0) == (want.mant, want.exp if want.mant else 0)


def test_quantizer(tiny_fw):
    _, lib = tiny_fw
    R = random.Random(3)
    for _ in range(500):
        k = R.choice([4, 8, 64, 256])
        scale = R.choice([10, 1 << 20, 1 << 30, 1 << 38, 0])
        z = [R.randint(-scale, scale) for _ in range(k)]
        codes, zmax = nx.quantize_activations(torch.tensor(z, dtype=torch.int64))
        out = (ctypes.c_int8 * k)()
        assert lib.quantize_activations((ctypes.c_int64 * k)(*z), k, out) == int(zmax)
        assert list(out) == codes.tolist()


def test_sampler(tiny_fw):
    _, lib = tiny_fw
    R = random.Random(4)
    for _ in range(200):
        V = R.choice([1, 2, 7, 256])
        logits = [R.randint(-(1 << 14), 1 << 14) if R.random() < 0.8 else R.randint(nx.ACT.min, nx.ACT.max)
                  for _ in range(V)]
        if R.random() < 0.3:
            logits = [R.choice([-5, 0, 5]) for _ in range(V)]
        temp, top_k = R.choice([0, 1, 64, 256, 1000, 65535]), R.choice([0, 1, 2, 5, 40, 256, 65535])
        seed = R.choice([0, 1, R.getrandbits(32)])
        ref, st = smp.Sampler(temp, top_k, seed), SamplerState()
        lib.sampler_init(ctypes.byref(st), temp, top_k, seed)
        arr = (ctypes.c_int32 * V)(*logits)
        for _ in range(4):
            assert lib.sampler_pick(ctypes.byref(st), arr, V) == ref.pick(logits)


def _text(n):
    return list((BUNDLED_DIR.parent / "data" / "sample.txt").read_bytes()[:n])


@pytest.mark.parametrize("name, shape, lanes, tokens", [("tiny", TINY_SHAPE, 4, 96), ("demo", DEMO_SHAPE, 32, 12)])
def test_model_matches_golden_on_text(tmp_path, name, shape, lanes, tokens):
    """Every logit of every step equal to the golden model's, on real text, for both bundled models."""
    cfg = HwConfig.for_model(shape, lanes=lanes)
    lib = _load(build_host(tmp_path, cfg))
    q = read_image(BUNDLED_DIR / name / f"{name}.mfw")
    for r, data in mm.to_regions(q, lanes).items():
        ctypes.memmove(lib.hal_region(r), data, len(data))
    assert lib.model_load() == 1
    golden = GoldenModel(q)
    V = q.shape.vocab_size
    for i, t in enumerate(_text(tokens)):
        want, _ = golden.step(t)
        lib.model_step(t)
        got = lib.model_logits()
        assert [got[j] for j in range(V)] == want.tolist(), f"token {i}"


def test_model_load(tiny_fw):
    cfg, lib = tiny_fw
    q = read_image(BUNDLED_DIR / "tiny" / "tiny.mfw")
    regions = mm.to_regions(q, 4)

    def put(r, data):
        ctypes.memmove(lib.hal_region(r), bytes(data), len(data))

    for r, data in regions.items():
        put(r, data)
    assert lib.model_load() in (0, 1)
    assert lib.model_load() == 0                    # the same shape again: the state is kept
    assert lib.model_vocab() == 256
    sc = bytearray(regions[mm.REGION_SCALARS])
    for bad in ((0, 64, 2, 256), (256, 64, 3, 256), (256, 62, 2, 256), (512, 64, 2, 256), (256, 64, 2, 512)):
        struct.pack_into("<4I", sc, 0, *bad)
        put(mm.REGION_SCALARS, sc)
        assert lib.model_load() == -1, bad
        assert not lib.model_loaded()
    put(mm.REGION_SCALARS, regions[mm.REGION_SCALARS])
    assert lib.model_load() == 1                    # after a refused model, always a new one
    trits = regions[mm.REGION_TRITS]
    used = -(-q.shape.ternary_weights // mm.TRITS_PER_BYTE)     # the bytes the model's trits take
    assert used % 4 == 0                            # so every one is checked in a word of four
    for pos in (0, 1, 2, 3, 4101, used - 1):       # every byte of a word the check reads four at once
        for value, verdict in ((243, -1), (255, -1), (242, 0), (0x7f, 0), (0x80, 0)):    # 0: the same model
            ctypes.memmove(lib.hal_region(mm.REGION_TRITS) + pos, bytes([value]), 1)
            assert lib.model_load() == verdict, (pos, value)
            ctypes.memmove(lib.hal_region(mm.REGION_TRITS) + pos, trits[pos:pos + 1], 1)
            assert lib.model_load() == (1 if verdict == -1 else 0), (pos, value)
    # a vocabulary of 255 leaves three bytes after the last word: checked one at a time
    sc = bytearray(regions[mm.REGION_SCALARS])
    struct.pack_into("<I", sc, 0, 255)
    put(mm.REGION_SCALARS, sc)
    used = -(-(q.shape.ternary_weights - q.shape.hidden_size) // mm.TRITS_PER_BYTE)
    assert used % 4 == 3
    assert lib.model_load() == 1
    put(mm.REGION_TRITS, trits[:used - 1] + b"\xf3")
    assert lib.model_load() == -1
    put(mm.REGION_TRITS, trits[:used])
    assert lib.model_load() == 1


def test_sigmoid_table_symmetry_is_checked(monkeypatch):
    table = list(nx.SIGMOID_TABLE)
    table[3] += 1
    monkeypatch.setattr(nx, "SIGMOID_TABLE", tuple(table))
    with pytest.raises(FirmwareError, match="not symmetric"):
        config_header(HwConfig.for_model(TINY_SHAPE, lanes=4))
