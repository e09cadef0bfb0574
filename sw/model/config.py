"""HGRNBit configuration, compatible with the ``config.json`` of the published MMfreeLM checkpoints."""

import json
import math
from pathlib import Path

__all__ = ["HGRNBitConfig", "ConfigError"]


class ConfigError(ValueError):
    """A configuration that this implementation cannot honour."""


_DEFAULTS = dict(
    vocab_size=32000,
    hidden_size=2048,
    num_hidden_layers=24,
    attn_mode="fused_recurrent",
    num_heads=1,
    expand_ratio=1,
    use_short_conv=False,
    conv_size=4,
    share_conv_kernel=True,
    use_lower_bound=True,
    hidden_ratio=4,
    intermediate_size=None,
    hidden_act="swish",
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    use_cache=True,
    pad_token_id=None,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
    initializer_range=0.02,
    fuse_cross_entropy=True,
)


class HGRNBitConfig:
    """Model hyper-parameters (``model_type = "hgrn_bit"``).

    Unknown keys are kept (so that a round trip preserves them) and otherwise ignored.
    Options this implementation does not implement are refused with :class:`ConfigError`
    naming the option.
    """

    model_type = "hgrn_bit"

    def __init__(self, **kwargs):
        self.extra = {}
        for key, default in _DEFAULTS.items():
            setattr(self, key, kwargs.pop(key, default))
        kwargs.pop("model_type", None)
        self.extra = kwargs
        self.validate()

    def validate(self):
        def positive_int(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config option {name} must be a positive integer, not {value!r}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers"):
            positive_int(name)
        if self.use_short_conv:
            raise ConfigError("config option use_short_conv=true is not supported (only false)")
        if self.num_heads != 1:
            raise ConfigError(f"config option num_heads={self.num_heads!r} is not supported (only 1)")
        if self.expand_ratio != 1:
            raise ConfigError(f"config option expand_ratio={self.expand_ratio!r} is not supported (only 1)")
        if not self.use_lower_bound:
            raise ConfigError("config option use_lower_bound=false is not supported (only true)")
        if self.tie_word_embeddings:
            raise ConfigError("config option tie_word_embeddings=true is not supported (only false)")
        if self.attn_mode not in ("fused_recurrent", "chunk", "fused_chunk"):
            raise ConfigError(f"config option attn_mode={self.attn_mode!r} is not supported")
        if self.intermediate_size is not None:
            positive_int("intermediate_size")
        if not (isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0):
            raise ConfigError(f"config option rms_norm_eps must be a positive number, not {self.rms_norm_eps!r}")

    @property
    def intermediate(self):
        """The GLU width ``I`` (``intermediate_size`` or the size derived from ``hidden_ratio``)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return 256 * math.ceil(int(self.hidden_size * self.hidden_ratio * 2 / 3) / 256)

    @property
    def ternary_weights(self):
        """Ternary weights used per token: ``L (4 H^2 + 3 H I) + V H``."""
        H, I = self.hidden_size, self.intermediate
        return self.num_hidden_layers * (4 * H * H + 3 * H * I) + self.vocab_size * H

    def to_dict(self):
        d = {key: getattr(self, key) for key in _DEFAULTS}
        d.update(self.extra)
        d["model_type"] = self.model_type
        return d

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError("config.json must hold a JSON object")
        mt = d.get("model_type", cls.model_type)
        if mt != cls.model_type:
            raise ConfigError(f"config option model_type={mt!r} is not supported (only 'hgrn_bit')")
        return cls(**d)

    @classmethod
    def from_json_file(cls, path):
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(d)

    def to_json_file(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def __eq__(self, other):
        return isinstance(other, HGRNBitConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return (f"HGRNBitConfig(vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, "
                f"num_hidden_layers={self.num_hidden_layers}, intermediate={self.intermediate})")
