"""`mmfree run --port URL` against a golden board on a TCP socket: the main job's output, and the ways
it can fail, each ending in one line on stderr, a non-zero exit and no hang."""

import pytest

from mmfree.cli import main
from mmfree.driver import BoardServer, GoldenBoard
from mmfree.golden import GoldenModel
from mmfree.registry import resolve

PROMPT = "ROMEO:"


def one_line_error(code, err):
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("mmfree: error:"), err


def golden_text(n):
    return PROMPT.encode() + bytes(GoldenModel(resolve("tiny").quantized()).generate(list(PROMPT.encode()), n))


def test_run_streams_the_golden_models_text(capfd):
    want = golden_text(30)
    with BoardServer(GoldenBoard()) as server:
        code = main(["run", "--model", "tiny", "--prompt", PROMPT, "-n", "30", "--port", server.url])
    out, err = capfd.readouterr()
    assert code == 0 and out == (want + b"\n").decode("utf-8", "replace")
    assert "30 tokens" in err


def test_damaged_image_is_refused(tmp_path, capfd):
    img = bytearray(resolve("tiny").image.read_bytes())
    img[1000] ^= 4
    bad = tmp_path / "bad.mfw"
    bad.write_bytes(bytes(img))
    with BoardServer(GoldenBoard()) as server:
        code = main(["run", "--model", str(bad), "--prompt", PROMPT, "--port", server.url])
    err = capfd.readouterr().err
    one_line_error(code, err)
    assert "CRC mismatch" in err


def test_image_with_a_bad_value_is_refused_before_upload(tmp_path, capfd):
    from malformed import image_with_bad_value
    data, name = image_with_bad_value()
    bad = tmp_path / "value.mfw"
    bad.write_bytes(data)
    board = GoldenBoard()
    with BoardServer(board) as server:
        code = main(["run", "--model", str(bad), "--prompt", PROMPT, "--port", server.url])
    err = capfd.readouterr().err
    one_line_error(code, err)
    assert f"section {name}: invalid base-3 trit byte" in err
    assert board.frames_ok == 0                       # nothing was sent to the device


def test_truncated_image_is_refused(tmp_path, capfd):
    bad = tmp_path / "short.mfw"
    bad.write_bytes(resolve("tiny").image.read_bytes()[:5000])
    with BoardServer(GoldenBoard()) as server:
        code = main(["run", "--model", str(bad), "--prompt", PROMPT, "--port", server.url])
    err = capfd.readouterr().err
    one_line_error(code, err)
    assert "truncated" in err


def test_model_too_big_for_the_device(capfd):
    board = GoldenBoard(layout="accelerator", lanes=32, max_vocab=256, max_hidden=64, max_layers=2,
                        max_intermediate=256)               # sized for tiny
    with BoardServer(board) as server:
        code = main(["run", "--model", "demo", "--prompt", PROMPT, "--port", server.url])
    err = capfd.readouterr().err
    one_line_error(code, err)
    assert "does not fit" in err


def test_unreachable_port(capfd):
    code = main(["run", "--model", "tiny", "--prompt", PROMPT, "--port", "socket://127.0.0.1:1"])
    err = capfd.readouterr().err
    one_line_error(code, err)
    assert "cannot open socket://127.0.0.1:1" in err


class _GoesSilent(GoldenBoard):
    """A board that stops sending anything once it has produced a few tokens."""

    def transmit(self, size=-1):
        out = super().transmit(size)
        if self._gen is not None and self._gen.produced > 5:
            return b""
        return out


def test_device_that_stops_answering_mid_generation(capfd):
    """The tokens that came are on stdout, the golden model's; then the driver gives up after its
    retries (the driver's own timeouts, tested on a virtual clock in test_driver) with one line."""
    with BoardServer(_GoesSilent()) as server:
        code = main(["run", "--model", "tiny", "--prompt", PROMPT, "-n", "50", "--port", server.url])
    captured = capfd.readouterr()
    one_line_error(code, captured.err)
    assert "no valid reply" in captured.err
    want = golden_text(50).decode("utf-8", "replace")
    came = captured.out.rstrip("\n")
    assert len(came) >= len(PROMPT) + 5 and want.startswith(came), captured.out
