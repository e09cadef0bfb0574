"""The whole path on the accelerator's RTL: the simulated board, `mmfree run`, `mmfree bench`.

Every generated token is compared with the integer golden model. These run Verilator (a first build
of each configuration takes minutes; later runs reuse it).
"""

import pytest

from mmfree.cli import main
from mmfree.golden import GoldenModel
from mmfree.registry import resolve

pytestmark = [pytest.mark.sim, pytest.mark.slow]

PROMPT = "ROMEO:"
# The compact accelerator runs its firmware on PicoRV32 in simulation: about 2 M cycles a token and
# 66 KB of upload through the firmware, minutes of Verilator either way. Its tests feed a two-byte
# prompt: the recurrent state still carries from token to token.
COMPACT_PROMPT = "RO"


def golden_tokens(name, n):
    return list(GoldenModel(resolve(name).quantized()).generate(list(PROMPT.encode()), n))


def test_run_on_the_simulated_board(capfd):
    """`mmfree run` with on-device sampling: the text is what the golden model and the reference sampler
    produce (greedy decoding runs in the tests below)."""
    from mmfree.sampler import reference_generate, temperature_code
    assert main(["run", "--model", "tiny", "--prompt", PROMPT, "-n", "24",
                 "--temperature", "0.8", "--top-k", "20", "--seed", "5"]) == 0
    out, err = capfd.readouterr()
    golden = GoldenModel(resolve("tiny").quantized())
    tokens = list(reference_generate(golden, list(PROMPT.encode()), 24, temperature_code(0.8), 20, 5))
    assert tokens != golden_tokens("tiny", 24)           # sampling, not the argmax
    want = PROMPT.encode() + bytes(tokens) + b"\n"
    assert out == want.decode("utf-8", "replace")
    assert "24 tokens" in err and "cycles/token" in err


def test_run_on_the_simulated_compact_board(capfd, monkeypatch, tmp_path):
    """`mmfree run --arch compact`: the compact accelerator's RTL (PicoRV32 running the firmware)
    behind the simulated board, sampling on the device: the tokens of the golden model and the
    reference sampler. With no iCEBreaker build in the (empty) build cache, tokens/s is given at the
    preset's clock with the command that builds it."""
    from mmfree.sampler import reference_generate, temperature_code
    monkeypatch.setenv("MMFREE_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--model", "tiny", "--arch", "compact", "--prompt", COMPACT_PROMPT, "-n", "2",
                 "--temperature", "0.8", "--top-k", "20", "--seed", "5"]) == 0
    out, err = capfd.readouterr()
    golden = GoldenModel(resolve("tiny").quantized())
    tokens = list(reference_generate(golden, list(COMPACT_PROMPT.encode()), 2, temperature_code(0.8), 20, 5))
    assert out == (COMPACT_PROMPT.encode() + bytes(tokens) + b"\n").decode("utf-8", "replace")
    assert "2 tokens" in err and "at 18.0 MHz" in err and "--board icebreaker" in err


def test_faulty_link_to_the_simulated_board():
    """Bytes flipped, dropped and duplicated at 1e-3 between the driver and the RTL: the upload and
    200 generated tokens come out exactly as on a clean link."""
    from mmfree.driver import Device, FaultyTransport
    from mmfree.driver.transport import open_transport
    from mmfree.sim.board import SimulatedBoard
    from mmfree.hw.config import PRESETS
    image = resolve("tiny").image.read_bytes()
    with SimulatedBoard(PRESETS["tiny"]) as board:
        link = FaultyTransport(open_transport(board.url), rate=1e-3, seed=7)
        dev = Device(link, timeout=2.0, token_timeout=120.0, busy_timeout=300.0, verify_rate=2e3)
        dev.upload(image)
        dev.feed(list(PROMPT.encode()))
        tokens = list(dev.generate(200))
    assert tokens == golden_tokens("tiny", 200)
    assert link.faults > 10


@pytest.mark.parametrize("model,n,arch,prompt", [("tiny", 64, "core", PROMPT), ("demo", 32, "core", PROMPT),
                                                ("tiny", 2, "compact", COMPACT_PROMPT)])
def test_bench(model, n, arch, prompt):
    """The full system on Verilator (the compact accelerator: PicoRV32 running the real firmware):
    every reply of the upload, VERIFY and FEED, and every generated token, as the golden model says."""
    from mmfree.sim.commands import bench
    r = bench(model, tokens=n, arch=arch, prompt=prompt)          # raises at the first reply that differs
    assert r["tokens"] == n
    assert 0 < r["utilisation"] <= 1


def test_export_verilog(tmp_path, capsys):
    out = tmp_path / "acc.v"
    assert main(["export-verilog", "--preset", "tiny", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module mmfree_accelerator" in text and "uart_rx" in text


def test_upload_reaches_ninety_percent_of_the_uart_line_rate():
    from mmfree.sim.commands import link_throughput
    r = link_throughput(nbytes=16384)
    assert r["payload_bytes"] == 16384
    assert r["efficiency"] >= 0.90, r


def test_link_throughput_takes_what_the_region_holds():
    from mmfree.sim.commands import link_throughput
    with pytest.raises(ValueError, match=r"nbytes must be 1 to \d+ \(the TRITS region of the tiny board\)"):
        link_throughput(nbytes=10 ** 7)
