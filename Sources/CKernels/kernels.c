// Matrix-vector kernels on AVX512-BF16 for bfloat16 mode: weights (BF16, or
// MXFP4 decoded to BF16 in registers) times BF16-rounded activations with
// vdpbf16ps, 32 products per instruction, exact in Float32. Compiled for that
// ISA per function, so the binary still runs where it is missing: callers
// check sy_has_avx512_bf16() first.
#include "CKernels.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int sy_has_avx512_bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

int sy_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

#define SY_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

static inline float bf16_to_f32(uint16_t v) {
    union { uint32_t u; float f; } c = { (uint32_t)v << 16 };
    return c.f;
}

// Every (row, token) sums in the same order however many tokens the call
// has: even 32-column chunks into one accumulator, odd ones into another,
// then the tail, so a token gets the same bits alone or batched.
SY_TARGET
void sy_matvec_bf16(const uint16_t *w, long ldw, long row0, long row1, long cols,
                    const uint16_t *x, long ldx, long tokens, float *y, long ldy) {
    const long c32 = cols & ~31L, c64 = cols & ~63L;
    for (long r = row0; r < row1; r++) {
        const uint16_t *wr = w + r * ldw;
        long t = 0;
        // Four tokens share each weight load.
        for (; t + 4 <= tokens; t += 4) {
            const uint16_t *xs[4] = { x + t * ldx, x + (t + 1) * ldx, x + (t + 2) * ldx, x + (t + 3) * ldx };
            __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0;
            long c = 0;
            for (; c < c64; c += 64) {
                __m512bh we = (__m512bh)_mm512_loadu_si512(wr + c), wo = (__m512bh)_mm512_loadu_si512(wr + c + 32);
                e0 = _mm512_dpbf16_ps(e0, we, (__m512bh)_mm512_loadu_si512(xs[0] + c));
                o0 = _mm512_dpbf16_ps(o0, wo, (__m512bh)_mm512_loadu_si512(xs[0] + c + 32));
                e1 = _mm512_dpbf16_ps(e1, we, (__m512bh)_mm512_loadu_si512(xs[1] + c));
                o1 = _mm512_dpbf16_ps(o1, wo, (__m512bh)_mm512_loadu_si512(xs[1] + c + 32));
                e2 = _mm512_dpbf16_ps(e2, we, (__m512bh)_mm512_loadu_si512(xs[2] + c));
                o2 = _mm512_dpbf16_ps(o2, wo, (__m512bh)_mm512_loadu_si512(xs[2] + c + 32));
                e3 = _mm512_dpbf16_ps(e3, we, (__m512bh)_mm512_loadu_si512(xs[3] + c));
                o3 = _mm512_dpbf16_ps(o3, wo, (__m512bh)_mm512_loadu_si512(xs[3] + c + 32));
            }
            if (c < c32) {
                __m512bh we = (__m512bh)_mm512_loadu_si512(wr + c);
                e0 = _mm512_dpbf16_ps(e0, we, (__m512bh)_mm512_loadu_si512(xs[0] + c));
                e1 = _mm512_dpbf16_ps(e1, we, (__m512bh)_mm512_loadu_si512(xs[1] + c));
                e2 = _mm512_dpbf16_ps(e2, we, (__m512bh)_mm512_loadu_si512(xs[2] + c));
                e3 = _mm512_dpbf16_ps(e3, we, (__m512bh)_mm512_loadu_si512(xs[3] + c));
            }
            float s[4] = { _mm512_reduce_add_ps(_mm512_add_ps(e0, o0)), _mm512_reduce_add_ps(_mm512_add_ps(e1, o1)),
                           _mm512_reduce_add_ps(_mm512_add_ps(e2, o2)), _mm512_reduce_add_ps(_mm512_add_ps(e3, o3)) };
            for (int i = 0; i < 4; i++) {
                for (long k = c32; k < cols; k++) s[i] += bf16_to_f32(wr[k]) * bf16_to_f32(xs[i][k]);
                y[(t + i) * ldy + r] = s[i];
            }
        }
        for (; t < tokens; t++) {
            const uint16_t *xt = x + t * ldx;
            __m512 e = _mm512_setzero_ps(), o = _mm512_setzero_ps();
            long c = 0;
            for (; c < c64; c += 64) {
                e = _mm512_dpbf16_ps(e, (__m512bh)_mm512_loadu_si512(wr + c), (__m512bh)_mm512_loadu_si512(xt + c));
                o = _mm512_dpbf16_ps(o, (__m512bh)_mm512_loadu_si512(wr + c + 32), (__m512bh)_mm512_loadu_si512(xt + c + 32));
            }
            if (c < c32) e = _mm512_dpbf16_ps(e, (__m512bh)_mm512_loadu_si512(wr + c), (__m512bh)_mm512_loadu_si512(xt + c));
            float s = _mm512_reduce_add_ps(_mm512_add_ps(e, o));
            for (long k = c32; k < cols; k++) s += bf16_to_f32(wr[k]) * bf16_to_f32(xt[k]);
            y[t * ldy + r] = s;
        }
    }
}

// E2M1 codes as BF16 bit patterns: 0, 0.5, 1, 1.5, 2, 3, 4, 6, then negated;
// twice, for a 32-entry vpermw table.
static const uint16_t fp4_bf16[32] = {
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,
};

static inline float e8m0(uint8_t s) {
    if (s == 0) return ldexpf(1.0f, -127);
    union { uint32_t u; float f; } c = { (uint32_t)s << 23 };
    return c.f;
}

// The bytes of those BF16 patterns apart, for vpshufb's 16-entry lookups.
static const uint8_t fp4_bf16_low[16] = { 0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0,
                                          0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0 };
static const uint8_t fp4_bf16_high[16] = { 0x00, 0x3F, 0x3F, 0x3F, 0x40, 0x40, 0x40, 0x40,
                                           0x80, 0xBF, 0xBF, 0xBF, 0xC0, 0xC0, 0xC0, 0xC0 };

// The matrix-vector kernels decode four blocks (64 bytes, 128 weights) per
// load. On AVX-512 machines that split 512-bit operations in two (AMD Zen 4)
// the kernel is bound by the count of vector operations, not by memory: a
// block at a time (widen, cross-lane vpermw, dot, scaled add) read 22.7 GB/s
// in kernel-bench, four at a time through in-lane vpshufb 31.8 (1.40x,
// docs/results/before-after-mxfp4). The nibbles are looked up as they
// lie, so the weights come out in an order of their own (quad_position), and
// the activations are permuted to match once per call. A 32-bit lane of a
// vdpbf16ps result then sums two weights of one block, and lanes 4l..4l+3
// belong to block l of the quad, so one vector of per-lane scales serves all
// four products.
typedef struct { __m512i lowTable, highTable, nibble, tiny; __m128i spread; } quad_decoder;

SY_TARGET static inline quad_decoder quad_decoder_make(void) {
    quad_decoder d;
    d.lowTable = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)fp4_bf16_low));
    d.highTable = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)fp4_bf16_high));
    d.nibble = _mm512_set1_epi8(0x0F);
    // E8M0 code 0 is 2^-127, a Float32 subnormal (bits 0x00400000); every
    // other code c is c << 23, which is larger, so an unsigned max fixes 0.
    d.tiny = _mm512_set1_epi32(0x00400000);
    d.spread = _mm_set_epi8(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    return d;
}

// Quad q of a row: its 128 weights as four BF16 vectors and the scale of
// each Float32 lane of their dot products.
SY_TARGET static inline void quad_decode(const quad_decoder *d, const uint8_t *br, const uint8_t *sr, long q,
                                         __m512bh w[4], __m512 *scale) {
    __m512i v = _mm512_loadu_si512(br + 64 * q);
    __m512i even = _mm512_and_si512(v, d->nibble), odd = _mm512_and_si512(_mm512_srli_epi16(v, 4), d->nibble);
    __m512i el = _mm512_shuffle_epi8(d->lowTable, even), eh = _mm512_shuffle_epi8(d->highTable, even);
    __m512i ol = _mm512_shuffle_epi8(d->lowTable, odd), oh = _mm512_shuffle_epi8(d->highTable, odd);
    w[0] = (__m512bh)_mm512_unpacklo_epi8(el, eh);
    w[1] = (__m512bh)_mm512_unpackhi_epi8(el, eh);
    w[2] = (__m512bh)_mm512_unpacklo_epi8(ol, oh);
    w[3] = (__m512bh)_mm512_unpackhi_epi8(ol, oh);
    uint32_t s4;
    memcpy(&s4, sr + 4 * q, 4);
    __m512i bits = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128((int)s4), d->spread)), 23);
    *scale = _mm512_castsi512_ps(_mm512_max_epu32(bits, d->tiny));
}

// Position p (0..127) of quad_decode's order holds this element of the quad:
// vector p / 32 (even or odd nibbles, low or high 8 bytes of each 16-byte
// lane), lane l = block l of the quad, word k within the lane.
static inline long quad_position(long p) {
    long vector = p / 32, block = (p % 32) / 8, k = p % 8;
    return 32 * block + 2 * (k + 8 * (vector & 1)) + (vector >> 1);
}

// A block left over after the quads (cols / 32 not a multiple of 4), decoded
// alone, in the order [elements 0, 2, ..., 30, then 1, 3, ..., 31]: the
// bytes then the bytes shifted right by 4, widened to 16-bit indices into
// vpermw's table (which holds the 16 codes twice, so bit 4 needs no mask).
SY_TARGET static inline __m512bh decode_block(const uint8_t *b, __m512i lut) {
    __m128i v = _mm_loadu_si128((const __m128i *)b);
    __m256i codes = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    return (__m512bh)_mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(codes), lut);
}

// Per thread, grown only: the activations in the decoders' element order.
static __thread uint16_t *xperm;
static __thread long xperm_capacity;

static const uint16_t *permute_x(const uint16_t *x, long ldx, long tokens, long cols) {
    long need = tokens * cols;
    if (need > xperm_capacity) {
        free(xperm);
        xperm = aligned_alloc(64, (size_t)((need + 31) / 32 * 64));
        xperm_capacity = xperm ? need : 0;
        if (!xperm) return 0;
    }
    const long quadCols = cols / 128 * 128;
    for (long t = 0; t < tokens; t++) {
        const uint16_t *src = x + t * ldx;
        uint16_t *dst = xperm + t * cols;
        for (long g = 0; g < quadCols; g += 128)
            for (long p = 0; p < 128; p++) dst[g + p] = src[g + quad_position(p)];
        for (long g = quadCols; g < cols; g += 32)
            for (int i = 0; i < 16; i++) { dst[g + i] = src[g + 2 * i]; dst[g + 16 + i] = src[g + 2 * i + 1]; }
    }
    return xperm;
}

// A quad's four dot products with one token's permuted activations.
SY_TARGET static inline __m512 quad_dot(const __m512bh w[4], const uint16_t *x) {
    __m512 p = _mm512_dpbf16_ps(_mm512_setzero_ps(), w[0], (__m512bh)_mm512_loadu_si512(x));
    p = _mm512_dpbf16_ps(p, w[1], (__m512bh)_mm512_loadu_si512(x + 32));
    p = _mm512_dpbf16_ps(p, w[2], (__m512bh)_mm512_loadu_si512(x + 64));
    return _mm512_dpbf16_ps(p, w[3], (__m512bh)_mm512_loadu_si512(x + 96));
}

// One stored row times every token: out[t * ldy] for t < tokens. As in
// sy_matvec_bf16, one accumulation order per (row, token) whatever the token
// count: even quads into one sum, odd quads into another (two chains keep
// the adds off the critical path), leftover blocks into the first, each
// quad's or block's BF16 dot products scaled into its sum.
SY_TARGET static inline void mxfp4_row(const uint8_t *br, const uint8_t *sr, long nb, const quad_decoder *d, __m512i lut,
                                        const uint16_t *xp, long cols, long tokens, float *out, long ldy) {
    const long nq = nb / 4;
    long t = 0;
    // Four tokens share each decoded quad.
    for (; t + 4 <= tokens; t += 4) {
        const uint16_t *x0 = xp + t * cols, *x1 = x0 + cols, *x2 = x1 + cols, *x3 = x2 + cols;
        __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0;
        __m512bh w[4];
        __m512 s;
        long q = 0;
        for (; q + 2 <= nq; q += 2) {
            quad_decode(d, br, sr, q, w, &s);
            e0 = _mm512_fmadd_ps(quad_dot(w, x0 + 128 * q), s, e0);
            e1 = _mm512_fmadd_ps(quad_dot(w, x1 + 128 * q), s, e1);
            e2 = _mm512_fmadd_ps(quad_dot(w, x2 + 128 * q), s, e2);
            e3 = _mm512_fmadd_ps(quad_dot(w, x3 + 128 * q), s, e3);
            quad_decode(d, br, sr, q + 1, w, &s);
            o0 = _mm512_fmadd_ps(quad_dot(w, x0 + 128 * (q + 1)), s, o0);
            o1 = _mm512_fmadd_ps(quad_dot(w, x1 + 128 * (q + 1)), s, o1);
            o2 = _mm512_fmadd_ps(quad_dot(w, x2 + 128 * (q + 1)), s, o2);
            o3 = _mm512_fmadd_ps(quad_dot(w, x3 + 128 * (q + 1)), s, o3);
        }
        if (q < nq) {
            quad_decode(d, br, sr, q, w, &s);
            e0 = _mm512_fmadd_ps(quad_dot(w, x0 + 128 * q), s, e0);
            e1 = _mm512_fmadd_ps(quad_dot(w, x1 + 128 * q), s, e1);
            e2 = _mm512_fmadd_ps(quad_dot(w, x2 + 128 * q), s, e2);
            e3 = _mm512_fmadd_ps(quad_dot(w, x3 + 128 * q), s, e3);
        }
        for (long g = 4 * nq; g < nb; g++) {
            __m512bh wv = decode_block(br + 16 * g, lut);
            __m512 sg = _mm512_set1_ps(e8m0(sr[g])), z = _mm512_setzero_ps();
            e0 = _mm512_fmadd_ps(_mm512_dpbf16_ps(z, wv, (__m512bh)_mm512_loadu_si512(x0 + 32 * g)), sg, e0);
            e1 = _mm512_fmadd_ps(_mm512_dpbf16_ps(z, wv, (__m512bh)_mm512_loadu_si512(x1 + 32 * g)), sg, e1);
            e2 = _mm512_fmadd_ps(_mm512_dpbf16_ps(z, wv, (__m512bh)_mm512_loadu_si512(x2 + 32 * g)), sg, e2);
            e3 = _mm512_fmadd_ps(_mm512_dpbf16_ps(z, wv, (__m512bh)_mm512_loadu_si512(x3 + 32 * g)), sg, e3);
        }
        out[t * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(e0, o0));
        out[(t + 1) * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(e1, o1));
        out[(t + 2) * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(e2, o2));
        out[(t + 3) * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(e3, o3));
    }
    for (; t < tokens; t++) {
        const uint16_t *xt = xp + t * cols;
        __m512 e = _mm512_setzero_ps(), o = _mm512_setzero_ps();
        __m512bh w[4];
        __m512 s;
        long q = 0;
        for (; q + 2 <= nq; q += 2) {
            quad_decode(d, br, sr, q, w, &s);
            e = _mm512_fmadd_ps(quad_dot(w, xt + 128 * q), s, e);
            quad_decode(d, br, sr, q + 1, w, &s);
            o = _mm512_fmadd_ps(quad_dot(w, xt + 128 * (q + 1)), s, o);
        }
        if (q < nq) {
            quad_decode(d, br, sr, q, w, &s);
            e = _mm512_fmadd_ps(quad_dot(w, xt + 128 * q), s, e);
        }
        for (long g = 4 * nq; g < nb; g++) {
            __m512 p = _mm512_dpbf16_ps(_mm512_setzero_ps(), decode_block(br + 16 * g, lut), (__m512bh)_mm512_loadu_si512(xt + 32 * g));
            e = _mm512_fmadd_ps(p, _mm512_set1_ps(e8m0(sr[g])), e);
        }
        out[t * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(e, o));
    }
}

SY_TARGET
void sy_matvec_mxfp4(const uint8_t *blocks, const uint8_t *scales, long rowStride, long row0, long row1, long cols,
                     const uint16_t *x, long ldx, long tokens, float *y, long ldy) {
    const __m512i lut = _mm512_loadu_si512(fp4_bf16);
    const quad_decoder d = quad_decoder_make();
    const long nb = cols / 32;
    const uint16_t *xp = permute_x(x, ldx, tokens, cols);
    if (!xp) { for (long r = row0; r < row1; r++) for (long t = 0; t < tokens; t++) y[t * ldy + r] = NAN; return; }
    for (long r = row0; r < row1; r++)
        mxfp4_row(blocks + r * rowStride * (cols / 2), scales + r * rowStride * nb, nb, &d, lut, xp, cols, tokens, y + r, ldy);
}

SY_TARGET
void sy_matvec_mxfp4_pairs(const uint8_t *blocks, const uint8_t *scales, long pair0, long pair1, long cols,
                           const uint16_t *x, long ldx, long tokens, float *even, float *odd, long ldy) {
    const __m512i lut = _mm512_loadu_si512(fp4_bf16);
    const quad_decoder d = quad_decoder_make();
    const long nb = cols / 32;
    const uint16_t *xp = permute_x(x, ldx, tokens, cols);
    if (!xp) {
        for (long p = pair0; p < pair1; p++) for (long t = 0; t < tokens; t++) even[t * ldy + p] = odd[t * ldy + p] = NAN;
        return;
    }
    for (long p = pair0; p < pair1; p++) {
        mxfp4_row(blocks + 2 * p * (cols / 2), scales + 2 * p * nb, nb, &d, lut, xp, cols, tokens, even + p, ldy);
        mxfp4_row(blocks + (2 * p + 1) * (cols / 2), scales + (2 * p + 1) * nb, nb, &d, lut, xp, cols, tokens, odd + p, ldy);
    }
}

// Rows of an MXFP4 matrix dequantised to BF16 or Float32 in natural element
// order, for the GEMM path's weight tiles: a block's codes go through the
// same table, then the block scale (a power of two, so exact) is applied in
// Float32.
SY_TARGET static inline void decode_block_f32(const uint8_t *b, uint8_t scale, __m512i lut, __m512 *lo, __m512 *hi) {
    __m128i v = _mm_loadu_si128((const __m128i *)b);
    __m128i mask = _mm_set1_epi8(0x0F);
    __m128i l = _mm_and_si128(v, mask), h = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
    __m256i codes = _mm256_set_m128i(_mm_unpackhi_epi8(l, h), _mm_unpacklo_epi8(l, h));
    __m512i w = _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(codes), lut);
    __m512 s = _mm512_set1_ps(e8m0(scale));
    // BF16 bits to Float32: shift each 16-bit value into the high half.
    *lo = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(w)), 16)), s);
    *hi = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(w, 1)), 16)), s);
}

// One of f32 or bf16 is the destination.
SY_TARGET static void mxfp4_rows(const uint8_t *blocks, const uint8_t *scales, long rowStride, long row0, long count,
                                 long cols, float *f32, uint16_t *bf16) {
    const __m512i lut = _mm512_loadu_si512(fp4_bf16);
    const long nb = cols / 32;
    for (long i = 0; i < count; i++) {
        long r = row0 + i;
        const uint8_t *br = blocks + r * rowStride * (cols / 2), *sr = scales + r * rowStride * nb;
        for (long g = 0; g < nb; g++) {
            __m512 lo, hi;
            decode_block_f32(br + 16 * g, sr[g], lut, &lo, &hi);
            long at = i * cols + 32 * g;
            if (f32) {
                _mm512_storeu_ps(f32 + at, lo);
                _mm512_storeu_ps(f32 + at + 16, hi);
            } else {
                // Exact: an E2M1 value times a power of two is a BF16 value.
                _mm256_storeu_si256((__m256i *)(bf16 + at), (__m256i)_mm512_cvtneps_pbh(lo));
                _mm256_storeu_si256((__m256i *)(bf16 + at + 16), (__m256i)_mm512_cvtneps_pbh(hi));
            }
        }
    }
}

SY_TARGET
void sy_mxfp4_rows_to_f32(const uint8_t *blocks, const uint8_t *scales, long rowStride, long row0, long count, long cols,
                          float *dst) {
    mxfp4_rows(blocks, scales, rowStride, row0, count, cols, dst, 0);
}

SY_TARGET
void sy_mxfp4_rows_to_bf16(const uint8_t *blocks, const uint8_t *scales, long rowStride, long row0, long count, long cols,
                           uint16_t *dst) {
    mxfp4_rows(blocks, scales, rowStride, row0, count, cols, 0, dst);
}
