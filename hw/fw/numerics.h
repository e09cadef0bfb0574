/* The numeric specification in C: each function is the integer operation of the same name in
 * mmfree.numerics (sw/numerics.py), bit for bit. ACT, STATE and GATE values are held in int32_t. */
#ifndef MMFREE_NUMERICS_H
#define MMFREE_NUMERICS_H

#include <stdint.h>

typedef struct {
    uint32_t mant;          /* in [2**15, 2**16), or 0 for zero */
    int32_t exp;
} pfloat_t;

int64_t shift_round(int64_t x, int sh);
int32_t sat_act(int64_t x);
int32_t sat_state(int64_t x);
uint32_t bit_length64(uint64_t x);

pfloat_t pf_from_int(uint64_t n, int32_t exp);
pfloat_t pf_mul(pfloat_t a, pfloat_t b);
pfloat_t pf_recip(uint32_t k);
pfloat_t pf_rsqrt(pfloat_t a);
pfloat_t pf_from_word(uint32_t w);

int32_t embedding_to_act(int32_t mant, int32_t exp);
int32_t apply_norm_weight(int32_t x, int32_t w_mant, int32_t w_exp);
pfloat_t output_scale(uint64_t zmax, int32_t z_exp, uint64_t ss, uint32_t k, pfloat_t m);
int32_t rescale(int32_t acc, pfloat_t scale);

/* Codes of z[0..k-1] into codes[]; returns max|z|. */
uint64_t quantize_activations(const int64_t *z, uint32_t k, int8_t *codes);

uint32_t sigmoid(int32_t x);
int32_t silu(int32_t x);
int32_t silu_state(int32_t h);
int32_t mul_act(int32_t a, int32_t b);
uint32_t lower_bound_blend(uint32_t lb, uint32_t f);
int32_t state_update(int32_t h, uint32_t f, int32_t c);

#endif
