"""``mmfree profile``: a token's cycles split by the clocks of its weight beats, matrix by matrix."""

import json

import pytest

from mmfree import memory_map as mm
from mmfree.cli import main
from mmfree.golden import quantize_model
from mmfree.image import write_image
from mmfree.sim.profile import ProfileError, profile, split
from conftest import small_model
from test_cli import one_line_error


def test_split_by_hand():
    # two matrices of two beats each (2 x 4 weights, 4 lanes); beats at clocks 3, 4 and 9, 11
    matrices = [("a", 2, 4), ("b", 2, 4)]
    r = split([3, 4, 9, 11], 15, matrices, 4)
    assert r["head"] == 3 and r["tail"] == 3
    assert [(m["name"], m["beats"], m["waiting"], m["stalls"]) for m in r["matrices"]] == \
        [("a", 2, 0, 0), ("b", 2, 4, 1)]


def test_split_refuses_a_wrong_beat_count():
    with pytest.raises(ProfileError, match="took 3 weight beats in a token, not 4"):
        split([1, 2, 3], 10, [("a", 2, 4), ("b", 2, 4)], 4)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "small.mfw"
    q = quantize_model(small_model(44, hidden=16, layers=2, intermediate=32, vocab=32))
    write_image(q, path)
    return path, q.shape


@pytest.mark.sim
def test_profile_adds_up_on_two_row_units(image):
    path, shape = image
    r = profile(str(path), lanes=8, rows=2, token=5)
    # every matrix's beats, in TRITS order, and nothing else
    want = [(name, rows * cols // 16) for name, rows, cols in mm.matrix_order(shape)]
    assert [(m["name"], m["beats"]) for m in r["matrices"]] == want
    assert r["lanes"] == 16 and r["rows"] == 2 and r["tokens"][0] == 5
    # (profile() itself checks the busy clocks it traced against the core's own cycle counter)
    assert r["head"] > 0 and r["tail"] > 0 and all(m["waiting"] >= 0 and m["stalls"] >= 0
                                                    for m in r["matrices"])
    # every matrix after the first waits for its input vector, except f_proj and g_proj, whose
    # input is i_proj's (the same normed vector, quantised with its own norm weight)
    for m in r["matrices"][1:]:
        if m["name"].endswith(("o_proj", "gate_proj", "down_proj", "i_proj")) or m["name"] == "lm_head":
            assert m["waiting"] > 0, m
    assert r["first_token_cycles"] >= r["cycles_per_token"]


@pytest.mark.sim
def test_profile_command(image, capsys):
    path, shape = image
    code = main(["profile", "--model", str(path), "--lanes", "8", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    r = json.loads(out)
    assert r["rows"] == 1 and len(r["matrices"]) == len(mm.matrix_order(shape))
    code = main(["profile", "--model", str(path), "--lanes", "8"])
    out, err = capsys.readouterr()
    assert code == 0 and "both identical to the golden model" in out
    assert "down_proj x2" in out and "lane utilisation" in out


@pytest.mark.parametrize("argv, message", [
    (["--lanes", "8", "--token", "40"], "token must be 0 to 31"),
    ([], "not a multiple of 32 lanes"),
    (["--lanes", "3"], "lanes must be a multiple of 4, not 3"),
    (["--lanes", "8", "--rows", "3"], "rows must be a power of two"),
])
def test_profile_bad_input(image, capsys, argv, message):
    path, _ = image
    code = main(["profile", "--model", str(path), *argv])
    out, err = capsys.readouterr()
    one_line_error(code, err)
    assert message in err
