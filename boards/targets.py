"""Board targets: the board clock through a PLL to the design clock, the UART on the FTDI pins, LEDs.

A *design* is any :class:`amaranth.lib.wiring.Component` with the accelerator's ports, clocked by the
single ``sync`` domain::

    uart_rx: In(1)      8N1 serial from the host, idle high (may be asynchronous: it is synchronised
                        again here, so the design sees it two ``sync`` clocks late)
    uart_tx: Out(1)     8N1 serial to the host, idle high
    status:  Out(4)     bit 0 loaded, 1 busy, 2 error, 3 heartbeat: shown on LEDs

:class:`BoardTop` wraps such a design for an amaranth-boards platform; :class:`GenericTop` wraps it as
plain Verilog for any other FPGA (clock at the design frequency, no PLL). :data:`BOARDS` lists the
targets by the names ``mmfree build --board`` takes.

``sync`` is held in reset until the PLL has locked and then for another 16 us: iCE40 block RAMs read
as zero for a few microseconds after configuration, and nothing here may depend on a half-locked clock.
"""

from dataclasses import dataclass, field

from amaranth import *
from amaranth.lib import wiring, io
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .pll import pll_for_family, MHZ

__all__ = ["Board", "BOARDS", "get_board", "UnknownBoardError", "DESIGN_SIGNATURE", "STATUS_BITS",
           "check_design", "BoardTop", "GenericTop", "generic_constraints"]

STATUS_BITS = ("loaded", "busy", "error", "heartbeat")

DESIGN_SIGNATURE = wiring.Signature({
    "uart_rx": In(1),
    "uart_tx": Out(1),
    "status": Out(4),
})
"""The ports every design the flow builds must have (the accelerator's)."""

POR_DELAY_S = 16e-6


class UnknownBoardError(ValueError):
    pass


@dataclass(frozen=True)
class Board:
    """One build target."""
    name: str                   #: what ``--board`` takes
    title: str                  #: for people
    family: str                 #: ``"ecp5"``, ``"ice40"`` or ``"generic"``
    platform: type = None       #: the amaranth-boards platform class (None for ``generic``)
    clock: str = None           #: the board clock's resource name
    clock_hz: int = None        #: its frequency
    default_clock_hz: int = 100 * MHZ   #: design clock when neither ``--clock`` nor the design sets one
    default_model: str = "tiny"  #: the accelerator's hardware preset when ``--model`` is not given
    arch: str = "core"          #: the accelerator architecture built when ``--arch`` is not given
    status_leds: tuple = ()     #: ``(resource, number)`` for status bits 0..3; None leaves a bit unshown
    extra_resources: str = None  #: attribute of the platform class with resources to add
    flash: tuple = ()           #: openFPGALoader command lines (``{bitstream}`` is substituted)
    bitstream: str = ".bit"     #: extension of the file to flash
    notes: tuple = field(default_factory=tuple)

    def platform_instance(self):
        plat = self.platform()
        if self.extra_resources:
            plat.add_resources(getattr(plat, self.extra_resources))
        return plat

    @property
    def device(self):
        return getattr(self.platform, "device", None) if self.platform else None

    @property
    def package(self):
        return getattr(self.platform, "package", None) if self.platform else None


def _boards():
    from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform, ULX3S_45F_Platform,
                                       ULX3S_85F_Platform)
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    boards = []
    for size, plat in (("85f", ULX3S_85F_Platform), ("45f", ULX3S_45F_Platform),
                       ("25f", ULX3S_25F_Platform), ("12f", ULX3S_12F_Platform)):
        boards.append(Board(
            name=f"ulx3s-{size}", title=f"ULX3S ({plat.device})", family="ecp5", platform=plat,
            clock="clk25", clock_hz=25 * MHZ, default_clock_hz=100 * MHZ,
            default_model="demo" if size == "85f" else "tiny",
            status_leds=(("led", 0), ("led", 1), ("led", 2), ("led", 3)),
            flash=("openFPGALoader --board ulx3s {bitstream}",
                   "openFPGALoader --board ulx3s -f {bitstream}"),
            bitstream=".bit",
            notes=("LED 7 lights when the PLL has locked.",)))
    boards.append(Board(
        name="icebreaker", title="iCEBreaker (iCE40UP5K)", family="ice40", platform=ICEBreakerPlatform,
        clock="clk12", clock_hz=12 * MHZ, default_clock_hz=48 * MHZ, arch="compact",
        status_leds=(("led_g", 1), ("led_g", 2), ("led_g", 3), ("led_g", 4)),
        extra_resources="break_off_pmod",
        flash=("openFPGALoader --board ice40_generic {bitstream}",
               "iceprog {bitstream}"),
        bitstream=".bin",
        notes=("Status on the four green LEDs of the break-off section; the main board's green LED "
               "is the heartbeat and its red LED lights on error or while the PLL has not locked.",)))
    boards.append(Board(name="generic", title="any FPGA: Verilog and a constraints template",
                        family="generic", default_clock_hz=100 * MHZ))
    return {b.name: b for b in boards}


BOARDS = _boards()


def get_board(name):
    """The :class:`Board` called ``name`` (case-insensitive)."""
    if isinstance(name, Board):
        return name
    board = BOARDS.get(str(name).strip().lower())
    if board is None:
        raise UnknownBoardError(f"unknown board {name!r}; choose from {', '.join(BOARDS)}")
    return board


def check_design(design):
    """Refuse anything that is not a component with :data:`DESIGN_SIGNATURE`'s ports."""
    if not isinstance(design, wiring.Component):
        raise TypeError(f"the design must be a wiring.Component, not {design!r}")
    members = design.signature.members
    for name, member in DESIGN_SIGNATURE.members.items():
        have = members[name] if name in members else None
        if (have is None or not have.is_port or have.flow != member.flow
                or Shape.cast(have.shape) != Shape.cast(member.shape)):
            raise TypeError(f"the design {type(design).__name__} must have the port "
                            f"{name}: {member!r}; it has {dict(members)!r}")
    return design


def _wire_design(m, design, rx_i, tx_o):
    m.submodules.design = design
    m.submodules.rx_sync = FFSynchronizer(rx_i, design.uart_rx, init=1)
    m.d.comb += tx_o.eq(design.uart_tx)


class BoardTop(Elaboratable):
    """``design`` on ``board``: PLL from the board clock to ``pll.f_out``, UART, status LEDs."""

    def __init__(self, board, design, pll):
        self.board = get_board(board)
        if self.board.family != pll.family:
            raise ValueError(f"a {pll.family} PLL setting cannot drive the {self.board.family} board "
                             f"{self.board.name}")
        self.design = check_design(design)
        self.pll = pll

    def _ecp5_pll(self, m, platform, clk_out, locked):
        p = self.pll.params
        m.submodules.clk_buf = clk = io.Buffer("i", platform.request(self.board.clock, 0, dir="-"))
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{float(self.pll.f_in) / MHZ:g}",
            a_FREQUENCY_PIN_CLKOP=f"{float(self.pll.f_out) / MHZ:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"], p_CLKOP_CPHASE=p["CLKOP_CPHASE"],
            p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk.i, i_CLKFB=clk_out, o_CLKOP=clk_out, o_LOCK=locked,
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
            i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0)

    def _ice40_pll(self, m, platform, clk_out, locked):
        p = self.pll.params
        # SB_PLL40_PAD takes the clock pin itself: no input buffer in between
        clk = platform.request(self.board.clock, 0, dir="-")
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=Const(p["DIVR"], 4), p_DIVF=Const(p["DIVF"], 7), p_DIVQ=Const(p["DIVQ"], 3),
            p_FILTER_RANGE=Const(p["FILTER_RANGE"], 3),
            i_PACKAGEPIN=clk.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        # the constraint goes on a net of this module only, whose name the tools keep
        clk_pll, locked = Signal(name="clk_pll", attrs={"keep": 1}), Signal(name="pll_locked")
        if self.board.family == "ecp5":
            self._ecp5_pll(m, platform, clk_pll, locked)
        else:
            self._ice40_pll(m, platform, clk_pll, locked)
        m.d.comb += cd_sync.clk.eq(clk_pll)
        platform.add_clock_constraint(clk_pll, float(self.pll.f_out))

        # reset: PLL locked, then POR_DELAY_S more (counting up: iCE40 flip-flops start at zero)
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += ClockSignal("por").eq(cd_sync.clk)
        locked_por = Signal()
        m.submodules.lock_sync = FFSynchronizer(locked, locked_por, o_domain="por")
        delay = max(2, int(POR_DELAY_S * float(self.pll.f_out)))
        timer = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~locked_por):
            m.d.por += timer.eq(0)
        with m.Elif(timer != delay):
            m.d.por += timer.eq(timer + 1)
        m.d.por += ready.eq(timer == delay)
        if self.board.family == "ecp5":
            # the reset reaches every register of the design: on a global network (nextpnr-ecp5
            # promotes only clocks by itself), not across the device on general routing, where it
            # was the longest path of a demo build placed for 100 MHz
            m.submodules.rst_dcc = Instance("DCCA", i_CLKI=~ready, i_CE=Const(1), o_CLKO=cd_sync.rst)
        else:
            m.d.comb += cd_sync.rst.eq(~ready)      # nextpnr-ice40 promotes it to a global itself

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        _wire_design(m, self.design, rx_buf.i, tx_buf.o)

        def led(name, number, value):
            buf = io.Buffer("o", platform.request(name, number, dir="-"))
            m.submodules[f"{name}_{number}"] = buf
            m.d.comb += buf.o.eq(value)

        status = self.design.status
        for bit, res in enumerate(self.board.status_leds):
            if res is not None:
                led(*res, status[bit])
        if self.board.family == "ecp5":
            led("led", 7, locked_por)
        elif self.board.name == "icebreaker":
            led("led_g", 0, status[3])
            led("led_r", 0, status[2] | ~locked_por)
        return m


class GenericTop(Elaboratable):
    """``design`` as a plain top level for any FPGA: the clock arrives at the design frequency.

    Ports: ``clk`` (the design clock), ``rst`` (active high, asynchronous; released synchronously),
    ``uart_rx``, ``uart_tx``, ``led[3:0]`` (the status bits, active high).
    """

    def __init__(self, design):
        self.design = check_design(design)
        self.clk = Signal()
        self.rst = Signal()
        self.uart_rx = Signal(init=1)
        self.uart_tx = Signal(init=1)
        self.led = Signal(4)

    @property
    def ports(self):
        return [self.clk, self.rst, self.uart_rx, self.uart_tx, self.led]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(self.clk)
        m.submodules.reset_sync = ResetSynchronizer(self.rst, domain="sync")
        _wire_design(m, self.design, self.uart_rx, self.uart_tx)
        m.d.comb += self.led.eq(self.design.status)
        return m


def generic_constraints(name, clock_hz):
    """The constraints template for :class:`GenericTop` converted as module ``name``: SDC timing
    (complete) and pin assignments to fill in (Vivado XDC, nextpnr LPF and PCF lines)."""
    period_ns = 1e9 / clock_hz
    lines = [
        f"# Constraints for {name}: the design clock is {clock_hz / MHZ:g} MHz.",
        "# Timing (SDC: Vivado, Quartus, Libero, nextpnr with --sdc).",
        f"create_clock -name clk -period {period_ns:.3f} [get_ports clk]",
        "# rst and uart_rx are synchronised inside the design; leds and uart_tx are slow.",
        "set_false_path -from [get_ports {rst uart_rx}]",
        "set_false_path -to [get_ports {uart_tx led[*]}]",
        "",
        "# Pins: replace each <PIN> with your board's and keep the lines of your tool.",
        "#   clk      in   design clock (a PLL output, or a board oscillator at the design frequency)",
        "#   rst      in   active-high reset; tie low if unused",
        "#   uart_rx  in   serial from the host (FTDI TXD), idle high",
        "#   uart_tx  out  serial to the host (FTDI RXD), idle high",
        "#   led[0..3] out loaded, busy, error, heartbeat (active high)",
        "#",
        "# Vivado (XDC):",
    ]
    ports = ["clk", "rst", "uart_rx", "uart_tx"] + [f"led[{i}]" for i in range(4)]
    for p in ports:
        lines.append(f"# set_property -dict {{PACKAGE_PIN <PIN> IOSTANDARD LVCMOS33}} [get_ports {{{p}}}]")
    lines += ["#", "# nextpnr-ecp5 (LPF):"]
    for p in ports:
        lines.append(f'# LOCATE COMP "{p}" SITE "<PIN>"; IOBUF PORT "{p}" IO_TYPE=LVCMOS33;')
    lines += ["#", "# nextpnr-ice40 (PCF):"]
    for p in ports:
        lines.append(f"# set_io {p} <PIN>")
    return "\n".join(lines) + "\n"
