/* The device sampler (mmfree.sampler): greedy at temperature code 0, otherwise integer softmax
 * sampling with top-k from a 32-bit Galois LFSR. */
#ifndef MMFREE_SAMPLER_H
#define MMFREE_SAMPLER_H

#include <stdint.h>

typedef struct {
    uint32_t temperature;   /* 8.8 code; 0 = greedy */
    uint32_t top_k;         /* 0 = every token */
    uint32_t state;         /* the LFSR */
    uint32_t beta;
} sampler_t;

/* temperature <= TEMPERATURE_MAX and top_k <= 65535 (the caller checks them). */
void sampler_init(sampler_t *s, uint32_t temperature, uint32_t top_k, uint32_t seed);

/* The next token for logits[0..n-1] (n >= 1). */
uint32_t sampler_pick(sampler_t *s, const int32_t *logits, uint32_t n);

/* Index of the largest logit, the lowest among equals. */
uint32_t argmax_i32(const int32_t *x, uint32_t n);

#endif
