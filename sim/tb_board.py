"""cocotb side of the simulated board: the accelerator's byte port behind a TCP socket.

A host (the unchanged driver, over ``socket://host:port``) connects and exchanges the same byte stream
it would exchange with a board's UART. The simulation advances only while something happens: while
bytes move, clock by clock; while the device computes (status bit ``busy``), in chunks that end as soon
as the device starts to transmit; while the device is idle and the host silent, it waits on the
socket without advancing simulated time.

Environment (set by :class:`mmfree.sim.board.SimulatedBoard`):

``MMFREE_BOARD_HOST``, ``MMFREE_BOARD_PORT``
    where to listen (port 0: any free port).
``MMFREE_BOARD_PORTFILE``
    the port actually bound is written there once the design is out of reset.
``MMFREE_BOARD_BYTE_CYCLES``
    clock cycles per byte in each direction (1: as fast as the port takes them; ``clk / (baud / 10)``
    models a UART line in simulated time).
``MMFREE_BOARD_STATS``
    optional path: a JSON line per connection with the bytes moved and the clock cycles spent.

Needs cocotb and the standard library only.
"""

import json
import os
import select
import socket

import cocotb
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from mmfree.sim.tb_common import start_clock_and_reset

PERIOD_NS = 10
BUSY_BIT = 1
CHUNK = 2000
"""Clock cycles simulated at a time while the device computes and nothing moves."""


class _Bridge:
    def __init__(self, dut, byte_cycles):
        self.dut = dut
        self.byte_cycles = byte_cycles
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.conn = None
        self.rx_next = 0            # the cycle at which the next host byte may be offered
        self.tx_next = 0
        self.stats = None

    def _service_socket(self, timeout):
        """Accept, receive and send without blocking (or waiting up to ``timeout`` seconds)."""
        watch = [self.listener] if self.conn is None else [self.conn]
        wlist = [self.conn] if (self.conn is not None and self.outbox) else []
        r, w, _ = select.select(watch, wlist, [], timeout)
        if self.conn is None:
            if r:
                self.conn, _ = self.listener.accept()
                self.conn.setblocking(False)
                self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.stats = dict(start_cycle=self.cycle, bytes_in=0, bytes_out=0, first_in=None,
                                  last_out=None)
            return
        if r:
            try:
                data = self.conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._close()
                return
            if data:
                self.inbox += data
        if w and self.outbox:
            try:
                sent = self.conn.send(self.outbox)
                del self.outbox[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close()

    def _close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.inbox.clear()
        self.outbox.clear()
        path = os.environ.get("MMFREE_BOARD_STATS")
        if path and self.stats is not None:
            self.stats["cycles"] = self.cycle - self.stats["start_cycle"]
            with open(path, "a") as f:
                f.write(json.dumps(self.stats) + "\n")
        self.stats = None

    @property
    def cycle(self):
        return int(get_sim_time("ns")) // PERIOD_NS

    async def _advance(self, cycles):
        """Simulate up to ``cycles`` clocks, ending early when the device starts to transmit.
        One timer, not a callback per clock: the simulator runs at full speed meanwhile."""
        dut = self.dut
        if not int(dut.tx__valid.value):
            await First(RisingEdge(dut.tx__valid), Timer(cycles * PERIOD_NS - PERIOD_NS // 2, unit="ns"))
        await RisingEdge(dut.clk)

    async def _sleep(self, cycles):
        """Exactly ``cycles`` clocks (from a clock edge to a clock edge), under one timer."""
        if cycles > 1:
            await Timer(cycles * PERIOD_NS - PERIOD_NS // 2, unit="ns")
        await RisingEdge(self.dut.clk)

    async def run(self):
        dut = self.dut
        quiet = 0                   # consecutive idle chunks with nothing moving
        while True:
            if self.inbox or int(dut.tx__valid.value):
                quiet = 0
                await self._exchange_bytes()
                self._service_socket(0)
                continue
            busy = (int(dut.status.value) >> BUSY_BIT) & 1
            self._service_socket(0)
            if self.inbox:
                continue
            if busy:
                await self._advance(CHUNK)
                continue
            # idle: let the device finish what it does (a WRITE, a reply), then wait for the host
            # without advancing simulated time
            if quiet < 4:
                quiet += 1
                await self._advance(64)
            else:
                self._service_socket(0.02)
                if not self.inbox:
                    await self._advance(16)

    async def _exchange_bytes(self, burst=256):
        """Clock by clock: offer host bytes on ``rx``, take device bytes from ``tx``. With a paced
        line (``byte_cycles > 1``) the cycles between bytes pass under one timer."""
        dut = self.dut
        for _ in range(burst):
            now = self.cycle
            offer = bool(self.inbox) and now >= self.rx_next
            take = now >= self.tx_next
            if self.byte_cycles > 1 and not offer and not (take and int(dut.tx__valid.value)):
                # nothing can move before the next byte slot of either direction
                dut.rx__valid.value = 0
                dut.tx__ready.value = 0
                if int(dut.tx__valid.value):            # the device waits for its next byte slot
                    waits = [t - now for t in (self.rx_next, self.tx_next) if t > now]
                    await self._sleep(min(waits))
                    continue
                if self.inbox:                          # the host's next byte waits for its slot
                    await self._advance(self.rx_next - now)
                    continue
                break
            dut.rx__valid.value = int(offer)
            if offer:
                dut.rx__payload.value = self.inbox[0]
            dut.tx__ready.value = int(take)
            await ReadOnly()
            rx_fire = offer and int(dut.rx__ready.value)
            tx_fire = take and int(dut.tx__valid.value)
            tx_byte = int(dut.tx__payload.value) if tx_fire else None
            if offer and not rx_fire and not int(dut.tx__valid.value):
                # the device's receive buffer is full and it sends nothing: sleep until either
                # changes, not a callback per clock
                await First(RisingEdge(dut.rx__ready), RisingEdge(dut.tx__valid))
                continue
            await RisingEdge(dut.clk)
            if rx_fire:
                del self.inbox[0]
                self.rx_next = now + self.byte_cycles
                if self.stats is not None:
                    self.stats["bytes_in"] += 1
                    if self.stats["first_in"] is None:
                        self.stats["first_in"] = now
            if tx_fire:
                self.outbox.append(tx_byte)
                self.tx_next = now + self.byte_cycles
                if self.stats is not None:
                    self.stats["bytes_out"] += 1
                    self.stats["last_out"] = now + self.byte_cycles
            if not self.inbox and not int(dut.tx__valid.value) and self.cycle >= self.tx_next:
                break
        dut.rx__valid.value = 0
        dut.tx__ready.value = 0


@cocotb.test()
async def board(dut):
    """Serve the byte port on a TCP socket until the process is stopped."""
    byte_cycles = max(1, int(os.environ.get("MMFREE_BOARD_BYTE_CYCLES", "1")))
    bridge = _Bridge(dut, byte_cycles)
    dut.rx__valid.value = 0
    dut.tx__ready.value = 0
    await start_clock_and_reset(dut, period_ns=PERIOD_NS, cycles=4)
    await ClockCycles(dut.clk, 4)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((os.environ.get("MMFREE_BOARD_HOST", "127.0.0.1"), int(os.environ.get("MMFREE_BOARD_PORT", "0"))))
    listener.listen(1)
    listener.setblocking(False)
    bridge.listener = listener
    portfile = os.environ.get("MMFREE_BOARD_PORTFILE")
    if portfile:
        tmp = portfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(listener.getsockname()[1]))
        os.replace(tmp, portfile)
    await bridge.run()
