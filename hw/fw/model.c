/* One token of the integer model (mmfree.golden.GoldenModel.step) over the memory regions laid out
 * as mmfree.memory_map says: the ternary products on the ternary unit (hal_tdot_*), everything else
 * here, element by element. */
#include "model.h"
#include "hal.h"
#include "numerics.h"
#include "sampler.h"
#include "mmfree_config.h"

#define LAYER_NORMS 9           /* attn_norm, i, f, g norms, g_norm, o norm, mlp_norm, gate norm, down norm */
#define LAYER_MATRICES 6        /* i_proj, f_proj, g_proj, o_proj, gate_proj, down_proj */
#define MAX_Y (2 * MAX_INTERMEDIATE > 3 * MAX_HIDDEN ? 2 * MAX_INTERMEDIATE : 3 * MAX_HIDDEN)
#define MAX_OUT (MAX_Y > MAX_VOCAB ? MAX_Y : MAX_VOCAB)

static struct {
    uint32_t V, H, L, I;
    int loaded;
} m;

static int32_t state[MAX_LAYERS * MAX_HIDDEN];
static int32_t x[MAX_HIDDEN];
static int32_t v[MAX_K];
static int32_t y[MAX_OUT];          /* projection outputs; the logits at the end of a step */
static int64_t z[MAX_K];
static int8_t codes[MAX_K];
static uint32_t trit_pos;           /* where the next matrix starts in the TRITS region */

static const uint32_t *scalars(void) { return (const uint32_t *)hal_region(REGION_SCALARS); }
static const int16_t *params(void) { return (const int16_t *)hal_region(REGION_PARAMS); }

static uint32_t param_count(void) { return 1 + LAYER_NORMS * m.L + 2; }

/* BFP16 tensor number i of PARAMS order (mmfree.memory_map.param_order): its mantissas and exponent. */
static const int16_t *param(uint32_t i, int32_t *exp)
{
    uint32_t off = m.V * m.H, l, j;
    *exp = (int32_t)scalars()[4 + i];
    if (i == 0)
        return params();
    i -= 1;
    l = i / LAYER_NORMS;
    j = i % LAYER_NORMS;
    if (l < m.L)
        return params() + off + l * (8 * m.H + m.I) + j * m.H;
    return params() + off + m.L * (8 * m.H + m.I) + (i - m.L * LAYER_NORMS) * m.H;
}

/* The weight scale of matrix number i of TRITS order (mmfree.memory_map.matrix_order). */
static pfloat_t matrix_scale(uint32_t i)
{
    return pf_from_word(scalars()[4 + param_count() + i]);
}

int model_load(void)
{
    const uint32_t *sc = scalars();
    const uint8_t *trits = hal_region(REGION_TRITS);
    uint32_t V = sc[0], H = sc[1], L = sc[2], I = sc[3], nparam, i;
    uint64_t weights;
    uint32_t bytes;
    int was = m.loaded, same = m.loaded && V == m.V && H == m.H && L == m.L && I == m.I;
    m.loaded = 0;
    if (V == 0 || H == 0 || L == 0 || I == 0 || V > MAX_VOCAB || H > MAX_HIDDEN || L > MAX_LAYERS ||
        I > MAX_INTERMEDIATE || H % LANES || I % LANES)
        return -1;
    nparam = 1 + LAYER_NORMS * L + 2;
    if (4 * (4 + nparam + LAYER_MATRICES * L + 1) > REGION_SCALARS_BYTES ||
        2 * (V * H + L * (8 * H + I) + 2 * H) > REGION_PARAMS_BYTES || 4 * L * H > REGION_GATES_BYTES)
        return -1;
    weights = (uint64_t)L * (4 * H * H + 3 * H * I) + (uint64_t)V * H;
    if (weights > (uint64_t)REGION_TRITS_BYTES * TRITS_PER_BYTE)
        return -1;
    bytes = ((uint32_t)weights + TRITS_PER_BYTE - 1) / TRITS_PER_BYTE;
    /* no byte above 242 (3**5 - 1), four at a time: such a byte has its top bit set and its low seven
     * bits at 115 or more, which carry into the top bit with 13 added (no carry crosses a byte) */
    for (i = 0; i + 4 <= bytes; i += 4) {
        uint32_t w = *(const word_t *)(const void *)(trits + i);
        if (((w & 0x7f7f7f7fu) + 0x0d0d0d0du) & w & 0x80808080u)
            return -1;
    }
    for (; i < bytes; i++)
        if (trits[i] > 242)
            return -1;
    m.V = V;
    m.H = H;
    m.L = L;
    m.I = I;
    m.loaded = 1;
    if (was && same)
        return 0;
    model_reset();
    return 1;
}

int model_loaded(void) { return m.loaded; }

uint32_t model_vocab(void) { return m.V; }

const int32_t *model_logits(void) { return y; }

void model_reset(void)
{
    uint32_t i;
    for (i = 0; i < MAX_LAYERS * MAX_HIDDEN; i++)
        state[i] = 0;
}

static void norm_weight(int32_t *out, const int32_t *in, uint32_t n, uint32_t param_index)
{
    int32_t exp;
    const int16_t *w = param(param_index, &exp);
    uint32_t i;
    for (i = 0; i < n; i++)
        out[i] = apply_norm_weight(in[i], w[i], exp);
}

static uint64_t sum_squares(const int32_t *a, uint32_t n)
{
    uint64_t ss = 0;
    uint32_t i;
    for (i = 0; i < n; i++)
        ss += (uint64_t)((int64_t)a[i] * a[i]);
    return ss;
}

/* One BitLinear (mmfree.golden.bitlinear): in[0..k-1] (the RMSNorm's input, ACT) through matrix
 * number `matrix` with `rows` rows, whose norm weight is PARAMS tensor `norm`; ACT into out[]. */
static void bitlinear(int32_t *out, const int32_t *in, uint32_t k, uint32_t rows, uint32_t matrix,
                      uint32_t norm, uint64_t ss)
{
    int32_t exp;
    const int16_t *w = param(norm, &exp);
    uint64_t zmax;
    pfloat_t scale;
    uint32_t i;
    for (i = 0; i < k; i++)
        z[i] = (int64_t)in[i] * w[i];
    zmax = quantize_activations(z, k, codes);
    scale = output_scale(zmax, ACT_FRAC + exp, ss, k, matrix_scale(matrix));
    hal_tdot_codes(codes, k);
    hal_tdot_start(trit_pos, k);
    for (i = 0; i < rows; i++) {
        int32_t acc = hal_tdot_result();
        if (i + 1 < rows)
            hal_tdot_start(trit_pos + (i + 1) * k, k);     /* the next row runs while this one scales */
        out[i] = rescale(acc, scale);
    }
    trit_pos += rows * k;
}

void model_step(uint32_t token)
{
    const uint32_t H = m.H, I = m.I;
    const uint32_t *gates = (const uint32_t *)hal_region(REGION_GATES);
    uint32_t l, i;
    int32_t exp;
    const int16_t *emb = param(0, &exp) + token * H;
    uint64_t ss;

    trit_pos = 0;
    for (i = 0; i < H; i++)
        x[i] = embedding_to_act(emb[i], exp);
    for (l = 0; l < m.L; l++) {
        uint32_t p = 1 + l * LAYER_NORMS, mat = l * LAYER_MATRICES;
        int32_t *h = state + l * H, *y_i = y, *y_f = y + H, *y_g = y + 2 * H;
        norm_weight(v, x, H, p + 0);
        ss = sum_squares(v, H);
        bitlinear(y_i, v, H, H, mat + 0, p + 1, ss);
        bitlinear(y_f, v, H, H, mat + 1, p + 2, ss);
        bitlinear(y_g, v, H, H, mat + 2, p + 3, ss);
        norm_weight(y_g, y_g, H, p + 4);                    /* g_norm */
        for (i = 0; i < H; i++) {
            uint32_t f = lower_bound_blend(gates[l * H + i], sigmoid(y_f[i]));
            h[i] = state_update(h[i], f, silu(y_i[i]));
            v[i] = mul_act(y_g[i], silu_state(h[i]));
        }
        bitlinear(y, v, H, H, mat + 3, p + 5, sum_squares(v, H));
        for (i = 0; i < H; i++)
            x[i] = sat_act((int64_t)x[i] + y[i]);
        norm_weight(v, x, H, p + 6);
        bitlinear(y, v, H, 2 * I, mat + 4, p + 7, sum_squares(v, H));
        for (i = 0; i < I; i++)
            v[i] = mul_act(silu(y[i]), y[I + i]);
        bitlinear(y, v, I, H, mat + 5, p + 8, sum_squares(v, I));
        for (i = 0; i < H; i++)
            x[i] = sat_act((int64_t)x[i] + y[i]);
    }
    norm_weight(v, x, H, 1 + m.L * LAYER_NORMS);
    bitlinear(y, v, H, m.V, m.L * LAYER_MATRICES, 2 + m.L * LAYER_NORMS, sum_squares(v, H));
}
