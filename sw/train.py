"""Quantisation-aware training of small byte-level HGRNBit models (``mmfree train``).

The model is trained from scratch with the reference initialisation and the reference forward: every
projection ternary and every activation 8-bit in the forward pass, straight-through gradients in the
backward pass (see :mod:`mmfree.model.modeling`). The recipe:

- data: the bytes of one text file (vocabulary 256, one token per byte); the last 10% of the bytes is
  the validation split, the rest the training split;
- batches of random ``context``-byte windows of the training split, drawn from a seeded generator;
  the loss is the causal-LM loss, so a window trains ``context - 1`` predictions;
- AdamW (betas 0.9/0.95), decoupled weight decay on the projection and embedding matrices only (not on
  norm weights or lower bounds), linear warm-up from 0 then cosine decay to ``min_lr_ratio * lr``,
  gradient clipping by global norm; fp32 arithmetic on every device;
- dropout (``model.dropout``) on embeddings and residual branches;
- validation (:func:`validation_loss`) over the whole validation split every ``eval_every`` steps; the
  output folder always holds the best model so far by validation loss (early stopping), and
  ``patience`` evaluations without improvement can end the run early;
- a checkpoint (``checkpoint.pt``: weights, optimiser, step, every random generator) every
  ``checkpoint_every`` steps; ``--resume`` continues from it and reproduces the uninterrupted run.

The output folder is a Hugging Face format model folder (``config.json`` + ``model.safetensors``,
written by ``save_pretrained``) plus ``train.json`` (recipe, steps, validation losses, tokens seen,
wall time, device) and ``checkpoint.pt`` (only needed to resume; it is not part of a shipped model).

Two helpers change how a model instance computes, for training only; both patch the given instance
(never the classes) and undo the patch on exit:

- :func:`parallel_scan` computes the MLGRU recurrence with a log-depth parallel scan instead of the
  reference's loop over time steps: the same function (to fp32 rounding), far fewer kernel launches;
- :func:`float_twin` replaces every BitLinear's quantised product by a float one, to measure what the
  ternary weights cost (``--float``). A float twin's folder loads as an ordinary (ternary) model; its
  ``train.json`` says ``"quantised": false``.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .model import HGRNBitConfig, HGRNBitForCausalLM
from .model.modeling import BitLinear, MLGRU, rms_norm

__all__ = ["DEFAULTS", "VAL_WINDOW", "train", "validation_loss", "load_corpus", "learning_rate",
           "parallel_scan", "float_twin", "linear_scan", "register"]

VOCAB_SIZE = 256
VAL_FRACTION = 0.1
VAL_WINDOW = 256                   # validation windows, whatever the training context
DEFAULT_DATA = Path("..") / "shared" / "data" / "tinyshakespeare.txt"
CHECKPOINT = "checkpoint.pt"

# The recipe (the defaults train the ``demo`` model).
DEFAULTS = dict(
    hidden=160, layers=4, intermediate=512,
    steps=3000, batch=64, context=256,
    lr=3e-3, min_lr_ratio=0.1, warmup=100, weight_decay=0.05, clip=1.0, dropout=0.1,
    seed=0, eval_every=100, checkpoint_every=500, patience=0, float=False,
)
# options that may differ between a run and its resumption
_RESUMABLE = ("steps", "eval_every", "checkpoint_every", "patience")


# ---------------------------------------------------------------------------------------------------
# data

def load_corpus(path):
    """The bytes of ``path`` as ``(train, val)`` uint8 tensors: the last 10% of the bytes is ``val``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    raw = path.read_bytes()
    n_val = int(len(raw) * VAL_FRACTION)
    if n_val < 2 or len(raw) - n_val < 2:
        raise ValueError(f"{path}: {len(raw)} bytes is too little text to train on")
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return data[:-n_val].clone(), data[-n_val:].clone()


def _batch(train_data, batch, context, generator, device):
    """``batch`` random windows of ``context`` bytes, as int64 ``[batch, context]`` on ``device``."""
    starts = torch.randint(0, train_data.numel() - context + 1, (batch,), generator=generator)
    ids = train_data[starts[:, None] + torch.arange(context)]
    return ids.to(device=device, dtype=torch.long, non_blocking=True)


# ---------------------------------------------------------------------------------------------------
# validation

@torch.no_grad()
def validation_loss(model, data, window=VAL_WINDOW, batch_size=64):
    """Mean negative log-likelihood, in nats per byte, of the bytes ``data`` (1-D integer tensor).

    ``data`` is cut into consecutive non-overlapping windows of ``window`` bytes (the last one shorter
    when the length is not a multiple); each window is run from a zero state, and every byte of it but
    the first is predicted from the bytes before it in the same window. The result is the sum of those
    losses over the whole of ``data`` divided by the number of predicted bytes,
    ``len(data) - number of windows``. The model is put in eval mode (no dropout) for the measurement
    and returned to its previous mode.

    The BitLinear layers' cached ternary weights are dropped first: their cache notices in-place
    updates through the tensor version counter, which fused optimisers (``AdamW(fused=True)``) do
    not advance.
    """
    data = torch.as_tensor(data).flatten()
    n = data.numel()
    if n < 2:
        raise ValueError("validation data needs at least 2 bytes")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for m in model.modules():
        if isinstance(m, BitLinear):
            m._cache = None
    total, count = 0.0, 0
    full = n // window
    pieces = [data[:full * window].view(full, window)[i:i + batch_size]
              for i in range(0, full, batch_size)]
    if n - full * window >= 2:
        pieces.append(data[full * window:][None])
    try:
        for ids in pieces:
            ids = ids.to(device=device, dtype=torch.long)
            logits = model(ids).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                  reduction="sum")
            total += float(nll)
            count += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    return total / count


# ---------------------------------------------------------------------------------------------------
# how the model computes while training

def linear_scan(a, b, h0=None):
    """All ``h_t = a_t * h_{t-1} + b_t`` for ``a, b [B, T, H]`` and ``h_{-1} = h0 [B, H]`` (or 0).

    A Hillis-Steele scan over time: ``ceil(log2 T)`` rounds of elementwise operations, each composing
    every position's affine map with the one ``k`` steps before it. Returns ``h [B, T, H]``.
    """
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], dim=1)
    T, k = a.shape[1], 1
    while k < T:
        b = torch.cat([b[:, :k], b[:, k:] + a[:, k:] * b[:, :-k]], dim=1)
        if 2 * k < T:
            a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    return b


def _mlgru_forward_scan(self, x, lower_bound, state):
    # MLGRU.forward with the time loop replaced by linear_scan; everything else as in the reference
    f = torch.sigmoid(self.f_proj(x))
    if lower_bound is not None:
        f = lower_bound + (1 - lower_bound) * f
    c = F.silu(self.i_proj(x))
    g = self.g_proj(x)
    hs = linear_scan(f, (1 - f) * c, state)
    y = rms_norm(g, self.g_norm.weight) * F.silu(hs)
    return self.o_proj(y), hs[:, -1]


def _bitlinear_forward_float(self, x):
    # BitLinear.forward without quantisation: the layer's RMSNorm, then a float product
    return F.linear(rms_norm(x, self.norm.weight), self.weight.float())


@contextlib.contextmanager
def _patched(model, cls, forward):
    modules = [m for m in model.modules() if isinstance(m, cls)]
    for m in modules:
        m.forward = types.MethodType(forward, m)
    try:
        yield model
    finally:
        for m in modules:
            del m.forward


def parallel_scan(model):
    """Context manager: ``model``'s MLGRU layers use :func:`linear_scan` for their recurrence."""
    return _patched(model, MLGRU, _mlgru_forward_scan)


def float_twin(model):
    """Context manager: ``model``'s BitLinear layers compute ``rmsnorm(x) @ W^T`` in float.

    No activation or weight quantisation, same parameters and everything else unchanged: trained so,
    the model is the float twin of the ternary one, for measuring the cost of ternary weights.
    """
    return _patched(model, BitLinear, _bitlinear_forward_float)


# ---------------------------------------------------------------------------------------------------
# the training loop

def learning_rate(step, recipe):
    """The learning rate of (0-based) ``step``: linear warm-up, then cosine decay to the floor."""
    lr, steps, warmup = recipe["lr"], recipe["steps"], recipe["warmup"]
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    floor = lr * recipe["min_lr_ratio"]
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def check_recipe(recipe):
    """Raise ValueError naming the first option that is out of range."""
    def need(ok, option, what):
        if not ok:
            raise ValueError(f"--{option.replace('_', '-')} must be {what}, not {recipe[option]!r}")

    for key in ("hidden", "layers", "intermediate", "steps", "batch", "eval_every", "checkpoint_every"):
        need(isinstance(recipe[key], int) and recipe[key] > 0, key, "a positive integer")
    for key in ("warmup", "seed", "patience"):
        need(isinstance(recipe[key], int) and recipe[key] >= 0, key, "a non-negative integer")
    need(recipe["seed"] < 1 << 63, "seed", "below 2**63")
    # sizes a training run on one machine can hold: a layer's largest matrix and a batch's tokens
    need(recipe["hidden"] * max(recipe["hidden"], recipe["intermediate"]) <= 1 << 28, "hidden",
         f"small enough that hidden x max(hidden, intermediate) <= 2**28 (intermediate "
         f"{recipe['intermediate']})")
    from .image import MAX_LAYERS
    need(recipe["layers"] <= MAX_LAYERS, "layers", f"at most {MAX_LAYERS} (what a weight image holds)")
    need(recipe["batch"] * recipe["context"] <= 1 << 24, "batch",
         f"small enough that batch x context <= 2**24 (context {recipe['context']})")
    need(isinstance(recipe["context"], int) and recipe["context"] >= 2, "context", "an integer >= 2")
    for key in ("lr", "clip"):
        need(math.isfinite(recipe[key]) and 0 < recipe[key] <= 1e6, key, "a positive number up to 1e6")
    need(math.isfinite(recipe["weight_decay"]) and recipe["weight_decay"] >= 0, "weight_decay",
         "a non-negative number")
    need(0 <= recipe["min_lr_ratio"] <= 1, "min_lr_ratio", "between 0 and 1")
    need(0 <= recipe["dropout"] < 1, "dropout", "at least 0 and below 1")


def _device(name):
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {name!r} (auto, cpu or cuda)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _device_name(device):
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _optimizer(model, recipe, device):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() == 2 and name != "model.lower_bounds" else no_decay).append(p)
    groups = [dict(params=decay, weight_decay=recipe["weight_decay"]),
              dict(params=no_decay, weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=recipe["lr"], betas=(0.9, 0.95), eps=1e-8,
                             fused=device.type == "cuda")


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_json(path, obj):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def train(recipe=None, data=None, out=None, device="auto", resume=False, progress=True, compile=None):
    """Train a model; returns the summary that is also written to ``out/train.json``.

    ``recipe``: options overriding :data:`DEFAULTS`. ``data``: the text file (default
    ``../shared/data/tinyshakespeare.txt``). ``out``: the output folder. With ``resume`` the run
    continues from ``out/checkpoint.pt``; its recipe is the checkpoint's, and only ``steps``,
    ``eval_every``, ``checkpoint_every`` and ``patience`` may be given different values (the cosine
    schedule follows the new ``steps``).

    ``compile`` (default: on CUDA only) runs the training forward and backward through
    ``torch.compile``, which fuses the many small elementwise kernels of the quantisers and the scan.
    On CUDA, matmuls use TF32: exact in the ternary forward (small integers times trits), rounded in
    the gradients and in a float twin's forward.
    """
    given = dict(recipe or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training option {unknown[0]!r}")
    if out is None:
        raise ValueError("an output folder is needed (--out)")
    out = Path(out)
    if data is None:
        data = DEFAULT_DATA
        if not data.is_file():
            raise ValueError(f"no --data given and the default {data} does not exist (relative to "
                             f"{Path.cwd()})")
    device = _device(device)
    if compile is None:
        compile = device.type == "cuda"
    ckpt_path = out / CHECKPOINT
    checkpoint = None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(2, "no such file (nothing to resume)", str(ckpt_path))
        try:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            recipe = dict(checkpoint["recipe"])
        except Exception as e:
            raise ValueError(f"{ckpt_path}: not a training checkpoint of this tool "
                             f"({type(e).__name__} while reading it)") from None
        for key, value in given.items():
            if key in _RESUMABLE:
                recipe[key] = value
            elif value != recipe[key]:
                raise ValueError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's "
                                 f"{recipe[key]} (a resumed run keeps its recipe)")
    else:
        if ckpt_path.exists() or (out / "train.json").exists():
            raise ValueError(f"{out} already holds a training run (use --resume, or another --out)")
        recipe = {**DEFAULTS, **given}
    check_recipe(recipe)
    train_data, val_data = load_corpus(data)
    if train_data.numel() < recipe["context"]:
        raise ValueError(f"{data}: the training split ({train_data.numel()} bytes) is shorter than "
                         f"--context {recipe['context']}")

    config = HGRNBitConfig(vocab_size=VOCAB_SIZE, hidden_size=recipe["hidden"],
                           num_hidden_layers=recipe["layers"], intermediate_size=recipe["intermediate"],
                           bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(recipe["seed"])
    model = HGRNBitForCausalLM(config)
    model.dropout = recipe["dropout"]
    generator = torch.Generator().manual_seed(recipe["seed"])
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    model.to(device)
    optimizer = _optimizer(model, recipe, device)
    state = dict(step=0, tokens=0, wall=0.0, best_val=None, best_step=None, history=[])
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])    # moves its state to the parameters' device
        state.update({k: checkpoint[k] for k in state})
        torch.set_rng_state(checkpoint["rng_torch"])
        generator.set_state(checkpoint["rng_data"])
        if device.type == "cuda" and checkpoint.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng_cuda"], device)
    out.mkdir(parents=True, exist_ok=True)

    data_info = dict(file=Path(data).name, sha256=_sha256(data), bytes=train_data.numel() + val_data.numel(),
                     train_bytes=train_data.numel(), val_bytes=val_data.numel())
    train_data = train_data.to(device) if device.type == "cuda" else train_data
    started = time.perf_counter()
    wall0 = state["wall"]

    def summary(final):
        return dict(
            model=dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
                       intermediate_size=config.intermediate, vocab_size=VOCAB_SIZE,
                       ternary_weights=config.ternary_weights,
                       parameters=sum(p.numel() for p in model.parameters())),
            quantised=not recipe["float"],
            recipe=recipe,
            data=data_info,
            validation=dict(
                method=f"whole validation split (last {VAL_FRACTION:.0%} of the bytes) in consecutive "
                       f"non-overlapping {VAL_WINDOW}-byte windows (the last one shorter), zero state at "
                       f"each window start, every byte predicted except the first of each window; "
                       f"mean nats per predicted byte",
                nats_per_byte=state["best_val"], best_step=state["best_step"],
                history=state["history"]),
            steps=state["step"], finished=final,
            tokens_seen=state["tokens"],
            wall_time_s=round(state["wall"], 1),
            device=_device_name(device),
            compiled=bool(compile),
            torch=torch.__version__,
            command=command_line(recipe, data, out),
        )

    def save_checkpoint():
        cp = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), recipe=recipe,
                  rng_torch=torch.get_rng_state(), rng_data=generator.get_state(),
                  rng_cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                  **state)
        tmp = out / (CHECKPOINT + ".tmp")
        torch.save(cp, tmp)
        os.replace(tmp, ckpt_path)

    def evaluate():
        val = validation_loss(model, val_data, batch_size=max(64, recipe["batch"]))
        state["history"].append([state["step"], round(val, 5)])
        improved = state["best_val"] is None or val < state["best_val"]
        if improved:
            state["best_val"], state["best_step"] = val, state["step"]
            model.save_pretrained(out)
        return val, improved

    steps = recipe["steps"]
    log_every = 10
    stack = contextlib.ExitStack()
    with stack:
        stack.enter_context(parallel_scan(model))
        if recipe["float"]:
            stack.enter_context(float_twin(model))
        if device.type == "cuda":
            stack.callback(torch.set_float32_matmul_precision, torch.get_float32_matmul_precision())
            torch.set_float32_matmul_precision("high")
        forward = torch.compile(model) if compile else model
        bar = tqdm(total=steps, initial=min(state["step"], steps), disable=not progress,
                   desc="float twin" if recipe["float"] else "train", unit="step", dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        model.train()
        loss_sum = torch.zeros((), device=device)
        t_log, tokens_log, n_log = time.perf_counter(), state["tokens"], 0
        stale = 0
        stop = False
        while state["step"] < steps and not stop:
            step = state["step"]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, recipe)
            ids = _batch(train_data, recipe["batch"], recipe["context"], generator, device)
            loss = forward(ids, labels=ids).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip"])
            optimizer.step()
            loss_sum += loss.detach()
            n_log += 1
            state["step"] = step + 1
            state["tokens"] += ids.numel()
            bar.update(1)
            if n_log == log_every or state["step"] == steps:
                now = time.perf_counter()
                rate = (state["tokens"] - tokens_log) / max(now - t_log, 1e-9)
                bar.set_postfix(loss=f"{float(loss_sum) / n_log:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
                loss_sum.zero_()
                t_log, tokens_log, n_log = now, state["tokens"], 0
            if state["step"] % recipe["eval_every"] == 0 or state["step"] == steps:
                state["wall"] = wall0 + time.perf_counter() - started
                val, improved = evaluate()
                stale = 0 if improved else stale + 1
                bar.write(f"step {state['step']}: validation {val:.4f} nats/byte"
                          f"{' (best)' if improved else ''}")
                if recipe["patience"] and stale >= recipe["patience"]:
                    bar.write(f"no improvement in {stale} evaluations: stopping")
                    stop = True
                _write_json(out / "train.json", summary(final=False))
            if state["step"] % recipe["checkpoint_every"] == 0 or state["step"] == steps or stop:
                state["wall"] = wall0 + time.perf_counter() - started
                save_checkpoint()
        bar.close()
    if state["best_val"] is None:        # resumed a run that had already finished its steps
        evaluate()
    state["wall"] = wall0 + time.perf_counter() - started
    result = summary(final=True)
    _write_json(out / "train.json", result)
    return result


# ---------------------------------------------------------------------------------------------------
# command line

def command_line(recipe, data, out):
    """The ``mmfree train`` command that trains ``recipe`` (every option spelled out)."""
    words = ["mmfree", "train", "--data", str(data), "--out", str(out)]
    for key, value in recipe.items():
        if key == "float":
            words += ["--float"] if value else []
        else:
            words += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(words)


def _run(args):
    recipe = {}
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None and value is not False:
            recipe[key] = value
    if not args.resume:
        recipe.setdefault("float", False)
    result = train(recipe, data=args.data, out=args.out, device=args.device, resume=args.resume,
                   progress=not args.quiet, compile=False if args.no_compile else None)
    v = result["validation"]
    kind = "float twin" if not result["quantised"] else "ternary"
    print(f"{args.out}: {kind} model, {result['model']['ternary_weights']:,} ternary weights, "
          f"{result['steps']} steps, best validation {v['nats_per_byte']:.4f} nats/byte "
          f"(step {v['best_step']}), {result['wall_time_s']:.0f} s on {result['device']}")
    return 0


def register(sub):
    d = DEFAULTS
    p = sub.add_parser(
        "train", help="train a byte-level model on a text file (quantisation-aware)",
        description="Train an HGRNBit model from scratch on the bytes of a text file, with ternary "
                    "weights and 8-bit activations in the forward pass (straight-through gradients). "
                    "Writes a Hugging Face format folder holding the best model by validation loss, "
                    "train.json and a checkpoint to resume from.")
    p.add_argument("--data", metavar="FILE", help=f"text file (default {DEFAULT_DATA}); its last 10%% "
                   f"of bytes is the validation split")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder")
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int, metavar="N", help=f"hidden size H (default {d['hidden']})")
    g.add_argument("--layers", type=int, metavar="N", help=f"layers L (default {d['layers']})")
    g.add_argument("--intermediate", type=int, metavar="N",
                   help=f"GLU width I (default {d['intermediate']})")
    g.add_argument("--float", action="store_true", default=None,
                   help="train the float twin: no quantisation (to measure what ternary weights cost)")
    g = p.add_argument_group("recipe")
    g.add_argument("--steps", type=int, metavar="N", help=f"optimiser steps (default {d['steps']})")
    g.add_argument("--batch", type=int, metavar="N", help=f"windows per step (default {d['batch']})")
    g.add_argument("--context", type=int, metavar="N",
                   help=f"bytes per training window (default {d['context']})")
    g.add_argument("--lr", type=float, metavar="X", help=f"peak learning rate (default {d['lr']})")
    g.add_argument("--min-lr-ratio", type=float, metavar="X",
                   help=f"final learning rate as a fraction of --lr (default {d['min_lr_ratio']})")
    g.add_argument("--warmup", type=int, metavar="N", help=f"warm-up steps (default {d['warmup']})")
    g.add_argument("--weight-decay", type=float, metavar="X",
                   help=f"AdamW weight decay of the matrices (default {d['weight_decay']})")
    g.add_argument("--clip", type=float, metavar="X",
                   help=f"gradient clipping, global norm (default {d['clip']})")
    g.add_argument("--dropout", type=float, metavar="X", help=f"dropout (default {d['dropout']})")
    g.add_argument("--seed", type=int, metavar="N", help=f"random seed (default {d['seed']})")
    g = p.add_argument_group("run")
    g.add_argument("--eval-every", type=int, metavar="N",
                   help=f"steps between validations (default {d['eval_every']})")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help=f"steps between checkpoints (default {d['checkpoint_every']})")
    g.add_argument("--patience", type=int, metavar="N",
                   help="stop after N validations without improvement (default 0: never)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (default auto: cuda when available)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (same recipe)")
    g.add_argument("--no-compile", action="store_true",
                   help="do not use torch.compile (it is used on CUDA by default, never on CPU)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
