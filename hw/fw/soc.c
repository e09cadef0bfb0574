/* hal.h on the compact accelerator (mmfree.hw.soc): memory-mapped registers, SPRAM regions.
 *
 * Every address comes from soc_map.h, generated from the memory map in mmfree/hw/soc.py. The
 * hardware makes the processor wait where hal.h says a function waits: a store to UART_DATA while the
 * transmitter is full, a load of TDOT_RESULT (and a store to TDOT_POS or to the codes) while the
 * ternary unit is busy.
 */
#include <stdint.h>

#include "hal.h"
#include "link.h"
#include "mmfree_config.h"
#include "soc_map.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

int hal_rx(void)
{
    uint32_t v = REG(SOC_UART_DATA);
    return (v & SOC_UART_DATA_VALID) ? (int)(v & 0xffu) : -1;
}

void hal_tx(uint8_t byte)
{
    REG(SOC_UART_DATA) = byte;
}

uint32_t hal_cycles(void)
{
    return REG(SOC_CYCLES);
}

void hal_status(uint32_t bits)
{
    REG(SOC_STATUS) = bits & 7u;
}

static const uint32_t region_base[REGION_COUNT] = SOC_REGION_BASES;

uint8_t *hal_region(unsigned i)
{
    return i < REGION_COUNT ? (uint8_t *)(uintptr_t)region_base[i] : 0;
}

void hal_tdot_codes(const int8_t *codes, uint32_t k)
{
    volatile uint32_t *dst = (volatile uint32_t *)SOC_CODES;
    if (k > MAX_K)
        k = MAX_K;
    if (((uintptr_t)codes & 3u) == 0) {
        const uint32_t *src = (const uint32_t *)(const void *)codes;
        for (uint32_t i = 0; i < k / 4; i++)
            dst[i] = src[i];
    } else {
        volatile uint8_t *d8 = (volatile uint8_t *)SOC_CODES;
        for (uint32_t i = 0; i < k; i++)
            d8[i] = (uint8_t)codes[i];
    }
}

void hal_tdot_start(uint32_t pos, uint32_t k)
{
    REG(SOC_TDOT_K) = k;
    REG(SOC_TDOT_POS) = pos;
}

int32_t hal_tdot_result(void)
{
    return (int32_t)REG(SOC_TDOT_RESULT);
}

int main(void)
{
    device_init();
    for (;;)
        device_service();
}
