"""The accelerator's hardware configuration: every size that is fixed when the gateware is generated.

A :class:`HwConfig` says how many ternary lanes the core has and how large a model its memories hold.
Any model whose shape and image fit it runs on the same gateware: the model's own shape is read from
the SCALARS region at run time (see :mod:`mmfree.memory_map`).

>>> cfg = HwConfig.for_model(ModelShape(vocab_size=256, hidden_size=64, num_layers=2,
...                                     intermediate_size=256), lanes=32)
>>> cfg.trit_words, cfg.param_words
(3277, 18048)
"""

from dataclasses import dataclass, asdict, fields

from mmfree import memory_map
from mmfree.golden import ModelShape
from mmfree.memory_map import MAX_ROWS, MemoryMapError
from .ternary import MAX_LANES

__all__ = ["HwConfig", "ARCHS", "PRESETS", "TINY_SHAPE", "DEMO_SHAPE", "DEMO_CLOCK_HZ", "COMPACT_CLOCK_HZ", "MemoryMapError"]

def _bundled_shape(name):
    """The shape of a model shipped in the package, read from its own ``config.json``."""
    from mmfree.model.config import HGRNBitConfig
    from mmfree.registry import BUNDLED_DIR
    cfg = HGRNBitConfig.from_json_file(BUNDLED_DIR / name / "config.json")
    return ModelShape(cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate)


TINY_SHAPE = _bundled_shape("tiny")
"""The bundled ``tiny`` model (H=64, L=2, I=256: about 150 k ternary weights)."""
DEMO_SHAPE = _bundled_shape("demo")
"""The bundled ``demo`` model (H=160, L=4, I=512: 1,433,600 ternary weights). Its row lengths 160 and
512 have the common power-of-two divisor 32, so it runs on at most 32 lanes a row unit (its presets:
four row units, 128 lanes)."""

ARCHS = ("core", "compact")
"""The accelerator architectures a configuration can be built as: ``"core"``
(:class:`~mmfree.hw.accelerator.Accelerator`: the whole token in gateware) and ``"compact"``
(:class:`~mmfree.hw.soc.CompactAccelerator`: a small processor running the model in firmware beside a
ternary unit, for the iCE40UP5K); :func:`~mmfree.hw.accelerator.make_accelerator` makes either."""

MAX_LAYERS = 1024
MAX_VOCAB = 1 << 20
_MAX_ROW = (1 << 24) // 127          # longest row the quantiser and the exact accumulators accept


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class HwConfig:
    """Sizes of one accelerator build.

    Parameters
    ----------
    max_hidden, max_layers, max_intermediate, max_vocab : int
        The largest model shape the core runs: ``H``, ``L``, ``I``, ``V``. ``max_hidden`` and
        ``max_intermediate`` must be multiples of ``lanes``.
    trit_bytes : int
        Capacity of the TRITS region in bytes (a multiple of :attr:`trit_word_bytes`).
    param_words : int
        Capacity of the PARAMS region in 16-bit words.
    lanes : int
        ``P``, the ternary weights consumed per clock: a power of two, at least 4. Every row length of a
        model (``H`` and ``I``) must be a multiple of it.
    clk_freq : int
        The clock the design is built for, in Hz. The core does not depend on it; it is part of the
        configuration so that the host link and the build manifest agree on it.
    arch : str
        Which accelerator the configuration is built as (:data:`ARCHS`): ``"core"`` (the default) or
        ``"compact"``. Both read the same memory regions and answer the same protocol.
    rows : int
        ``R``, the *row units*: rows of a matrix computed at once, each on its own ``lanes`` lanes
        (``R P`` ternary weights a clock in all, :attr:`total_lanes`). A power of two from 1 (the
        default) to :data:`MAX_ROWS`; every matrix of a model (``H``, ``2 I`` and ``V`` rows) must have
        a multiple of ``R`` rows. TRITS then holds ``R`` streams side by side
        (:mod:`mmfree.memory_map`). Only the ``"core"`` architecture has more than one.

    Memory words (what the write ports of :class:`~mmfree.hw.core.Core` take): TRITS
    :attr:`trit_word_bytes` bytes of base-3 trits (:func:`~mmfree.memory_map.trit_word_bytes`: 72 bits
    up to 45 lanes), PARAMS 16 bits, GATES 17 bits (the GATE code; the region's 32-bit words hold it
    zero-extended), SCALARS 32 bits.
    """

    max_hidden: int
    max_layers: int
    max_intermediate: int
    max_vocab: int
    trit_bytes: int
    param_words: int
    lanes: int = 32
    clk_freq: int = 50_000_000
    arch: str = "core"
    rows: int = 1

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(map(repr, ARCHS))}, not {self.arch!r}")
        for f in fields(self):
            if f.name == "arch":
                continue
            value = getattr(self, f.name)
            if not _is_int(value):
                raise TypeError(f"{f.name} must be an int, not {value!r}")
            if value < 1:
                raise ValueError(f"{f.name} must be positive, not {value}")
        R = self.rows
        memory_map.check_rows(R)
        if R > 1 and self.arch != "core":
            raise ValueError(f"the {self.arch} architecture has one row unit, not {R}")
        for name in ("max_hidden", "max_vocab"):
            if getattr(self, name) % R:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of rows ({R})")
        P = self.lanes
        if P < 4 or P > MAX_LANES or P & (P - 1):
            raise ValueError(f"lanes must be a power of two from 4 to {MAX_LANES}, not {P}")
        for name in ("max_hidden", "max_intermediate"):
            value = getattr(self, name)
            if value % P:
                raise ValueError(f"{name} ({value}) must be a multiple of lanes ({P})")
            if value > _MAX_ROW:
                raise ValueError(f"{name} must be at most {_MAX_ROW}, not {value}")
        if self.max_layers > MAX_LAYERS:
            raise ValueError(f"max_layers must be at most {MAX_LAYERS}, not {self.max_layers}")
        if self.max_vocab > MAX_VOCAB:
            raise ValueError(f"max_vocab must be at most {MAX_VOCAB}, not {self.max_vocab}")
        if self.trit_bytes % self.trit_word_bytes:
            raise ValueError(f"trit_bytes ({self.trit_bytes}) must be a multiple of "
                             f"{self.trit_word_bytes} bytes (one TRITS word)")

    # --- derived sizes ---------------------------------------------------------------------------

    @property
    def lanes_log2(self):
        return self.lanes.bit_length() - 1

    @property
    def total_lanes(self):
        """Ternary weights a clock in all: ``lanes * rows``."""
        return self.lanes * self.rows

    @property
    def trit_word_bytes(self):
        """Bytes per TRITS word: :func:`mmfree.memory_map.trit_word_bytes` of ``lanes`` and ``rows``."""
        return memory_map.trit_word_bytes(self.lanes, self.rows)

    @property
    def trit_word_bits(self):
        """Width of the TRITS memory: ``8 * trit_word_bytes``."""
        return 8 * self.trit_word_bytes

    @property
    def trits_per_word(self):
        """Trits in one TRITS word (:data:`mmfree.memory_map.TRITS_PER_BYTE` a byte)."""
        return memory_map.TRITS_PER_BYTE * self.trit_word_bytes

    @property
    def trit_words(self):
        """Depth of the TRITS memory (words of :attr:`trit_word_bits`)."""
        return self.trit_bytes // self.trit_word_bytes

    @property
    def gate_words(self):
        """Depth of the GATES memory: ``max_layers * max_hidden``."""
        return self.max_layers * self.max_hidden

    @property
    def scalar_words(self):
        """Depth of the SCALARS memory: the descriptor and every exponent and scale of ``max_layers``."""
        return 4 + len(memory_map.scalar_names(ModelShape(1, 1, self.max_layers, 1)))

    @property
    def max_k(self):
        """The longest vector a projection reads: ``max(max_hidden, max_intermediate)``."""
        return max(self.max_hidden, self.max_intermediate)

    @property
    def y_depth(self):
        """Depth of the projection-output buffer: ``max(3 H, 2 I, V)``."""
        return max(3 * self.max_hidden, 2 * self.max_intermediate, self.max_vocab)

    @property
    def memory_bits(self):
        """Bits of every memory of the core, by name (model regions and internal buffers)."""
        return {
            "trits": self.trit_words * self.trit_word_bits,
            "params": self.param_words * 16,
            "gates": self.gate_words * 17,
            "scalars": self.scalar_words * 32,
            "x": self.max_hidden * 24,
            "v": self.max_k * 24,
            "y": self.y_depth * 24,
            "state": self.gate_words * 32,
        }

    # --- models ----------------------------------------------------------------------------------

    def problems(self, shape):
        """Why a model of ``shape`` (:class:`~mmfree.golden.ModelShape`) does not fit; empty if it does."""
        out = []
        H, L, I, V = shape.hidden_size, shape.num_layers, shape.intermediate_size, shape.vocab_size
        for what, value, limit in (("hidden size", H, self.max_hidden), ("layers", L, self.max_layers),
                                   ("intermediate size", I, self.max_intermediate),
                                   ("vocabulary", V, self.max_vocab)):
            if value > limit:
                out.append(f"{what} {value} exceeds the configured {limit}")
        for what, value in (("hidden size", H), ("intermediate size", I)):
            if value % self.lanes:
                out.append(f"{what} {value} is not a multiple of {self.lanes} lanes")
        for what, value in (("hidden size", H), ("twice the intermediate size", 2 * I),
                            ("vocabulary", V)):
            if value % self.rows:
                out.append(f"{what} {value} is not a multiple of {self.rows} row units")
        if not out:
            sizes = memory_map.region_sizes(shape, self.lanes, self.rows)
            need = sizes[memory_map.REGION_TRITS]
            if need > self.trit_bytes:
                out.append(f"the trits need {need} bytes, the device holds {self.trit_bytes}")
            need = sizes[memory_map.REGION_PARAMS] // 2
            if need > self.param_words:
                out.append(f"the params need {need} words, the device holds {self.param_words}")
        return out

    def fits(self, shape):
        return not self.problems(shape)

    def check(self, shape):
        """Raise :class:`~mmfree.memory_map.MemoryMapError` naming every reason ``shape`` does not fit."""
        problems = self.problems(shape)
        if problems:
            raise MemoryMapError("the model does not fit the hardware: " + "; ".join(problems))

    @classmethod
    def for_model(cls, shape, lanes=32, rows=1, **kwargs):
        """The smallest configuration that holds a model of ``shape`` exactly."""
        sizes = memory_map.region_sizes(shape, lanes, rows)    # checks lanes and rows against the shape
        return cls(max_hidden=shape.hidden_size, max_layers=shape.num_layers,
                   max_intermediate=shape.intermediate_size, max_vocab=shape.vocab_size,
                   trit_bytes=sizes[memory_map.REGION_TRITS],
                   param_words=sizes[memory_map.REGION_PARAMS] // 2, lanes=lanes, rows=rows, **kwargs)

    @classmethod
    def preset(cls, name):
        """A named configuration from :data:`PRESETS`."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"no hardware preset {name!r} (presets: {', '.join(PRESETS)})") from None

    def to_dict(self):
        """Plain values (for a build manifest); :meth:`from_dict` reads them back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown hardware configuration keys: {', '.join(sorted(unknown))}")
        return cls(**values)


DEMO_CLOCK_HZ = 100_000_000
"""The design clock of the ``demo`` sizing (four row units of 32 lanes), which only the ULX3S-85F
holds: its build closes timing there (Fmax 100.16 MHz, docs/boards.md). The PLL makes it exactly from
the board's 25 MHz; 3 Mbaud is 33 1/3 clocks a bit, which the UART's fractional bit timing keeps
exactly."""

COMPACT_CLOCK_HZ = 18_000_000
"""The design clock of the compact accelerator (``arch="compact"``) on the iCE40UP5K, where its build
closes timing (docs/boards.md); the iCE40's PLL makes it exactly from the iCEBreaker's 12 MHz, and
3 Mbaud is 6 clocks a bit."""

PRESETS = {
    "tiny": HwConfig.for_model(TINY_SHAPE, lanes=32),
    "demo": HwConfig.for_model(DEMO_SHAPE, lanes=32, rows=4, clk_freq=DEMO_CLOCK_HZ),
    "ulx3s-85f": HwConfig.for_model(DEMO_SHAPE, lanes=32, rows=4, clk_freq=DEMO_CLOCK_HZ),
    "icebreaker": HwConfig.for_model(TINY_SHAPE, lanes=4, clk_freq=COMPACT_CLOCK_HZ, arch="compact"),
}
"""Named configurations: ``tiny`` and ``demo`` hold exactly the bundled models of those names;
``ulx3s-85f`` is the ``demo`` sizing meant for the ULX3S with an ECP5-85F; ``icebreaker`` the compact
accelerator holding ``tiny``, for the iCEBreaker's iCE40UP5K."""
