"""The float reference against the official implementation's outputs, and its HF-format I/O."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mmfree.model import HGRNBitConfig, HGRNBitForCausalLM, ConfigError, CheckpointError
from conftest import small_model


def _close(a, b, rel):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    span = b.max() - b.min()
    return np.abs(a - b).max() <= rel * span


def test_conformance_full_forward(conformance, conformance_model):
    _, v = conformance
    with torch.no_grad():
        logits = conformance_model(torch.tensor(v["input_ids"])).logits.numpy()
    assert logits.shape == v["logits"].shape
    assert _close(logits, v["logits"], 1e-4)
    assert (logits.argmax(-1) == v["logits"].argmax(-1)).all()


def test_conformance_intermediates(conformance, conformance_model):
    _, v = conformance
    m = conformance_model
    ids = torch.tensor(v["input_ids"][:1])
    with torch.no_grad():
        h, state = m.model(ids)
        emb = m.model.embeddings(ids)[0].numpy()
    assert _close(h[0].numpy(), v["final_norm_out"], 1e-4)
    assert _close(emb, v["embeddings_out"], 1e-6)


def test_conformance_recurrent_decoding(conformance, conformance_model):
    _, v = conformance
    m = conformance_model
    prompt = torch.tensor(v["prompt"])[None]
    with torch.no_grad():
        out = m(prompt)
        assert _close(out.logits[0].numpy(), v["prefill_logits"], 1e-4)
        steps, tokens = [out.logits[0, -1].numpy()], []
        for _ in range(16):
            tok = int(out.logits[0, -1].argmax())
            tokens.append(tok)
            out = m(torch.tensor([[tok]]), state=out.state)
            steps.append(out.logits[0, -1].numpy())
    assert tokens == list(v["generated"])
    assert _close(np.array(steps[:16]), v["step_logits"], 1e-4)
    gen = list(m.generate(prompt, 16))
    assert [int(t) for t in gen] == list(v["generated"])


def test_conformance_decode_state(conformance, conformance_model):
    _, v = conformance
    ids = torch.tensor(np.concatenate([v["prompt"], v["generated"][:15]]))[None]
    with torch.no_grad():
        out = conformance_model(ids)
    assert _close(out.logits[0].numpy(), v["gen_full_logits"], 1e-4)
    state = torch.stack(out.state).numpy().reshape(v["decode_final_state"].shape)
    assert _close(state, v["decode_final_state"], 1e-4)


def test_forward_matches_stepping():
    m = small_model(1)
    ids = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = m(ids).logits
        out = m(ids[:, :1])
        steps = [out.logits[:, 0]]
        for t in range(1, 20):
            out = m(ids[:, t:t + 1], state=out.state)
            steps.append(out.logits[:, 0])
    steps = torch.stack(steps, 1)
    assert torch.allclose(steps, full, rtol=1e-5, atol=1e-5 * full.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip(tmp_path, dtype):
    m = small_model(2)
    m = m.to(dtype)
    m.save_pretrained(tmp_path / "a")
    m2 = HGRNBitForCausalLM.from_pretrained(tmp_path / "a")
    m2.save_pretrained(tmp_path / "b")
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(a) == set(b) == set(m.state_dict())
    for k in a:
        assert a[k].dtype == dtype and torch.equal(a[k], b[k]), k
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == json.loads((tmp_path / "b" / "config.json").read_text())


def test_official_key_names(conformance):
    folder, _ = conformance
    keys = set(load_file(str(folder / "model.safetensors")))
    m = HGRNBitForCausalLM(HGRNBitConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2))
    assert keys == set(m.state_dict())
    assert "model.layers.1.attn.g_norm.weight" in keys and "lm_head.norm.weight" in keys
    assert len(keys) == 15 * 2 + 5


def test_bf16_checkpoint_logits_close(tmp_path, conformance):
    folder, v = conformance
    m = HGRNBitForCausalLM.from_pretrained(folder, torch_dtype="bfloat16")
    m.save_pretrained(tmp_path)
    m16 = HGRNBitForCausalLM.from_pretrained(tmp_path)
    assert m16.model.embeddings.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = m16(torch.tensor(v["input_ids"])).logits
    assert logits.dtype == torch.float32
    assert _close(logits.numpy(), v["logits"], 0.2)     # bf16 weights alone move logits this far


def test_sharded_checkpoint(tmp_path, conformance, conformance_model):
    folder, v = conformance
    state = load_file(str(folder / "model.safetensors"))
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, str(tmp_path / name))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    m = HGRNBitForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        a = m(torch.tensor(v["input_ids"])).logits
        b = conformance_model(torch.tensor(v["input_ids"])).logits
    assert torch.equal(a, b)


def test_pytorch_bin_weights_only(tmp_path, conformance):
    folder, v = conformance
    torch.save(load_file(str(folder / "model.safetensors")), tmp_path / "pytorch_model.bin")
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    m = HGRNBitForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        logits = m(torch.tensor(v["input_ids"])).logits.numpy()
    assert np.abs(logits - v["logits"]).max() < 1e-4


@pytest.mark.parametrize("option,value", [("use_short_conv", True), ("num_heads", 4), ("expand_ratio", 2),
                                          ("use_lower_bound", False), ("tie_word_embeddings", True)])
def test_unsupported_options_refused(option, value):
    with pytest.raises(ConfigError, match=option):
        HGRNBitConfig(**{option: value})


def test_unknown_keys_kept_and_ignored():
    cfg = HGRNBitConfig.from_dict({"model_type": "hgrn_bit", "vocab_size": 16, "hidden_size": 8,
                                   "num_hidden_layers": 1, "some_future_key": 3})
    assert cfg.to_dict()["some_future_key"] == 3
    with pytest.raises(ConfigError, match="model_type"):
        HGRNBitConfig.from_dict({"model_type": "llama"})


def test_intermediate_size_derivation():
    assert HGRNBitConfig(hidden_size=1024).intermediate == 2816
    assert HGRNBitConfig(hidden_size=2048).intermediate == 5632
    assert HGRNBitConfig(hidden_size=2560).intermediate == 6912
    assert HGRNBitConfig(hidden_size=1024, num_hidden_layers=24).ternary_weights == 341_049_344


def test_checkpoint_errors(tmp_path, conformance):
    folder, _ = conformance
    with pytest.raises(CheckpointError, match="not a model folder"):
        HGRNBitForCausalLM.from_pretrained(tmp_path / "none")
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        HGRNBitForCausalLM.from_pretrained(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    del state["model.norm.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.norm.weight is missing"):
        HGRNBitForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        HGRNBitForCausalLM.from_pretrained(tmp_path)


def test_sampled_generation_is_seeded(conformance_model):
    prompt = torch.tensor([[1, 2, 3]])
    run = lambda s: [int(t) for t in conformance_model.generate(prompt, 12, temperature=1.0, top_k=20,
                                                                generator=torch.Generator().manual_seed(s))]
    assert run(5) == run(5)
    assert run(5) != run(6)
