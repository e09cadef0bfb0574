/* Test firmware of the compact accelerator (tests/test_soc.py): a small command interpreter over the
 * byte stream that exercises every function of hal.h. It provides device_init() and device_service(),
 * which soc.c's main() calls. Little-endian fields; every reply starts with its command's letter.
 *
 *   'E' n:u16 bytes[n]               -> 'E' bytes[n]                  echo
 *   'W' w:u8 addr:u32 n:u16 data[n*w]-> 'W'                           n stores of w (1, 2, 4) bytes
 *   'R' w:u8 addr:u32 n:u16          -> 'R' data[n*w]                 n loads of w bytes
 *   'K' off:u8 k:u16 codes[k]        -> 'K'                           hal_tdot_codes (codes at off)
 *   'T' pos:u32 k:u16 spin:u16       -> 'T' sum:i32 clocks:u32 ram:u32 one row; meanwhile spin
 *                                                                     loads from the TRITS region
 *   'Y'                              -> 'Y' c0:u32 c1:u32             two reads of hal_cycles
 *   'S' bits:u8                      -> 'S'                           hal_status
 *   'A'                              -> 'A' base[4]:u32               hal_region(0..3)
 *   anything else                    -> '?' byte
 * After reset it sends 'H'.
 */
#include <stdint.h>

#include "hal.h"
#include "link.h"

static int8_t code_buf[1024 + 4] __attribute__((aligned(4)));

static uint8_t get(void)
{
    int c;
    while ((c = hal_rx()) < 0)
        ;
    return (uint8_t)c;
}

static uint32_t get_n(int bytes)
{
    uint32_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint32_t)get() << (8 * i);
    return v;
}

static void put_n(uint32_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        hal_tx((uint8_t)(v >> (8 * i)));
}

void device_init(void)
{
    hal_status(0);
    hal_tx('H');
}

void device_service(void)
{
    int c = hal_rx();
    if (c < 0)
        return;
    switch (c) {
    case 'E': {
        uint32_t n = get_n(2);
        hal_tx('E');
        for (uint32_t i = 0; i < n; i++)
            hal_tx(get());
        break;
    }
    case 'W': {
        uint32_t w = get(), addr = get_n(4), n = get_n(2);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t v = get_n((int)w);
            if (w == 1)
                ((volatile uint8_t *)addr)[i] = (uint8_t)v;
            else if (w == 2)
                ((volatile uint16_t *)addr)[i] = (uint16_t)v;
            else
                ((volatile uint32_t *)addr)[i] = v;
        }
        hal_tx('W');
        break;
    }
    case 'R': {
        uint32_t w = get(), addr = get_n(4), n = get_n(2);
        hal_tx('R');
        for (uint32_t i = 0; i < n; i++) {
            uint32_t v;
            if (w == 1)
                v = ((volatile uint8_t *)addr)[i];
            else if (w == 2)
                v = ((volatile uint16_t *)addr)[i];
            else
                v = ((volatile uint32_t *)addr)[i];
            put_n(v, (int)w);
        }
        break;
    }
    case 'K': {
        uint32_t off = get() & 3u, k = get_n(2);
        for (uint32_t i = 0; i < k; i++)
            code_buf[off + i] = (int8_t)get();
        hal_tdot_codes(code_buf + off, k);
        hal_tx('K');
        break;
    }
    case 'T': {
        uint32_t pos = get_n(4), k = get_n(2), spin = get_n(2);
        volatile uint8_t *trits = hal_region(0);
        uint32_t ram = 0;
        uint32_t t0 = hal_cycles();
        hal_tdot_start(pos, k);
        for (uint32_t i = 0; i < spin; i++)
            ram += trits[i];
        int32_t sum = hal_tdot_result();
        uint32_t t1 = hal_cycles();
        hal_tx('T');
        put_n((uint32_t)sum, 4);
        put_n(t1 - t0, 4);
        put_n(ram, 4);
        break;
    }
    case 'Y': {
        uint32_t c0 = hal_cycles();
        uint32_t c1 = hal_cycles();
        hal_tx('Y');
        put_n(c0, 4);
        put_n(c1, 4);
        break;
    }
    case 'S':
        hal_status(get());
        hal_tx('S');
        break;
    case 'A':
        hal_tx('A');
        for (unsigned i = 0; i < 4; i++)
            put_n((uint32_t)(uintptr_t)hal_region(i), 4);
        break;
    default:
        hal_tx('?');
        hal_tx((uint8_t)c);
        break;
    }
}
