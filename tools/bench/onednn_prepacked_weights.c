// An expert projection (M tokens x 512 outputs x 1024 inputs, BF16 in,
// Float32 out) on one thread with cold weights (at one token GFLOP/s equals
// GB/s of weights read), cycling through 128 experts
// (128 MiB): oneDNN on the weights as Hugging Face stores them ([N][K], what
// Switchyard passes today) against the same weights reordered once into the
// blocked layout the primitive asks for (format `any`, as IPEX and vLLM's CPU
// backend prepack). GFLOP/s and the ratio. Build and run (docs/performance.md):
//   cc -O2 tools/bench/onednn_prepacked_weights.c -ldnnl -o /tmp/prepack && OMP_NUM_THREADS=1 /tmp/prepack
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static dnnl_engine_t engine;
static dnnl_stream_t stream;

enum { N = 512, K = 1024, EXPERTS = 128 };

// GFLOP/s of M x N x K over every expert three times; packed: weights
// reordered into the primitive's own layout first (not timed).
static double measure(int64_t m, int packed, const unsigned short *plainWeights, const char **impl) {
    dnnl_dims_t sd = {m, K}, wd = {K, N}, dd = {m, N};
    dnnl_memory_desc_t s, w, d, plain;
    dnnl_memory_desc_init_by_tag(&s, 2, sd, dnnl_bf16, dnnl_ab);
    dnnl_memory_desc_init_by_tag(&plain, 2, wd, dnnl_bf16, dnnl_ba);
    if (packed) dnnl_memory_desc_init_by_tag(&w, 2, wd, dnnl_bf16, dnnl_format_tag_any);
    else w = plain;
    dnnl_memory_desc_init_by_tag(&d, 2, dd, dnnl_f32, dnnl_ab);
    dnnl_matmul_desc_t md;
    dnnl_matmul_desc_init(&md, &s, &w, NULL, &d);
    dnnl_primitive_desc_t pd;
    dnnl_primitive_desc_create(&pd, &md, NULL, engine, NULL);
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl);
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    size_t bytes = dnnl_memory_desc_get_size(wq);
    const char *weights = (const char *)plainWeights;
    char *copy = NULL;
    if (packed) {
        copy = aligned_alloc(64, bytes * EXPERTS);
        dnnl_primitive_desc_t rpd;
        dnnl_reorder_primitive_desc_create(&rpd, &plain, engine, wq, engine, NULL);
        dnnl_primitive_t reorder;
        dnnl_primitive_create(&reorder, rpd);
        for (int e = 0; e < EXPERTS; e++) {
            dnnl_memory_t from, to;
            dnnl_memory_create(&from, &plain, engine, (void *)(plainWeights + (size_t)e * N * K));
            dnnl_memory_create(&to, wq, engine, copy + e * bytes);
            dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
            dnnl_primitive_execute(reorder, stream, 2, args);
            dnnl_stream_wait(stream);
            dnnl_memory_destroy(from);
            dnnl_memory_destroy(to);
        }
        dnnl_primitive_destroy(reorder);
        dnnl_primitive_desc_destroy(rpd);
        weights = copy;
    }
    dnnl_primitive_t p;
    dnnl_primitive_create(&p, pd);
    unsigned short *src = calloc(m * K, 2);
    float *dst = calloc(m * N, 4);
    dnnl_memory_t ms, mw, mdst;
    dnnl_memory_create(&ms, &s, engine, src);
    dnnl_memory_create(&mw, wq, engine, (void *)weights);
    dnnl_memory_create(&mdst, &d, engine, dst);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mdst}};
    const int reps = 3 * EXPERTS;
    double t = now();
    for (int i = 0; i < reps; i++) {
        dnnl_memory_set_data_handle(mw, (void *)(weights + (size_t)(i % EXPERTS) * bytes));
        dnnl_primitive_execute(p, stream, 3, args);
    }
    dnnl_stream_wait(stream);
    t = now() - t;
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mdst);
    dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
    free(src);
    free(dst);
    free(copy);
    return 2.0 * m * N * K * reps / t / 1e9;
}

int main(void) {
    dnnl_engine_create(&engine, dnnl_cpu, 0);
    dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    unsigned short *w = malloc((size_t)N * K * EXPERTS * 2);
    for (size_t i = 0; i < (size_t)N * K * EXPERTS; i++) w[i] = 0x3f80 + (i % 7);
    const int64_t tokens[] = {1, 2, 4, 8, 16, 32, 64, 128};
    for (int i = 0; i < 8; i++) {
        const char *plainImpl, *packedImpl;
        double plain = measure(tokens[i], 0, w, &plainImpl), packed = measure(tokens[i], 1, w, &packedImpl);
        printf("M=%3ld: as stored %.1f GFLOP/s (%s), prepacked %.1f (%s): %.2fx\n", tokens[i], plain, plainImpl, packed,
               packedImpl, packed / plain);
    }
    return 0;
}
