"""ECP5 block RAM instantiated by hand: ``DP16KD`` with its own output register.

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

``sim/ecp5_dp16kd.v`` models exactly these two configurations for simulation (Yosys ships
``DP16KD`` as a black box).
"""

from amaranth.hdl import C, Cat, ClockSignal, Instance, ResetSignal, Signal

__all__ = ["DP16KD_MODES", "DP16KD_LATENCY", "dp16kd_ram", "register_copy"]

DP16KD_MODES = {36: 512, 18: 1024}
"""Data bits per block -> words per block, for the modes :func:`dp16kd_ram` instantiates."""

DP16KD_LATENCY = 2
"""Clocks from the read address to the data of :func:`dp16kd_ram`: the block's own address register
and its output register."""


def dp16kd_ram(m, name, waddr, wdata, we, raddr, *, data_width=36):
    """A memory of ``len(wdata)`` bits per word in ``DP16KD`` blocks of ``data_width`` bits
    (:data:`DP16KD_MODES`), at most as deep as one block. Port A writes ``wdata`` at ``waddr`` when
    ``we``; port B reads ``raddr``, whose word is returned :data:`DP16KD_LATENCY` clocks later (a write
    and a read of one address in one clock read an undefined word: callers never do both). The
    blocks are added to ``m`` as ``{name}_bram{i}``."""
    if data_width not in DP16KD_MODES:
        raise ValueError(f"data_width must be one of {sorted(DP16KD_MODES)}, not {data_width!r}")
    depth = DP16KD_MODES[data_width]
    abits = (depth - 1).bit_length()
    if len(waddr) > abits or len(raddr) > abits:
        raise ValueError(f"{name}: a {data_width}-bit DP16KD holds {depth} words; addresses of "
                         f"{max(len(waddr), len(raddr))} bits do not fit")
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
            i_CLKA=ClockSignal(), i_CLKB=ClockSignal(), i_CEA=C(1, 1), i_CEB=C(1, 1),
            i_OCEA=C(1, 1), i_OCEB=C(1, 1), i_WEA=we_a, i_WEB=C(0, 1),
            i_RSTA=C(0, 1), i_RSTB=C(0, 1), **pins)
    return rdata


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
