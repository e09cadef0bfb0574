"""ECP5 block RAM and multipliers instantiated by hand, with their own registers.

Yosys maps an inferred memory onto ``DP16KD`` blocks but never enables their output register, so the
block's slow data output (5.8 ns on the speed grade 6 ECP5) is the start of whatever path follows it.
With ``REGMODE = "OUTREG"`` the data leaves the block from a register inside it, one clock later.
:func:`dp16kd_ram` builds a one-write-port, one-read-port memory from such blocks, wired exactly as
Yosys wires the same inferred memory (a synthesis test compares them pin for pin), in one of two
modes:

* ``data_width=36``: pseudo dual port, 512 words of 36 bits (port A writes the low half through
  ``DIA``, port B the high half through ``DIB``; the read word leaves on ``DOA`` and ``DOB``);
* ``data_width=18``: true dual port used as simple dual port, 1,024 words of 18 bits (port A writes,
  port B reads).

:func:`register_copy` registers a value in flip-flops of its own, which Yosys keeps apart from other
copies of the same value: several copies, each near the blocks it drives, keep a widely used address
off one long net.

Yosys maps a product onto ``MULT18X18D`` with none of its registers on either, so the block's
multiplier (3.9 ns) sits between two fabric registers, with a long route into the DSP row and one out
of it. :func:`mult18x18d` instantiates the block with its input registers (``REG_INPUTA/B``) and
output register (``REG_OUTPUT``) on: the same two clocks from operands to product as a fabric register
before the block and one after it, but the multiplier is then inside one clock of the block alone.

``sim/ecp5_dp16kd.v`` and ``sim/ecp5_mult18x18d.v`` model exactly these configurations for simulation
(Yosys ships ``DP16KD`` and ``MULT18X18D`` as black boxes).
"""

from amaranth.hdl import C, Cat, ClockSignal, Instance, ResetSignal, Signal, Value, signed, unsigned

__all__ = ["DP16KD_MODES", "DP16KD_LATENCY", "dp16kd_ram", "MULT18X18D_WIDTH", "MULT18X18D_LATENCY",
           "mult18x18d", "register_copy", "ARCHS", "check_arch", "platform_arch"]

DP16KD_MODES = {36: 512, 18: 1024}
"""Data bits per block -> words per block, for the modes :func:`dp16kd_ram` instantiates."""

DP16KD_LATENCY = 2
"""Clocks from the read address to the data of :func:`dp16kd_ram`: the block's own address register
and its output register."""


def dp16kd_ram(m, name, waddr, wdata, we, raddr, *, data_width=36, read_en=None):
    """A memory of ``len(wdata)`` bits per word in ``DP16KD`` blocks of ``data_width`` bits
    (:data:`DP16KD_MODES`), at most as deep as one block. Port A writes ``wdata`` at ``waddr`` when
    ``we``; port B reads ``raddr``, whose word is returned :data:`DP16KD_LATENCY` clocks later (a write
    and a read of one address in one clock read an undefined word: callers never do both or never
    use that word). ``read_en`` (default: always) is the clock enable of both read registers, the
    address's and the output's: while it is low the read and its word stay as they are. The blocks
    are added to ``m`` as ``{name}_bram{i}``."""
    if data_width not in DP16KD_MODES:
        raise ValueError(f"data_width must be one of {sorted(DP16KD_MODES)}, not {data_width!r}")
    depth = DP16KD_MODES[data_width]
    abits = (depth - 1).bit_length()
    if len(waddr) > abits or len(raddr) > abits:
        raise ValueError(f"{name}: a {data_width}-bit DP16KD holds {depth} words; addresses of "
                         f"{max(len(waddr), len(raddr))} bits do not fit")
    read_en = C(1, 1) if read_en is None else read_en
    lsb = 14 - abits                                 # address pins used: AD13 down to AD{lsb}
    nbe = data_width // 9                            # byte enables on AD{nbe-1}..AD0 of the writer
    width = len(wdata)
    rdata = Signal(width, name=f"{name}_rdata")
    for i, b in enumerate(range(0, width, data_width)):
        din = wdata[b:b + data_width]
        used = len(din)
        din = Cat(din, C(0, data_width - used))
        dout = Signal(data_width, name=f"{name}_do{i}")
        m.d.comb += rdata[b:b + data_width].eq(dout[:used])
        pins = {}
        for a in range(14):
            if a < nbe:                              # byte enables: the bytes in use
                pins[f"i_ADA{a}"] = we if a * 9 < used else C(0, 1)
            else:
                pins[f"i_ADA{a}"] = waddr[a - lsb] if lsb <= a < lsb + len(waddr) else C(0, 1)
            pins[f"i_ADB{a}"] = raddr[a - lsb] if lsb <= a < lsb + len(raddr) else C(0, 1)
        if data_width == 36:                         # one word over both ports' data pins
            for k in range(18):
                pins[f"i_DIA{k}"], pins[f"i_DIB{k}"] = din[k], din[18 + k]
                pins[f"o_DOA{k}"], pins[f"o_DOB{k}"] = dout[k], dout[18 + k]
            we_a = C(1, 1)                           # the byte enables write
        else:                                        # port A writes, port B reads
            for k in range(18):
                pins[f"i_DIA{k}"], pins[f"i_DIB{k}"] = din[k], C(0, 1)
                pins[f"o_DOB{k}"] = dout[k]
            we_a = we
        for k in range(3):
            pins[f"i_CSA{k}"] = pins[f"i_CSB{k}"] = C(0, 1)
        m.submodules[f"{name}_bram{i}"] = Instance(
            "DP16KD",
            p_DATA_WIDTH_A=data_width, p_DATA_WIDTH_B=data_width,
            p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG", p_RESETMODE="ASYNC",
            p_ASYNC_RESET_RELEASE="ASYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
            p_WRITEMODE_A="NORMAL" if data_width == 36 else "READBEFOREWRITE",
            p_WRITEMODE_B="NORMAL" if data_width == 36 else "READBEFOREWRITE", p_GSR="DISABLED",
            i_CLKA=ClockSignal(), i_CLKB=ClockSignal(), i_CEA=C(1, 1), i_CEB=read_en,
            i_OCEA=read_en, i_OCEB=read_en, i_WEA=we_a, i_WEB=C(0, 1),
            i_RSTA=C(0, 1), i_RSTB=C(0, 1), **pins)
    return rdata


MULT18X18D_WIDTH = 18
"""Operand width of ``MULT18X18D``: each operand signed or unsigned as its ``SIGNEDA``/``SIGNEDB`` pin
says."""

MULT18X18D_LATENCY = 2
"""Clocks from the operands of :func:`mult18x18d` to their product: input and output register."""


def mult18x18d(m, name, a, b, en, out_en=None):
    """``a * b`` of operands that fit :data:`MULT18X18D_WIDTH` bits (both signed when either is, as
    in Amaranth's product: an unsigned one then has at most 17 bits), :data:`MULT18X18D_LATENCY`
    clocks later, from one ``MULT18X18D`` block with its input and
    output registers on, all three loading when ``en`` (``CE0``; the output register when ``out_en``,
    on ``CE1``, if given) and cleared by the domain's reset (``RST0``, synchronous), as a fabric
    register of the same operands and one of their product would.
    Pins are wired as Yosys' own mapping of a product wires them (a synthesis test compares the two).
    The block is added to ``m`` as ``name``; the product is signed when either operand is."""
    a, b = Value.cast(a), Value.cast(b)
    signed_ = a.shape().signed or b.shape().signed     # Amaranth's (and Yosys') rule for a product
    for v in (a, b):
        if len(v) > MULT18X18D_WIDTH - (signed_ and not v.shape().signed):
            raise ValueError(f"{name}: operands {a.shape()} and {b.shape()} do not fit one MULT18X18D")
    width = len(a) + len(b)
    shape = signed(MULT18X18D_WIDTH) if signed_ else unsigned(MULT18X18D_WIDTH)
    a18, b18 = Signal(shape, name=f"{name}_a"), Signal(shape, name=f"{name}_b")
    m.d.comb += [a18.eq(a), b18.eq(b)]
    p = Signal(2 * MULT18X18D_WIDTH, name=f"{name}_p")
    pins = {}
    for k in range(MULT18X18D_WIDTH):
        pins[f"i_A{k}"], pins[f"i_B{k}"], pins[f"i_C{k}"] = a18[k], b18[k], C(0, 1)
    for k in range(2 * MULT18X18D_WIDTH):
        pins[f"o_P{k}"] = p[k]
    for k in range(1, 4):
        pins[f"i_CLK{k}"] = pins[f"i_CE{k}"] = pins[f"i_RST{k}"] = C(0, 1)
    regs = {}
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        regs[f"p_REG_{reg}_CLK"], regs[f"p_REG_{reg}_CE"], regs[f"p_REG_{reg}_RST"] = "CLK0", "CE0", "RST0"
    if out_en is not None:
        regs["p_REG_OUTPUT_CE"], pins["i_CE1"] = "CE1", out_en
    for reg in ("INPUTC", "PIPELINE"):
        regs[f"p_REG_{reg}_CLK"], regs[f"p_REG_{reg}_CE"], regs[f"p_REG_{reg}_RST"] = "NONE", "CE0", "RST0"
    m.submodules[name] = Instance(
        "MULT18X18D", **regs,
        p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED", p_CLK3_DIV="ENABLED",
        p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED", p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT",
        p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC",
        i_SIGNEDA=C(int(signed_), 1), i_SIGNEDB=C(int(signed_), 1), i_SOURCEA=C(0, 1), i_SOURCEB=C(0, 1),
        i_CLK0=ClockSignal(), i_CE0=en, i_RST0=ResetSignal(), **pins)
    return p[:width].as_signed() if signed_ else p[:width]


ARCHS = (None, "generic", "ecp5")
"""Values of a unit's ``arch``: ``None`` picks ``"ecp5"`` when elaborated for an ECP5 platform."""


def check_arch(arch):
    """Raise ``ValueError`` unless ``arch`` is one of :data:`ARCHS`."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(map(repr, ARCHS))}, not {arch!r}")


def platform_arch(platform):
    """``"ecp5"`` when elaborating for an ECP5 platform (``platform.family``), else ``"generic"``."""
    return "ecp5" if getattr(platform, "family", None) == "ecp5" else "generic"


def register_copy(m, value, name, arch):
    """``value`` registered, a copy of its own: on ECP5 (``arch == "ecp5"``) ``TRELLIS_FF`` cells
    (synchronous reset to 0) marked ``keep``, which Yosys does not merge with other copies of the same
    value; elsewhere a plain register."""
    q = Signal(len(value), name=name)
    if arch != "ecp5":
        m.d.sync += q.eq(value)
        return q
    for i in range(len(value)):
        m.submodules[f"{name}_ff{i}"] = Instance(
            "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
            p_SRMODE="LSR_OVER_CE", p_REGSET="RESET", a_keep=1,
            i_CLK=ClockSignal(), i_LSR=ResetSignal(), i_CE=C(1, 1), i_DI=value[i], o_Q=q[i])
    return q
