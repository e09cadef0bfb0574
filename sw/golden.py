"""The integer golden model: the bit-exact definition of what the hardware computes.

Every operation is one of :mod:`mmfree.numerics`; this module only wires them in the order of one
token of the MatMul-free LM. The parameters are a :class:`QuantizedModel` (what a weight image holds),
built from a float model by :func:`quantize_model` or read from an image by :mod:`mmfree.image`.

The ternary products are exact integer sums of int8 codes with trits. They are evaluated with a float32
matrix product, which is exact here because every partial sum is an integer below 2**24 (checked).

Several independent sequences (a batch of streams) can run side by side; each has its own state.
"""

from dataclasses import dataclass, field
import math

import torch

from . import numerics as nx
from .numerics import ACT, STATE, GATE, PFloat

__all__ = ["BFP16", "TernaryMatrix", "QuantizedModel", "quantize_model", "GoldenModel", "ModelShape"]


@dataclass
class BFP16:
    """int16 mantissas sharing one exponent: ``value = mant * 2**-exp``."""

    mant: torch.Tensor
    exp: int

    @classmethod
    def encode(cls, t):
        return cls(*nx.bfp16_encode(t.detach().float()))


@dataclass
class TernaryMatrix:
    """One BitLinear: trits ``[out, in]`` (int8), weight scale ``m`` and the layer's own RMSNorm weight."""

    trits: torch.Tensor
    m: PFloat
    norm: BFP16
    _f32: torch.Tensor = field(default=None, repr=False, compare=False)

    @property
    def shape(self):
        return tuple(self.trits.shape)

    def matvec(self, codes):
        """``codes [B, K]`` int64 -> accumulators ``[B, N]`` int64 (exact)."""
        if self._f32 is None:
            self._f32 = self.trits.to(torch.float32)
        return (codes.to(torch.float32) @ self._f32.T).to(torch.int64)


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int

    @property
    def ternary_weights(self):
        H, I, L, V = self.hidden_size, self.intermediate_size, self.num_layers, self.vocab_size
        return L * (4 * H * H + 3 * H * I) + V * H


@dataclass
class QuantizedModel:
    """All parameters of the integer model, named after the checkpoint's modules.

    ``embeddings``: BFP16 ``[V, H]``; ``norm``: BFP16 ``[H]``; ``lm_head``: TernaryMatrix;
    ``layers``: one dict per layer with ``attn_norm``, ``g_norm``, ``mlp_norm`` (BFP16 ``[H]``),
    ``lower_bound`` (GATE codes ``[H]``), ``i_proj``, ``f_proj``, ``g_proj``, ``o_proj``, ``gate_proj``,
    ``down_proj`` (TernaryMatrix).
    """

    shape: ModelShape
    embeddings: BFP16
    layers: list
    norm: BFP16
    lm_head: TernaryMatrix

    PROJECTIONS = ("i_proj", "f_proj", "g_proj", "o_proj", "gate_proj", "down_proj")
    NORMS = ("attn_norm", "g_norm", "mlp_norm")


def _ternary(bitlinear):
    with torch.no_grad():
        trits, m = bitlinear.quantized_weight()
    trits = trits.detach().to(torch.int8).cpu()
    return TernaryMatrix(trits, nx.pf_from_float(float(m)), BFP16.encode(bitlinear.norm.weight))


def quantize_model(model):
    """The :class:`QuantizedModel` of a float :class:`~mmfree.model.HGRNBitForCausalLM`."""
    from .model.modeling import lower_bounds_schedule
    cfg = model.config
    shape = ModelShape(cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate)
    base = model.model
    with torch.no_grad():
        lb = lower_bounds_schedule(base.lower_bounds.detach().cpu())
    layers = []
    for l, block in enumerate(base.layers):
        layers.append(dict(
            attn_norm=BFP16.encode(block.attn_norm.weight),
            lower_bound=nx.gate_encode(lb[l]),
            i_proj=_ternary(block.attn.i_proj), f_proj=_ternary(block.attn.f_proj),
            g_proj=_ternary(block.attn.g_proj), o_proj=_ternary(block.attn.o_proj),
            g_norm=BFP16.encode(block.attn.g_norm.weight),
            mlp_norm=BFP16.encode(block.mlp_norm.weight),
            gate_proj=_ternary(block.mlp.gate_proj), down_proj=_ternary(block.mlp.down_proj),
        ))
    return QuantizedModel(shape, BFP16.encode(base.embeddings.weight), layers,
                          BFP16.encode(base.norm.weight), _ternary(model.lm_head))


def bitlinear(v, proj, ss=None):
    """One BitLinear on ACT vectors ``v [B, K]`` (the RMSNorm's input); returns ACT ``[B, N]``.

    ``ss`` (sum of squares of ``v`` per vector) may be passed when several projections share ``v``.
    """
    z = v * proj.norm.mant.long()
    codes, zmax = nx.quantize_activations(z)
    acc = proj.matvec(codes)
    if ss is None:
        ss = (v * v).sum(-1)
    out = torch.empty_like(acc)
    for b in range(v.shape[0]):
        scale = nx.output_scale(int(zmax[b]), ACT.frac + proj.norm.exp, int(ss[b]), v.shape[-1], proj.m)
        out[b] = nx.rescale(acc[b], scale)
    return out


class GoldenModel:
    """Token-by-token integer inference.

    ``step(token)`` feeds one token (an int, or a ``[B]`` tensor for ``B`` streams) and returns
    ``(logits, next_token)``: logits as ACT codes (int64, ``[V]`` or ``[B, V]``), next token by argmax
    (lowest index on ties). ``logits_float`` converts them. With ``trace=True`` the last step's
    intermediate values are kept in ``self.trace`` (name -> tensor) for finding divergences.
    """

    def __init__(self, qmodel, batch=1):
        if not isinstance(qmodel, QuantizedModel):
            raise TypeError(f"qmodel must be a QuantizedModel, not {type(qmodel).__name__}")
        self.q = qmodel
        self.shape = qmodel.shape
        limit = (1 << 24) // 127
        widest = max(self.shape.hidden_size, self.shape.intermediate_size)
        if widest > limit:
            raise ValueError(f"rows of {widest} inputs exceed the exact range of the ternary products "
                             f"({limit})")
        self.batch = batch
        self.trace = None
        self.reset()

    @classmethod
    def from_float(cls, model, batch=1):
        return cls(quantize_model(model), batch)

    @classmethod
    def from_pretrained(cls, folder, batch=1):
        from .model import HGRNBitForCausalLM
        return cls.from_float(HGRNBitForCausalLM.from_pretrained(folder), batch)

    def reset(self, batch=None):
        """Zero the recurrent state of every layer (start of a new sequence)."""
        if batch is not None:
            self.batch = batch
        self.state = torch.zeros(self.shape.num_layers, self.batch, self.shape.hidden_size,
                                 dtype=torch.int64)

    def _record(self, name, value):
        if self.trace is not None:
            self.trace[name] = value.clone()

    def step(self, token, trace=False):
        single = not isinstance(token, torch.Tensor) or token.dim() == 0
        tokens = torch.as_tensor(token, dtype=torch.int64).reshape(-1)
        if tokens.numel() != self.batch:
            raise ValueError(f"step got {tokens.numel()} tokens for {self.batch} streams")
        if bool(((tokens < 0) | (tokens >= self.shape.vocab_size)).any()):
            raise ValueError(f"token id out of range 0..{self.shape.vocab_size - 1}")
        self.trace = {} if trace else None
        q, I = self.q, self.shape.intermediate_size

        x = nx.embedding_to_act(q.embeddings.mant[tokens], q.embeddings.exp)
        self._record("embeddings", x)
        for l, p in enumerate(q.layers):
            v = nx.apply_norm_weight(x, p["attn_norm"].mant, p["attn_norm"].exp)
            ss = (v * v).sum(-1)
            y_i, y_f, y_g = (bitlinear(v, p[k], ss) for k in ("i_proj", "f_proj", "g_proj"))
            f = nx.lower_bound_blend(p["lower_bound"], nx.sigmoid(y_f))
            c = nx.silu(y_i)
            h = nx.state_update(self.state[l], f, c)
            self.state[l] = h
            o_in = nx.mul_act(nx.apply_norm_weight(y_g, p["g_norm"].mant, p["g_norm"].exp), nx.silu_state(h))
            x = ACT.saturate(x + bitlinear(o_in, p["o_proj"]))
            self._record(f"layers.{l}.attn.f", f)
            self._record(f"layers.{l}.attn.c", c)
            self._record(f"layers.{l}.attn.h", h)
            self._record(f"layers.{l}.attn.o_in", o_in)
            self._record(f"layers.{l}.attn_out", x)
            v = nx.apply_norm_weight(x, p["mlp_norm"].mant, p["mlp_norm"].exp)
            u = bitlinear(v, p["gate_proj"])
            glu = nx.mul_act(nx.silu(u[:, :I]), u[:, I:])
            x = ACT.saturate(x + bitlinear(glu, p["down_proj"]))
            self._record(f"layers.{l}.mlp.glu", glu)
            self._record(f"layers.{l}.out", x)
        v = nx.apply_norm_weight(x, q.norm.mant, q.norm.exp)
        self._record("final_norm", v)
        logits = bitlinear(v, q.lm_head)
        self._record("logits", logits)
        nxt = torch.tensor([nx.argmax(row) for row in logits])
        if single:
            return logits[0], int(nxt[0])
        return logits, nxt

    @staticmethod
    def logits_float(logits):
        return ACT.to_float(logits)

    def prefill(self, tokens):
        """Feed a prompt (a list of ints for one stream); returns the last ``(logits, next_token)``."""
        if len(tokens) == 0:
            raise ValueError("the prompt is empty")
        out = None
        for t in tokens:
            out = self.step(int(t))
        return out

    def generate(self, prompt, n, temperature=0.0, top_k=None, seed=0):
        """Yields ``n`` token ids after ``prompt`` (one stream, state reset first).

        Tokens are picked by the device sampler (:mod:`mmfree.sampler`: greedy at temperature 0,
        otherwise integer softmax sampling from a seeded LFSR), so a device given the same temperature,
        top-k and seed produces the same tokens.
        """
        from .sampler import Sampler, temperature_code
        sampler = Sampler(temperature_code(temperature), top_k or 0, seed)
        self.reset(1)
        logits, _ = self.prefill(prompt)
        for _ in range(n):
            token = sampler.pick(logits)
            yield token
            logits, _ = self.step(token)
