"""Training command: smoke run, reproducibility, resume, validation loss, CLI errors, shipped models."""

import json
import math
from pathlib import Path

import pytest
import torch

import mmfree.train as T
from mmfree.cli import main
from mmfree.model import HGRNBitConfig, HGRNBitForCausalLM
from mmfree.model.modeling import BitLinear

SMALL = dict(hidden=16, layers=1, intermediate=32, steps=4, batch=4, context=32, warmup=2,
             eval_every=2, checkpoint_every=2, dropout=0.1)


@pytest.fixture
def corpus(tmp_path):
    text = "".join(f"{i}: To be, or not to be, that is the question.\n" for i in range(120))
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    return path


def _weights(folder):
    from safetensors.torch import load_file
    return load_file(str(Path(folder) / "model.safetensors"))


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_smoke_training_writes_a_loadable_model(corpus, tmp_path):
    out = tmp_path / "run"
    result = T.train(SMALL, data=corpus, out=out, device="cpu", progress=False)
    for name in ("config.json", "model.safetensors", "train.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    model = HGRNBitForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 256
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.intermediate) == (16, 1, 32)
    saved = json.loads((out / "train.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["steps"] == 4 and saved["finished"] and saved["quantised"]
    assert saved["tokens_seen"] == 4 * 4 * 32
    assert saved["model"]["ternary_weights"] == model.config.ternary_weights
    assert saved["device"].startswith("cpu") and saved["wall_time_s"] >= 0
    assert [h[0] for h in saved["validation"]["history"]] == [2, 4]
    best = min(h[1] for h in saved["validation"]["history"])
    assert saved["validation"]["nats_per_byte"] == pytest.approx(best, abs=1e-5)
    # the folder holds the best model: its validation loss is the recorded one
    _, val = T.load_corpus(corpus)
    assert T.validation_loss(model, val) == pytest.approx(saved["validation"]["nats_per_byte"], rel=1e-5)
    assert saved["command"].startswith("mmfree train --data ")


def test_same_seed_same_run(corpus, tmp_path):
    recipe = {**SMALL, "steps": 3, "eval_every": 3}
    a = T.train(recipe, data=corpus, out=tmp_path / "a", device="cpu", progress=False)
    b = T.train(recipe, data=corpus, out=tmp_path / "b", device="cpu", progress=False)
    c = T.train({**recipe, "seed": 1}, data=corpus, out=tmp_path / "c", device="cpu", progress=False)
    assert a["validation"]["history"] == b["validation"]["history"]
    assert _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert not _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


def test_resume_continues_exactly(corpus, tmp_path, monkeypatch):
    recipe = {**SMALL, "steps": 4, "eval_every": 4, "checkpoint_every": 2}
    whole = T.train(recipe, data=corpus, out=tmp_path / "whole", device="cpu", progress=False)

    calls = []
    real_batch = T._batch

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:              # during step 3: the last checkpoint is step 2's
            raise KeyboardInterrupt
        return real_batch(*args)

    monkeypatch.setattr(T, "_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.train(recipe, data=corpus, out=tmp_path / "cut", device="cpu", progress=False)
    monkeypatch.setattr(T, "_batch", real_batch)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 2

    resumed = T.train({}, data=corpus, out=tmp_path / "cut", device="cpu", progress=False, resume=True)
    assert resumed["steps"] == 4 and resumed["tokens_seen"] == whole["tokens_seen"]
    assert resumed["validation"]["history"] == whole["validation"]["history"]
    assert _same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"))
    ck_whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    ck_cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert _same_weights(ck_whole, ck_cut)

    # a finished run can be extended; its recipe is kept
    more = T.train({"steps": 5}, data=corpus, out=tmp_path / "cut", device="cpu", progress=False, resume=True)
    assert more["steps"] == 5 and more["recipe"]["hidden"] == 16
    with pytest.raises(ValueError, match="differs from the checkpoint"):
        T.train({"hidden": 32}, data=corpus, out=tmp_path / "cut", device="cpu", progress=False,
                resume=True)


def _model(hidden=16, layers=2, seed=0):
    torch.manual_seed(seed)
    return HGRNBitForCausalLM(HGRNBitConfig(vocab_size=256, hidden_size=hidden, num_hidden_layers=layers,
                                            intermediate_size=32))


def test_validation_loss_of_a_uniform_model_is_log_256():
    model = _model()
    with torch.no_grad():
        model.lm_head.weight.zero_()          # all trits 0: every logit is 0
    data = torch.randint(0, 256, (600,))
    assert T.validation_loss(model, data, window=256) == pytest.approx(math.log(256), rel=1e-6)


def test_validation_loss_windows_and_counts():
    model = _model()
    model.train()
    data = torch.randint(0, 256, (2 * 50 + 17,), generator=torch.Generator().manual_seed(3))
    got = T.validation_loss(model, data, window=50, batch_size=1)
    assert model.training                     # mode restored
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in (0, 50, 100):            # two whole windows and a 17-byte one, each from zero state
            ids = data[start:start + 50][None].long()
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            total -= logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
            count += ids.shape[1] - 1
    assert count == len(data) - 3
    assert got == pytest.approx(total / count, rel=1e-6)


def test_validation_loss_sees_updates_that_skip_the_version_counter():
    model = _model()
    data = torch.randint(0, 256, (300,))
    T.validation_loss(model, data)            # fills the ternary weight caches
    for p in model.parameters():
        p.data.mul_(-1.5)                     # like a fused optimiser: no version bump
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    assert T.validation_loss(model, data) == pytest.approx(T.validation_loss(fresh, data), rel=1e-6)


def test_parallel_scan_and_float_twin_patches():
    model = _model(layers=3)
    with torch.no_grad():
        model.model.lower_bounds.normal_()
    ids = torch.randint(0, 256, (2, 45))
    ref = model(ids).logits
    with T.parallel_scan(model):
        out = model(ids)
        split = model(ids[:, 20:], state=model(ids[:, :20]).state).logits
    assert torch.allclose(out.logits, ref, atol=1e-5)
    assert torch.allclose(split, ref[:, 20:], atol=1e-5)
    with T.float_twin(model):
        twin = model(ids).logits
    assert not torch.allclose(twin, ref, atol=1e-3)
    assert torch.equal(model(ids).logits, ref)       # patches undone
    assert all("forward" not in vars(m) for m in model.modules())
    h = T.linear_scan(torch.full((1, 5, 1), 0.5), torch.ones(1, 5, 1), torch.full((1, 1), 8.0))
    assert h.flatten().tolist() == [5.0, 3.5, 2.75, 2.375, 2.1875]


def test_learning_rate_schedule():
    recipe = {**T.DEFAULTS, "lr": 1.0, "warmup": 10, "steps": 110, "min_lr_ratio": 0.1}
    assert T.learning_rate(0, recipe) == pytest.approx(0.1)
    assert T.learning_rate(9, recipe) == pytest.approx(1.0)
    assert T.learning_rate(60, recipe) == pytest.approx(0.55)
    assert T.learning_rate(110, recipe) == pytest.approx(0.1)


def _cli(capsys, *argv):
    rc = main(["train", *argv])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--dropout", "1.5"], "--dropout must be at least 0 and below 1"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--context", "1"], "--context must be an integer >= 2"),
    (["--lr", "1e308"], "--lr must be a positive number up to 1e6"),
    (["--hidden", "1000000"], "--hidden must be small enough"),
    (["--layers", "100000"], "--layers must be at most 1024"),
    (["--batch", "1000000000"], "--batch must be small enough"),
])
def test_cli_bad_numbers(capsys, corpus, tmp_path, argv, message):
    rc, err = _cli(capsys, "--data", str(corpus), "--out", str(tmp_path / "o"), "--device", "cpu", *argv)
    assert rc != 0
    assert err.count("\n") == 1 and message in err and err.startswith("mmfree: error:")


def test_cli_bad_files(capsys, corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                # no ../shared/data here
    rc, err = _cli(capsys, "--out", str(tmp_path / "o"))
    assert rc != 0 and err.count("\n") == 1 and "no --data given" in err
    rc, err = _cli(capsys, "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"))
    assert rc != 0 and err.count("\n") == 1 and "missing.txt: no such file" in err
    rc, err = _cli(capsys, "--data", str(corpus), "--out", str(tmp_path / "o"), "--resume")
    assert rc != 0 and err.count("\n") == 1 and "checkpoint.pt" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.pt").write_bytes(bytes(range(256)))
    rc, err = _cli(capsys, "--data", str(corpus), "--out", str(tmp_path / "junk"), "--resume")
    assert rc != 0 and err.count("\n") == 1 and "not a training checkpoint" in err
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc")
    rc, err = _cli(capsys, "--data", str(tiny), "--out", str(tmp_path / "o"))
    assert rc != 0 and err.count("\n") == 1 and "too little text" in err
    rc, err = _cli(capsys, "--out", str(tmp_path / "o"), "--steps", "many")    # refused by argparse
    assert rc == 2 and err.count("\n") == 1 and "--steps" in err


def test_cli_trains_and_refuses_to_overwrite(capsys, corpus, tmp_path):
    out = tmp_path / "o"
    args = ["--data", str(corpus), "--out", str(out), "--device", "cpu", "--hidden", "16", "--layers", "1",
            "--intermediate", "32", "--steps", "2", "--batch", "2", "--context", "16", "--eval-every", "2",
            "--quiet", "--float"]
    assert main(["train", *args]) == 0
    assert "float twin model" in capsys.readouterr().out
    saved = json.loads((out / "train.json").read_text())
    assert saved["quantised"] is False and saved["recipe"]["float"] is True
    rc, err = _cli(capsys, *args)
    assert rc != 0 and "already holds a training run" in err


# ---------------------------------------------------------------------------------------------------
# the shipped models

def test_shipped_models_meet_their_goals():
    from mmfree.registry import resolve
    for name in ("demo", "tiny"):
        folder = resolve(name).folder
        model = HGRNBitForCausalLM.from_pretrained(folder)
        info = json.loads((folder / "train.json").read_text())
        assert info["quantised"] and info["finished"]
        assert info["model"]["ternary_weights"] == model.config.ternary_weights
        assert (folder / "model.safetensors").stat().st_size <= 8 * 2 ** 20
        assert info["data"]["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    demo = HGRNBitConfig.from_json_file(resolve("demo").folder / "config.json")
    assert demo.ternary_weights <= 1_500_000
    twin = json.loads((resolve("demo").folder / "train-float-twin.json").read_text())
    info = json.loads((resolve("demo").folder / "train.json").read_text())
    assert twin["quantised"] is False
    assert {k: v for k, v in twin["recipe"].items() if k != "float"} == \
        {k: v for k, v in info["recipe"].items() if k != "float"}
    assert info["validation"]["nats_per_byte"] <= 1.02 * twin["validation"]["nats_per_byte"]
    tiny = HGRNBitConfig.from_json_file(resolve("tiny").folder / "config.json")
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.intermediate) == (64, 2, 256)


@pytest.mark.slow
@pytest.mark.parametrize("name, goal", [("tiny", 1.75), ("demo", 1.50)])
def test_shipped_model_meets_its_goal_on_the_validation_text(name, goal):
    """Measured here, not read from the training record: the nats per byte of the validation split
    (the corpus's last 10% where the corpus is present: tiny 1.7036, demo 1.4930; else the text sample
    that ships in the package: tiny 1.66, demo 1.44) at most the model's goal, under 60% of what the
    text's own byte frequencies give (3.09 on the sample), and, on the corpus, the figure the
    training record states."""
    from collections import Counter
    from mmfree.accuracy import DEFAULT_CORPUS, validation_text
    from mmfree.registry import resolve
    folder = resolve(name).folder
    model = HGRNBitForCausalLM.from_pretrained(folder)
    text, _ = validation_text()
    with T.parallel_scan(model):
        loss = T.validation_loss(model, torch.frombuffer(bytearray(text), dtype=torch.uint8))
    unigram = -sum(n / len(text) * math.log(n / len(text)) for n in Counter(text).values())
    assert loss <= goal and loss < 0.6 * unigram, (loss, unigram)
    if DEFAULT_CORPUS.is_file():
        recorded = json.loads((folder / "train.json").read_text())["validation"]["nats_per_byte"]
        assert abs(loss - recorded) < 1e-3, (loss, recorded)
