// A thin, run-time loaded binding to oneDNN's matmul primitive.
//
// Switchyard does not link oneDNN: the library is opened with dlopen on first
// use, so one binary runs (with OpenBLAS) where oneDNN is missing and names
// what it looked for instead of failing to start. Only oneDNN's headers are
// needed at build time, for its types.
#ifndef SWITCHYARD_CDNNL_H
#define SWITCHYARD_CDNNL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Opens oneDNN (`path`, or libdnnl.so.2 from the loader's search path when
/// NULL) and resolves every function this binding uses. Before opening it
/// pins OpenMP to one thread: the engine's own fork-join threads call oneDNN,
/// each on its own slice, so OpenMP must not start a second set of threads.
/// Returns 0 on success, or -1 with a message in `error`. Idempotent.
int sy_dnnl_load(const char *path, char *error, size_t error_len);

/// Checks that `path` opens and has every function this binding uses,
/// without loading it for use (`sy_dnnl_load` does). 0, or -1 with a message.
int sy_dnnl_probe(const char *path, char *error, size_t error_len);

/// "MAJOR.MINOR.PATCH (runtime, max ISA)" of the loaded library.
const char *sy_dnnl_description(void);

/// 1 when the CPU and library run BF16 matmuls natively (AVX512_BF16 or AMX).
int sy_dnnl_has_native_bf16(void);

/// One cached matmul primitive:
///   dst[m][n] (row stride ldd, f32) = sum_k src[m][k] (row stride lds) * wei[n][k] (row stride ldw)
/// with src and wei both f32 or both bf16, accumulating in f32. With `packed`
/// (bf16 only) the weights are in oneDNN's blocked layout BA16a64b2a
/// (CKernels' sy_packed_bf16_pack) and `ldw` is ignored.
typedef struct sy_matmul sy_matmul;

/// The primitive for this shape, created on first request and kept for the
/// life of the process (the caller bounds the number of shapes). NULL with a
/// message in `error` when oneDNN cannot build it.
sy_matmul *sy_matmul_get(int64_t m, int64_t n, int64_t k, int64_t lds, int64_t ldw, int64_t ldd, int bf16,
                         int packed, char *error, size_t error_len);

/// oneDNN's name for the implementation it chose (e.g. "brg:avx512_core_bf16").
const char *sy_matmul_impl(const sy_matmul *matmul);

/// Runs the product on the calling thread. Safe to call from many threads at
/// once: each thread has its own stream, scratchpad and memory objects.
/// Returns 0, or oneDNN's status code.
int sy_matmul_run(sy_matmul *matmul, const void *src, const void *wei, float *dst);

/// dst[m][n] (row stride ldd, f32) = sum_k src[m][k] (row stride lds) * wei[n][k]
/// (row stride ldw), both BF16, accumulating in f32, for any sizes: one
/// primitive per thread with every size and stride given at run time, for
/// products whose shape changes every call (attention). Runs on the calling
/// thread. Returns 0, or oneDNN's status code.
int sy_matmul_bf16_any(int64_t m, int64_t n, int64_t k, const uint16_t *src, int64_t lds, const uint16_t *wei,
                       int64_t ldw, float *dst, int64_t ldd);
/// Number of primitives created so far.
int64_t sy_matmul_count(void);

#ifdef __cplusplus
}
#endif
#endif
