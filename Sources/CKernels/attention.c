// Decode attention for one (token, kv head): the scores of `heads` query
// heads against the keys a position sees, softmax, and the weighted sum of
// the values, reading the paged cache (Float32 or BF16) through its block
// table. AVX-512: each key or value row is widened once and serves every
// query head of its group, and the value sums stay in registers over all
// keys. Both cache types go through the same arithmetic in the same order,
// so a BF16 cache gives the bits of a Float32 cache holding the same values.
#include "CKernels.h"
#include <immintrin.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))

// 16 values of a row from element i (masked to the row's end), as Float32.
AVX512 static inline __m512 row16(const void *row, int bf16, long i, __mmask16 m) {
    if (bf16) {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_maskz_loadu_ps(m, (const float *)row + i);
}

static inline __mmask16 mask16(long left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1); }

AVX512 static inline float round_bf16(float x) {
    union { float f; uint32_t u; } c = { x };
    c.u = (c.u + 0x7FFF + ((c.u >> 16) & 1)) & 0xFFFF0000u;
    return c.f;
}

enum { MAX_GROUP = 4, CHUNK = 64 };

AVX512
void sy_attend_token(const float *q, long q_stride, long heads, const void *keys, const void *values, int bf16,
                     const int32_t *table, long block_size, long block_stride, long head_offset, long first, long end,
                     long d, long dv, float scale, const float *sinks, int round_weights, float *scores,
                     long scores_stride, float *out, long out_stride) {
    const long n = end - first;
    const long es = bf16 ? 2 : 4;
    // Scores: each key widened once per 16 columns, multiplied by every head.
    for (long j = first; j < end; j++) {
        const long off = head_offset + (long)table[j / block_size] * block_stride + (j % block_size) * d;
        const char *k = (const char *)keys + off * es;
        for (long h0 = 0; h0 < heads; h0 += MAX_GROUP) {
            const long g = heads - h0 < MAX_GROUP ? heads - h0 : MAX_GROUP;
            __m512 acc[MAX_GROUP];
            for (long r = 0; r < g; r++) acc[r] = _mm512_setzero_ps();
            for (long i = 0; i < d; i += 16) {
                const __mmask16 m = mask16(d - i);
                const __m512 kv = row16(k, bf16, i, m);
                for (long r = 0; r < g; r++)
                    acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + (h0 + r) * q_stride + i), kv, acc[r]);
            }
            for (long r = 0; r < g; r++) scores[(h0 + r) * scores_stride + (j - first)] = _mm512_reduce_add_ps(acc[r]) * scale;
        }
    }
    for (long r = 0; r < heads; r++) {
        float *s = scores + r * scores_stride;
        sy_softmax_f32(s, n, sinks != 0, sinks ? sinks[r] : 0);
        if (round_weights)
            for (long j = 0; j < n; j++) s[j] = round_bf16(s[j]);
    }
    // Value sums: up to four heads x 64 columns of accumulators in
    // registers, one widened value row shared by the heads.
    for (long c0 = 0; c0 < dv; c0 += CHUNK) {
        const long width = dv - c0 < CHUNK ? dv - c0 : CHUNK;
        for (long h0 = 0; h0 < heads; h0 += MAX_GROUP) {
            const long g = heads - h0 < MAX_GROUP ? heads - h0 : MAX_GROUP;
            __m512 acc[MAX_GROUP][CHUNK / 16];
            for (long r = 0; r < g; r++)
                for (long v = 0; v < CHUNK / 16; v++) acc[r][v] = _mm512_setzero_ps();
            for (long j = first; j < end; j++) {
                const long off = head_offset + (long)table[j / block_size] * block_stride + (j % block_size) * d;
                const char *row = (const char *)values + off * es;
                for (long v = 0; v * 16 < width; v++) {
                    const __mmask16 m = mask16(width - v * 16);
                    const __m512 x = row16(row, bf16, c0 + v * 16, m);
                    for (long r = 0; r < g; r++)
                        acc[r][v] = _mm512_fmadd_ps(_mm512_set1_ps(scores[(h0 + r) * scores_stride + (j - first)]), x, acc[r][v]);
                }
            }
            for (long r = 0; r < g; r++)
                for (long v = 0; v * 16 < width; v++)
                    _mm512_mask_storeu_ps(out + (h0 + r) * out_stride + c0 + v * 16, mask16(width - v * 16), acc[r][v]);
        }
    }
}
