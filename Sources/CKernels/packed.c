// BF16 weights in the blocked layout oneDNN's BF16 matmul reads (format tag
// BA16a64b2a): output rows in blocks of 64, and inside a block the input
// columns in pairs, one pair of every row after another:
//   element (r, c) at (r / 64) * 64 * cols + (c / 2) * 128 + (r % 64) * 2 + c % 2
// Stored this way once at start-up, the weights feed oneDNN without the
// per-call reorder it does on [rows][cols] weights (1.2-2x faster at 8-64
// tokens, docs/results/onednn-prepacked-weights.txt), and a matrix-vector
// product reads each block front to back: one 32-bit broadcast of an input
// pair and four vdpbf16ps cover 64 rows by 2 columns.
#include "CKernels.h"
#include <immintrin.h>
#include <string.h>

#define SY_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

void sy_packed_bf16_pack(const uint16_t *src, long rows, long cols, uint16_t *dst) {
    // One block (64 rows) at a time: the 64 source rows are read in step,
    // two columns each per output line of 128 values.
    for (long rb = 0; rb < rows; rb += 64) {
        uint16_t *block = dst + rb * cols;
        for (long p = 0; p < cols / 2; p++) {
            uint16_t *line = block + p * 128;
            for (long i = 0; i < 64; i++) {
                const uint16_t *s = src + (rb + i) * cols + 2 * p;
                line[2 * i] = s[0];
                line[2 * i + 1] = s[1];
            }
        }
    }
}

void sy_packed_bf16_unpack_rows(const uint16_t *packed, long cols, long row0, long count, uint16_t *dst) {
    for (long i = 0; i < count; i++) {
        const long r = row0 + i;
        const uint16_t *base = packed + (r / 64) * 64 * cols + (r % 64) * 2;
        uint16_t *d = dst + i * cols;
        for (long p = 0; p < cols / 2; p++) {
            d[2 * p] = base[p * 128];
            d[2 * p + 1] = base[p * 128 + 1];
        }
    }
}

void sy_packed_bf16_widen_rows(const uint16_t *packed, long cols, long row0, long count, float *dst) {
    for (long i = 0; i < count; i++) {
        const long r = row0 + i;
        const uint16_t *base = packed + (r / 64) * 64 * cols + (r % 64) * 2;
        float *d = dst + i * cols;
        for (long p = 0; p < cols / 2; p++) {
            uint32_t lo = (uint32_t)base[p * 128] << 16, hi = (uint32_t)base[p * 128 + 1] << 16;
            memcpy(d + 2 * p, &lo, 4);
            memcpy(d + 2 * p + 1, &hi, 4);
        }
    }
}

// Rows [lo, hi) of one 64-row block (block-relative, 0 <= lo < hi <= 64)
// from four 16-row accumulators.
SY_TARGET static inline void store_rows(float *y, const __m512 acc[4], long lo, long hi) {
    if (lo == 0 && hi == 64) {
        for (int j = 0; j < 4; j++) _mm512_storeu_ps(y + 16 * j, acc[j]);
        return;
    }
    for (int j = 0; j < 4; j++) {
        long a = lo > 16 * j ? lo - 16 * j : 0, b = hi < 16 * (j + 1) ? hi - 16 * j : 16;
        if (a >= b) continue;
        __mmask16 m = (__mmask16)(((1u << (b - a)) - 1) << a);
        _mm512_mask_storeu_ps(y + 16 * j, m, acc[j]);
    }
}

// Up to four tokens over one block: the block's weights are loaded once per
// column pair and reused from registers by every token.
#define SY_BLOCK_TOKENS(T)                                                                                             \
    SY_TARGET static void block_bf16_##T(const uint16_t *block, long cols, const uint16_t *x, long ldx, float *y,     \
                                         long ldy, long lo, long hi) {                                                 \
        __m512 acc[T][4];                                                                                              \
        for (int t = 0; t < T; t++)                                                                                    \
            for (int j = 0; j < 4; j++) acc[t][j] = _mm512_setzero_ps();                                               \
        for (long p = 0; p < cols / 2; p++) {                                                                          \
            const uint16_t *line = block + p * 128;                                                                    \
            __m512bh w0 = (__m512bh)_mm512_loadu_si512(line), w1 = (__m512bh)_mm512_loadu_si512(line + 32);           \
            __m512bh w2 = (__m512bh)_mm512_loadu_si512(line + 64), w3 = (__m512bh)_mm512_loadu_si512(line + 96);      \
            for (int t = 0; t < T; t++) {                                                                              \
                uint32_t pair;                                                                                         \
                memcpy(&pair, x + t * ldx + 2 * p, 4);                                                                 \
                __m512bh b = (__m512bh)_mm512_set1_epi32((int)pair);                                                   \
                acc[t][0] = _mm512_dpbf16_ps(acc[t][0], w0, b);                                                        \
                acc[t][1] = _mm512_dpbf16_ps(acc[t][1], w1, b);                                                        \
                acc[t][2] = _mm512_dpbf16_ps(acc[t][2], w2, b);                                                        \
                acc[t][3] = _mm512_dpbf16_ps(acc[t][3], w3, b);                                                        \
            }                                                                                                          \
        }                                                                                                              \
        for (int t = 0; t < T; t++) store_rows(y + t * ldy, acc[t], lo, hi);                                           \
    }
SY_BLOCK_TOKENS(1)
SY_BLOCK_TOKENS(2)
SY_BLOCK_TOKENS(3)
SY_BLOCK_TOKENS(4)

SY_TARGET
void sy_matvec_bf16_packed(const uint16_t *w, long cols, long row0, long row1, const uint16_t *x, long ldx,
                           long tokens, float *y, long ldy) {
    for (long rb = row0 / 64 * 64; rb < row1; rb += 64) {
        const uint16_t *block = w + rb * cols;
        long lo = row0 > rb ? row0 - rb : 0, hi = row1 < rb + 64 ? row1 - rb : 64;
        // y is offset so that block row i lands in y[... + rb + i].
        for (long t = 0; t < tokens; t += 4) {
            const uint16_t *xt = x + t * ldx;
            float *yt = y + t * ldy + rb;
            switch (tokens - t < 4 ? tokens - t : 4) {
            case 1: block_bf16_1(block, cols, xt, ldx, yt, ldy, lo, hi); break;
            case 2: block_bf16_2(block, cols, xt, ldx, yt, ldy, lo, hi); break;
            case 3: block_bf16_3(block, cols, xt, ldx, yt, ldy, lo, hi); break;
            default: block_bf16_4(block, cols, xt, ldx, yt, ldy, lo, hi); break;
            }
        }
    }
}

// Float32 activations (float32 mode): each 32-bit lane of a weight line
// holds one row's pair, so its low half widens to the even column's weight
// and its high half to the odd one's.
SY_TARGET static void block_f32(const uint16_t *block, long cols, const float *x, float *y, long lo, long hi) {
    __m512 even[4], odd[4];
    for (int j = 0; j < 4; j++) even[j] = odd[j] = _mm512_setzero_ps();
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    for (long p = 0; p < cols / 2; p++) {
        const uint16_t *line = block + p * 128;
        __m512 x0 = _mm512_set1_ps(x[2 * p]), x1 = _mm512_set1_ps(x[2 * p + 1]);
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_loadu_si512(line + 32 * j);
            even[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), x0, even[j]);
            odd[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, high)), x1, odd[j]);
        }
    }
    for (int j = 0; j < 4; j++) even[j] = _mm512_add_ps(even[j], odd[j]);
    store_rows(y, even, lo, hi);
}

SY_TARGET
void sy_matvec_f32_packed(const uint16_t *w, long cols, long row0, long row1, const float *x, long ldx, long tokens,
                          float *y, long ldy) {
    for (long rb = row0 / 64 * 64; rb < row1; rb += 64) {
        const uint16_t *block = w + rb * cols;
        long lo = row0 > rb ? row0 - rb : 0, hi = row1 < rb + 64 ? row1 - rb : 64;
        for (long t = 0; t < tokens; t++) block_f32(block, cols, x + t * ldx, y + t * ldy + rb, lo, hi);
    }
}
