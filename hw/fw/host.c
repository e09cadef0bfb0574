/* hal.h for the computer running the tests: the firmware as a shared library, driven byte by byte
 * from Python (mmfree.sim.firmware_board). Bytes from the host are queued with host_receive() and
 * read by hal_rx(); bytes sent with hal_tx() are collected for host_transmit(). The memory regions
 * are static arrays and the ternary unit is a plain loop. There is no clock: hal_cycles() is 0. */
#include "hal.h"
#include "link.h"
#include "mmfree_config.h"

#define RX_SIZE 4096u
#define TX_SIZE (256u * 1024u)

static uint8_t trits[REGION_TRITS_BYTES] __attribute__((aligned(8)));
static uint8_t params[REGION_PARAMS_BYTES] __attribute__((aligned(8)));
static uint8_t gates[REGION_GATES_BYTES] __attribute__((aligned(8)));
static uint8_t scalars[REGION_SCALARS_BYTES] __attribute__((aligned(8)));

static uint8_t *const regions[REGION_COUNT] = {
    [REGION_TRITS] = trits, [REGION_PARAMS] = params, [REGION_GATES] = gates, [REGION_SCALARS] = scalars,
};
static const uint32_t region_bytes[REGION_COUNT] = {
    [REGION_TRITS] = REGION_TRITS_BYTES, [REGION_PARAMS] = REGION_PARAMS_BYTES,
    [REGION_GATES] = REGION_GATES_BYTES, [REGION_SCALARS] = REGION_SCALARS_BYTES,
};

static uint8_t rx[RX_SIZE];
static uint32_t rx_head, rx_tail;           /* rx[rx_head..rx_tail) waits for hal_rx() */
static uint8_t tx[TX_SIZE];
static uint32_t tx_len, tx_lost;            /* tx_lost: bytes dropped on a full buffer */
static uint32_t status_bits;

static int8_t codes[MAX_K];
static uint32_t tdot_pos, tdot_k;

/* --- hal.h ------------------------------------------------------------------------------------- */

int hal_rx(void)
{
    if (rx_head == rx_tail)
        return -1;
    return rx[rx_head++];
}

void hal_tx(uint8_t byte)
{
    if (tx_len < TX_SIZE)
        tx[tx_len++] = byte;
    else
        tx_lost++;
}

uint32_t hal_cycles(void)
{
    return 0;
}

void hal_status(uint32_t bits)
{
    status_bits = bits;
}

uint8_t *hal_region(unsigned i)
{
    return i < REGION_COUNT ? regions[i] : 0;
}

void hal_tdot_codes(const int8_t *c, uint32_t k)
{
    uint32_t j;
    for (j = 0; j < k && j < MAX_K; j++)
        codes[j] = c[j];
}

void hal_tdot_start(uint32_t pos, uint32_t k)
{
    tdot_pos = pos;
    tdot_k = k;
}

/* trit number `pos` of the TRITS region: base-3 digit pos % 5 of byte pos / 5, minus 1 */
static int32_t trit(uint32_t pos)
{
    static const uint8_t power[TRITS_PER_BYTE] = {1, 3, 9, 27, 81};
    uint32_t byte = pos / TRITS_PER_BYTE;
    if (byte >= REGION_TRITS_BYTES)
        return 0;
    return (int32_t)(trits[byte] / power[pos % TRITS_PER_BYTE] % 3) - 1;
}

int32_t hal_tdot_result(void)
{
    int32_t sum = 0;
    uint32_t j;
    for (j = 0; j < tdot_k && j < MAX_K; j++)
        sum += codes[j] * trit(tdot_pos + j);
    return sum;
}

/* --- for Python -------------------------------------------------------------------------------- */

/* The state after configuration: memory zero, nothing queued, the link reset. */
void host_reset(void)
{
    uint32_t i, j;
    for (i = 0; i < REGION_COUNT; i++)
        for (j = 0; j < region_bytes[i]; j++)
            regions[i][j] = 0;
    rx_head = rx_tail = tx_len = tx_lost = 0;
    device_init();
}

/* Queue up to n bytes from the host for hal_rx(); returns how many were taken (all of them when
 * device_service() ran since the last call and n <= host_rx_capacity()). */
int host_receive(const uint8_t *data, int n)
{
    int i;
    if (rx_head == rx_tail)
        rx_head = rx_tail = 0;
    for (i = 0; i < n && rx_tail < RX_SIZE; i++)
        rx[rx_tail++] = data[i];
    return i;
}

int host_rx_capacity(void)
{
    return (int)RX_SIZE;
}

/* Take up to max bytes the device has sent; returns how many. */
int host_transmit(uint8_t *out, int max)
{
    uint32_t n = max < 0 ? 0 : (uint32_t)max, i;
    if (n > tx_len)
        n = tx_len;
    for (i = 0; i < n; i++)
        out[i] = tx[i];
    for (i = n; i < tx_len; i++)
        tx[i - n] = tx[i];
    tx_len -= n;
    return (int)n;
}

int host_pending(void)
{
    return (int)tx_len;
}

/* Bytes hal_tx() dropped because nobody took them (host_transmit) in time. */
uint32_t host_tx_lost(void)
{
    return tx_lost;
}

/* The bits of the last hal_status() call: 1 model loaded, 2 generating, 4 the last reply a NAK. */
uint32_t host_status(void)
{
    return status_bits;
}

uint8_t *host_region(unsigned i)
{
    return hal_region(i);
}

uint32_t host_region_size(unsigned i)
{
    return i < REGION_COUNT ? region_bytes[i] : 0;
}
