/* The firmware's view of the device it runs on.
 *
 * Two implementations: soc.c (the iCE40 system-on-chip: memory-mapped registers, see
 * mmfree.hw.soc) and host.c (a build for the computer running the tests, driven byte by byte from
 * Python). Everything else in this directory is the same code on both.
 */
#ifndef MMFREE_HAL_H
#define MMFREE_HAL_H

#include <stdint.h>

/* Next byte received from the host (0..255), or -1 when none is waiting. Never blocks. */
int hal_rx(void);

/* Send one byte to the host; waits while the transmitter is full. */
void hal_tx(uint8_t byte);

/* The free-running clock-cycle counter (wraps). */
uint32_t hal_cycles(void);

/* Status lights: bit 0 model loaded, 1 busy, 2 error (the last reply was a NAK). */
void hal_status(uint32_t bits);

/* Base address of memory region i (REGION_* of mmfree_config.h; sizes there too), word-aligned. */
uint8_t *hal_region(unsigned i);

/* Four bytes read at once from a word-aligned address in a byte buffer (allowed to alias it). */
typedef uint32_t __attribute__((may_alias)) word_t;

/* The ternary unit: sum over j < k of codes[j] * trit[pos + j], where trit[] is the sequence of
 * trits in the TRITS region (five to a byte, base 3, mmfree.numerics.pack_trits_base3) and pos
 * counts trits from its start. hal_tdot_codes() loads the k (a multiple of LANES, at most
 * MAX_K) codes, hal_tdot_start() starts one row, hal_tdot_result() waits for it and returns the sum.
 * Codes stay loaded for any number of rows. */
void hal_tdot_codes(const int8_t *codes, uint32_t k);
void hal_tdot_start(uint32_t pos, uint32_t k);
int32_t hal_tdot_result(void);

#endif
