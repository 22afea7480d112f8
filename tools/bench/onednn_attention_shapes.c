// Attention's products on one thread: S = Q·Kᵀ (M=512 query rows, N keys,
// K=64) and O = P·V (M=512, N=64, K keys, V transposed to [64][keys]), BF16
// in and Float32 out through (a) a oneDNN primitive built for the exact
// shape, (b) one primitive with every size and stride given at run time
// (what PagedAttention uses, since the key count changes every chunk), and
// (c) OpenBLAS sgemm in Float32. GFLOP/s. Build and run (docs/performance.md):
//   cc -O2 tools/bench/onednn_attention_shapes.c -ldnnl -lopenblas -o /tmp/attn && OMP_NUM_THREADS=1 /tmp/attn
#include <cblas.h>
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

// dst[m][n] = src[m][k] · wei[n][k]; every dim and stride a run-time value when m < 0.
static dnnl_primitive_t build(int64_t m, int64_t n, int64_t k, const char **impl) {
    const dnnl_dim_t R = DNNL_RUNTIME_DIM_VAL;
    int runtime = m < 0;
    dnnl_dims_t sd = {runtime ? R : m, runtime ? R : k}, ss = {runtime ? R : k, 1};
    dnnl_dims_t wd = {runtime ? R : k, runtime ? R : n}, ws = {1, runtime ? R : k};
    dnnl_dims_t dd = {runtime ? R : m, runtime ? R : n}, ds = {runtime ? R : n, 1};
    dnnl_memory_desc_t s, w, d;
    dnnl_memory_desc_init_by_strides(&s, 2, sd, dnnl_bf16, ss);
    dnnl_memory_desc_init_by_strides(&w, 2, wd, dnnl_bf16, ws);
    dnnl_memory_desc_init_by_strides(&d, 2, dd, dnnl_f32, ds);
    dnnl_matmul_desc_t md;
    dnnl_matmul_desc_init(&md, &s, &w, NULL, &d);
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, &md, NULL, engine, NULL) != dnnl_success) return NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl);
    dnnl_primitive_t p;
    dnnl_primitive_create(&p, pd);
    return p;
}

static double run(dnnl_primitive_t p, int64_t m, int64_t n, int64_t k, void *src, void *wei, float *dst, int reps) {
    dnnl_dims_t sd = {m, k}, ss = {k, 1}, wd = {k, n}, ws = {1, k}, dd = {m, n}, ds = {n, 1};
    dnnl_memory_desc_t s, w, d;
    dnnl_memory_desc_init_by_strides(&s, 2, sd, dnnl_bf16, ss);
    dnnl_memory_desc_init_by_strides(&w, 2, wd, dnnl_bf16, ws);
    dnnl_memory_desc_init_by_strides(&d, 2, dd, dnnl_f32, ds);
    dnnl_memory_t ms, mw, mdst;
    dnnl_memory_create(&ms, &s, engine, src);
    dnnl_memory_create(&mw, &w, engine, wei);
    dnnl_memory_create(&mdst, &d, engine, dst);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mdst}};
    dnnl_primitive_execute(p, stream, 3, args);
    dnnl_stream_wait(stream);
    double t = now();
    for (int i = 0; i < reps; i++) dnnl_primitive_execute(p, stream, 3, args);
    dnnl_stream_wait(stream);
    t = now() - t;
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mdst);
    return 2.0 * m * n * k * reps / t / 1e9;
}

static double sgemm(int64_t m, int64_t n, int64_t k, int transposed, float *a, float *b, float *c, int reps) {
    double t = now();
    for (int i = 0; i < reps; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transposed ? CblasTrans : CblasNoTrans, m, n, k, 1, a, k, b,
                    transposed ? k : n, 0, c, n);
    return 2.0 * m * n * k * reps / (now() - t) / 1e9;
}

int main(void) {
    dnnl_engine_create(&engine, dnnl_cpu, 0);
    dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    void *a = calloc(1 << 24, 1), *b = calloc(1 << 24, 1);
    float *c = calloc(1 << 22, 4), *fa = calloc(1 << 22, 4), *fb = calloc(1 << 22, 4);
    const char *impl = "?";
    dnnl_primitive_t any = build(-1, 0, 0, &impl);
    printf("run-time-shaped primitive: %s\n", any ? impl : "could not be built");
    const int64_t m = 512, d = 64;
    const int reps = 200;
    for (int64_t keys = 128; keys <= 1024; keys *= 2) {
        dnnl_primitive_t s = build(m, keys, d, &impl);
        printf("S  %ldx%ldx%ld: exact shape (%s) %.1f, run-time shape %.1f, sgemm %.1f GFLOP/s\n", m, keys, d, impl,
               run(s, m, keys, d, a, b, c, reps), any ? run(any, m, keys, d, a, b, c, reps) : 0,
               sgemm(m, keys, d, 1, fa, fb, c, reps));
        dnnl_primitive_t o = build(m, d, keys, &impl);
        printf("PV %ldx%ldx%ld: exact shape (%s) %.1f, run-time shape %.1f, sgemm %.1f GFLOP/s\n", m, d, keys, impl,
               run(o, m, d, keys, a, b, c, reps), any ? run(any, m, d, keys, a, b, c, reps) : 0,
               sgemm(m, d, keys, 0, fa, fb, c, reps));
        dnnl_primitive_destroy(s);
        dnnl_primitive_destroy(o);
    }
    return 0;
}
