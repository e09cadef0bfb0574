/* mmfree.numerics in C. Shifts of signed values are arithmetic (two's complement), as in Python. */
#include "numerics.h"
#include "mmfree_config.h"

int64_t shift_round(int64_t x, int sh)
{
    if (sh > 0)
        return (x + ((int64_t)1 << (sh - 1))) >> sh;
    return (int64_t)((uint64_t)x << -sh);
}

static int64_t clamp64(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

int32_t sat_act(int64_t x)
{
    return (int32_t)clamp64(x, ACT_MIN, ACT_MAX);
}

int32_t sat_state(int64_t x)
{
    return (int32_t)clamp64(x, STATE_MIN, STATE_MAX);
}

uint32_t bit_length64(uint64_t x)
{
    uint32_t n = 0;
    while (x) {
        n++;
        x >>= 1;
    }
    return n;
}

/* --- PFloat ------------------------------------------------------------------------------------ */

static const pfloat_t PF_ZERO = {0, 0};

pfloat_t pf_from_int(uint64_t n, int32_t exp)
{
    pfloat_t r;
    uint32_t b = bit_length64(n);
    if (n == 0)
        return PF_ZERO;
    if (b > 16) {
        uint32_t sh = b - 16;
        uint64_t m = (n + ((uint64_t)1 << (sh - 1))) >> sh;
        exp += (int32_t)sh;
        if (m == 1u << 16) {
            m >>= 1;
            exp += 1;
        }
        r.mant = (uint32_t)m;
    } else {
        r.mant = (uint32_t)(n << (16 - b));
        exp -= (int32_t)(16 - b);
    }
    r.exp = exp;
    return r;
}

pfloat_t pf_mul(pfloat_t a, pfloat_t b)
{
    if (a.mant == 0 || b.mant == 0)
        return PF_ZERO;
    return pf_from_int((uint64_t)a.mant * b.mant, a.exp + b.exp);
}

/* n / d for d < 2**24, by long division a byte at a time on the processor's 32-bit division (the
 * remainder stays below d, so a remainder and the next byte fit 32 bits); smaller than the compiler's
 * 64-bit division routine. Both callers divide by less: a row length (at most 2**24 / 127) and a
 * 17-bit mantissa. */
_Static_assert(MAX_K < (1 << 24), "udiv64 divides by a row length");

static uint64_t udiv64(uint64_t n, uint32_t d)
{
    uint64_t q = 0;
    uint32_t r = 0;
    int i;
    for (i = 56; i >= 0; i -= 8) {
        uint32_t cur = r << 8 | ((uint32_t)(n >> i) & 0xffu);
        q = q << 8 | cur / d;
        r = cur % d;
    }
    return q;
}

pfloat_t pf_recip(uint32_t k)
{
    return pf_from_int(udiv64(((uint64_t)1 << 40) + k / 2, k), -40);
}

static uint64_t isqrt64(uint64_t n)
{
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > n)
        bit >>= 2;
    while (bit) {
        if (n >= r + bit) {
            n -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

pfloat_t pf_rsqrt(pfloat_t a)
{
    uint64_t m = a.mant;
    int32_t e = a.exp;
    if (e & 1) {
        m <<= 1;
        e -= 1;
    }
    return pf_from_int(isqrt64(udiv64((uint64_t)1 << 62, (uint32_t)m)), -31 - e / 2);
}

pfloat_t pf_from_word(uint32_t w)
{
    pfloat_t r;
    r.mant = w & 0xFFFF;
    r.exp = (int32_t)(int16_t)(w >> 16);
    return r;
}

/* --- the BitLinear datapath -------------------------------------------------------------------- */

int32_t embedding_to_act(int32_t mant, int32_t exp)
{
    return sat_act(shift_round(mant, exp - ACT_FRAC));
}

int32_t apply_norm_weight(int32_t x, int32_t w_mant, int32_t w_exp)
{
    return sat_act(shift_round((int64_t)x * w_mant, w_exp < -24 ? -24 : w_exp));
}

pfloat_t output_scale(uint64_t zmax, int32_t z_exp, uint64_t ss, uint32_t k, pfloat_t m)
{
    pfloat_t r, inv127 = {INV_127_MANT, INV_127_EXP};
    if (ss == 0 || zmax == 0)
        return PF_ZERO;
    r = pf_rsqrt(pf_mul(pf_from_int(ss, -2 * ACT_FRAC), pf_recip(k)));
    return pf_mul(pf_mul(pf_mul(pf_from_int(zmax, -z_exp), r), m), inv127);
}

int32_t rescale(int32_t acc, pfloat_t scale)
{
    int64_t p;
    int sh;
    if (scale.mant == 0)
        return 0;
    sh = -(scale.exp + ACT_FRAC);
    p = (int64_t)acc * scale.mant;
    if (sh > 0 && sh < 32) {
        /* the usual case, on the product's two halves: (p + 2**(sh - 1)) >> sh, then saturated */
        uint32_t lo = (uint32_t)p, hi = (uint32_t)((uint64_t)p >> 32), half = 1u << (sh - 1);
        lo += half;
        hi += lo < half;
        lo = lo >> sh | hi << (32 - sh);
        hi = (uint32_t)((int32_t)hi >> sh);
        if (hi != (uint32_t)((int32_t)lo >> 31))            /* beyond 32 bits */
            return (int32_t)hi < 0 ? (int32_t)ACT_MIN : (int32_t)ACT_MAX;
        return sat_act((int32_t)lo);
    }
    if (sh <= 0) {
        p = clamp64(p, -((int64_t)1 << 39), (int64_t)1 << 39);
        return sat_act(shift_round(p, -sh > 23 ? -23 : sh));
    }
    return sat_act(shift_round(p, sh > 60 ? 60 : sh));
}

uint64_t quantize_activations(const int64_t *z, uint32_t k, int8_t *codes)
{
    uint64_t zmax = 0;
    uint32_t i, s, b, zs, den;
    for (i = 0; i < k; i++) {
        uint64_t a = z[i] < 0 ? (uint64_t)-z[i] : (uint64_t)z[i];
        if (a > zmax)
            zmax = a;
    }
    b = bit_length64(zmax);
    s = b > QUANT_BITS ? b - QUANT_BITS : 0;
    zs = (uint32_t)(zmax >> s);
    den = 2 * zs;
    if (den == 0)
        den = 1;
    for (i = 0; i < k; i++) {
        uint64_t a = z[i] < 0 ? (uint64_t)-z[i] : (uint64_t)z[i];
        uint32_t c = (254u * (uint32_t)(a >> s) + zs) / den;      /* below 2**32: a >> s < 2**24 */
        codes[i] = (int8_t)(z[i] < 0 ? -(int32_t)c : (int32_t)c);
    }
    return zmax;
}

/* --- element-wise functions -------------------------------------------------------------------- */

#define SIG_FRAC_BITS (ACT_FRAC - SIGMOID_STEP_LOG2)

/* SIGMOID_TABLE[i] of mmfree.numerics from its first half: T[i] + T[2 n - i] = 2**16. */
static int32_t sigmoid_entry(int32_t i)
{
    if (i <= SIGMOID_HALF_ENTRIES)
        return SIGMOID_HALF[i];
    return (1 << GATE_FRAC) - SIGMOID_HALF[2 * SIGMOID_HALF_ENTRIES - i];
}

uint32_t sigmoid(int32_t x)
{
    const int32_t lo = SIGMOID_IN_MIN * (1 << ACT_FRAC);
    int32_t off = (x < lo ? lo : x > -lo - 1 ? -lo - 1 : x) - lo;
    int32_t i = off >> SIG_FRAC_BITS, fr = off & ((1 << SIG_FRAC_BITS) - 1);
    int32_t t0 = sigmoid_entry(i), t1 = sigmoid_entry(i + 1);
    return (uint32_t)(t0 + (((t1 - t0) * fr + (1 << (SIG_FRAC_BITS - 1))) >> SIG_FRAC_BITS));
}

int32_t silu(int32_t x)
{
    return sat_act(shift_round((int64_t)x * sigmoid(x), GATE_FRAC));
}

int32_t silu_state(int32_t h)
{
    return silu(sat_act(shift_round(h, STATE_FRAC - ACT_FRAC)));
}

int32_t mul_act(int32_t a, int32_t b)
{
    return sat_act(shift_round((int64_t)a * b, ACT_FRAC));
}

uint32_t lower_bound_blend(uint32_t lb, uint32_t f)
{
    return lb + (uint32_t)shift_round((int64_t)((1 << GATE_FRAC) - (int64_t)lb) * f, GATE_FRAC);
}

int32_t state_update(int32_t h, uint32_t f, int32_t c)
{
    int64_t c_s = (int64_t)c * (1 << (STATE_FRAC - ACT_FRAC));
    return sat_state(shift_round((int64_t)f * h + ((1 << GATE_FRAC) - (int64_t)f) * c_s, GATE_FRAC));
}
