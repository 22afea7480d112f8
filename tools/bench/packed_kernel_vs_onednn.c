// The direct kernel on packed BF16 weights (CKernels' sy_matvec_bf16_packed)
// against oneDNN's BF16 matmul on the same packed weights (format
// BA16a64b2a, no reorder), one thread, cycling through 256 MiB of distinct
// matrices (cold weights), at the expert shapes of the compare preset
// (512x1024, 1024x512), DeepSeek-V2-Lite (1408x2048, 2048x1408) and a
// dense 4096x4096. GFLOP/s of each and their ratio: where the ratio falls
// to 1 is `Linear.packedMinTokens`. Build and run (docs/performance.md):
//   cc -O3 -ISources/CKernels/include tools/bench/packed_kernel_vs_onednn.c Sources/CKernels/packed.c \
//      Sources/CKernels/kernels.c -ldnnl -lm -o /tmp/packed-vs-onednn && OMP_NUM_THREADS=1 /tmp/packed-vs-onednn
#include "CKernels.h"
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_engine_create(&engine, dnnl_cpu, 0);
    dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    const long shapes[][2] = {{512, 1024}, {1024, 512}, {1408, 2048}, {2048, 1408}, {4096, 4096}};
    const int tokens[] = {1, 4, 8, 16, 64, 256};
    for (int si = 0; si < 5; si++) {
        const long n = shapes[si][0], k = shapes[si][1];
        long count = (256L << 20) / (n * k * 2);
        if (count < 2) count = 2;
        // Any BF16 values will do: the timing does not depend on them.
        uint16_t *w = aligned_alloc(64, (size_t)n * k * count * 2);
        for (size_t i = 0; i < (size_t)n * k * count; i++) w[i] = 0x3c00 + (i * 7919 % 512);
        uint16_t *x = malloc(256 * k * 2);
        for (long i = 0; i < 256 * k; i++) x[i] = 0x3f00 + (i % 200);
        float *y = malloc(256 * n * 4);
        for (int ti = 0; ti < 6; ti++) {
            const int m = tokens[ti];
            int reps = (int)(2e9 / (2.0 * m * n * k));
            if (reps < count) reps = (int)count;
            double t = now();
            for (int i = 0; i < reps; i++) sy_matvec_bf16_packed(w + (size_t)(i % count) * n * k, k, 0, n, x, k, m, y, n);
            const double direct = 2.0 * m * n * k * reps / (now() - t) / 1e9;
            dnnl_dims_t sd = {m, k}, wd = {k, n}, dd = {m, n};
            dnnl_memory_desc_t smd, wmd, dmd;
            dnnl_memory_desc_init_by_tag(&smd, 2, sd, dnnl_bf16, dnnl_ab);
            dnnl_memory_desc_init_by_tag(&wmd, 2, wd, dnnl_bf16, dnnl_BA16a64b2a);
            dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab);
            dnnl_matmul_desc_t desc;
            dnnl_matmul_desc_init(&desc, &smd, &wmd, NULL, &dmd);
            dnnl_primitive_desc_t pd;
            dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL);
            const char *impl;
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            dnnl_primitive_t p;
            dnnl_primitive_create(&p, pd);
            dnnl_memory_t ms, mw, md;
            dnnl_memory_create(&ms, &smd, engine, x);
            dnnl_memory_create(&mw, &wmd, engine, w);
            dnnl_memory_create(&md, &dmd, engine, y);
            dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
            t = now();
            for (int i = 0; i < reps; i++) {
                dnnl_memory_set_data_handle(mw, w + (size_t)(i % count) * n * k);
                dnnl_primitive_execute(p, stream, 3, args);
            }
            dnnl_stream_wait(stream);
            const double dnnl = 2.0 * m * n * k * reps / (now() - t) / 1e9;
            printf("%5ld x %5ld, %3d tokens: direct %6.1f GFLOP/s, oneDNN %6.1f (%s): direct/oneDNN %.2f\n", n, k, m, direct,
                   dnnl, impl, direct / dnnl);
            fflush(stdout);
            dnnl_memory_destroy(ms);
            dnnl_memory_destroy(mw);
            dnnl_memory_destroy(md);
            dnnl_primitive_destroy(p);
            dnnl_primitive_desc_destroy(pd);
        }
        free(w);
        free(x);
        free(y);
    }
    return 0;
}
