"""The command line: the documented commands work; bad input gives one line and a non-zero exit."""

import pytest

from mmfree.cli import main
from conftest import CONFORMANCE


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmfree: error:") and "Traceback" not in err


def test_export_inspect_generate(tmp_path, capsys):
    img = tmp_path / "a.mfw"
    code, out, err = run(capsys, "export", str(CONFORMANCE), "-o", str(img))
    assert code == 0 and img.is_file() and "wrote" in out
    code, out, err = run(capsys, "inspect", str(img))
    assert code == 0 and "hidden 64" in out and "layers.1.down_proj.trits" in out
    code, out, err = run(capsys, "inspect", "--json", str(img))
    assert code == 0 and '"format_version": 1' in out


def test_generate_engines_agree_on_image_and_folder(tmp_path, capfdbinary):
    img = tmp_path / "a.mfw"
    assert main(["export", str(CONFORMANCE), "-o", str(img)]) == 0
    capfdbinary.readouterr()
    outs = []
    for model, engine in [(str(CONFORMANCE), "golden"), (str(img), "golden"), (str(CONFORMANCE), "float")]:
        assert main(["generate", "--model", model, "--engine", engine, "--prompt", "ab", "-n", "12"]) == 0
        outs.append(capfdbinary.readouterr().out)
    # the golden engine: the integer model's greedy tokens, from the folder and from its image alike
    from mmfree.golden import GoldenModel
    from mmfree.registry import resolve
    want = b"ab" + bytes(GoldenModel(resolve(str(CONFORMANCE)).quantized()).generate(list(b"ab"), 12))
    assert outs[0] == outs[1] == want + b"\n"
    # the float engine (recurrent decoding) against greedy argmax over whole-sequence forwards
    import torch
    model = resolve(str(CONFORMANCE)).float_model()
    ids = list(b"ab")
    with torch.no_grad():
        for _ in range(12):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert outs[2] == bytes(ids) + b"\n"


@pytest.mark.parametrize("argv,needle", [
    (["inspect", "missing.mfw"], "missing.mfw"),
    (["generate", "--model", "no-such-model"], "no such model"),
    (["generate", "--model", str(CONFORMANCE), "-n", "0"], "positive integer"),
    (["generate", "--model", str(CONFORMANCE), "--prompt", ""], "empty"),
    (["export", "no-such-folder", "-o", "x.mfw"], "no such model"),
    (["generate", "--engine", "quantum"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    (["export", str(CONFORMANCE), "-o", "x.mfw", "--packing", "9bit"], "invalid choice"),
    (["generate", "--model", "tiny", "--temperature", "inf"], "finite number"),
    (["generate", "--model", "tiny", "--seed", str(10 ** 23)], "--seed"),
    (["generate", "--model", "tiny", "--engine", "float", "--top-k", "100000"], "--top-k"),
    (["bench-golden", "--model", "tiny", "-n", str(10 ** 9)], "at most 100,000"),
    (["export-verilog", "--preset", "tiny", "--lanes", "64", "-o", "x.v"], "has its own"),
    (["export-verilog", "--preset", "tiny", "--name", "bad name;", "-o", "x.v"], "not a Verilog module name"),
    (["export-verilog", "--preset", "tiny", "--clock", "0", "-o", "x.v"], "--clock"),
    (["export-verilog", "--preset", "tiny", "--build-hash", str(1 << 32), "-o", "x.v"], "--build-hash"),
    (["build", "--board", "generic", "--design", "selftest", "--clock", "1e300"], "--clock"),
    (["bench", "--link", "--model", "demo"], "takes no --model"),
    (["bench", "--prompt", ""], "1 to 64 bytes"),
    (["bench", "--prompt", "x" * 65], "1 to 64 bytes"),
    (["run", "--model", "tiny", "--prompt", "hi", "--port", ""], "--port is empty"),
    (["run", "--model", "tiny", "--prompt", "hi", "--port", "loop://", "--arch", "compact"],
     "--arch only applies to the simulated board"),
    (["run", "--model", "tiny", "--prompt", "hi", "--port", "loop://", "--lanes", "8", "--board", "icebreaker"],
     "--lanes, --board only apply to the simulated board"),
    (["run", "--model", "tiny", "--prompt", "hi", "--baud", "115200"], "--baud only applies with --port"),
    (["sim-board", "--model", "tiny", "--port", "70000"], "--port"),
])
def test_bad_input_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    one_line_error(code, err)
    assert needle in err


def test_sim_board_address_refused_before_building(capsys):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, out, err = run(capsys, "sim-board", "--model", "tiny", "--port", str(port))
    one_line_error(code, err)
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_image_header_with_too_many_layers(tmp_path, capsys):
    """A header intact by its CRC that claims 2**31 layers: refused at once, not sized layer by layer."""
    import struct
    import zlib
    from mmfree.registry import resolve
    head = bytearray(resolve("tiny").image.read_bytes()[:64])
    struct.pack_into("<I", head, 16, 1 << 31)
    struct.pack_into("<I", head, 60, zlib.crc32(bytes(head[:60])))
    bad = tmp_path / "layers.mfw"
    bad.write_bytes(bytes(head))
    code, out, err = run(capsys, "inspect", str(bad))
    one_line_error(code, err)
    assert "2147483648 layers" in err


def test_inspect_refuses_a_value_no_device_takes(tmp_path, capsys):
    """A base-3 trit byte above 242 behind correct CRCs (section, table, file): inspect decodes every
    value, as the golden engine does, and refuses it."""
    from malformed import image_with_bad_value
    data, name = image_with_bad_value()
    bad = tmp_path / "value.mfw"
    bad.write_bytes(bytes(data))
    code, out, err = run(capsys, "inspect", str(bad))
    one_line_error(code, err)
    assert f"section {name}: invalid base-3 trit byte" in err


def test_unforeseen_exception_is_one_line(capsys, monkeypatch):
    import mmfree.commands
    def boom(args):
        raise RuntimeError("something inside broke\nsecond line")
    monkeypatch.setattr(mmfree.commands, "cmd_inspect", boom)
    code, out, err = run(capsys, "inspect", "x.mfw")
    one_line_error(code, err)
    assert "RuntimeError: something inside broke" in err


def test_not_an_image_and_damaged_image(tmp_path, capsys):
    junk = tmp_path / "junk.mfw"
    junk.write_bytes(b"hello world" * 10)
    code, out, err = run(capsys, "inspect", str(junk))
    one_line_error(code, err)
    assert "bad magic" in err
    img = tmp_path / "a.mfw"
    assert main(["export", str(CONFORMANCE), "-o", str(img)]) == 0
    data = bytearray(img.read_bytes())
    data[5000] ^= 0x10
    img.write_bytes(bytes(data))
    capsys.readouterr()
    code, out, err = run(capsys, "generate", "--model", str(img), "--engine", "golden")
    one_line_error(code, err)
    assert "CRC mismatch" in err and "a.mfw" in err


def test_wrong_format_for_float_engine(tmp_path, capsys):
    img = tmp_path / "a.mfw"
    assert main(["export", str(CONFORMANCE), "-o", str(img)]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "generate", "--model", str(img), "--engine", "float")
    one_line_error(code, err)
    assert "float engine" in err


def test_help_exits_zero(capsys):
    code, out, err = run(capsys, "--help")
    assert code == 0 and "generate" in out and "export" in out
