/* mmfree.sampler in C (sw/sampler.py has the definition and its reasons). */
#include "sampler.h"
#include "mmfree_config.h"

uint32_t argmax_i32(const int32_t *x, uint32_t n)
{
    uint32_t i, best = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

void sampler_init(sampler_t *s, uint32_t temperature, uint32_t top_k, uint32_t seed)
{
    s->temperature = temperature;
    s->top_k = top_k;
    s->state = seed ? seed : SEED_ZERO;
    s->beta = temperature ? (LOG2E_Q22 + temperature / 2) / temperature : 0;
}

/* The k-th largest of x[0..n-1] counted with multiplicity: the largest value t with
 * #{i: x[i] >= t} >= k, found among the values themselves (no sorting, no scratch memory). */
static int32_t kth_largest(const int32_t *x, uint32_t n, uint32_t k)
{
    uint32_t i, j;
    int32_t best = x[0];
    int found = 0;
    for (i = 0; i < n; i++) {
        uint32_t count = 0;
        if (found && x[i] <= best)
            continue;
        for (j = 0; j < n; j++)
            count += x[j] >= x[i];
        if (count >= k) {
            best = x[i];
            found = 1;
        }
    }
    return best;
}

static uint32_t weight(int32_t v, int32_t lmax, int32_t t, uint32_t beta)
{
    uint32_t x, n;
    if (v < t)
        return 0;
    x = (uint32_t)(((uint64_t)(uint32_t)(lmax - v) * beta) >> BETA_SHIFT);
    n = x >> EXP2_FRAC_BITS;
    return n < 16 ? (uint32_t)EXP2_TABLE[x & ((1u << EXP2_FRAC_BITS) - 1)] >> n : 0;
}

uint32_t sampler_pick(sampler_t *s, const int32_t *logits, uint32_t n)
{
    uint32_t i, total = 0, acc = 0, u;
    int32_t lmax, t;
    if (s->temperature == 0)
        return argmax_i32(logits, n);
    lmax = logits[argmax_i32(logits, n)];
    if (s->top_k == 0 || s->top_k >= n) {
        t = logits[0];
        for (i = 1; i < n; i++)
            if (logits[i] < t)
                t = logits[i];
    } else {
        t = kth_largest(logits, n, s->top_k);
    }
    for (i = 0; i < n; i++)
        total += weight(logits[i], lmax, t, s->beta);
    for (i = 0; i < 32; i++)
        s->state = (s->state >> 1) ^ ((s->state & 1) ? LFSR_MASK : 0);
    u = (uint32_t)(((uint64_t)s->state * total) >> 32);
    for (i = 0; i < n; i++) {
        acc += weight(logits[i], lmax, t, s->beta);
        if (acc > u)
            return i;
    }
    return n - 1;       /* not reached: u < total */
}
