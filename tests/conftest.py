import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

DATA = pathlib.Path(__file__).parent / "data"
CONFORMANCE = DATA / "conformance_A"


@pytest.fixture(scope="session")
def conformance():
    """The official implementation's model and outputs: ``(folder, vectors)``."""
    return CONFORMANCE, dict(np.load(CONFORMANCE / "vectors.npz"))


@pytest.fixture(scope="session")
def conformance_model(conformance):
    from mmfree.model import HGRNBitForCausalLM
    return HGRNBitForCausalLM.from_pretrained(conformance[0])


def unused(elaboratable):
    """``elaboratable``, built to be inspected and never elaborated: without Amaranth's warning when it
    is collected."""
    elaboratable._MustUse__silence = True
    return elaboratable


def small_model(seed=0, hidden=32, layers=2, intermediate=64, vocab=64):
    """A random float model with norm weights and lower bounds perturbed so that they matter."""
    from mmfree.model import HGRNBitConfig, HGRNBitForCausalLM
    torch.manual_seed(seed)
    model = HGRNBitForCausalLM(HGRNBitConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                             intermediate_size=intermediate))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
        model.model.lower_bounds.normal_(0, 0.5)
        model.model.embeddings.weight.mul_(20)     # trained-model scale
    return model.eval()


# --- long builds beside the suite ----------------------------------------------------------------
#
# A test marked ``background`` runs a long `mmfree` command (a place and route takes half an hour).
# The command starts as soon as the tests are collected, in a process of its own on the machine's
# other core, and the test itself runs last and checks what the command left. Its module says which
# command with ``background_argv(out, **params)`` (``params``: the test's parameters, ``out``: a
# fresh folder). Under pytest-xdist (each worker runs only some tests) nothing starts early and the
# test runs the command itself (``background_result`` runs it in the foreground); --collect-only
# starts nothing.

_BACKGROUND = pytest.StashKey()


def _will_skip(item):
    for mark in item.iter_markers("skipif"):
        if (mark.args and mark.args[0] is True) or mark.kwargs.get("condition") is True:
            return True
    return bool(list(item.iter_markers("skip")))


def _own_yowasp_cache(folder):
    """A YoWASP cache for a background command, seeded with links to the user's: YoWASP writes a
    compiled tool to its cache in place, so two processes compiling the same tool at once (on a fresh
    machine) could read each other's half-written file."""
    import platformdirs
    user = os.environ.get("YOWASP_CACHE_DIR") or platformdirs.user_cache_dir("YoWASP", appauthor=False)
    try:
        shutil.copytree(user, folder, copy_function=os.link)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def _command(item, out):
    """The test's background command: ``python -m mmfree.cli ARGV`` with a build cache in ``out``."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    argv = [sys.executable, "-m", "mmfree.cli", *item.module.background_argv(out, **params)]
    return argv, dict(os.environ, MMFREE_CACHE=os.path.join(out, "cache"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    background = [item for item in items if item.get_closest_marker("background")]
    if not background:
        return
    items[:] = [item for item in items if item not in background] + background
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    root = tempfile.mkdtemp(prefix="mmfree-background-")
    started = {}
    for item in background:
        if _will_skip(item):
            continue
        out = os.path.join(root, str(len(started)))
        os.makedirs(out)
        argv, env = _command(item, out)
        env["YOWASP_CACHE_DIR"] = _own_yowasp_cache(os.path.join(out, "yowasp"))
        log = open(os.path.join(out, "mmfree.log"), "w")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.close()
        started[item.nodeid] = (proc, out)
    config.stash[_BACKGROUND] = (root, started)


def pytest_sessionfinish(session):
    root, started = session.config.stash.get(_BACKGROUND, (None, {}))
    for proc, _ in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if root:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def background_result(request, tmp_path):
    """``(exit status, output, folder)`` of the test's background command, waiting for it to end."""
    _, started = request.config.stash.get(_BACKGROUND, (None, {}))
    if request.node.nodeid in started:
        proc, out = started[request.node.nodeid]
        code = proc.wait()
        with open(os.path.join(out, "mmfree.log")) as f:
            return code, f.read(), out
    out = str(tmp_path)
    argv, env = _command(request.node, out)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, out
