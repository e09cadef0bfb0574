"""The compact accelerator: a small RISC-V processor, firmware and a ternary unit, for boards too small
for :class:`~mmfree.hw.core.Core` (the iCE40UP5K of the iCEBreaker).

::

    uart_rx --> UARTReceiver --> RX FIFO (1,025 bytes, block RAM) --.
    uart_tx <-- UARTTransmitter <-----------------------------------+-- registers
    status  <-- firmware bits 0-2, heartbeat                        |
                                                                    |
      PicoRV32 (RV32IMC) --- bus ---+-- boot ROM (block RAM: the firmware image)
                                    +-- SPRAM (128 KiB: model regions, .data, .bss, stack)
                                    |     ^ trits, one 32-bit word at a time (the unit first)
                                    +-- TernaryDot: code buffer, start, result

The processor runs the host-link protocol and every scalar and element-wise step of the integer model
in firmware (``hw/fw``, built by :mod:`mmfree.hw.firmware`); :class:`TernaryDot` computes the dot
products of the ternary matrices, ``config.lanes`` trits a clock, reading the TRITS region straight
from the SPRAM. With ``phy="bytes"`` the UART is left out and the byte streams are the ports, exactly as
for :class:`~mmfree.hw.accelerator.Accelerator`, so the board flow and the simulated board take either.

Memory map
----------
Defined once, here (:class:`SocMap`); the address decoding, the linker script (:meth:`SocMap.linker_script`)
and the firmware's ``soc_map.h`` (:meth:`SocMap.header`) are generated from it.

============  ===============  ==================================================================
address       size             contents
============  ===============  ==================================================================
0x0000_0000   the image,       boot ROM (block RAM initialised with the firmware): ``.text``,
              rounded up to    ``.rodata`` and the initial values of ``.data``; at most
              1 KiB            :func:`rom_limit` bytes (11 KiB at four lanes)
0x1000_0000   128 KiB          SPRAM: the model regions TRITS, PARAMS, GATES, SCALARS (in that
                               order, each aligned to :data:`REGION_ALIGN` bytes, sizes from
                               :func:`mmfree.hw.link.region_sizes`), then ``.data``, ``.bss`` and the
                               stack (at least :data:`STACK_BYTES`), which grows down from the end
0x2000_0000   32 bytes         registers (:data:`REGISTERS`), 32-bit
0x2000_1000   ``max_k`` bytes  the ternary unit's codes (write only; any width of store)
============  ===============  ==================================================================

Only address bits 29-28 select among ROM, SPRAM and the peripherals (bit 12 the codes, bits 4-2 a
register); the rest alias. Every access takes two clocks (the word is read on the first and handed
to the processor on the second) unless it has to wait: a store to ``UART_DATA`` while the transmitter
is full, a load of ``TDOT_RESULT`` and a store to ``TDOT_POS`` or to the codes while the unit is
busy, an SPRAM access on a clock on which the unit reads the SPRAM.

Registers (offsets from 0x2000_0000):

``UART_DATA`` (0x00)
    Load: bit 8 set when a received byte was waiting, then bits 7-0 are that byte, taken from the FIFO;
    0 when none was. Store: bits 7-0 are sent (waits while the transmitter is full).
``UART_STATUS`` (0x04)
    Bit 0: a received byte is waiting; bit 1: the transmitter takes a byte now.
``CYCLES`` (0x08)
    The free-running clock-cycle counter (wraps at 2**32).
``STATUS`` (0x0C)
    Bits 2-0 drive ``status`` bits 2-0 (loaded, busy, error); bit 3 of ``status`` is the heartbeat.
``TDOT_K`` (0x10)
    The row length ``k`` of the next row: a multiple of ``lanes`` up to ``max_k`` (the low bits are
    ignored).
``TDOT_POS`` (0x14)
    Store: the row's first trit ``pos``, counted in trits from the start of the TRITS region; starts
    the row.
``TDOT_RESULT`` (0x18)
    Load: the last row's sum, a signed 32-bit integer; waits until the row is done.
``TDOT_BUSY`` (0x1C)
    Bit 0: a row is being computed.

Resources on the iCE40UP5K
--------------------------
``lanes=4``, the ``tiny`` sizing, built by :func:`mmfree.boards.build.build` for the iCEBreaker with
``synth_ice40 -dsp``: with the device firmware of 9,992 bytes (a ROM of 10 KiB), 4,160 of the 5,280
logic cells, 28 of the 30 block RAMs (:func:`bram_blocks`: ROM 20, PicoRV32's register file 4, the
receive FIFO 2, the codes 2), the four SPRAMs and 4 of the 8 DSPs (the multiplier); with an image of
the largest size (11 KiB) 4,197 cells and all 30 block RAMs. About 2,750 of the LUTs are PicoRV32's
(640 of them its divider). nextpnr-ice40 reaches about 20 MHz: the longest path is PicoRV32's own, from
the word read through its compressed-instruction decoder to its register file's read address. The
block RAMs are the scarce resource; the boot ROM gets what the others leave (:func:`rom_limit`).
"""

from dataclasses import dataclass
from functools import reduce
import operator
import tempfile
from pathlib import Path

from amaranth.hdl import C, Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal, signed
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import memory_map

from .accelerator import DEFAULT_BAUD, HEARTBEAT_HZ, PHYS, port_members
from .config import HwConfig
from .link import check_arguments, info_for, region_sizes
from .uart import UARTReceiver, UARTTransmitter, baud_fraction

__all__ = ["CompactAccelerator", "TernaryDot", "SPRAM", "SocMap", "build_firmware", "picorv32_source",
           "PICORV32_PARAMS", "ROM_BASE", "SPRAM_BASE", "SPRAM_BYTES", "IO_BASE", "CODES_BASE", "REGISTERS",
           "rom_limit", "bram_blocks", "soc_arch", "STACK_BYTES", "REGION_ALIGN", "BRAM_BYTES",
           "ROM_CHUNK_BYTES", "RX_FIFO_BYTES", "MAX_SOC_LANES"]

ROM_BASE = 0x0000_0000
SPRAM_BASE = 0x1000_0000
SPRAM_BYTES = 128 * 1024
"""Four ``SB_SPRAM256KA`` of 16K x 16 bits: two pairs side by side make 32K 32-bit words."""
SPRAM_WORDS = SPRAM_BYTES // 4
IO_BASE = 0x2000_0000
CODES_OFFSET = 0x1000
CODES_BASE = IO_BASE + CODES_OFFSET
REGISTERS = {
    "UART_DATA": 0x00,
    "UART_STATUS": 0x04,
    "CYCLES": 0x08,
    "STATUS": 0x0C,
    "TDOT_K": 0x10,
    "TDOT_POS": 0x14,
    "TDOT_RESULT": 0x18,
    "TDOT_BUSY": 0x1C,
}
"""Register offsets from :data:`IO_BASE` (see the module's documentation)."""
_REG = {name: off >> 2 for name, off in REGISTERS.items()}

BRAM_BYTES = 512
"""Bytes of one iCE40 ``SB_RAM40_4K`` (4 kbit): the boot ROM's granule."""
UP5K_BRAMS = 30
"""``SB_RAM40_4K`` blocks of the iCE40UP5K."""
ROM_CHUNK_BYTES = 1024
"""The boot ROM's granule: 256 words of 32 bits, two block RAMs of 256 x 16 side by side. The ROM is
built of memories of 2 KiB (four blocks of 512 x 8) and, for an odd number of KiB, one of 1 KiB at
the end: one memory for the whole image would let Yosys take four blocks for every 2 KiB begun, and
fewer, larger parts keep the multiplexer in front of the processor shallow."""
RX_FIFO_BYTES = 1025
"""Bytes the receive FIFO holds: 1,024 in two block RAMs and its output register."""
STACK_BYTES = 4096
"""SPRAM kept free for the stack below its end (the linker refuses ``.data`` and ``.bss`` that leave less)."""
REGION_ALIGN = 16
"""Alignment of every model region in the SPRAM."""
MAX_SOC_LANES = 16
"""The most lanes :class:`TernaryDot` runs at full rate: 20 trits arrive a clock from the SPRAM."""

PICORV32_PARAMS = {
    "ENABLE_COUNTERS": 0, "ENABLE_COUNTERS64": 0, "ENABLE_REGS_16_31": 1, "ENABLE_REGS_DUALPORT": 1,
    "LATCHED_MEM_RDATA": 0, "TWO_STAGE_SHIFT": 1, "BARREL_SHIFTER": 1, "TWO_CYCLE_COMPARE": 0,
    "TWO_CYCLE_ALU": 0, "COMPRESSED_ISA": 1, "CATCH_MISALIGN": 0, "CATCH_ILLINSN": 0, "ENABLE_PCPI": 0,
    "ENABLE_MUL": 0, "ENABLE_FAST_MUL": 1, "ENABLE_DIV": 1, "ENABLE_IRQ": 0, "ENABLE_IRQ_QREGS": 0,
    "ENABLE_IRQ_TIMER": 0, "ENABLE_TRACE": 0, "REGS_INIT_ZERO": 0,
}
"""PicoRV32's one-bit parameters: RV32IMC, no interrupts, counters or traps on misaligned or illegal
instructions, the barrel shifter (180 logic cells, 13% fewer clocks a token than the two-stage
shifter). ``ENABLE_FAST_MUL`` is a 33 x 33-bit product that Yosys maps onto
four ``SB_MAC16`` only with ``synth_ice40 -dsp``: an iCE40 build of :class:`CompactAccelerator` needs
that option (Amaranth's ``synth_opts="-dsp"``), without it the product takes some 3,000 logic cells and
the design does not fit the UP5K. With ``fast_mul=False`` the processor multiplies bit by bit instead
(``ENABLE_MUL``: no DSP and no option needed, as large and as fast a design, but 32 clocks a product,
64 for its upper half). Register file: four block RAMs (two read ports)."""


def picorv32_source():
    """Path of ``picorv32.v`` (the PyPI package ``pythondata-cpu-picorv32``)."""
    try:
        import pythondata_cpu_picorv32
    except ImportError:
        raise ImportError("the PicoRV32 sources are missing: pip install pythondata-cpu-picorv32") from None
    path = Path(pythondata_cpu_picorv32.data_location) / "picorv32.v"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (a broken pythondata-cpu-picorv32 installation)")
    return path


def soc_arch(platform):
    """``"ice40up"`` when elaborating for an iCE40 UltraPlus (it has SPRAM), else ``"generic"``."""
    device = str(getattr(platform, "device", "") or "")
    return "ice40up" if device.upper().startswith("ICE40UP") else "generic"


def _align(n, a):
    return (n + a - 1) // a * a


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# --- the memory map ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SocMap:
    """Where everything is, for a device built for ``config``.

    ``regions``: ``{region: (address, bytes)}`` of the four model regions in the SPRAM;
    ``data_base``: the first SPRAM address after them (``.data``, ``.bss``, then free space and the
    stack down from :attr:`stack_top`). Raises :class:`~mmfree.memory_map.MemoryMapError` when the
    regions leave less than :data:`STACK_BYTES` of the SPRAM.
    """
    config: HwConfig

    def __post_init__(self):
        if not isinstance(self.config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {self.config!r}")
        if self.data_base + STACK_BYTES > self.stack_top:
            total = sum(size for _, size in self.regions.values())
            raise memory_map.MemoryMapError(
                f"the model regions need {total} bytes; the SPRAM holds {SPRAM_BYTES} of which "
                f"{STACK_BYTES} are kept for the stack")

    @property
    def regions(self):
        out, at = {}, SPRAM_BASE
        for r, size in sorted(region_sizes(self.config).items()):
            out[r] = (at, size)
            at = _align(at + size, REGION_ALIGN)
        return out

    @property
    def data_base(self):
        base, size = self.regions[max(self.regions)]
        return _align(base + size, REGION_ALIGN)

    @property
    def stack_top(self):
        return SPRAM_BASE + SPRAM_BYTES

    @property
    def rom_limit(self):
        """The largest boot image in bytes: :func:`rom_limit` of the configuration."""
        return rom_limit(self.config)

    @property
    def trits_offset(self):
        """Byte offset of the TRITS region in the SPRAM."""
        return self.regions[memory_map.REGION_TRITS][0] - SPRAM_BASE

    def linker_script(self):
        """The text of the firmware's linker script: code and constants in the ROM, ``.data`` loaded
        from the ROM into the SPRAM by ``start.S``, ``.bss`` after it, the stack at the SPRAM's end."""
        return f"""/* Generated by mmfree.hw.soc.SocMap.linker_script: do not edit. */
OUTPUT_ARCH("riscv")
ENTRY(_start)
MEMORY
{{
    ROM (rx) : ORIGIN = 0x{ROM_BASE:08x}, LENGTH = {self.rom_limit}
    RAM (rw) : ORIGIN = 0x{self.data_base:08x}, LENGTH = {self.stack_top - self.data_base}
}}
SECTIONS
{{
    .text : {{
        KEEP(*(.text.start))
        *(.text .text.*)
    }} > ROM
    .rodata : ALIGN(4) {{
        *(.srodata .srodata.*)
        *(.rodata .rodata.*)
        . = ALIGN(4);
    }} > ROM
    .data : ALIGN(4) {{
        _data_start = .;
        __global_pointer$ = . + 0x800;
        *(.sdata .sdata.*)
        *(.data .data.*)
        . = ALIGN(4);
        _data_end = .;
    }} > RAM AT > ROM
    _data_load = LOADADDR(.data);
    .bss (NOLOAD) : ALIGN(4) {{
        _bss_start = .;
        *(.sbss .sbss.*)
        *(.bss .bss.*)
        *(COMMON)
        . = ALIGN(4);
        _bss_end = .;
    }} > RAM
    /DISCARD/ : {{
        *(.eh_frame .eh_frame_hdr)
    }}
    _stack_top = 0x{self.stack_top:08x};
    ASSERT(_bss_end + {STACK_BYTES} <= _stack_top, "firmware: .data and .bss leave too little SPRAM for the stack")
}}
"""

    def header(self):
        """The text of ``soc_map.h``: the addresses ``soc.c`` and ``start.S`` use."""
        lines = ["/* Generated by mmfree.hw.soc.SocMap.header: do not edit. */",
                 "#ifndef MMFREE_SOC_MAP_H", "#define MMFREE_SOC_MAP_H", ""]
        d = lines.append
        for name, value in (("ROM_BASE", ROM_BASE), ("SPRAM_BASE", SPRAM_BASE), ("SPRAM_BYTES", SPRAM_BYTES),
                            ("IO_BASE", IO_BASE), ("CODES", CODES_BASE), ("DATA_BASE", self.data_base),
                            ("STACK_TOP", self.stack_top)):
            d(f"#define SOC_{name} 0x{value:08x}u")
        for name, off in REGISTERS.items():
            d(f"#define SOC_{name} 0x{IO_BASE + off:08x}u")
        d("#define SOC_UART_DATA_VALID 0x100u")
        d("#define SOC_UART_STATUS_RX 0x1u")
        d("#define SOC_UART_STATUS_TX 0x2u")
        bases = [self.regions[r][0] for r in sorted(self.regions)]
        d("#define SOC_REGION_BASES {" + ", ".join(f"0x{b:08x}u" for b in bases) + "}")
        for r, (base, size) in sorted(self.regions.items()):
            d(f"#define SOC_REGION_{memory_map.REGION_NAMES[r].upper()} 0x{base:08x}u")
        d("")
        d("#endif")
        return "\n".join(lines) + "\n"


def build_firmware(config, build_hash=0, token_history=256, *, out_dir=None, sources=None):
    """Build the firmware image of a :class:`CompactAccelerator` for ``config``; returns its bytes.

    ``sources``: the C files besides ``start.S`` and ``soc.c`` (default: the device firmware of
    ``hw/fw``, :data:`mmfree.hw.firmware.SOURCES`; a test firmware gives its own, which then provides
    ``device_init`` and ``device_service``). ``out_dir``: where the build goes (default: a temporary
    directory, removed afterwards). Raises :class:`~mmfree.hw.firmware.FirmwareError` when it does not
    build or does not fit the ROM (:func:`rom_limit`).
    """
    from . import firmware
    soc_map = SocMap(config)
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="mmfree-fw-") as tmp:
            return build_firmware(config, build_hash, token_history, out_dir=tmp, sources=sources)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soc_map.h").write_text(soc_map.header())
    kwargs = {} if sources is None else {"sources": tuple(str(Path(s).resolve()) for s in sources)}
    image = firmware.build_rom(out_dir, config, build_hash, token_history,
                               linker_script=soc_map.linker_script(), **kwargs)
    if len(image) > soc_map.rom_limit:
        raise firmware.FirmwareError(f"the firmware image has {len(image)} bytes; the ROM holds "
                                     f"{soc_map.rom_limit}")
    return image


def bram_blocks(config, rom_bytes=0):
    """``SB_RAM40_4K`` blocks of a :class:`CompactAccelerator` on the iCE40, ``{use: blocks}``: the boot
    ROM of ``rom_bytes``, PicoRV32's register file (two read ports of 32 x 32 bits), the receive FIFO
    and the code buffer (``max_k / lanes`` words of ``8 * lanes`` bits, in blocks of 256 x 16)."""
    code_blocks = -(-8 * config.lanes // 16) * -(-(config.max_k // config.lanes) // 256)
    rom = 2 * -(-rom_bytes // ROM_CHUNK_BYTES)
    return {"rom": rom, "registers": 4, "rx_fifo": 2, "codes": code_blocks}


def rom_limit(config):
    """The largest boot image for ``config``: the whole ROM chunks (:data:`ROM_CHUNK_BYTES`) in the
    block RAMs of the iCE40UP5K that the rest of the system leaves (:func:`bram_blocks`), 11 KiB at
    four lanes and ``max_k`` up to 256."""
    free = UP5K_BRAMS - sum(bram_blocks(config).values())
    return free * BRAM_BYTES // ROM_CHUNK_BYTES * ROM_CHUNK_BYTES


# --- SPRAM ---------------------------------------------------------------------------------------

class SPRAM(wiring.Component):
    """128 KiB of single-port RAM as 32K words of 32 bits with byte write enables.

    On an iCE40 UltraPlus (``soc_arch(platform) == "ice40up"``) four ``SB_SPRAM256KA``: two pairs side
    by side for 32-bit words, bit 14 of the address choosing the pair, the byte enables on the
    nibble masks (``MASKWREN``); elsewhere a :class:`amaranth.lib.memory.Memory` that behaves the
    same. ``depth`` (words, default all 32K) may be smaller for simulations of parts.

    Members
    -------
    addr : In(15)
        Word address.
    en : In(1)
        Access this clock (a read when ``we`` is 0).
    we : In(4)
        Byte write enables (with ``en``).
    wdata : In(32)
    rdata : Out(32)
        The word read, on the clock after the access; it holds until the next read.
    """

    def __init__(self, depth=SPRAM_WORDS):
        if not _is_int(depth) or not 1 <= depth <= SPRAM_WORDS:
            raise ValueError(f"depth must be an int from 1 to {SPRAM_WORDS}, not {depth!r}")
        self.depth = depth
        super().__init__({
            "addr": In(15), "en": In(1), "we": In(4), "wdata": In(32), "rdata": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        if soc_arch(platform) == "ice40up" and self.depth == SPRAM_WORDS:
            pair = self.addr[14]
            pair_r = Signal()
            with m.If(self.en & ~self.we.any()):
                m.d.sync += pair_r.eq(pair)
            outs = [[Signal(16, name=f"spram{p}_{h}_do") for h in range(2)] for p in range(2)]
            for p in range(2):
                cs = self.en & (pair == p)
                for h in range(2):
                    m.submodules[f"spram{p}_{h}"] = Instance(
                        "SB_SPRAM256KA",
                        i_ADDRESS=self.addr[:14], i_DATAIN=self.wdata[16 * h:16 * h + 16],
                        i_MASKWREN=Cat(self.we[2 * h], self.we[2 * h], self.we[2 * h + 1], self.we[2 * h + 1]),
                        i_WREN=self.we.any(), i_CHIPSELECT=cs, i_CLOCK=ClockSignal(),
                        i_STANDBY=C(0, 1), i_SLEEP=C(0, 1), i_POWEROFF=C(1, 1),
                        o_DATAOUT=outs[p][h])
            m.d.comb += self.rdata.eq(Mux(pair_r, Cat(*outs[1]), Cat(*outs[0])))
        else:
            m.submodules.mem = mem = memory.Memory(shape=32, depth=self.depth, init=[])
            wr = mem.write_port(granularity=8)
            rd = mem.read_port(domain="sync")
            abits = max(1, (self.depth - 1).bit_length())
            m.d.comb += [wr.addr.eq(self.addr[:abits]), wr.data.eq(self.wdata),
                         wr.en.eq(Mux(self.en, self.we, 0)),
                         rd.addr.eq(self.addr[:abits]), rd.en.eq(self.en & ~self.we.any()),
                         self.rdata.eq(rd.data)]
        return m


# --- the ternary unit ----------------------------------------------------------------------------

def _base3_digits(m, byte, name):
    """The five base-3 digits (two bits each, digit 0 first) of ``byte`` (below 243): binary to base 3
    by doubling and adding each bit, most significant first (Yosys makes about 40 LUTs of it)."""
    digits = [C(0, 2) for _ in range(5)]
    for bit in reversed(range(8)):
        carry = byte[bit]
        new = []
        for i, d in enumerate(digits):
            t = Signal(3, name=f"{name}_b{bit}_d{i}")
            m.d.comb += t.eq(d * 2 + carry)
            over = t >= 3
            new.append(Mux(over, t - 3, t)[:2])
            carry = over
        digits = new
    return Cat(*digits)


class TernaryDot(wiring.Component):
    """``sum(codes[j] * trit[pos + j] for j < k)``: the dot product of signed 8-bit codes with a row of
    trits read from memory, ``lanes`` trits a clock.

    The trits are stored five to a byte in base 3 (:func:`mmfree.numerics.pack_trits_base3`), starting
    at byte ``trits_offset`` of a memory of 32-bit words that the unit reads through ``mem_*``: one word
    (20 trits) whenever it has room for one, with priority over anybody else, the word arriving on
    ``mem_data`` the clock after ``mem_re``. A row may start at any trit.

    Parameters
    ----------
    lanes : int
        Trits a clock: a power of two from 4 to :data:`MAX_SOC_LANES`.
    max_k : int
        The longest row: the depth of the code buffer (a multiple of ``lanes``).
    trit_bytes : int
        Size of the trits' region (``pos`` counts up to ``5 * trit_bytes``).
    trits_offset : int
        Byte address of the region's first byte in the memory.

    Members
    -------
    code_addr : In, code_data : In(32), code_we : In(4)
        Writes the codes, four a 32-bit word (``code_addr`` counts words: codes ``4 * code_addr`` to
        ``4 * code_addr + 3``, the first in bits 7-0) with byte write enables. Codes must not be
        written while ``busy``.
    start : In(1), pos : In, k : In
        ``start`` (while not ``busy``) begins a row of ``k`` trits (the bits below ``lanes`` are
        ignored) from trit ``pos``.
    busy : Out(1)
        From the clock after ``start`` until ``result`` holds the row's sum.
    result : Out(signed(32))
        The last row's sum (exact: at most ``128 * max_k`` in magnitude).
    mem_addr : Out(15), mem_re : Out(1), mem_data : In(32)
        The memory port: word address, read request, the word (the clock after the request).

    Latency: about ``k / lanes + 16`` clocks from ``start`` to the result (a division of ``pos`` by 5,
    three bits a clock, the first word's read, three pipeline stages); at 16 lanes the memory brings
    two words (40 trits) every three clocks, so a row takes about ``k / 13 + 16``.
    """

    def __init__(self, lanes, max_k, trit_bytes, *, trits_offset=0):
        for name, v in (("lanes", lanes), ("max_k", max_k), ("trit_bytes", trit_bytes),
                        ("trits_offset", trits_offset)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an int, not {v!r}")
        if lanes < 4 or lanes > MAX_SOC_LANES or lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two from 4 to {MAX_SOC_LANES}, not {lanes}")
        if max_k < lanes or max_k % lanes:
            raise ValueError(f"max_k must be a positive multiple of lanes ({lanes}), not {max_k}")
        if 128 * max_k >= 1 << 31:
            raise ValueError(f"max_k {max_k} is too long for an exact 32-bit sum")
        if trit_bytes < 1 or trits_offset < 0 or trits_offset + trit_bytes > SPRAM_BYTES:
            raise ValueError(f"the trits ({trit_bytes} bytes from byte {trits_offset}) must lie in the "
                             f"{SPRAM_BYTES} bytes of the memory")
        self.lanes, self.max_k, self.trit_bytes, self.trits_offset = lanes, max_k, trit_bytes, trits_offset
        self.group_bytes = 1 if lanes == 4 else (2 if lanes == 8 else 4)   # bytes decoded a clock
        self.pos_bits = max(1, (5 * trit_bytes).bit_length())
        self.acc_bits = (128 * max_k).bit_length() + 1
        super().__init__({
            "code_addr": In(range(max(2, max_k // 4))), "code_data": In(32), "code_we": In(4),
            "start": In(1), "pos": In(self.pos_bits), "k": In(range(max_k + 1)),
            "busy": Out(1), "result": Out(signed(32)),
            "mem_addr": Out(15), "mem_re": Out(1), "mem_data": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        L, B = self.lanes, self.group_bytes
        T = 5 * B                           # trits a group (the bytes decoded in one clock)
        G = 4 // B                          # groups a word
        CAP = L - 1 + T                     # trits the buffer holds
        lg = L.bit_length() - 1

        # --- codes: max_k / L words of L codes, written 32 bits at a time
        words = self.max_k // L
        m.submodules.codes = codes = memory.Memory(shape=8 * L, depth=words, init=[])
        cw = codes.write_port(granularity=8)
        cr = codes.read_port(domain="sync")
        per = L // 4                        # 32-bit words a code word
        if per == 1:
            m.d.comb += [cw.addr.eq(self.code_addr), cw.en.eq(self.code_we)]
        else:
            sub = self.code_addr[:per.bit_length() - 1]
            m.d.comb += [cw.addr.eq(self.code_addr >> (per.bit_length() - 1)),
                         cw.en.eq(self.code_we << (sub * 4))]
        m.d.comb += cw.data.eq(Cat(*[self.code_data] * per))

        # --- control: pos / 5 three bits a clock, then the row
        nd = -(-self.pos_bits // 3)
        dq = Signal(3 * nd)                 # dividend digits out at the top, quotient digits in below
        rem = Signal(3)
        step = Signal(range(nd + 1))
        beats = Signal(range(words + 1))    # beats still to emit
        beat = Signal(range(words + 1))     # index of the next beat (its code word)
        k_reg = Signal(range(self.max_k + 1))
        running = Signal()

        v = Cat(dq[-3:], rem)               # rem * 8 + next digit, below 40
        qd, rd = Signal(3, name="div_q"), Signal(3, name="div_r")
        m.d.comb += [qd.eq(v // 5), rd.eq(v % 5)]

        waddr = Signal(15)
        gidx = Signal(range(max(2, G)))
        skip = Signal(range(T))
        first = Signal()

        tr_v = Signal()                     # a beat's trits (and next clock its codes) are valid
        ps_v = Signal()
        acc = Signal(signed(self.acc_bits))
        emit = Signal()

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [dq.eq(self.pos), rem.eq(0), step.eq(0), k_reg.eq(self.k), acc.eq(0),
                                 beat.eq(0)]
                    m.next = "DIV"
            with m.State("DIV"):
                m.d.sync += [dq.eq(Cat(qd, dq[:-3])), rem.eq(rd), step.eq(step + 1)]
                with m.If(step == nd - 1):
                    m.next = "SETUP"
            with m.State("SETUP"):
                byte = Signal(17)
                m.d.comb += byte.eq(dq + self.trits_offset)
                m.d.sync += [waddr.eq(byte[2:]), beats.eq(k_reg >> lg), first.eq(1)]
                if G > 1:
                    m.d.sync += gidx.eq(byte[:2] >> (B.bit_length() - 1))
                else:
                    m.d.sync += gidx.eq(0)
                if B > 1:
                    m.d.sync += skip.eq(byte[:B.bit_length() - 1] * 5 + rem)
                else:
                    m.d.sync += skip.eq(rem)
                with m.If((k_reg >> lg) == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
                with m.If((beats == 1) & emit):
                    m.next = "IDLE"

        # --- words from the memory: the current word and the next, refilled one word at a time (at 16
        # lanes that brings about 13 trits a clock, two words every three clocks)
        cur, nxt = Signal(32, name="cur"), Signal(32, name="nxt")
        cur_v, nxt_v, inflight = Signal(name="cur_v"), Signal(name="nxt_v"), Signal(name="inflight")
        dec_v = Signal()
        ins = Signal()
        dec_ready = ~dec_v | ins
        take = running & cur_v & dec_ready                  # a group moves into the decoder
        word_done = take & (gidx == G - 1)
        c_v1 = Mux(word_done, nxt_v, cur_v)
        cur1 = Mux(word_done, nxt, cur)
        n_v1 = nxt_v & ~word_done
        c_fill = inflight & ~c_v1
        n_fill = inflight & c_v1
        c_v2 = c_v1 | inflight
        n_v2 = n_v1 | n_fill
        # a read when at most one of the two words is held or on its way: from registers only, so
        # that the memory's (and the processor's) select does not wait for the rest of the unit
        issue = running & ~((cur_v & nxt_v) | (inflight & (cur_v | nxt_v)))
        m.d.comb += [self.mem_re.eq(issue), self.mem_addr.eq(waddr)]
        m.d.sync += [cur.eq(Mux(c_fill, self.mem_data, cur1)), nxt.eq(Mux(n_fill, self.mem_data, nxt)),
                     cur_v.eq(running & c_v2), nxt_v.eq(running & n_v2), inflight.eq(issue)]
        with m.If(issue):
            m.d.sync += waddr.eq(waddr + 1)
        if G > 1:
            with m.If(take):
                m.d.sync += gidx.eq(Mux(gidx == G - 1, 0, gidx + 1))

        # --- decoder: a group of B bytes into T digits (trit + 1), the first group shifted by skip
        group = cur.word_select(gidx, 8 * B) if G > 1 else cur
        digits = Cat(*[_base3_digits(m, group[8 * i:8 * i + 8], f"dec{i}") for i in range(B)])
        sh = Mux(first, skip, 0)
        dec = Signal(2 * T)
        dec_cnt = Signal(range(T + 1))
        with m.If(take):
            m.d.sync += [dec.eq(digits >> (sh * 2)), dec_cnt.eq(T - sh), dec_v.eq(1), first.eq(0)]
        with m.Elif(ins):
            m.d.sync += dec_v.eq(0)
        with m.If(~running):
            m.d.sync += dec_v.eq(0)

        # --- trit buffer: L trits out a clock, a group in when it fits
        buf = Signal(2 * CAP)
        have = Signal(range(CAP + 1))
        m.d.comb += emit.eq(running & (have >= L) & (beats != 0))
        after = Signal(range(CAP + 1))
        m.d.comb += [after.eq(have - Mux(emit, L, 0)), ins.eq(running & dec_v & (after <= CAP - T))]
        kept = Mux(emit, buf >> (2 * L), buf)
        placed = Mux(ins, dec << (after * 2), 0)
        with m.If(running):
            m.d.sync += [buf.eq(kept | placed), have.eq(after + Mux(ins, dec_cnt, 0))]
        with m.Else():
            m.d.sync += [buf.eq(0), have.eq(0)]

        # --- beats: trits now, their codes a clock later (the code buffer's read), then the sum
        tr = Signal(2 * L)
        m.d.comb += cr.addr.eq(beat)
        m.d.sync += tr_v.eq(emit)
        with m.If(emit):
            m.d.sync += [tr.eq(buf[:2 * L]), beat.eq(beat + 1), beats.eq(beats - 1)]
        # digit 0 (trit -1): -c = ~c + 1; digit 2: +c; digit 1: 0
        terms, negs = [], []
        for i in range(L):
            d = tr[2 * i:2 * i + 2]
            c = cr.data[8 * i:8 * i + 8].as_signed()
            terms.append(Mux(d == 2, c, Mux(d == 0, ~c, 0)))
            negs.append(d == 0)
        psum = Signal(signed(8 + lg + 1))
        m.d.sync += [psum.eq(sum(terms) + sum(negs)), ps_v.eq(tr_v)]
        with m.If(ps_v):
            m.d.sync += acc.eq(acc + psum)

        m.d.comb += [self.busy.eq(~fsm.ongoing("IDLE") | tr_v | ps_v), self.result.eq(acc)]
        return m


# --- the system ----------------------------------------------------------------------------------

def _heartbeat_bit(clk_freq):
    """The bit of the cycle counter that toggles closest to :data:`HEARTBEAT_HZ` times a second."""
    from math import log2
    return max(0, min(31, round(log2(max(1, clk_freq / (2 * HEARTBEAT_HZ))))))


class CompactAccelerator(wiring.Component):
    """PicoRV32, its firmware, the SPRAM, the UART and a :class:`TernaryDot` (see the module's
    documentation for the memory map and the registers).

    Parameters
    ----------
    config : :class:`~mmfree.hw.config.HwConfig`
        The sizes (``lanes``: a power of two up to :data:`MAX_SOC_LANES`; the model regions must fit
        the SPRAM); ``clk_freq`` sets the UART's bit timing and is what INFO reports.
    build_hash : int
        32-bit value INFO reports; built into the firmware.
    baud : int
        UART line rate (``phy="uart"`` only).
    phy : ``"uart"`` or ``"bytes"``
        Serial pins, or byte streams for simulation.
    firmware : bytes or None
        The boot image (at most :func:`rom_limit` bytes, linked for :meth:`SocMap.linker_script`);
        ``None`` builds the device firmware of ``hw/fw`` (:func:`build_firmware`) on first use.
    token_history : int
        Tokens held for RESEND (a power of two), built into the firmware.
    fast_mul : bool
        PicoRV32's DSP multiplier (four ``SB_MAC16``; an iCE40 build needs ``synth_ice40 -dsp``), else
        its bit-serial one (see :data:`PICORV32_PARAMS`).

    Members
    -------
    uart_rx : In(1), uart_tx : Out(1)
        8N1 serial, idle high (``phy="uart"``). ``uart_rx`` must be synchronous to ``sync``.
    rx : In(stream.Signature(8)), tx : Out(stream.Signature(8))
        The same byte streams without the UART (``phy="bytes"``).
    status : Out(4)
        Bits 2-0 as the firmware sets them (loaded, busy, error), bit 1 also while received bytes wait
        in the FIFO, bit 3 a heartbeat of about 1 Hz.

    Simulation needs :func:`picorv32_source` among the Verilog sources; in a build for a platform that
    takes files (``platform.add_file``) it is added by :meth:`elaborate`.
    """

    def __init__(self, config, build_hash=0, *, baud=DEFAULT_BAUD, phy="uart", firmware=None,
                 token_history=256, fast_mul=True):
        check_arguments(config, build_hash, token_history)
        if phy not in PHYS:
            raise ValueError(f"phy must be one of {', '.join(map(repr, PHYS))}, not {phy!r}")
        if phy == "uart":
            baud_fraction(config.clk_freq, baud)
        if config.lanes > MAX_SOC_LANES:
            raise ValueError(f"the compact accelerator runs at most {MAX_SOC_LANES} lanes, not {config.lanes}")
        smap = SocMap(config)
        if firmware is not None:
            if not isinstance(firmware, (bytes, bytearray)):
                raise TypeError(f"firmware must be bytes (a boot image) or None, not {type(firmware).__name__}")
            if not 0 < len(firmware) <= smap.rom_limit:
                raise ValueError(f"the firmware image must have 1 to {smap.rom_limit} bytes, not {len(firmware)}")
            firmware = bytes(firmware)
        self.config = config
        self.build_hash = build_hash
        self.baud = baud
        self.phy = phy
        self.token_history = token_history
        self.fast_mul = bool(fast_mul)
        self.map = smap
        self._firmware = firmware
        super().__init__(port_members(phy))

    @property
    def info(self):
        """The :class:`~mmfree.protocol.Info` this design answers INFO with."""
        return info_for(self.config, self.build_hash, self.token_history)

    @property
    def firmware(self):
        """The boot image (built on first use when none was given)."""
        if self._firmware is None:
            self._firmware = build_firmware(self.config, self.build_hash, self.token_history)
        return self._firmware

    @property
    def rom_bytes(self):
        """Bytes of the boot ROM: the image rounded up to whole chunks (:data:`ROM_CHUNK_BYTES`)."""
        return _align(len(self.firmware), ROM_CHUNK_BYTES)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        image = self.firmware
        padded = image + bytes(self.rom_bytes - len(image))
        if hasattr(platform, "add_file"):
            platform.add_file("picorv32.v", picorv32_source().read_text())

        # --- the processor
        mem_valid, mem_ready = Signal(name="cpu_valid"), Signal(name="cpu_ready")
        mem_addr, mem_wdata = Signal(32, name="cpu_addr"), Signal(32, name="cpu_wdata")
        mem_rdata, mem_wstrb = Signal(32, name="cpu_rdata"), Signal(4, name="cpu_wstrb")
        params = dict(PICORV32_PARAMS)
        params["ENABLE_FAST_MUL"], params["ENABLE_MUL"] = int(self.fast_mul), int(not self.fast_mul)
        m.submodules.cpu = Instance(
            "picorv32",
            **{f"p_{k}": Const(v, 1) for k, v in params.items()},
            p_PROGADDR_RESET=Const(ROM_BASE, 32), p_STACKADDR=Const(self.map.stack_top, 32),
            i_clk=ClockSignal(), i_resetn=~ResetSignal(),
            o_mem_valid=mem_valid, i_mem_ready=mem_ready, o_mem_addr=mem_addr, o_mem_wdata=mem_wdata,
            o_mem_wstrb=mem_wstrb, i_mem_rdata=mem_rdata,
            i_pcpi_wr=C(0, 1), i_pcpi_rd=C(0, 32), i_pcpi_wait=C(0, 1), i_pcpi_ready=C(0, 1),
            i_irq=C(0, 32))

        ack = Signal(name="cpu_ack")
        m.d.comb += mem_ready.eq(ack)
        req = mem_valid & ~ack
        area = mem_addr[28:30]
        write = mem_wstrb.any()

        # --- boot ROM: parts of 2 KiB (and a last one of 1 KiB), chosen by the address bits above
        part_bytes = 2 * ROM_CHUNK_BYTES
        rom_data = []
        for c in range(-(-self.rom_bytes // part_bytes)):
            part = padded[c * part_bytes:(c + 1) * part_bytes]
            words = len(part) // 4
            m.submodules[f"rom{c}"] = rom = memory.Memory(
                shape=32, depth=words, init=[int.from_bytes(part[i:i + 4], "little")
                                             for i in range(0, len(part), 4)])
            rd = rom.read_port(domain="sync")
            m.d.comb += rd.addr.eq(mem_addr[2:2 + (words - 1).bit_length()])
            rom_data.append(rd.data)
        low = 2 + (part_bytes // 4 - 1).bit_length()
        rom_part = mem_addr[low:low + max(1, (len(rom_data) - 1).bit_length())]

        # --- SPRAM, shared with the ternary unit (which goes first)
        m.submodules.spram = spram = SPRAM()
        trits = self.map.regions[memory_map.REGION_TRITS]
        m.submodules.tdot = tdot = TernaryDot(cfg.lanes, cfg.max_k, trits[1], trits_offset=self.map.trits_offset)
        ram_grant = req & (area == 1) & ~tdot.mem_re
        m.d.comb += [
            spram.addr.eq(Mux(tdot.mem_re, tdot.mem_addr, mem_addr[2:17])),
            spram.en.eq(tdot.mem_re | ram_grant),
            spram.we.eq(Mux(ram_grant, mem_wstrb, 0)),
            spram.wdata.eq(mem_wdata),
            tdot.mem_data.eq(spram.rdata),
        ]

        # --- byte streams
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=RX_FIFO_BYTES)
        tx_valid, tx_ready, tx_data = Signal(name="tx_valid"), Signal(name="tx_ready"), Signal(8, name="tx_data")
        if self.phy == "uart":
            m.submodules.uart_rx = urx = UARTReceiver(cfg.clk_freq, self.baud)
            m.submodules.uart_tx = utx = UARTTransmitter(cfg.clk_freq, self.baud)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
            rx_in, tx_out = urx.o, utx.i
        else:
            rx_in, tx_out = wiring.flipped(self.rx), wiring.flipped(self.tx)
        m.d.comb += [rx_fifo.w_data.eq(rx_in.payload), rx_fifo.w_en.eq(rx_in.valid), rx_in.ready.eq(rx_fifo.w_rdy),
                     tx_out.payload.eq(tx_data), tx_out.valid.eq(tx_valid), tx_ready.eq(tx_out.ready)]

        # --- registers and the code buffer
        cycles = Signal(32)
        m.d.sync += cycles.eq(cycles + 1)
        status = Signal(3)
        k_reg = Signal(range(cfg.max_k + 1))
        io_req = req & area[1]
        codes = mem_addr[12]
        reg = mem_addr[2:5]
        io_ready = Signal(name="io_ready")
        io_data, io_next = Signal(32, name="io_data"), Signal(32, name="io_next")
        m.d.comb += [io_ready.eq(1), tx_data.eq(mem_wdata[:8]),
                     tdot.pos.eq(mem_wdata), tdot.k.eq(k_reg),
                     tdot.code_addr.eq(mem_addr[2:]), tdot.code_data.eq(mem_wdata)]
        with m.If(io_req & codes):
            m.d.comb += io_ready.eq(~tdot.busy)
            m.d.comb += tdot.code_we.eq(Mux(~tdot.busy, mem_wstrb, 0))
        with m.Elif(io_req):
            with m.Switch(reg):
                with m.Case(_REG["UART_DATA"]):
                    with m.If(write):
                        m.d.comb += [tx_valid.eq(1), io_ready.eq(tx_ready)]
                    with m.Else():
                        m.d.comb += [rx_fifo.r_en.eq(1), io_next.eq(Cat(rx_fifo.r_data, rx_fifo.r_rdy))]
                with m.Case(_REG["UART_STATUS"]):
                    m.d.comb += io_next.eq(Cat(rx_fifo.r_rdy, tx_ready))
                with m.Case(_REG["CYCLES"]):
                    m.d.comb += io_next.eq(cycles)
                with m.Case(_REG["STATUS"]):
                    m.d.comb += io_next.eq(status)
                    with m.If(write):
                        m.d.sync += status.eq(mem_wdata[:3])
                with m.Case(_REG["TDOT_K"]):
                    m.d.comb += io_next.eq(k_reg)
                    with m.If(write):
                        m.d.sync += k_reg.eq(mem_wdata)
                with m.Case(_REG["TDOT_POS"]):
                    with m.If(write):
                        m.d.comb += [io_ready.eq(~tdot.busy), tdot.start.eq(~tdot.busy)]
                with m.Case(_REG["TDOT_RESULT"]):
                    m.d.comb += [io_next.eq(tdot.result), io_ready.eq(~tdot.busy)]
                with m.Case(_REG["TDOT_BUSY"]):
                    m.d.comb += io_next.eq(tdot.busy)
        with m.If(io_req & io_ready):
            m.d.sync += io_data.eq(io_next)

        # --- acknowledge: the ROM on the next clock, the SPRAM when granted, registers when ready
        m.d.sync += ack.eq((req & (area == 0)) | ram_grant | (io_req & io_ready))
        # the word: an AND-OR of every source with a one-hot choice made at the request (two LUT levels)
        sources = [*rom_data, spram.rdata, io_data]
        pick = Signal(len(sources), name="cpu_source")
        with m.If(req):
            m.d.sync += pick.eq(Mux(area[1], 1 << (len(sources) - 1),
                                    Mux(area[0], 1 << (len(sources) - 2), Const(1, len(sources)) << rom_part)))
        m.d.comb += mem_rdata.eq(reduce(operator.or_, [src & pick[i].replicate(32)
                                                       for i, src in enumerate(sources)]))

        # busy also while received bytes wait: the firmware works through them without telling
        m.d.comb += self.status.eq(Cat(status[0], status[1] | rx_fifo.r_rdy, status[2],
                                       cycles[_heartbeat_bit(cfg.clk_freq)]))
        return m
