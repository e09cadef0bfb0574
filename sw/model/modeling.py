"""Float reference of the MatMul-free LM (HGRNBit), in plain PyTorch on any device.

Follows the published implementation's semantics exactly (see docs/architecture.md): every projection
is a BitLinear with its own RMSNorm, 8-bit absmax activations rounded half away from zero, absmean
ternary weights with one scale per tensor; the token mixer is the MLGRU with learned lower bounds and
the channel mixer is a SiLU GLU. Arithmetic is fp32 whatever dtype the parameters are stored in.

Training uses the same forward: the roundings pass gradients straight through (identity backward).
"""

from dataclasses import dataclass
import math

import torch
from torch import nn
import torch.nn.functional as F

from .config import HGRNBitConfig

__all__ = ["HGRNBitForCausalLM", "HGRNBitModel", "BitLinear", "CausalLMOutput",
           "weight_quant", "activation_quant", "round_half_away"]

_NORM_EPS = 1e-6      # the fused BitLinear forward uses 1e-6 whatever the module's eps says
_ACT_EPS = 1e-5
_W_EPS = 1e-5


def round_half_away(x):
    """Round to nearest, ties away from zero."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _ste(x, q):
    """``q`` in the forward pass, identity gradient to ``x`` in the backward pass."""
    return x + (q - x).detach() if x.requires_grad else q


def rms_norm(x, weight, eps=_NORM_EPS):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def activation_quant(x):
    """Per-token 8-bit absmax quantisation. Returns ``(codes, scale)``: ``x ~= codes * scale``."""
    a = x.detach().abs().amax(-1, keepdim=True).clamp(min=_ACT_EPS)
    codes = torch.clamp(round_half_away(x * (127.0 / a)), -128, 127)
    return _ste(x * (127.0 / a), codes), a / 127.0


def weight_quant(w):
    """Absmean ternary quantisation, one scale for the whole tensor. Returns ``(trits, m)``."""
    w = w.float()
    m = w.detach().abs().mean().clamp(min=_W_EPS)
    trits = torch.clamp(torch.round(w / m), -1, 1)     # torch.round: half to even
    return _ste(w / m, trits), m


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class BitLinear(nn.Module):
    """``y = (q_x @ q_w^T) * (a / 127) * m``, preceded by the layer's own RMSNorm."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.norm = RMSNorm(in_features, eps=1e-8)
        self._cache = None

    def train(self, mode=True):
        # Optimisers that update parameters in place without bumping the version counter (fused
        # AdamW) would otherwise leave a stale cache; every train()/eval() switch drops it.
        self._cache = None
        return super().train(mode)

    def quantized_weight(self):
        """``(trits [out, in] float, m)`` of the current latent weight; cached while it is unchanged
        (same storage and version) and dropped at every ``train()``/``eval()`` switch."""
        if self.weight.requires_grad and torch.is_grad_enabled():
            return weight_quant(self.weight)
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype, self.weight.device)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, *weight_quant(self.weight))
        return self._cache[1], self._cache[2]

    def forward(self, x):
        x_n = rms_norm(x, self.norm.weight, _NORM_EPS)
        q_x, s_x = activation_quant(x_n)
        q_w, m = self.quantized_weight()
        return F.linear(q_x, q_w) * (s_x * m)


def lower_bounds_schedule(p):
    """``lb[l] = cumsum(softmax(P, 0))[l] - softmax(P, 0)[0]``: ``lb[0] = 0``, growing with depth."""
    s = torch.softmax(p.float(), dim=0)
    return torch.cumsum(s, dim=0) - s[0]


class MLGRU(nn.Module):
    """The token mixer: ``h_t = f h_{t-1} + (1 - f) c``, ``y = o_proj(rmsnorm(g) * w * silu(h_t))``."""

    def __init__(self, hidden_size):
        super().__init__()
        self.i_proj = BitLinear(hidden_size, hidden_size)
        self.f_proj = BitLinear(hidden_size, hidden_size)
        self.g_proj = BitLinear(hidden_size, hidden_size)
        self.g_norm = RMSNorm(hidden_size)
        self.o_proj = BitLinear(hidden_size, hidden_size)

    def forward(self, x, lower_bound, state):
        """``x [B, T, H]``; ``lower_bound [H]`` or None (layer 0); ``state [B, H]`` or None."""
        f = torch.sigmoid(self.f_proj(x))
        if lower_bound is not None:
            f = lower_bound + (1 - lower_bound) * f
        c = F.silu(self.i_proj(x))
        g = self.g_proj(x)
        h = state if state is not None else torch.zeros_like(c[:, 0])
        hs = []
        for t in range(x.shape[1]):
            h = f[:, t] * h + (1 - f[:, t]) * c[:, t]
            hs.append(h)
        hs = torch.stack(hs, dim=1)
        y = rms_norm(g, self.g_norm.weight) * F.silu(hs)
        return self.o_proj(y), h


class GLU(nn.Module):
    """The channel mixer: ``down_proj(silu(gate) * up)`` with ``gate, up = split(gate_proj(x))``."""

    def __init__(self, hidden_size, intermediate_size):
        super().__init__()
        self.intermediate_size = intermediate_size
        self.gate_proj = BitLinear(hidden_size, 2 * intermediate_size)
        self.down_proj = BitLinear(intermediate_size, hidden_size)

    def forward(self, x):
        gate, up = self.gate_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class HGRNBitBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        H = config.hidden_size
        self.attn_norm = RMSNorm(H, config.rms_norm_eps)
        self.attn = MLGRU(H)
        self.mlp_norm = RMSNorm(H, config.rms_norm_eps)
        self.mlp = GLU(H, config.intermediate)

    def forward(self, x, lower_bound, state, dropout=0.0):
        y, state = self.attn(self.attn_norm(x), lower_bound, state)
        s = x + F.dropout(y, dropout, self.training)
        return s + F.dropout(self.mlp(self.mlp_norm(s)), dropout, self.training), state


class HGRNBitModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        H, L = config.hidden_size, config.num_hidden_layers
        self.embeddings = nn.Embedding(config.vocab_size, H)
        self.lower_bounds = nn.Parameter(torch.zeros(L, H))
        self.layers = nn.ModuleList(HGRNBitBlock(config) for _ in range(L))
        self.norm = RMSNorm(H, config.rms_norm_eps)

    def forward(self, input_ids, state=None, dropout=0.0):
        x = self.embeddings(input_ids).float()
        x = F.dropout(x, dropout, self.training)
        lb = lower_bounds_schedule(self.lower_bounds)
        new_state = []
        for l, layer in enumerate(self.layers):
            x, h = layer(x, lb[l] if l > 0 else None, None if state is None else state[l], dropout)
            new_state.append(h)
        return rms_norm(x, self.norm.weight, self.config.rms_norm_eps), new_state


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    loss: torch.Tensor = None
    state: list = None
    """Recurrent state after the last position: one ``[B, H]`` tensor per layer."""

    @property
    def past_key_values(self):
        return self.state


class HGRNBitForCausalLM(nn.Module):
    """The whole language model; ``model(input_ids).logits`` is ``[B, T, V]``.

    Pass ``state=`` (the ``.state`` of an earlier output) to continue a sequence recurrently:
    running a sequence in pieces gives the same logits as running it whole.
    """

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, HGRNBitConfig):
            raise TypeError(f"config must be an HGRNBitConfig, not {type(config).__name__}")
        self.config = config
        self.model = HGRNBitModel(config)
        self.lm_head = BitLinear(config.hidden_size, config.vocab_size)
        self.dropout = 0.0
        self.reset_parameters()

    def reset_parameters(self):
        """The reference initialisation."""
        std = self.config.initializer_range
        L = self.config.num_hidden_layers
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, RMSNorm):
                    module.weight.fill_(1.0)
                elif isinstance(module, nn.Embedding):
                    module.weight.normal_(0.0, std)
                elif isinstance(module, BitLinear):
                    if name.split(".")[-1] in ("i_proj", "f_proj", "g_proj", "o_proj"):
                        nn.init.xavier_uniform_(module.weight, gain=2 ** -2.5)
                    else:
                        module.weight.normal_(0.0, std)
                        if name.endswith("down_proj"):
                            module.weight.div_(math.sqrt(2 * L))
            self.model.lower_bounds.zero_()

    def forward(self, input_ids, labels=None, state=None):
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, time], not {list(input_ids.shape)}")
        h, new_state = self.model(input_ids, state, self.dropout)
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(logits=logits, loss=loss, state=new_state)

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens, temperature=0.0, top_k=None, generator=None,
                 state=None):
        """Greedy (``temperature=0``) or sampled decoding, recurrent: one token per step.

        Yields token ids ``[B]`` as they are produced.
        """
        out = self(input_ids, state=state)
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1]
            token = sample_logits(logits, temperature, top_k, generator)
            yield token
            out = self(token[:, None], state=out.state)

    # Hugging Face format ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder, torch_dtype=None):
        from .io import load_pretrained
        return load_pretrained(cls, folder, torch_dtype)

    def save_pretrained(self, folder, safe_serialization=True):
        from .io import save_pretrained
        save_pretrained(self, folder)


def sample_logits(logits, temperature=0.0, top_k=None, generator=None):
    """Next token ids ``[B]`` from logits ``[B, V]``: argmax when ``temperature == 0``."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
