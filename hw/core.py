"""The token engine of the accelerator: a whole HGRNBit model on chip, one token per request.

:class:`Core` holds the four model regions of :mod:`mmfree.memory_map` in block RAM, reads the model's
shape from the SCALARS region at the start of every token (so any model that fits its
:class:`~mmfree.hw.config.HwConfig` runs on the same gateware), and computes exactly what
:meth:`mmfree.golden.GoldenModel.step` computes, bit for bit: the next token by argmax and the largest
logit.

Blocks
------
::

    TRITS --> weight streamer --w--> TernaryMatVec --acc FIFO--> Rescale --rows--> write-back
                                        ^ act (P codes)              ^ scale FIFO      |  Y store,
    RMSNormQuantizer --codes--> packer -'                            |                 |  argmax
          ^        `--scale------------------------------------------'                 |
          | quantiser feed FIFO (v, w_mant, last)                                      v
    vector unit <------------------------- (row j, value) of g, o, gate[I:2I], down ---'
      reads PARAMS, NWB, X, V, Y (j and H + j), GATES, STATE; writes X, V, STATE

* The **weight streamer** reads TRITS with one pointer that only increments, every matrix of the
  token in order, from word 0 for every token (prefill included: every ``STEP`` streams every matrix,
  ``lm_head`` too, so the sequence is never skipped into or re-read). A
  :class:`~mmfree.hw.trits.TritStream` decodes the base-3 words and cuts them into beats of ``lanes``
  trits, one a clock; the streamer counts the beats and marks the final beat of each matrix.
* The **vector unit** is one fixed-latency pipeline built from the datapaths of
  :mod:`mmfree.hw.activations`, one element per clock. It runs one *pass* at a time over ``H`` (or
  ``I``) elements, fed either by a counter or by the rows coming out of the rescale stage, and its
  output goes to the quantiser of the next projection. So the element-wise work of the MLGRU, the
  GLU, the residual adds and the norms happens while the matrix that produces its input is still
  streaming, and the quantiser's first pass over a vector ends with the vector's last row:

  ==========  =================================================  ====================================
  pass        per element j                                      source / quantiser input
  ==========  =================================================  ====================================
  EMBED       ``X[j] = embedding_to_act(emb[tok, j])``           counter / none
  NORM0       ``V[j] = norm_w(X[j])``                            counter / ``i`` of layer 0
  FEED        (``V[j]`` again, other norm weight)                counter / ``f``, then ``g``
  MLGRU       ``f, c, h = ...; STATE[l, j] = h``; ``o_in``       rows of ``g`` / ``o``
  RES         ``X[j] = sat(X[j] + y); V[j] = norm_w(X[j])``      rows of ``o`` / ``gate``;
                                                                 rows of ``down`` / next ``i`` or
                                                                 ``lm_head``
  GLU         ``mul_act(silu(Y[j]), y)``                         rows ``I..2I`` of ``gate`` / ``down``
  ==========  =================================================  ====================================

  Rows of ``i``, ``f``, ``g``, the first half of ``gate`` and ``lm_head`` are stored in ``Y`` (at
  ``0``, ``H``, ``2H``, ``0``, ``0``); the rows of ``lm_head`` also go through the argmax. A pass
  that reads two norm weight tensors (NORM0, MLGRU, RES: the one it applies and the next projection's)
  reads the second from the buffer NWB, so that every pass reads PARAMS once per element. NWB holds
  a slot per such pass of a layer, filled in the background: from GLU's start for RES_DOWN and the
  next layer's MLGRU and RES_O, from FINISH's for the next token's NORM0 and layer 0, a word in every
  clock the vector unit leaves PARAMS free. A pass whose slot is not filled by then (the first token,
  or after a PARAMS or SCALARS write) first copies its tensor into it (``H`` cycles).
* The sequencer reads the exponents and weight scales of each pass from SCALARS and walks PARAMS with
  one pointer in :func:`~mmfree.memory_map.param_order` (embeddings excepted), both in order.
* Scales and accumulators queue in small FIFOs, so that the quantiser never waits for the rescale
  stage and the weights keep streaming while a projection's scale is still being computed.

Cycles per token
----------------
The matrices stream back to back except at the five places per layer where a projection's input
depends on the previous projection's last row (``g -> o``, ``o -> gate``, ``gate -> down``,
``down -> i``; ``f`` and ``g`` only wait when the quantiser is slower than a ``H x H`` matrix): there
the vector unit's latency, the quantiser's second pass (:data:`QUANT_WIDTH` codes a clock, ``K / QUANT_WIDTH``
clocks) and the first row group of the next matrix are exposed. With ``R`` row units the weights of a
matrix stream in ``1 / R`` of the beats, ``R`` rows at a time. Measured on Verilator (``mmfree
bench``): ``tiny`` (H=64, I=256, 32 lanes) 5,607 cycles per token, 82.2% lane utilisation; ``demo``
(H=160, I=512, 4 row units of 32 lanes) 13,532 cycles, 82.8%.

Interface
---------
``req`` : stream In, ``cmd`` (:class:`Command`) and ``token``. Taken only while the core is idle.
    ``STEP`` runs one token and answers on ``res``; ``RESET_STATE`` zeroes the recurrent state of every
    layer (it takes one cycle and has no answer).
``res`` : stream Out, one per ``STEP``: ``token`` (argmax of the logits, lowest index on ties),
    ``logit`` (the largest logit, ACT) and ``error``: the SCALARS descriptor does not describe a model
    that fits the configuration, or the token id is not below ``V`` (nothing is computed then).
``busy`` : Out, high from a ``STEP`` until its answer is offered on ``res``.
``cycles`` : Out(32), clock cycles of the last ``STEP`` from its request to its answer.
``wr_trits``, ``wr_params``, ``wr_gates``, ``wr_scalars`` : In, one write port per region:
    ``addr`` (word address), ``data`` (one word: TRITS ``8 * trit_word_bytes`` bits, PARAMS 16, GATES 17,
    SCALARS 32), ``en``. Words are the regions' little-endian words of :mod:`mmfree.memory_map`
    (GATES: the low 17 bits of a 32-bit word). Writes are accepted at any time; a write during a
    ``STEP`` changes what that token reads.
``rd_trits``, ``rd_params``, ``rd_gates``, ``rd_scalars``, ``rd_logits`` : In, read ports: ``data`` is
    the word at the ``addr`` of :data:`REGION_READ_LATENCY` clocks before (``rd_logits``: of
    :data:`LOGITS_READ_LATENCY` clocks before), valid while ``busy`` is low (the core shares the
    memories' only read port).
    ``rd_logits`` reads ``Y``, which holds the last token's ``V`` logits (ACT) at ``0 .. V-1``: the
    place a sampler takes them from.

Internal memories: ``X`` (residual, ACT, ``max_hidden``), ``V`` (norm and element-wise outputs, ACT,
``max(max_hidden, max_intermediate)``), ``Y`` (projection outputs, ACT, ``max(3H, 2I, V)``), ``STATE``
(``max_layers x max_hidden``, STATE format), and the int8 codes inside the quantiser and the
matrix-vector unit. The state persists across tokens; a per-layer flag set by ``RESET_STATE`` (and at
reset) makes the next token read a layer's state as zero.
"""

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Shape, Signal, Value, unsigned
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import memory_map
from mmfree.numerics import ACT, GATE

from .activations import (
    ACT_SHAPE, BFP_EXP_SHAPE, GATE_SHAPE, MANT_SHAPE, STATE_SHAPE, Pipeline, mul_latency, saturate,
    BUFFER_READ_LATENCY, APPLY_NORM_WEIGHT_LATENCY, LOWER_BOUND_BLEND_LATENCY, MUL_ACT_LATENCY,
    SIGMOID_LATENCY, SILU_LATENCY, SILU_STATE_LATENCY, STATE_UPDATE_LATENCY,
    apply_norm_weight_datapath, lower_bound_blend_datapath, mul_act_datapath, sigmoid_datapath,
    silu_datapath, silu_state_datapath, state_update_datapath,
)
from .config import HwConfig
from .ecp5 import DP16KD_LATENCY, DP16KD_MODES, dp16kd_ram, platform_arch, register_copy
from .rmsnorm import PFLOAT_LAYOUT, RMSNormQuantizer
from .ternary import Rescale, TernaryMatVec
from .trits import TritStream

__all__ = ["Core", "Command", "write_signature", "read_signature", "request_layout", "result_layout",
           "region_words", "REGION_PORTS", "REGION_READ_LATENCY", "LOGITS_READ_LATENCY", "TRITS_BANK",
           "PARAMS_BANK", "GATES_BANK", "SCALARS_BANK"]

REGION_PORTS = {memory_map.REGION_TRITS: "trits", memory_map.REGION_PARAMS: "params",
                memory_map.REGION_GATES: "gates", memory_map.REGION_SCALARS: "scalars"}
"""Region number -> the name of its ``wr_<name>`` and ``rd_<name>`` ports."""


def region_words(regions, lanes, rows=1):
    """The words the ``wr_<region>`` ports take, from the bytes :func:`~mmfree.memory_map.to_regions`
    makes: ``{region: [int, ...]}``, little-endian words of :func:`~mmfree.memory_map.word_bytes`.
    """
    out = {}
    for region, blob in regions.items():
        size = memory_map.word_bytes(region, lanes, rows)
        if len(blob) % size:
            raise ValueError(f"region {memory_map.REGION_NAMES[region]} holds {len(blob)} bytes, "
                             f"not a multiple of its {size}-byte word")
        out[region] = [int.from_bytes(blob[k:k + size], "little") for k in range(0, len(blob), size)]
    return out


class Command(enum.Enum, shape=1):
    STEP = 0
    RESET_STATE = 1


class _Pass(enum.Enum, shape=3):
    EMBED = 0
    NORM0 = 1
    FEED_F = 2
    FEED_G = 3
    MLGRU = 4
    RES_O = 5
    GLU = 6
    RES_DOWN = 7


# The norm weights each pass reads from PARAMS, in memory_map.LAYER_NORMS order: the sequencer's
# PARAMS pointer and exponent index step past them when the pass ends (RES_DOWN reads the next
# layer's, or after the last layer the final ``norm`` and ``lm_head.norm``, H long each as well).
_PASS_NORMS = {
    _Pass.NORM0: ("attn_norm", "i_proj.norm"),
    _Pass.FEED_F: ("f_proj.norm",),
    _Pass.FEED_G: ("g_proj.norm",),
    _Pass.MLGRU: ("g_norm", "o_proj.norm"),
    _Pass.RES_O: ("mlp_norm", "gate_proj.norm"),
    _Pass.GLU: ("down_proj.norm",),
    _Pass.RES_DOWN: ("attn_norm", "i_proj.norm"),
}
assert sum((_PASS_NORMS[p] for p in (_Pass.NORM0, _Pass.FEED_F, _Pass.FEED_G, _Pass.MLGRU, _Pass.RES_O,
                                     _Pass.GLU)), ()) == memory_map.LAYER_NORMS
assert _PASS_NORMS[_Pass.RES_DOWN] == _PASS_NORMS[_Pass.NORM0]


def _norms_length(names, H, I):
    """The elements of the norm weights ``names`` together (:func:`memory_map.norm_length`), as
    gateware: one length, or two of ``H`` as ``H << 1`` (a shift, not an adder)."""
    lengths = [memory_map.norm_length(n, H, I) for n in names]
    if len(lengths) == 2 and all(n is H for n in lengths):
        return H << 1
    (length,) = lengths
    return length


class _Mode(enum.Enum, shape=3):
    EMBED = 0
    RES = 1
    FEED = 2
    MLGRU = 3
    GLU = 4


def _addr_shape(depth):
    return range(max(depth, 2))


def write_signature(depth, shape):
    """A memory write port, from the writer's side: ``addr``, ``data``, ``en``."""
    return wiring.Signature({"addr": Out(_addr_shape(depth)), "data": Out(shape), "en": Out(1)})


def read_signature(depth, shape):
    """A memory read port, from the reader's side: ``addr`` out, ``data`` in (the word at an ``addr``
    :data:`REGION_READ_LATENCY` clocks later for the region ports, :data:`LOGITS_READ_LATENCY` for
    ``rd_logits``)."""
    return wiring.Signature({"addr": Out(_addr_shape(depth)), "data": In(shape)})


REGION_READ_LATENCY = 5
"""Clocks from ``addr`` to ``data`` on the ``rd_<region>`` ports of :class:`Core`, and for the core's
own reads of every region. Every block RAM output of a region is registered before anything else
sees it (on the ECP5 in the block's own output register), and, where a region has several banks,
before the multiplexer that picks its bank (:data:`TRITS_BANK`, :data:`PARAMS_BANK`,
:data:`GATES_BANK`, :data:`SCALARS_BANK`). TRITS and PARAMS spread over most of the device's block
RAM, so every region's read address is registered where it is made, then again in a copy per group
of :data:`BANKS_PER_ADDRESS` banks (so that only routing lies between the sequencer's address sums and
the copies over the device), and the bank is picked in two levels: within its group into the
group's register, then among the groups (a multiplexer over the 48 PARAMS banks straight from their
output registers was the longest path of the 86 MHz demo build)."""

LOGITS_READ_LATENCY = BUFFER_READ_LATENCY
"""Clocks from ``addr`` to ``data`` on the ``rd_logits`` port of :class:`Core`: the ``Y`` buffer's block
RAM output registered before anything sees it (on the ECP5 in the block's own output register)."""

BANKS_PER_ADDRESS = 4
"""Banks of TRITS or PARAMS that one registered copy of the read address drives: one net to every
bank of TRITS (126 block RAMs over the ECP5-85F) was the longest path of a 90 MHz demo build; and
the banks whose word one register of the group picks first."""

PARAMS_BANK = 1024
"""Words per bank of the PARAMS memory (16-bit words: one 1024 x 18 block RAM on the ECP5), each
read into a register of its own as :data:`TRITS_BANK` says: with TRITS banked, the multiplexer over
the PARAMS block RAMs was the longest path of a 70 MHz demo build."""

GATES_BANK = 1024
"""Words per bank of the GATES memory (17-bit GATE codes: one 1024 x 18 block RAM on the ECP5)."""

SCALARS_BANK = 512
"""Words per bank of the SCALARS memory (32-bit words: one 512 x 36 block RAM on the ECP5). The
sequencer reads SCALARS at every pass; without the block's output register its read was the longest
path of the 80 MHz demo build."""

TRITS_BANK = 1024
"""Words per bank of the TRITS memory (72-bit words: four 1024 x 18 block RAMs on the ECP5). Each
bank's output goes into a register of its own, and the bank is picked from those registers: a block
RAM's output is slow (5.8 ns on the ECP5), and a multiplexer over 32 of them after it was the
longest path of the demo build at 100 MHz."""


class _BankedReadPort:
    """A memory of ``depth`` words of ``width`` bits in banks of ``bank`` words, with one write port
    (``wr``: ``addr``, ``data``, ``en``) and one read port (``addr``, and ``data``
    :data:`REGION_READ_LATENCY` clocks later, from the banks' output registers picked in two levels,
    within a group of :data:`BANKS_PER_ADDRESS` banks, then among the groups; a write lands two
    clocks after its request). On the ECP5 (``arch="ecp5"``) each bank is ``DP16KD`` blocks whose own
    output register is that register (:func:`~mmfree.hw.ecp5.dp16kd_ram`); elsewhere an inferred
    memory and a register."""

    def __init__(self, m, name, width, depth, bank, wr, arch="generic"):
        nb = -(-depth // bank)
        lb = (bank - 1).bit_length()
        self._lb = lb
        self.memories = []          # the inferred memories, bank by bank (none on the ECP5)
        self.addr = Signal(_addr_shape(depth), name=f"{name}_raddr")
        self.data = Signal(width, name=f"{name}_rdata")
        modes = [w for w, d in DP16KD_MODES.items() if bank <= d]
        # the address registered where it is made, then in a copy per group of banks; then the
        # banks' two clocks; then the group's register
        assert REGION_READ_LATENCY == 2 + DP16KD_LATENCY + 1
        groups = range(-(-nb // BANKS_PER_ADDRESS))
        addr = Signal.like(self.addr, name=f"{name}_raddr_q")
        m.d.sync += addr.eq(self.addr)
        copies = [register_copy(m, addr[:lb], f"{name}_raddr{g}", arch) for g in groups]
        # the write port the same way: registered, then its address and data in a copy per group,
        # each bank's enable in a register of its own (a write lands two clocks after its request,
        # as early as a read of that clock would see it; nothing reads a word that soon)
        w_addr, w_data, w_en = Signal.like(wr.addr), Signal.like(wr.data), Signal()
        m.d.sync += [w_addr.eq(wr.addr), w_data.eq(wr.data), w_en.eq(wr.en)]
        wcopies = [register_copy(m, Cat(w_addr[:lb], w_data), f"{name}_wcopy{g}", arch)
                   for g in groups]
        outs = []
        for b in range(nb):
            we = register_copy(m, w_en & (w_addr[lb:] == b), f"{name}_we{b}", arch)
            raddr = copies[b // BANKS_PER_ADDRESS]
            wcopy = wcopies[b // BANKS_PER_ADDRESS]
            waddr, wdata = wcopy[:len(w_addr[:lb])], wcopy[len(w_addr[:lb]):]
            if arch == "ecp5" and modes:
                mode = min(modes, key=lambda w: (-(-width // w), w))
                outs.append(dp16kd_ram(m, f"{name}_{b}", waddr, wdata, we, raddr, data_width=mode))
                continue
            mem = memory.Memory(shape=unsigned(width), depth=min(bank, depth - b * bank), init=[])
            m.submodules[f"{name}_{b}"] = mem
            self.memories.append(mem)
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(waddr), wp.data.eq(wdata), wp.en.eq(we), rp.addr.eq(raddr)]
            q = Signal(width, name=f"{name}_q{b}")
            m.d.sync += q.eq(rp.data)
            outs.append(q)
        # the bank picked in two levels: within each group, from the banks' registers into a
        # register of the group's (its select delayed beside the group's address copy), then among
        # the groups' registers
        gouts = []
        for g in groups:
            banks = outs[g * BANKS_PER_ADDRESS:(g + 1) * BANKS_PER_ADDRESS]
            q = Signal(width, name=f"{name}_g{g}")
            if len(banks) == 1:
                m.d.sync += q.eq(banks[0])
            else:
                gsel = [Signal(range(len(banks)), name=f"{name}_g{g}_bank{k}")
                        for k in range(1 + DP16KD_LATENCY)]
                m.d.sync += [gsel[0].eq(addr[lb:] % BANKS_PER_ADDRESS)]
                m.d.sync += [b.eq(a) for a, b in zip(gsel, gsel[1:])]
                m.d.sync += q.eq(Array(banks)[gsel[-1]])
            gouts.append(q)
        if len(gouts) == 1:
            m.d.comb += self.data.eq(gouts[0])
        else:
            sel = [Signal(range(len(gouts)), name=f"{name}_group{k}")
                   for k in range(REGION_READ_LATENCY - 1)]
            m.d.sync += [sel[0].eq(addr[lb:] // BANKS_PER_ADDRESS)]
            m.d.sync += [b.eq(a) for a, b in zip(sel, sel[1:])]
            m.d.comb += self.data.eq(Array(gouts)[sel[-1]])

    def cell(self, addr):
        """``(memory, index)``: where a write to word ``addr`` lands, split as the write port splits
        it (the bank from the address bits above a bank's, the index from those below), for a
        simulation to set words directly (``mmfree.sim.core_sim.preload_regions``). Only for the
        inferred memories (elsewhere than on the ECP5)."""
        return self.memories[addr >> self._lb], addr & ((1 << self._lb) - 1)


def request_layout(config):
    return data.StructLayout({"cmd": Command,
                              "token": unsigned(max(16, (config.max_vocab - 1).bit_length()))})


def result_layout(config):
    return data.StructLayout({"token": _addr_shape(config.max_vocab), "logit": ACT_SHAPE, "error": 1})


# vector-unit pipeline: stage (after the operand registers) at which each value is ready
_ANW_AT = 1 + APPLY_NORM_WEIGHT_LATENCY                      # norm weight applied (embedding, RES, g)
_F_AT = SIGMOID_LATENCY + LOWER_BOUND_BLEND_LATENCY          # forget gate
_C_AT = SILU_LATENCY                                         # silu(Y[j])
_U_IN = max(_F_AT, _C_AT)
_H_AT = _U_IN + STATE_UPDATE_LATENCY                         # new state
_SH_AT = _H_AT + SILU_STATE_LATENCY                          # silu of the new state
_MUL_IN = max(_SH_AT, _ANW_AT, _C_AT)                        # the MLGRU's output product
_OUT_AT = {                                                  # where each pass's result leaves
    "EMBED": _ANW_AT, "RES": _ANW_AT, "FEED": 0,
    "GLU": _C_AT + MUL_ACT_LATENCY,                          # the same multiplier, fed earlier
    "MLGRU": _MUL_IN + MUL_ACT_LATENCY,
}
_DEPTH = max(_OUT_AT.values())
_FRONT = 1 + REGION_READ_LATENCY                             # accept, PARAMS read -> operands
_QDEPTH = _FRONT + _DEPTH + 6                                # quantiser feed FIFO: a full pipeline
_WDEPTH = 4                                                  # weight FIFO
_WREAD_DELAY = 1                                             # beat taken -> its FIFOs read
_ADEPTH = 32                                                 # accumulators waiting for their scale
_RDEPTH = 4                                                  # rescaled rows waiting for the write-back
_PRODUCTS = 5                                                # products of a shape, in PRODUCTS

QUANT_WIDTH = 8
"""Codes a clock of the quantiser's second pass (:class:`~mmfree.hw.rmsnorm.RMSNormQuantizer`'s
``width``; at most ``lanes``): the pass is exposed at every projection boundary, ``K / width`` clocks."""


class Core(wiring.Component):
    """One token of an HGRNBit model per ``STEP`` request; see the module documentation.

    Parameters
    ----------
    config : :class:`~mmfree.hw.config.HwConfig`

    Attributes
    ----------
    probe : dict
        Filled by :meth:`elaborate`, for simulation only (the tests, :mod:`mmfree.sim.profile`):
        name -> an internal unit or signal, e.g. ``probe["linear"]``, the matrix-vector unit, whose
        ``w`` stream carries the weight beats. Not a port: a netlist does not keep them.
    """

    def __init__(self, config):
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {config!r}")
        self.config = cfg = config
        P = cfg.lanes
        param_bits = 8 * memory_map.WORD_BYTES[memory_map.REGION_PARAMS]
        scalar_bits = 8 * memory_map.WORD_BYTES[memory_map.REGION_SCALARS]
        super().__init__({
            "req": In(stream.Signature(request_layout(cfg))),
            "res": Out(stream.Signature(result_layout(cfg))),
            "busy": Out(1),
            "cycles": Out(32),
            "wr_trits": In(write_signature(cfg.trit_words, cfg.trit_word_bits)),
            "wr_params": In(write_signature(cfg.param_words, param_bits)),
            "wr_gates": In(write_signature(cfg.gate_words, GATE.width)),
            "wr_scalars": In(write_signature(cfg.scalar_words, scalar_bits)),
            "rd_trits": In(read_signature(cfg.trit_words, cfg.trit_word_bits)),
            "rd_params": In(read_signature(cfg.param_words, param_bits)),
            "rd_gates": In(read_signature(cfg.gate_words, GATE.width)),
            "rd_scalars": In(read_signature(cfg.scalar_words, scalar_bits)),
            "rd_logits": In(read_signature(cfg.y_depth, ACT_SHAPE)),
        })

    def elaborate(self, platform):
        m = Module()
        self.probe = {}
        cfg = self.config
        P, LP = cfg.lanes, cfg.lanes_log2
        R, LR = cfg.rows, cfg.rows.bit_length() - 1        # row units
        HMAX, IMAX, LMAX, VMAX, KMAX = (cfg.max_hidden, cfg.max_intermediate, cfg.max_layers,
                                        cfg.max_vocab, cfg.max_k)
        busy = Signal()
        m.d.comb += self.busy.eq(busy)

        # --- memories ------------------------------------------------------------------------------
        arch = platform_arch(platform)

        def region(name, depth, bank):
            """The region's memory, as wide as its write port's words."""
            wr, rd = getattr(self, f"wr_{name}"), getattr(self, f"rd_{name}")
            rp = _BankedReadPort(m, name, len(wr.data), depth, bank, wr, arch)
            m.d.comb += rd.data.eq(rp.data)
            return rp

        # TRITS: a memory of its own per row unit, each holding its stream's sub-words (so that each
        # unit's words come from block RAM beside it), all read at the same address
        sub_bits = 8 * memory_map.trit_subword_bytes(P)
        trits_rps = []
        for u in range(R):
            wr = self.wr_trits
            if R > 1:
                wr = SimpleNamespace(addr=wr.addr, data=wr.data.word_select(u, sub_bits), en=wr.en)
            trits_rps.append(_BankedReadPort(m, "trits" if R == 1 else f"trits{u}", sub_bits,
                                             cfg.trit_words, TRITS_BANK, wr, arch))
        m.d.comb += self.rd_trits.data.eq(Cat(*(rp.data for rp in trits_rps)))
        params_rp = region("params", cfg.param_words, PARAMS_BANK)
        gates_rp = region("gates", cfg.gate_words, GATES_BANK)
        scalars_rp = region("scalars", cfg.scalar_words, SCALARS_BANK)
        # region -> the memories that hold its words, a sub-word each, lowest bits first
        self.probe["regions"] = {memory_map.REGION_TRITS: trits_rps, memory_map.REGION_PARAMS: [params_rp],
                                 memory_map.REGION_GATES: [gates_rp], memory_map.REGION_SCALARS: [scalars_rp]}

        # the buffers the front reads once each, their word two clocks after the address: on the ECP5
        # through the block RAM's own output register (Pipeline.buffer)
        front_p = Pipeline(m, Const(1), arch)
        x_buf = front_p.buffer(ACT_SHAPE, HMAX, name="x_buf")
        v_buf = front_p.buffer(ACT_SHAPE, KMAX, name="v_buf")
        s_buf = front_p.buffer(STATE_SHAPE, LMAX * HMAX, name="state")
        # NWB: the quantiser norm weights of the two-tensor passes, in three slots of 2**nw_bits
        # words (0: NORM0 and RES_DOWN, 1: MLGRU, 2: RES_O); one DP16KD up to HMAX = 256
        nw_bits = (HMAX - 1).bit_length()
        nwb_buf = front_p.buffer(MANT_SHAPE, 3 << nw_bits, name="norm_b")
        # Y in two copies written alike, one per read: the front's element j (or, while idle,
        # rd_logits) and its element H + j
        y_bufs = [front_p.buffer(ACT_SHAPE, cfg.y_depth, name=n) for n in ("y_buf", "y_buf2")]
        y_raddr = Signal(range(cfg.y_depth))
        y_data = y_bufs[0].read(y_raddr, name="y_s2")
        m.d.comb += self.rd_logits.data.eq(y_data)

        # --- compute units -------------------------------------------------------------------------
        Q = min(P, QUANT_WIDTH)
        # at eight codes a clock and more, the quantiser's banks in LUT RAM (a block RAM a bank would
        # hold a few words each, and the block RAM is nearly full)
        m.submodules.quant = quant = RMSNormQuantizer(tuple(range(P, KMAX + 1, P)), width=Q,
                                                      lut_ram=Q >= 8)
        # spread_control: the activation buffer's memories read through a second register, each
        # driven by registered copies of its controls (a slow output once had to reach a lane across
        # the device); the buffer (2 KMAX / P words of 8P bits) in LUT RAM: as block RAM it took 8
        # DP16KD at 32 lanes, which the TRITS region and the quantiser's banks need
        m.submodules.matvec = linear = TernaryMatVec(P, KMAX, rows=R, spread_control=True,
                                                     trits_delay=_WREAD_DELAY, act_memory="distributed")
        m.submodules.rescale = rescale = Rescale(linear.acc_width, exp_width=16)
        self.probe.update(quant=quant, linear=linear, rescale=rescale)
        # Scales queue up, so that the quantiser never waits for the rescale stage to take one; the
        # accumulators queue up too, so that the weights keep streaming while a projection's scale is
        # still being computed (it can take longer than the codes and the first rows).
        m.submodules.scale_fifo = scale_fifo = fifo.SyncFIFOBuffered(width=32, depth=4)
        # (a row group's R accumulators an entry, handed to the rescale stage one a clock)
        m.submodules.acc_fifo = acc_fifo = fifo.SyncFIFOBuffered(width=R * linear.acc_width + 1,
                                                                 depth=max(4, _ADEPTH // R))
        acc_unit = Signal(range(R))                   # the row unit whose accumulator goes next
        acc_all = acc_fifo.r_data[:R * linear.acc_width]
        acc_fifo_last = acc_fifo.r_data[R * linear.acc_width]
        m.d.comb += [
            scale_fifo.w_data.eq(quant.scale.payload.as_value()),
            scale_fifo.w_en.eq(quant.scale.valid),
            quant.scale.ready.eq(scale_fifo.w_rdy),
            rescale.scale.valid.eq(scale_fifo.r_rdy),
            rescale.scale.payload.mant.eq(scale_fifo.r_data[:16]),
            rescale.scale.payload.exp.eq(scale_fifo.r_data[16:32]),
            scale_fifo.r_en.eq(rescale.scale.ready),
            acc_fifo.w_data.eq(linear.o.payload.as_value()),
            acc_fifo.w_en.eq(linear.o.valid),
            linear.o.ready.eq(acc_fifo.w_rdy),
            rescale.i.valid.eq(acc_fifo.r_rdy),
            rescale.i.payload.acc.eq(Array(acc_all.word_select(u, linear.acc_width).as_signed()
                                           for u in range(R))[acc_unit]),
            rescale.i.payload.last.eq(acc_fifo_last & (acc_unit == R - 1)),
            acc_fifo.r_en.eq(rescale.i.ready & (acc_unit == R - 1)),
        ]
        if R > 1:
            with m.If(rescale.i.valid & rescale.i.ready):
                m.d.sync += acc_unit.eq(Mux(acc_unit == R - 1, 0, acc_unit + 1))

        # codes, Q a clock, packed into beats of P codes
        col = Signal(8 * P)
        cnt = Signal(range(P // Q))
        beat = Signal(8 * P)
        beat_valid = Signal()
        beat_last = Signal()
        codes = quant.codes
        complete = Signal()
        m.d.comb += [
            complete.eq((cnt == P // Q - 1) | codes.payload.last),
            codes.ready.eq(~complete | ~beat_valid | linear.act.ready),
            linear.act.valid.eq(beat_valid),
            linear.act.payload.codes.as_value().eq(beat),
            linear.act.payload.last.eq(beat_last),
        ]
        with m.If(linear.act.valid & linear.act.ready):
            m.d.sync += beat_valid.eq(0)
        with m.If(codes.valid & codes.ready):
            new_col = Cat(col[8 * Q:], Value.cast(codes.payload.code))
            with m.If(complete):
                m.d.sync += [beat.eq(new_col), beat_valid.eq(1), beat_last.eq(codes.payload.last),
                             cnt.eq(0)]
            with m.Else():
                m.d.sync += [col.eq(new_col), cnt.eq(cnt + 1)]

        # --- model shape and sequencer registers ---------------------------------------------------
        tok = Signal(range(VMAX))
        H = Signal(range(HMAX + 1))
        I = Signal(range(IMAX + 1))
        L = Signal(range(LMAX + 1))
        V = Signal(range(VMAX + 1))
        raw = [Signal(32, name=f"shape_word{k}") for k in range(4)]
        V_1, H_1, L_1, I_1 = Signal.like(V), Signal.like(H), Signal.like(L), Signal.like(I)   # less one
        I2_1 = Signal(range(2 * IMAX))                 # 2 I - 1: rows of gate
        req_token = Signal.like(self.req.payload.token)
        shape_ok = Signal(5)                           # the descriptor's fields and the token in range
        max_beats = max(HMAX * HMAX, 2 * IMAX * HMAX, VMAX * HMAX) // (P * R)
        nb_hh = Signal(range(max_beats + 1))           # beats of an H x H matrix
        nb_ih = Signal(range(max_beats + 1))           # beats of down (H x I); gate has twice as many
        nb_vh = Signal(range(max_beats + 1))           # beats of lm_head
        emb_end = Signal(range(cfg.param_words))       # V * H: the first norm weight in PARAMS
        tok_row = Signal(range(cfg.param_words))       # tok * H
        layer = Signal(range(LMAX + 1))
        lh = Signal(range(LMAX * HMAX + 1))            # layer * H: GATES and STATE base
        fresh = Signal(LMAX, init=(1 << LMAX) - 1)     # layer state reads as zero
        pp = Signal(range(cfg.param_words))            # PARAMS pointer: current norm weight tensor
        ei = Signal(range(cfg.scalar_words))           # exponent index
        si = Signal(range(cfg.scalar_words))           # scale index
        sb = Signal(range(cfg.scalar_words + 1))       # first scale word
        kind = Signal(_Pass)
        expA = Signal(BFP_EXP_SHAPE)                   # norm weight applied in the vector unit
        w_exp = Signal(BFP_EXP_SHAPE)                  # quantiser: the projection's norm exponent
        w_m = Signal(PFLOAT_LAYOUT)                    # quantiser: the projection's weight scale
        v_run = Signal()
        pass_done = Signal()
        start = Signal()                               # pulse: the streamer and write-back start
        wb_done = Signal()                             # sticky: the last lm_head row is written back
        best = Signal(ACT_SHAPE)
        best_idx = Signal(range(VMAX))
        error = Signal()
        count = Signal(32)                             # cycles since the request
        cycles = Signal(32)                            # of the last STEP, set as its answer appears

        # per-pass properties, from the pass kind, in registers: a clock behind kind, which changes
        # in START and NEXT, and SETUP (at least four clocks) reads them no sooner than its third
        mode = Signal(_Mode)
        two = Signal()
        feeds = Signal()
        from_wb = Signal()
        n = Signal(range(KMAX + 1))
        n_1 = Signal(range(KMAX))                      # n - 1: the pass's last element
        nw_slot = Signal(2)                            # the pass's NWB slot
        with m.Switch(kind):
            with m.Case(_Pass.EMBED):
                m.d.sync += mode.eq(_Mode.EMBED)
            with m.Case(_Pass.NORM0, _Pass.RES_O, _Pass.RES_DOWN):
                m.d.sync += mode.eq(_Mode.RES)
            with m.Case(_Pass.FEED_F, _Pass.FEED_G):
                m.d.sync += mode.eq(_Mode.FEED)
            with m.Case(_Pass.MLGRU):
                m.d.sync += mode.eq(_Mode.MLGRU)
            with m.Case(_Pass.GLU):
                m.d.sync += mode.eq(_Mode.GLU)
        m.d.sync += [
            two.eq((kind == _Pass.NORM0) | (kind == _Pass.RES_O) | (kind == _Pass.RES_DOWN) |
                   (kind == _Pass.MLGRU)),
            feeds.eq(kind != _Pass.EMBED),
            from_wb.eq((kind == _Pass.MLGRU) | (kind == _Pass.RES_O) | (kind == _Pass.GLU) |
                       (kind == _Pass.RES_DOWN)),
            n.eq(Mux(kind == _Pass.GLU, I, H)),
            nw_slot.eq(Mux(kind == _Pass.MLGRU, 1, Mux(kind == _Pass.RES_O, 2, 0))),
            n_1.eq(Mux(kind == _Pass.GLU, I_1, H_1)),
        ]

        # --- write-back of the rescaled rows ---------------------------------------------------------
        # through a small FIFO, so that the write-back's ready does not run into the rescale
        # pipeline's enable and the accumulator and scale FIFOs behind it
        m.submodules.rs_fifo = rs_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(rescale.value_layout).width, depth=_RDEPTH)
        rs = stream.Signature(rescale.value_layout).create(path=("rs",))
        m.d.comb += [
            rs_fifo.w_data.eq(rescale.o.payload), rs_fifo.w_en.eq(rescale.o.valid),
            rescale.o.ready.eq(rs_fifo.w_rdy),
            rs.valid.eq(rs_fifo.r_rdy), rs.payload.eq(rs_fifo.r_data), rs_fifo.r_en.eq(rs.ready),
        ]
        wb_active = Signal()
        wb_proj = Signal(range(7))                     # i f g o gate down, 6: lm_head
        wb_layer = Signal(range(LMAX + 1))
        wb_row = Signal(range(max(2 * IMAX, VMAX, HMAX) + 1))
        wb_left = Signal.like(wb_row)                  # rows of this projection after wb_row
        wb_upper = Signal()                            # gate: a row of the second half (I .. 2I)
        wb_j = Signal(range(KMAX))                     # the row's element: wb_row, less I if wb_upper
        wb_store = Signal()
        wb_vpu = Signal()
        wb_ybase = Signal(range(cfg.y_depth + 1))
        with m.Switch(wb_proj):
            with m.Case(0):
                m.d.comb += [wb_store.eq(1), wb_ybase.eq(0)]
            with m.Case(1):
                m.d.comb += [wb_store.eq(1), wb_ybase.eq(H)]
            with m.Case(2):
                m.d.comb += [wb_store.eq(1), wb_ybase.eq(2 * H), wb_vpu.eq(1)]
            with m.Case(3, 5):
                m.d.comb += [wb_vpu.eq(1)]
            with m.Case(4):
                m.d.comb += [wb_store.eq(1), wb_ybase.eq(0), wb_vpu.eq(wb_upper)]
            with m.Case(6):
                m.d.comb += [wb_store.eq(1), wb_ybase.eq(0)]

        # --- vector unit: source, admission, operand reads -------------------------------------------
        # One element per clock. Every operand is read at the element's index j from its own port:
        # PARAMS (norm weight A, or the embedding row), the norm-weight buffer NWB (B: the quantiser's
        # norm weight of a two-tensor pass, copied from PARAMS before the pass runs), Y at j and H + j,
        # X, V, GATES and STATE.
        src_valid = Signal()
        src_j = Signal(range(KMAX))
        src_y = Signal(ACT_SHAPE)
        cj = Signal(range(KMAX + 1))
        cj_more = Signal()                             # cj != n, kept as cj is counted
        inflight = Signal(range(_QDEPTH + 1))
        open_ = Signal()
        accept = Signal()
        # room: fewer than _QDEPTH - 1 in flight a clock ago, so fewer than _QDEPTH now (from a
        # register: no comparison ahead of the admission)
        room = Signal()
        m.d.sync += room.eq(inflight < _QDEPTH - 1)
        m.d.comb += open_.eq(v_run & (~feeds | room))
        with m.If(from_wb):
            m.d.comb += [
                src_valid.eq(wb_active & wb_vpu & rs.valid),
                src_j.eq(wb_j),
                src_y.eq(rs.payload.value),
            ]
        with m.Else():
            m.d.comb += [src_valid.eq(v_run & cj_more), src_j.eq(cj), src_y.eq(0)]
        m.d.comb += accept.eq(src_valid & open_)
        with m.If(accept & ~from_wb):
            m.d.sync += [cj.eq(cj + 1), cj_more.eq(cj != n_1)]

        prefetching = Signal()
        pf_k = Signal(range(HMAX + 1))
        pf_wr = Signal()
        pf_addr = Signal(range(3 << nw_bits))
        # The background fetch: the quantiser norm weights of the next layer's two-tensor passes into
        # their NWB slots, a word in every clock PARAMS is free (no element accepted, no prefetch):
        # from GLU's start, RES_DOWN's (the next i_proj's, or lm_head's), then the next layer's
        # MLGRU's and RES_O's (o_proj's and gate_proj's); from FINISH's start, the same for the next
        # token's NORM0 and layer 0. Relative to the RES_DOWN pointer (for the next token: the first
        # norm weight) they lie at H, 5 H and 7 H. A pass whose slot was fetched, with no PARAMS or
        # SCALARS word written since the fetch started, skips its prefetch (nw_ok0: slot 0,
        # nw_ok12: slots 1 and 2); a slot not fetched by its pass's SETUP is given up and prefetched.
        # the slots' tensors and their places in a layer's norm weights (memory_map.LAYER_NORMS,
        # each H long): the fetch reads them at H, 5 H and 7 H, stepping from one to the next
        nw_at = [memory_map.LAYER_NORMS.index(t) for t in ("i_proj.norm", "o_proj.norm", "gate_proj.norm")]
        assert nw_at == [1, 5, 7], nw_at
        bg_go = Signal()
        bg_phase = Signal(2)                           # the slot being fetched
        bg_last = Signal()                             # for the last layer: slot 0 only
        bg_k = Signal(range(HMAX))
        bg_base = Signal(range(cfg.param_words))
        bg_addr = Signal(range(cfg.param_words))
        bg_issue = Signal()
        nw_ok0, nw_ok12, nw_dirty = Signal(), Signal(), Signal()
        H5 = Signal(range(5 * HMAX + 1))               # 5 H
        m.d.comb += bg_issue.eq(bg_go & busy & ~prefetching & ~accept)
        with m.If(bg_issue):
            m.d.sync += [bg_k.eq(bg_k + 1), bg_addr.eq(bg_addr + 1)]
            with m.If(bg_k == H_1):
                m.d.sync += [bg_k.eq(0), bg_phase.eq(bg_phase + 1)]
                with m.Switch(bg_phase):
                    with m.Case(0):
                        m.d.sync += [bg_addr.eq(bg_base + H5), nw_ok0.eq(~nw_dirty)]
                        with m.If(bg_last):
                            m.d.sync += bg_go.eq(0)
                    with m.Case(1):
                        m.d.sync += bg_addr.eq(bg_addr + 1 + H)
                    with m.Case(2):
                        m.d.sync += [bg_go.eq(0), nw_ok12.eq(~nw_dirty)]

        def bg_start(base, last):
            return [bg_go.eq(1), bg_phase.eq(0), bg_last.eq(last), bg_k.eq(0), bg_base.eq(base),
                    bg_addr.eq(base + H), nw_ok0.eq(0), nw_ok12.eq(0), nw_dirty.eq(0)]

        base_a = Signal(range(cfg.param_words))
        m.d.comb += base_a.eq(Mux(kind == _Pass.EMBED, tok_row, pp))
        with m.If(busy):
            m.d.comb += [
                params_rp.addr.eq(Mux(prefetching, pp + H + pf_k, Mux(bg_issue, bg_addr, base_a + src_j))),
                y_raddr.eq(src_j),
                gates_rp.addr.eq(lh + src_j),
            ]
        with m.Else():
            m.d.comb += [
                params_rp.addr.eq(self.rd_params.addr),
                y_raddr.eq(self.rd_logits.addr),
                gates_rp.addr.eq(self.rd_gates.addr),
            ]
        # the norm weight registered once more on its way to NWB: PARAMS' bank multiplexer is far
        # from NWB's block RAM
        pf_wr_q = Signal()
        m.d.sync += [nwb_buf.w_addr.eq(pf_addr), nwb_buf.w_data.eq(params_rp.data), pf_wr_q.eq(pf_wr)]
        m.d.comb += nwb_buf.w_en.eq(pf_wr_q)
        # PARAMS answers in REGION_READ_LATENCY clocks: the write and its address wait as long
        pf_wrs = [Signal(name=f"pf_wr_d{k}") for k in range(REGION_READ_LATENCY - 1)] + [pf_wr]
        pf_addrs = [Signal.like(pf_addr, name=f"pf_addr_d{k}")
                    for k in range(REGION_READ_LATENCY - 1)] + [pf_addr]
        m.d.sync += [pf_wrs[0].eq((prefetching & (pf_k != H)) | bg_issue),
                     pf_addrs[0].eq(Mux(prefetching, Cat(pf_k[:nw_bits], nw_slot),
                                        Cat(bg_k[:nw_bits], bg_phase)))]
        for chain in (pf_wrs, pf_addrs):
            m.d.sync += [b.eq(a) for a, b in zip(chain, chain[1:])]

        # the front: accept (addresses) -> s1 (Y's block RAM output; the other buffers' addresses
        # registered) -> s2 (Y registered) -> s3 (the other buffers' words) -> as many stages more as
        # the regions take beyond three clocks; PARAMS and GATES arrive in the last -> operands
        s1_valid, s1_j, s1_y = Signal(), Signal(range(KMAX)), Signal(ACT_SHAPE)
        s2_valid, s2_j, s2_y = Signal(), Signal(range(KMAX)), Signal(ACT_SHAPE)
        s1_last, s2_last, op_last = Signal(), Signal(), Signal()     # j is the pass's last element
        s2_ya = Signal(ACT_SHAPE)
        s3_pb = Signal(MANT_SHAPE)
        s3_yb, s3_x, s3_v = (Signal(ACT_SHAPE, name=f"s3_{s}") for s in ("yb", "x", "v"))
        s3_h = Signal(STATE_SHAPE)
        op_valid, op_j, op_y = Signal(), Signal(range(KMAX)), Signal(ACT_SHAPE)
        op_pa, op_pb = Signal(MANT_SHAPE), Signal(MANT_SHAPE)
        op_ya, op_yb, op_x, op_v = (Signal(ACT_SHAPE, name=f"op_{s}") for s in ("ya", "yb", "x", "v"))
        op_lb, op_h = Signal(GATE_SHAPE), Signal(STATE_SHAPE)
        m.d.sync += [
            s1_valid.eq(accept), s1_j.eq(src_j), s1_y.eq(src_y), s1_last.eq(src_j == n_1),
            s2_valid.eq(s1_valid), s2_j.eq(s1_j), s2_y.eq(s1_y), s2_last.eq(s1_last),
        ]
        # Y's first copy is read at src_j itself (its port is rd_logits' too); the other buffers at
        # addresses registered a clock after accept, so their words arrive at s3: the index's
        # multiplexer and the address sums, out to block RAMs far apart, were the longest path of a
        # demo build placed for 100 MHz
        assert REGION_READ_LATENCY >= 1 + BUFFER_READ_LATENCY
        ra_j = Signal.like(src_j, name="buf_raddr")
        ra_yb = Signal(range(cfg.y_depth), name="yb_raddr")
        ra_h = Signal(range(LMAX * HMAX), name="state_raddr")
        ra_nw = Signal(range(3 << nw_bits), name="nwb_raddr")
        m.d.sync += [ra_j.eq(src_j), ra_yb.eq(H + src_j), ra_h.eq(lh + src_j),
                     ra_nw.eq(Cat(src_j[:nw_bits], nw_slot))]
        m.d.comb += [
            s2_ya.eq(y_data), s3_yb.eq(y_bufs[1].read(ra_yb, name="yb_s3")),
            s3_pb.eq(nwb_buf.read(ra_nw, name="nwb_s3")), s3_x.eq(x_buf.read(ra_j, name="x_s3")),
            s3_v.eq(v_buf.read(ra_j, name="v_s3")), s3_h.eq(s_buf.read(ra_h, name="h_s3")),
        ]
        def next_stage(values, names, k):
            stage = tuple(Signal.like(v, name=f"s{k}_{n}") for v, n in zip(values, names))
            m.d.sync += [b.eq(a) for a, b in zip(values, stage)]
            return stage

        s3_valid, s3_j, s3_y, s3_last, s3_ya = next_stage(
            (s2_valid, s2_j, s2_y, s2_last, s2_ya), ("valid", "j", "y", "last", "ya"), 3)
        front = [(s3_valid, s3_j, s3_y, s3_last, s3_pb, s3_ya, s3_yb, s3_x, s3_v, s3_h)]
        for k in range(REGION_READ_LATENCY - 3):
            front.append(next_stage(front[-1], ("valid", "j", "y", "last", "pb", "ya", "yb", "x", "v", "h"),
                                    k + 4))
        f_valid, f_j, f_y, f_last, f_pb, f_ya, f_yb, f_x, f_v, f_h = front[-1]
        m.d.sync += [
            op_valid.eq(f_valid), op_j.eq(f_j), op_y.eq(f_y), op_last.eq(f_last),
            op_pa.eq(params_rp.data), op_pb.eq(f_pb), op_ya.eq(f_ya), op_yb.eq(f_yb),
            op_x.eq(f_x), op_v.eq(f_v), op_lb.eq(gates_rp.data),
            op_h.eq(Mux(fresh.bit_select(layer, 1), 0, f_h)),
        ]

        # --- vector unit: datapath (never stalls; admission is credit-based) ------------------------
        # Each pass takes its result from its own stage; the mode changes only when the pipeline is
        # empty, so no stage ever sees an element of another pass's mode.
        p = Pipeline(m, Const(1), arch)
        valid_chain, j_chain, last_chain = [op_valid], [op_j], [op_last]
        for k in range(1, _DEPTH + 1):
            valid_chain.append(p.reg(valid_chain[-1], name=f"vu_valid{k}"))
            j_chain.append(p.reg(j_chain[-1], name=f"vu_j{k}"))
            last_chain.append(p.reg(last_chain[-1], name=f"vu_last{k}"))
        vu_empty = Signal()
        # X, the state and V are written from registers of their own, a clock after the stage that
        # makes the word (their block RAMs lie across the device from the vector unit): a pass is
        # over when those writes are done too
        m.d.comb += vu_empty.eq(~Cat(s1_valid, s2_valid, *(f[0] for f in front), *valid_chain,
                                     x_buf.w_en, s_buf.w_en, v_buf.w_en).any())
        # norm weight of PARAMS A: the embedding (x = 1.0), the residual sum, or g (MLGRU)
        res_sum = saturate(op_x + op_y, ACT)
        xin = p.reg(Mux(mode == _Mode.EMBED, 1 << ACT.frac, Mux(mode == _Mode.MLGRU, op_y, res_sum)),
                    ACT_SHAPE, name="anw_in")
        xs = p.reg(res_sum, ACT_SHAPE, name="res_sum")
        anw = apply_norm_weight_datapath(m, p, xin, p.delay(op_pa, 1), expA, name="anw")
        xs = p.delay(xs, _ANW_AT - 1)
        m.d.sync += [
            x_buf.w_addr.eq(j_chain[_ANW_AT]),
            x_buf.w_data.eq(Mux(mode == _Mode.EMBED, anw, xs)),
            x_buf.w_en.eq(valid_chain[_ANW_AT] & ((mode == _Mode.EMBED) | (mode == _Mode.RES))),
        ]
        # MLGRU: f = lower_bound_blend(lb, sigmoid(Y_f)), c = silu(Y_i), h = state_update(h, f, c)
        f_sig = sigmoid_datapath(m, p, op_yb, name="f_sig")
        f_gate = lower_bound_blend_datapath(m, p, p.delay(op_lb, SIGMOID_LATENCY), f_sig, name="f_gate")
        f_gate = p.delay(f_gate, _U_IN - _F_AT)
        c = silu_datapath(m, p, op_ya, name="silu")                # also the GLU's silu(gate)
        c_u = p.delay(c, _U_IN - _C_AT)
        h_new = state_update_datapath(m, p, p.delay(op_h, _U_IN), f_gate, c_u, name="h")
        m.d.sync += [
            s_buf.w_addr.eq(p.delay(lh + op_j, _H_AT)),
            s_buf.w_data.eq(h_new),
            s_buf.w_en.eq(valid_chain[_H_AT] & (mode == _Mode.MLGRU)),
        ]
        sh = silu_state_datapath(m, p, h_new, name="silu_h")
        sh = p.delay(sh, _MUL_IN - _SH_AT)
        # one mul_act: the MLGRU's o_in = g_norm(y) * silu(h), or the GLU's silu(Y[j]) * y
        glu = mode == _Mode.GLU
        mul_a = Mux(glu, c, p.delay(anw, _MUL_IN - _ANW_AT))
        mul_b = Mux(glu, p.delay(op_y, _C_AT), sh)
        prod = mul_act_datapath(m, p, mul_a, mul_b, name="mul")
        w_sel = Mux((mode == _Mode.FEED) | glu, op_pa, op_pb)
        w_chain = [w_sel]
        for k in range(1, _DEPTH + 1):
            w_chain.append(p.reg(w_chain[-1], name=f"vu_w{k}"))
        out_valid = Signal()
        out_j = Signal(range(KMAX))
        out_last = Signal()
        out_v = Signal(ACT_SHAPE)
        out_w = Signal(MANT_SHAPE)
        for name, value in (("EMBED", anw), ("RES", anw), ("FEED", op_v), ("GLU", prod),
                            ("MLGRU", prod)):
            k = _OUT_AT[name]
            with m.If(mode == _Mode[name]):
                m.d.comb += [out_valid.eq(valid_chain[k]), out_j.eq(j_chain[k]), out_v.eq(value),
                             out_w.eq(w_chain[k]), out_last.eq(last_chain[k])]
        self.probe.update(kind=kind, v_run=v_run, vu_empty=vu_empty, wb_proj=wb_proj, wb_row=wb_row,
                           inflight=inflight, nw_ok0=nw_ok0, nw_ok12=nw_ok12)
        m.d.sync += [
            v_buf.w_addr.eq(out_j),
            v_buf.w_data.eq(out_v),
            v_buf.w_en.eq(out_valid & (mode != _Mode.FEED) & (mode != _Mode.EMBED)),
        ]

        # quantiser feed
        m.submodules.qfifo = qfifo = fifo.SyncFIFOBuffered(width=ACT.width + 16 + 1, depth=_QDEPTH)
        # written from registers, a clock after the pass's output stage (its output multiplexer and
        # the FIFO's write enable in one clock was the longest path of a demo build at 98 MHz); the
        # element in that register is in flight, so the credit count covers it
        m.d.sync += [
            qfifo.w_data.eq(Cat(out_v, out_w, out_last)),
            qfifo.w_en.eq(out_valid & feeds),
        ]
        m.d.comb += [
            quant.i.valid.eq(qfifo.r_rdy),
            quant.i.payload.v.eq(qfifo.r_data[:ACT.width]),
            quant.i.payload.w_mant.eq(qfifo.r_data[ACT.width:ACT.width + 16]),
            quant.i.payload.last.eq(qfifo.r_data[-1]),
            quant.i.payload.w_exp.eq(w_exp),
            quant.i.payload.m.eq(w_m),
            qfifo.r_en.eq(quant.i.ready),
        ]
        q_take = quant.i.valid & quant.i.ready
        m.d.sync += inflight.eq(inflight + (accept & feeds) - q_take)
        with m.If(feeds):
            m.d.comb += pass_done.eq(q_take & quant.i.payload.last)
        with m.Else():
            m.d.comb += pass_done.eq(out_valid & out_last)

        # --- write-back ------------------------------------------------------------------------------
        rs_take = rs.valid & rs.ready
        m.d.comb += rs.ready.eq(wb_active & (~wb_vpu | (from_wb & open_)))
        # each copy of Y written from registers of its own, a clock after the write-back: the two
        # copies' block RAMs lie apart, and one address sum to both was the longest path of a demo
        # build placed for 100 MHz (the front reads no word of Y that soon after its write)
        y_waddr = Signal.like(y_bufs[0].w_addr)
        m.d.comb += y_waddr.eq(wb_ybase + wb_row)
        for b in y_bufs:
            w = register_copy(m, Cat(y_waddr, rs.payload.value, rs_take & wb_store),
                              f"{b.name}_wq", arch)
            m.d.comb += Cat(b.w_addr, b.w_data, b.w_en).eq(w)
        # the argmax over the logits, a clock behind the write-back (the candidate in registers);
        # FINISH sees wb_done a clock after the last logit, RESULT reads best a clock after that
        bc_valid, bc_first = Signal(), Signal()
        bc_value, bc_row = Signal.like(best), Signal.like(best_idx)
        m.d.sync += bc_valid.eq(0)
        with m.If(bc_valid & (bc_first | (bc_value > best))):
            m.d.sync += [best.eq(bc_value), best_idx.eq(bc_row)]
        with m.If(start):
            m.d.sync += [wb_active.eq(1), wb_proj.eq(0), wb_layer.eq(0), wb_row.eq(0), wb_done.eq(0),
                         wb_upper.eq(0), wb_j.eq(0), wb_left.eq(H_1)]
        with m.Elif(rs_take):
            # wb_upper, wb_j and the rows left are counted along, so that no comparison or
            # subtraction of wb_row stands between the write-back and the vector unit's reads, and
            # the end of a projection is a zero test
            wb_end = wb_left == 0
            with m.If(wb_end):
                m.d.sync += [wb_upper.eq(0), wb_j.eq(0)]
            with m.Elif((wb_proj == 4) & ~wb_upper & (wb_j == I_1)):
                m.d.sync += [wb_upper.eq(1), wb_j.eq(0)]
            with m.Else():
                m.d.sync += wb_j.eq(wb_j + 1)
            with m.If(wb_proj == 6):
                m.d.sync += [bc_valid.eq(1), bc_first.eq(wb_row == 0), bc_value.eq(rs.payload.value),
                             bc_row.eq(wb_row)]
            with m.If(wb_end):
                m.d.sync += [wb_row.eq(0), wb_left.eq(H_1)]
                with m.Switch(wb_proj):
                    with m.Case(3):
                        m.d.sync += [wb_proj.eq(4), wb_left.eq(I2_1)]
                    with m.Case(5):
                        m.d.sync += [wb_layer.eq(wb_layer + 1),
                                     wb_proj.eq(Mux(wb_layer == L_1, 6, 0))]
                        with m.If(wb_layer == L_1):
                            m.d.sync += wb_left.eq(V_1)
                    with m.Case(6):
                        m.d.sync += [wb_active.eq(0), wb_done.eq(1)]
                    with m.Default():
                        m.d.sync += wb_proj.eq(wb_proj + 1)
            with m.Else():
                m.d.sync += [wb_row.eq(wb_row + 1), wb_left.eq(wb_left - 1)]

        # --- weight streamers ------------------------------------------------------------------------
        # One TritStream per row unit, decoding its part of every TRITS word (memory_map.to_regions)
        # into a weight FIFO of its own; the matrix-vector unit takes a beat when every unit's FIFO
        # holds one. The beats are counted, and the matrices' last beats marked, where they are taken:
        # a stream only needs to know when to start and whether beats are still wanted, and gets both
        # through registers of its own (with several units), so that no control crosses the device
        # to a stream in one clock. A stream may fetch a few beats past the token's last (its FIFO
        # fills and it waits); its FIFO is emptied at the next start. The units run in lockstep, at
        # the same address.
        # the beat counts less one, in registers: set in PRODUCTS, needed from START (two clocks on)
        max_left = Shape.cast(range(max_beats + 1))
        nb_hh_1, nb_gate_1, nb_ih_1, nb_vh_1 = (Signal(max_left, name=f"nb_{n}_1")
                                                for n in ("hh", "gate", "ih", "vh"))
        m.d.sync += [nb_hh_1.eq(nb_hh - 1), nb_gate_1.eq((nb_ih << 1) - 1), nb_ih_1.eq(nb_ih - 1),
                     nb_vh_1.eq(nb_vh - 1)]
        st_start = Signal()                           # start, a clock later: when the streams start
        st_active = Signal()
        st_proj = Signal(range(7))
        st_layer = Signal(range(LMAX + 1))
        st_left = Signal(max_left)
        m.d.sync += st_start.eq(start)
        sub_bytes = memory_map.trit_subword_bytes(P)
        streams, wfifos, starts = [], [], []
        for u in range(R):
            pre = "" if R == 1 else f"u{u}_"
            # this stream's start (as st_start) and active (as st_active, a clock later)
            u_start, u_active = Signal(name=f"{pre}st_start"), Signal(name=f"{pre}st_active")
            if R > 1:
                m.d.comb += Cat(u_start, u_active).eq(register_copy(m, Cat(start, st_active),
                                                                    f"{pre}st_ctl", arch))
            else:
                m.d.sync += Cat(u_start, u_active).eq(Cat(start, st_active))
            ts = TritStream(P, sub_bytes, cfg.trit_words, latency=REGION_READ_LATENCY)
            m.submodules["trit_stream" if R == 1 else f"trit_stream{u}"] = ts
            wfifo = ResetInserter(u_start)(fifo.SyncFIFOBuffered(width=2 * P, depth=_WDEPTH))
            m.submodules[f"{pre}wfifo"] = wfifo
            m.d.comb += [
                ts.rd.data.eq(trits_rps[u].data),
                trits_rps[u].addr.eq(Mux(busy, ts.rd.addr, self.rd_trits.addr)),
                ts.start.eq(u_start),
                ts.active.eq(u_active),
                ts.o.ready.eq(wfifo.w_rdy),
                wfifo.w_data.eq(ts.o.payload),
                wfifo.w_en.eq(ts.o.valid),
            ]
            streams.append(ts)
            wfifos.append(wfifo)
            starts.append(u_start)
        # Whether every FIFO holds a beat is known here, a clock after the streams write, without
        # reading their flags: the count of beats written (seen through a register next to each
        # stream) and not yet taken. A beat written at clock t is in the count from t + 2, the clock its
        # FIFO (SyncFIFOBuffered: memory, then output register) first offers it. So ``take`` depends
        # on registers of this block only, and no path runs from here out to a far unit and back in
        # one clock (the longest path of the demo builds up to 10005148).
        # The streams are in lockstep (the same address, the same latency), so one count serves all;
        # it is cleared with the FIFOs, and beats fetched past the token's end stay uncounted.
        # Each FIFO is read a clock after the beat is taken, on a copy of ``take`` registered beside
        # it (the matrix-vector unit takes the trits a clock late, ``trits_delay``), so that ``take``
        # need not reach every FIFO's read logic in the clock it is decided (the longest path of an
        # eight-unit build, 02f19d5c). A beat taken is in its FIFO's output register a clock later:
        # it was written two clocks or more before, and the beat ahead of it leaves in that clock.
        written = Signal(range(_WDEPTH + 1))
        w_seen = Signal()
        w_all = Signal()
        take = Signal()
        wrote = [f.w_en & f.w_rdy & ~s for f, s in zip(wfifos, starts)]
        assert _WREAD_DELAY == 1                     # the clock of the registered copies of take
        if R > 1:
            m.d.comb += w_seen.eq(Cat(*(register_copy(m, w, f"u{u}_st_wrote", arch)
                                        for u, w in enumerate(wrote))).all())
            takes = [register_copy(m, take, f"u{u}_st_take", arch) for u in range(R)]
        else:
            takes = [Signal(name="st_take_r")]
            m.d.sync += [w_seen.eq(wrote[0]), takes[0].eq(take)]
        with m.If(st_start):
            m.d.sync += written.eq(0)
        with m.Else():
            m.d.sync += written.eq(written + w_seen - take)
        # The streamer's counts (st_left, st_proj, st_layer, st_active) follow the beats taken a clock
        # late, on take_r, so that the beat taken, which starts at the matrix-vector unit's ready,
        # reaches nothing of the streamer but its count of beats written and the registered copies
        # (it went on to the streamer's registers across the device: the longest path of the builds
        # f6d2d401 and 09706158; 2a686fe4 had the next matrix's count, found from its number, on
        # the way). The beat taken now is the last of its matrix if the count, after
        # the beat taken a clock ago, is 0; after the token's last beat none is taken.
        take_r = Signal()
        left0, left1 = Signal(), Signal()             # st_left == 0, st_left == 1
        nb_next_1 = Signal(max_left)                  # the beats less one of the matrix after st_proj's
        next0, next1 = Signal(), Signal()             # nb_next_1 == 0, nb_next_1 == 1
        ended = Signal()
        m.d.sync += take_r.eq(take & ~st_start)
        m.d.comb += [
            ended.eq(take_r & left0 & (st_proj == 6)),
            w_all.eq(st_active & ~ended & (written != 0)),
            linear.w.valid.eq(w_all),
            linear.w.payload.trits.eq(Cat(*(f.r_data for f in wfifos))),
            linear.w.payload.last.eq(Mux(take_r, Mux(left0, next0, left1), left0)),
            *(f.r_en.eq(t) for f, t in zip(wfifos, takes)),
            take.eq(linear.w.ready & w_all),
        ]
        self.probe.update(wfifos=wfifos)
        # The streamer's matrix and layer as they will be after this clock, and the beats less one of
        # the matrix after that one (and whether they are 0 or 1) in registers, found from them: the
        # counts' updates and the beat's last flag start at registers of the streamer.
        p_n, l_n = Signal.like(st_proj), Signal.like(st_layer)
        m.d.comb += [p_n.eq(st_proj), l_n.eq(st_layer)]
        with m.If(st_start):
            m.d.comb += [p_n.eq(0), l_n.eq(0)]
        with m.Elif(take_r & left0):
            with m.Switch(st_proj):
                with m.Case(5):
                    m.d.comb += [l_n.eq(st_layer + 1), p_n.eq(Mux(st_layer == L_1, 6, 0))]
                with m.Case(6):
                    pass
                with m.Default():
                    m.d.comb += p_n.eq(st_proj + 1)
        nb_after = Signal(max_left)                   # after i, f, g: f, g, o; after o: gate; ...
        with m.Switch(p_n):
            with m.Case(3):
                m.d.comb += nb_after.eq(nb_gate_1)                 # gate
            with m.Case(4):
                m.d.comb += nb_after.eq(nb_ih_1)                   # down
            with m.Case(5):
                m.d.comb += nb_after.eq(Mux(l_n == L_1, nb_vh_1, nb_hh_1))   # lm_head or i
            with m.Default():
                m.d.comb += nb_after.eq(nb_hh_1)
        m.d.sync += [st_proj.eq(p_n), st_layer.eq(l_n), nb_next_1.eq(nb_after), next0.eq(nb_after == 0),
                     next1.eq(nb_after == 1)]
        with m.If(st_start):
            m.d.sync += [st_active.eq(1), st_left.eq(nb_hh_1), left0.eq(nb_hh_1 == 0), left1.eq(nb_hh_1 == 1)]
        with m.Elif(take_r):
            with m.If(left0):
                m.d.sync += [st_left.eq(nb_next_1), left0.eq(next0), left1.eq(next1)]
                with m.If(st_proj == 6):
                    m.d.sync += st_active.eq(0)
            with m.Else():
                m.d.sync += [st_left.eq(st_left - 1), left0.eq(left1), left1.eq(st_left == 2)]

        # --- sequencer -------------------------------------------------------------------------------
        # PRODUCTS' multiplier: the operands chosen in one clock (checked descriptor values, so
        # within the configured maxima), their product stored two clocks after (operand and product
        # registered: on the ECP5 the DSP block's own)
        mul_a_s = Signal(range(max(VMAX, HMAX, IMAX) + 1))
        mul_b_s = Signal(range(HMAX + 1))
        mul_p = Pipeline(m, Const(1), arch).mul(mul_a_s, mul_b_s, name="seq_mul")
        mul_lat = mul_latency(mul_a_s.shape(), mul_b_s.shape())

        step = Signal(range(max(8, 4 + REGION_READ_LATENCY, _PRODUCTS + mul_lat)))
        sc_expa, sc_expb, sc_scale = (Signal(range(cfg.scalar_words), name=f"sc_{n}")
                                      for n in ("expa", "expb", "scale"))
        m.d.sync += [sc_expa.eq(4 + ei), sc_expb.eq(5 + ei), sc_scale.eq(sb + si)]
        sc_data = scalars_rp.data
        m.d.comb += scalars_rp.addr.eq(self.rd_scalars.addr)
        with m.If(busy):
            m.d.sync += count.eq(count + 1)

        hp = H >> LP                                  # beats of a row of H
        hr = H >> LR                                  # rows of H a row unit computes

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    with m.If(self.req.payload.cmd == Command.RESET_STATE):
                        m.d.sync += fresh.eq((1 << LMAX) - 1)
                    with m.Else():
                        m.d.sync += [req_token.eq(self.req.payload.token), count.eq(1), step.eq(0)]
                        m.next = "SHAPE"

            with m.State("SHAPE"):
                # the descriptor's four words, each REGION_READ_LATENCY clocks after its address
                m.d.comb += [busy.eq(1), scalars_rp.addr.eq(step)]
                m.d.sync += step.eq(step + 1)
                for k in range(4):
                    with m.If(step == k + REGION_READ_LATENCY):
                        m.d.sync += raw[k].eq(sc_data)
                with m.If(step == 3 + REGION_READ_LATENCY):
                    m.next = "CHECK"

            with m.State("CHECK"):
                # the descriptor's checks into a register: a clock of their own
                m.d.comb += busy.eq(1)
                rv, rh, rl, ri = raw
                m.d.sync += shape_ok.eq(Cat(
                    (rh >= 1) & (rh <= HMAX) & (rh[:max(LP, LR)] == 0),
                    (ri >= 1) & (ri <= IMAX) & (ri[:max(LP, LR - 1)] == 0),
                    (rl >= 1) & (rl <= LMAX), (rv >= 1) & (rv <= VMAX) & (rv[:LR] == 0), req_token < rv))
                m.d.sync += [V.eq(rv), H.eq(rh), L.eq(rl), I.eq(ri), tok.eq(req_token), step.eq(0),
                             V_1.eq(rv - 1), H_1.eq(rh - 1), L_1.eq(rl - 1), I_1.eq(ri - 1),
                             I2_1.eq((ri << 1) - 1), H5.eq((rh << 2) + rh)]
                m.next = "CHECKED"

            with m.State("CHECKED"):
                m.d.comb += busy.eq(1)
                with m.If(shape_ok.all()):
                    m.d.sync += error.eq(0)
                    m.next = "PRODUCTS"
                with m.Else():
                    m.d.sync += [error.eq(1), best.eq(0), best_idx.eq(0), cycles.eq(count + 1)]
                    m.next = "RESULT"

            with m.State("PRODUCTS"):
                m.d.comb += busy.eq(1)
                m.d.sync += step.eq(step + 1)
                # step k chooses the operands of the product stored at step k + mul_lat
                # beats a row unit takes: H/R rows of H/P beats; H/R rows of I/P (down; gate
                # has twice as many); V/R rows of H/P (lm_head)
                products = [(V, H, emb_end), (tok, H, tok_row), (hr, hp, nb_hh), (I >> LP, hr, nb_ih),
                            (V >> LR, hp, nb_vh)]
                assert len(products) == _PRODUCTS
                with m.Switch(step):
                    for k in range(len(products) + mul_lat):
                        with m.Case(k):
                            if k < len(products):
                                m.d.comb += [mul_a_s.eq(products[k][0]), mul_b_s.eq(products[k][1])]
                            if k >= mul_lat:
                                m.d.sync += products[k - mul_lat][2].eq(mul_p)
                            if k == len(products) + mul_lat - 1:
                                m.next = "START"

            with m.State("START"):
                m.d.comb += [busy.eq(1), start.eq(1)]
                m.d.sync += [
                    pp.eq(emb_end), ei.eq(0), si.eq(0), sb.eq((L << 3) + L + 7),
                    layer.eq(0), lh.eq(0), kind.eq(_Pass.EMBED), step.eq(0),
                ]
                m.next = "SETUP"

            with m.State("SETUP"):
                # exponent A (or the quantiser's), exponent B, weight scale; their addresses from
                # registers a clock behind ei, si and sb (set in START or NEXT): step 0 waits for them;
                # each word arrives REGION_READ_LATENCY clocks after its address
                m.d.comb += busy.eq(1)
                m.d.sync += step.eq(step + 1)
                with m.If(step == 0):
                    with m.Switch(kind):
                        with m.Case(_Pass.GLU):
                            m.d.sync += bg_start(pp + I, layer == L_1)
                        with m.Case(_Pass.NORM0, _Pass.RES_DOWN):
                            # slot 0 given up if not fetched yet
                            with m.If(bg_phase == 0):
                                m.d.sync += [bg_phase.eq(1), bg_k.eq(0), bg_addr.eq(bg_base + H5)]
                                with m.If(bg_last):
                                    m.d.sync += bg_go.eq(0)
                        with m.Case(_Pass.MLGRU):
                            m.d.sync += bg_go.eq(0)
                with m.Switch(step):
                    with m.Case(1):
                        m.d.comb += scalars_rp.addr.eq(sc_expa)
                    with m.Case(2):
                        m.d.comb += scalars_rp.addr.eq(sc_expb)
                    with m.Case(3):
                        m.d.comb += scalars_rp.addr.eq(sc_scale)
                with m.Switch(step):
                    with m.Case(1 + REGION_READ_LATENCY):
                        m.d.sync += [expA.eq(sc_data[:len(expA)]), w_exp.eq(sc_data[:len(w_exp)])]
                    with m.Case(2 + REGION_READ_LATENCY):
                        with m.If(two):
                            m.d.sync += w_exp.eq(sc_data[:len(w_exp)])
                    with m.Case(3 + REGION_READ_LATENCY):
                        # the norm weight may be in its NWB slot already, fetched in the background
                        # (then PREFETCH only waits for the fetch's last writes)
                        m.d.sync += [w_m.as_value().eq(sc_data), cj.eq(0), cj_more.eq(1),
                                     pf_k.eq(Mux(Mux(nw_slot == 0, nw_ok0, nw_ok12), H, 0))]
                        with m.If(two):
                            m.next = "PREFETCH"
                        with m.Else():
                            m.d.sync += v_run.eq(1)
                            m.next = "RUN"

            with m.State("PREFETCH"):
                # the quantiser's norm weight (the tensor after A in PARAMS) into NWB
                m.d.comb += [busy.eq(1), prefetching.eq(1)]
                with m.If(pf_k != H):
                    m.d.sync += pf_k.eq(pf_k + 1)
                with m.Elif(~Cat(*pf_wrs, pf_wr_q).any()):
                    m.d.sync += v_run.eq(1)
                    m.next = "RUN"

            with m.State("RUN"):
                m.d.comb += busy.eq(1)
                with m.If(pass_done):
                    m.d.sync += [v_run.eq(0), step.eq(0)]
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                # the pass's mode holds until its elements have left every stage
                m.d.comb += busy.eq(1)
                with m.If(vu_empty):
                    m.next = "NEXT"

            with m.State("NEXT"):
                m.d.comb += busy.eq(1)
                m.d.sync += si.eq(si + feeds)

                def past_norms(kind):
                    """The PARAMS pointer and the exponent index past the norm weights of ``kind``."""
                    names = _PASS_NORMS[kind]
                    return [pp.eq(pp + _norms_length(names, H, I)), ei.eq(ei + len(names))]

                with m.Switch(kind):
                    with m.Case(_Pass.EMBED):
                        m.d.sync += [ei.eq(1), kind.eq(_Pass.NORM0)]
                    with m.Case(_Pass.NORM0):
                        m.d.sync += [*past_norms(_Pass.NORM0), kind.eq(_Pass.FEED_F)]
                    with m.Case(_Pass.FEED_F):
                        m.d.sync += [*past_norms(_Pass.FEED_F), kind.eq(_Pass.FEED_G)]
                    with m.Case(_Pass.FEED_G):
                        m.d.sync += [*past_norms(_Pass.FEED_G), kind.eq(_Pass.MLGRU)]
                    with m.Case(_Pass.RES_O):
                        m.d.sync += [*past_norms(_Pass.RES_O), kind.eq(_Pass.GLU)]
                    with m.Case(_Pass.MLGRU):
                        m.d.sync += [*past_norms(_Pass.MLGRU), kind.eq(_Pass.RES_O),
                                     lh.eq(lh + H), fresh.bit_select(layer, 1).eq(0)]
                    with m.Case(_Pass.GLU):
                        m.d.sync += [*past_norms(_Pass.GLU), kind.eq(_Pass.RES_DOWN)]
                    with m.Case(_Pass.RES_DOWN):
                        m.d.sync += [*past_norms(_Pass.RES_DOWN), kind.eq(_Pass.FEED_F),
                                     layer.eq(layer + 1)]
                with m.If((kind == _Pass.RES_DOWN) & (layer == L_1)):
                    m.d.sync += bg_start(emb_end, 0)
                    m.next = "FINISH"
                with m.Else():
                    m.next = "SETUP"

            with m.State("FINISH"):
                m.d.comb += busy.eq(1)
                with m.If(wb_done):
                    m.d.sync += cycles.eq(count + 1)
                    m.next = "RESULT"

            with m.State("RESULT"):
                m.d.comb += [
                    self.res.valid.eq(1),
                    self.res.payload.token.eq(best_idx),
                    self.res.payload.logit.eq(best),
                    self.res.payload.error.eq(error),
                ]
                with m.If(self.res.ready):
                    m.next = "IDLE"

        # a PARAMS or SCALARS write may change what the background fetch read, or where
        with m.If(self.wr_params.en | self.wr_scalars.en):
            m.d.sync += [nw_ok0.eq(0), nw_ok12.eq(0), nw_dirty.eq(1)]

        m.d.comb += self.cycles.eq(cycles)
        return m
