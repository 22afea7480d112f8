#ifndef SWITCHYARD_CKERNELS_H
#define SWITCHYARD_CKERNELS_H

#include <stdint.h>

/// 1 when this CPU runs AVX512-BF16 (`vdpbf16ps`), so the kernels below may be called.
int sy_has_avx512_bf16(void);

/// For rows r in [row0, row1) of a BF16 matrix with row stride `ldw` elements:
/// y[t * ldy + r] = Σ_c w[r, c] · x[t * ldx + c] over `cols` columns, for
/// `tokens` BF16 input rows; products exact in Float32, summed in Float32.
void sy_matvec_bf16(const uint16_t *w, long ldw, long row0, long row1, long cols,
                    const uint16_t *x, long ldx, long tokens, float *y, long ldy);

/// The same for an MXFP4 matrix: row r's 4-bit blocks at
/// blocks + r * rowStride * cols / 2 (low nibble first) and its E8M0 scales at
/// scales + r * rowStride * cols / 32. `cols` must be a multiple of 32.
void sy_matvec_mxfp4(const uint8_t *blocks, const uint8_t *scales, long rowStride, long row0, long row1, long cols,
                     const uint16_t *x, long ldx, long tokens, float *y, long ldy);

/// Both halves of an MXFP4 matrix whose rows alternate between two products
/// (gpt-oss's gate/up): for pairs p in [pair0, pair1), stored row 2p into
/// even[t * ldy + p] and row 2p+1 into odd[t * ldy + p], reading the two
/// rows one after the other as they lie in memory.
void sy_matvec_mxfp4_pairs(const uint8_t *blocks, const uint8_t *scales, long pair0, long pair1, long cols,
                           const uint16_t *x, long ldx, long tokens, float *even, float *odd, long ldy);

/// Rows [row0, row0 + count) of an MXFP4 matrix (layout as sy_matvec_mxfp4)
/// dequantised into `count * cols` contiguous Float32 or BF16 values
/// (exact in both): weight tiles for the GEMM path.
void sy_mxfp4_rows_to_f32(const uint8_t *blocks, const uint8_t *scales, long rowStride, long row0, long count, long cols,
                          float *dst);
void sy_mxfp4_rows_to_bf16(const uint8_t *blocks, const uint8_t *scales, long rowStride, long row0, long count, long cols,
                           uint16_t *dst);

/// Lanes of the vector expf the two functions below use (16 with AVX-512,
/// 8 with AVX2, 1 for the scalar libm fallback).
int sy_vector_math_width(void);

/// In place, over n values: x[i] = e^(x[i] - m) / (Σ_j e^(x[j] - m) [+ e^(sink - m)]),
/// m the maximum (with the sink, if has_sink): softmax, with gpt-oss's
/// attention sink taking its share of the mass when has_sink is nonzero.
void sy_softmax_f32(float *x, long n, int has_sink, float sink);

/// In place, over n values: gate[i] = silu(gate[i]) * up[i] (SwiGLU).
void sy_swiglu_f32(float *gate, const float *up, long n);

/// The two above on one path: `at` 2 AVX-512, 1 AVX2, 0 scalar; -1 (and
/// nothing done) where this CPU does not run that path. For tests, which
/// check every path the CPU has, not only the widest.
int sy_softmax_f32_at(float *x, long n, int has_sink, float sink, int at);
int sy_swiglu_f32_at(float *gate, const float *up, long n, int at);

/// 1 when this CPU runs AVX-512 (F, BW, DQ, VL): sy_attend_token may be called,
/// and sy_softmax_f32 and sy_swiglu_f32 take 16 lanes.
int sy_has_avx512(void);

/// Decode attention for one token and one kv head, `heads` query heads of
/// the group (query r at q + r * q_stride, d values, already rounded as the
/// mode asks): keys first..<end of the paged cache, key j's row at element
/// head_offset + table[j / block_size] * block_stride + (j % block_size) * d
/// of `keys` / `values` (BF16 when bf16 is nonzero, else Float32; values may
/// alias keys, their first dv columns read). scores (heads x scores_stride)
/// receive scale * q.k, then softmax with sinks[r] when sinks is not NULL,
/// rounded to BF16 values when round_weights; out + r * out_stride receives
/// dv values of the weighted sum.
void sy_attend_token(const float *q, long q_stride, long heads, const void *keys, const void *values, int bf16,
                     const int32_t *table, long block_size, long block_stride, long head_offset, long first, long end,
                     long d, long dv, float scale, const float *sinks, int round_weights, float *scores,
                     long scores_stride, float *out, long out_stride);


/// BF16 weights in oneDNN's blocked layout BA16a64b2a (see packed.c): rows
/// in blocks of 64, columns in pairs. `rows` must be a multiple of 64 and
/// `cols` of 16. Packs a row-major [rows][cols] matrix into `dst`
/// (rows * cols values).
void sy_packed_bf16_pack(const uint16_t *src, long rows, long cols, uint16_t *dst);
/// Rows [row0, row0 + count) of a packed matrix back in row-major order, as
/// BF16 or widened to Float32 (exact).
void sy_packed_bf16_unpack_rows(const uint16_t *packed, long cols, long row0, long count, uint16_t *dst);
void sy_packed_bf16_widen_rows(const uint16_t *packed, long cols, long row0, long count, float *dst);
/// sy_matvec_bf16 on a packed matrix: y[t * ldy + r] for rows r in
/// [row0, row1) (any range; whole blocks of 64 are read). Per (row, token)
/// the sum runs in one order however many tokens the call has. AVX512-BF16 only.
void sy_matvec_bf16_packed(const uint16_t *w, long cols, long row0, long row1, const uint16_t *x, long ldx,
                           long tokens, float *y, long ldy);
/// The same with Float32 activations (float32 mode). AVX-512 only.
void sy_matvec_f32_packed(const uint16_t *w, long cols, long row0, long row1, const float *x, long ldx, long tokens,
                          float *y, long ldy);

#endif
