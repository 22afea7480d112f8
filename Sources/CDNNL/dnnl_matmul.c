#define _GNU_SOURCE
#include "CDNNL.h"

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Function pointers typed from oneDNN's own declarations; taking the type
// with __typeof__ references no symbol, so nothing is linked.
#define DNNL_FUNCTIONS(X)                                                                                              \
    X(dnnl_engine_create)                                                                                              \
    X(dnnl_stream_create)                                                                                              \
    X(dnnl_stream_wait)                                                                                                \
    X(dnnl_memory_desc_init_by_strides)                                                                                \
    X(dnnl_memory_desc_init_by_tag)                                                                                    \
    X(dnnl_memory_desc_get_size)                                                                                       \
    X(dnnl_matmul_desc_init)                                                                                           \
    X(dnnl_primitive_attr_create)                                                                                      \
    X(dnnl_primitive_attr_destroy)                                                                                     \
    X(dnnl_primitive_attr_set_scratchpad_mode)                                                                         \
    X(dnnl_primitive_desc_create)                                                                                      \
    X(dnnl_primitive_desc_destroy)                                                                                     \
    X(dnnl_primitive_desc_query)                                                                                       \
    X(dnnl_primitive_desc_query_md)                                                                                    \
    X(dnnl_primitive_create)                                                                                           \
    X(dnnl_primitive_execute)                                                                                          \
    X(dnnl_memory_create)                                                                                              \
    X(dnnl_memory_set_data_handle)                                                                                     \
    X(dnnl_memory_destroy)                                                                                             \
    X(dnnl_version)                                                                                                    \
    X(dnnl_get_effective_cpu_isa)

#define DECLARE(name) static __typeof__(name) *p_##name;
DNNL_FUNCTIONS(DECLARE)
#undef DECLARE

static void (*p_omp_set_num_threads)(int);

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int loaded;
static char load_error[512];
static char description[128];
static dnnl_engine_t engine;

// Each thread that runs a matmul takes a slot: its own stream, scratchpad and
// memory objects, so concurrent runs share nothing mutable.
enum { MAX_SLOTS = 256 };
static atomic_int next_slot;
static __thread int thread_slot = -1;

typedef struct {
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_size;
    dnnl_memory_t scratch_memory;
    // The slot's BF16 matmul with every size and stride given at run time
    // (sy_matmul_bf16_any), made on first use; any_failed remembers why not.
    dnnl_primitive_t any_bf16;
    int any_failed;
} slot_state;
static slot_state slots[MAX_SLOTS];

struct sy_matmul {
    int64_t m, n, k, lds, ldw, ldd;
    int bf16, packed;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t src_md, wei_md, dst_md;
    size_t scratch_size;
    char impl[64];
    // Per slot: src, weights, dst memory objects, made on the slot's first run.
    dnnl_memory_t memory[MAX_SLOTS][3];
};

int sy_dnnl_load(const char *path, char *error, size_t error_len) {
    if (atomic_load_explicit(&loaded, memory_order_acquire) == 1) return 0;
    pthread_mutex_lock(&load_lock);
    int state = atomic_load(&loaded);
    if (state == 0) {
        state = -1;
        // OpenMP reads its thread count when libgomp loads with oneDNN.
        setenv("OMP_NUM_THREADS", "1", 1);
        const char *name = path ? path : "libdnnl.so.2";
        void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            snprintf(load_error, sizeof load_error, "cannot open oneDNN (%s): %s", name, dlerror());
        } else {
            const char *missing = NULL;
#define RESOLVE(fn)                                                                                                    \
    if (!missing) {                                                                                                    \
        p_##fn = (__typeof__(fn) *)dlsym(lib, #fn);                                                                    \
        if (!p_##fn) missing = #fn;                                                                                    \
    }
            DNNL_FUNCTIONS(RESOLVE)
#undef RESOLVE
            p_omp_set_num_threads = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
            if (!p_omp_set_num_threads) p_omp_set_num_threads = (void (*)(int))dlsym(lib, "omp_set_num_threads");
            if (missing) {
                snprintf(load_error, sizeof load_error, "%s has no %s; Switchyard needs oneDNN 2.x (libdnnl2)", name,
                         missing);
            } else if (p_dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) {
                snprintf(load_error, sizeof load_error, "oneDNN (%s) could not create a CPU engine", name);
            } else {
                const dnnl_version_t *v = p_dnnl_version();
                const char *runtime = v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP"
                                      : v->cpu_runtime == DNNL_RUNTIME_SEQ ? "sequential"
                                      : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB"
                                                                           : "threadpool";
                dnnl_cpu_isa_t isa = p_dnnl_get_effective_cpu_isa();
                const char *isa_name = isa == dnnl_cpu_isa_avx512_core_amx      ? "avx512_core_amx"
                                       : isa == dnnl_cpu_isa_avx512_core_bf16   ? "avx512_core_bf16"
                                       : isa == dnnl_cpu_isa_avx512_core_vnni   ? "avx512_core_vnni"
                                       : isa == dnnl_cpu_isa_avx512_core        ? "avx512_core"
                                       : isa == dnnl_cpu_isa_avx2_vnni          ? "avx2_vnni"
                                       : isa == dnnl_cpu_isa_avx2               ? "avx2"
                                                                                : "older than avx2";
                snprintf(description, sizeof description, "oneDNN %d.%d.%d (%s runtime, %s)", v->major, v->minor,
                         v->patch, runtime, isa_name);
                state = 1;
            }
        }
        atomic_store_explicit(&loaded, state, memory_order_release);
    }
    pthread_mutex_unlock(&load_lock);
    if (state != 1) {
        if (error && error_len) snprintf(error, error_len, "%s", load_error);
        return -1;
    }
    return 0;
}

int sy_dnnl_probe(const char *path, char *error, size_t error_len) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(error, error_len, "cannot open oneDNN (%s): %s", path, dlerror());
        return -1;
    }
    const char *missing = NULL;
#define PROBE(fn)                                                                                                      \
    if (!missing && !dlsym(lib, #fn)) missing = #fn;
    DNNL_FUNCTIONS(PROBE)
#undef PROBE
    dlclose(lib);
    if (missing) {
        snprintf(error, error_len, "%s has no %s; Switchyard needs oneDNN 2.x (libdnnl2)", path, missing);
        return -1;
    }
    return 0;
}

const char *sy_dnnl_description(void) { return description; }

int sy_dnnl_has_native_bf16(void) {
    if (atomic_load(&loaded) != 1) return 0;
    dnnl_cpu_isa_t isa = p_dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

// ---- the primitive cache: open addressing, lock-free reads, locked inserts.
enum { TABLE_SIZE = 1 << 15 };
static _Atomic(sy_matmul *) table[TABLE_SIZE];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_llong created;

static inline int same_shape(const sy_matmul *a, int64_t m, int64_t n, int64_t k, int64_t lds, int64_t ldw,
                             int64_t ldd, int bf16, int packed) {
    return a->m == m && a->n == n && a->k == k && a->lds == lds && a->ldw == ldw && a->ldd == ldd && a->bf16 == bf16 &&
           a->packed == packed;
}

static inline uint64_t shape_hash(int64_t m, int64_t n, int64_t k, int64_t lds, int64_t ldw, int64_t ldd, int bf16,
                                  int packed) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    int64_t parts[8] = {m, n, k, lds, ldw, ldd, bf16, packed};
    for (int i = 0; i < 8; i++) {
        h ^= (uint64_t)parts[i];
        h *= 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    return h;
}

static sy_matmul *create(int64_t m, int64_t n, int64_t k, int64_t lds, int64_t ldw, int64_t ldd, int bf16,
                         int packed, char *error, size_t error_len) {
    sy_matmul *mm = calloc(1, sizeof *mm);
    if (!mm) {
        snprintf(error, error_len, "out of memory creating a matmul primitive");
        return NULL;
    }
    mm->m = m; mm->n = n; mm->k = k; mm->lds = lds; mm->ldw = ldw; mm->ldd = ldd; mm->bf16 = bf16;
    mm->packed = packed;
    dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t src_dims = {m, k}, src_strides = {lds, 1};
    // Weights are stored [n][k] as in Hugging Face checkpoints: the (k x n)
    // operand with k contiguous.
    dnnl_dims_t wei_dims = {k, n}, wei_strides = {1, ldw};
    dnnl_dims_t dst_dims = {m, n}, dst_strides = {ldd, 1};
    dnnl_status_t s = p_dnnl_memory_desc_init_by_strides(&mm->src_md, 2, src_dims, dt, src_strides);
    // Packed weights (packed.c's layout) are oneDNN's own BA16a64b2a: the
    // primitive reads them as they lie, with no reorder per call.
    if (s == dnnl_success)
        s = packed ? p_dnnl_memory_desc_init_by_tag(&mm->wei_md, 2, wei_dims, dt, dnnl_BA16a64b2a)
                   : p_dnnl_memory_desc_init_by_strides(&mm->wei_md, 2, wei_dims, dt, wei_strides);
    if (s == dnnl_success) s = p_dnnl_memory_desc_init_by_strides(&mm->dst_md, 2, dst_dims, dnnl_f32, dst_strides);
    dnnl_matmul_desc_t desc;
    if (s == dnnl_success) s = p_dnnl_matmul_desc_init(&desc, &mm->src_md, &mm->wei_md, NULL, &mm->dst_md);
    dnnl_primitive_attr_t attr = NULL;
    if (s == dnnl_success) s = p_dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success) s = p_dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_primitive_desc_t pd = NULL;
    if (s == dnnl_success) s = p_dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (attr) p_dnnl_primitive_attr_destroy(attr);
    if (s == dnnl_success) {
        const char *impl = NULL;
        p_dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        snprintf(mm->impl, sizeof mm->impl, "%s", impl ? impl : "?");
        const dnnl_memory_desc_t *scratch = p_dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        mm->scratch_size = scratch ? p_dnnl_memory_desc_get_size(scratch) : 0;
        s = p_dnnl_primitive_create(&mm->primitive, pd);
    }
    if (pd) p_dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) {
        snprintf(error, error_len, "oneDNN cannot build a %s matmul %lld x %lld x %lld (status %d)",
                 packed ? "bf16 (packed weights)" : bf16 ? "bf16" : "f32", (long long)m, (long long)n, (long long)k, (int)s);
        free(mm);
        return NULL;
    }
    atomic_fetch_add(&created, 1);
    return mm;
}

sy_matmul *sy_matmul_get(int64_t m, int64_t n, int64_t k, int64_t lds, int64_t ldw, int64_t ldd, int bf16,
                         int packed, char *error, size_t error_len) {
    if (atomic_load_explicit(&loaded, memory_order_acquire) != 1) {
        snprintf(error, error_len, "oneDNN is not loaded");
        return NULL;
    }
    uint64_t h = shape_hash(m, n, k, lds, ldw, ldd, bf16, packed);
    for (int probe = 0; probe < TABLE_SIZE; probe++) {
        sy_matmul *e = atomic_load_explicit(&table[(h + probe) & (TABLE_SIZE - 1)], memory_order_acquire);
        if (!e) break;
        if (same_shape(e, m, n, k, lds, ldw, ldd, bf16, packed)) return e;
    }
    pthread_mutex_lock(&table_lock);
    sy_matmul *result = NULL;
    int probe = 0;
    for (; probe < TABLE_SIZE * 3 / 4; probe++) {
        _Atomic(sy_matmul *) *cell = &table[(h + probe) & (TABLE_SIZE - 1)];
        sy_matmul *e = atomic_load(cell);
        if (e && same_shape(e, m, n, k, lds, ldw, ldd, bf16, packed)) {
            result = e;
            break;
        }
        if (!e) {
            result = create(m, n, k, lds, ldw, ldd, bf16, packed, error, error_len);
            if (result) atomic_store_explicit(cell, result, memory_order_release);
            break;
        }
    }
    if (probe == TABLE_SIZE * 3 / 4) snprintf(error, error_len, "the matmul primitive cache is full");
    pthread_mutex_unlock(&table_lock);
    return result;
}

const char *sy_matmul_impl(const sy_matmul *matmul) { return matmul->impl; }

int64_t sy_matmul_count(void) { return atomic_load(&created); }

static slot_state *this_slot(void) {
    if (thread_slot < 0) {
        int s = atomic_fetch_add(&next_slot, 1);
        if (s >= MAX_SLOTS) return NULL;
        thread_slot = s;
        // The per-thread OpenMP setting, for threads that existed before load.
        if (p_omp_set_num_threads) p_omp_set_num_threads(1);
        if (p_dnnl_stream_create(&slots[s].stream, engine, dnnl_stream_default_flags) != dnnl_success) return NULL;
    }
    return &slots[thread_slot];
}

int sy_matmul_run(sy_matmul *mm, const void *src, const void *wei, float *dst) {
    slot_state *slot = this_slot();
    if (!slot) return dnnl_out_of_memory;
    dnnl_status_t s = dnnl_success;
    if (mm->scratch_size > slot->scratch_size) {
        if (slot->scratch_memory) p_dnnl_memory_destroy(slot->scratch_memory);
        free(slot->scratch);
        size_t size = (mm->scratch_size + 4095) & ~(size_t)4095;
        slot->scratch = aligned_alloc(4096, size);
        slot->scratch_size = slot->scratch ? size : 0;
        slot->scratch_memory = NULL;
        if (!slot->scratch) return dnnl_out_of_memory;
        dnnl_memory_desc_t md;
        dnnl_dims_t dims = {(dnnl_dim_t)size};
        s = p_dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_u8, dnnl_a);
        if (s == dnnl_success) s = p_dnnl_memory_create(&slot->scratch_memory, &md, engine, slot->scratch);
        if (s != dnnl_success) return s;
    }
    dnnl_memory_t *mem = mm->memory[thread_slot];
    if (!mem[0]) {
        s = p_dnnl_memory_create(&mem[0], &mm->src_md, engine, (void *)src);
        if (s == dnnl_success) s = p_dnnl_memory_create(&mem[1], &mm->wei_md, engine, (void *)wei);
        if (s == dnnl_success) s = p_dnnl_memory_create(&mem[2], &mm->dst_md, engine, dst);
        if (s != dnnl_success) return s;
    } else {
        p_dnnl_memory_set_data_handle(mem[0], (void *)src);
        p_dnnl_memory_set_data_handle(mem[1], (void *)wei);
        p_dnnl_memory_set_data_handle(mem[2], dst);
    }
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}, {DNNL_ARG_SCRATCHPAD, NULL}};
    int nargs = 3;
    if (mm->scratch_size > 0) {
        args[3].memory = slot->scratch_memory;
        nargs = 4;
    }
    s = p_dnnl_primitive_execute(mm->primitive, slot->stream, nargs, args);
    if (s == dnnl_success) s = p_dnnl_stream_wait(slot->stream);
    return s;
}

// ---- one BF16 matmul for shapes that change every call (attention's scores
// and value sums: the key count grows with every prompt and chunk). With
// every size and stride a run-time value, oneDNN builds it once (gemm:jit);
// a cached primitive per shape would grow without bound.
static dnnl_status_t create_any_bf16(dnnl_primitive_t *out) {
    const dnnl_dim_t R = DNNL_RUNTIME_DIM_VAL;
    dnnl_dims_t dims = {R, R}, rows = {R, 1}, cols = {1, R};
    dnnl_memory_desc_t src, wei, dst;
    dnnl_status_t s = p_dnnl_memory_desc_init_by_strides(&src, 2, dims, dnnl_bf16, rows);
    if (s == dnnl_success) s = p_dnnl_memory_desc_init_by_strides(&wei, 2, dims, dnnl_bf16, cols);
    if (s == dnnl_success) s = p_dnnl_memory_desc_init_by_strides(&dst, 2, dims, dnnl_f32, rows);
    dnnl_matmul_desc_t desc;
    if (s == dnnl_success) s = p_dnnl_matmul_desc_init(&desc, &src, &wei, NULL, &dst);
    dnnl_primitive_desc_t pd = NULL;
    if (s == dnnl_success) s = p_dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL);
    if (s == dnnl_success) s = p_dnnl_primitive_create(out, pd);
    if (pd) p_dnnl_primitive_desc_destroy(pd);
    if (s == dnnl_success) atomic_fetch_add(&created, 1);
    return s;
}

int sy_matmul_bf16_any(int64_t m, int64_t n, int64_t k, const uint16_t *src, int64_t lds, const uint16_t *wei,
                       int64_t ldw, float *dst, int64_t ldd) {
    if (atomic_load_explicit(&loaded, memory_order_acquire) != 1) return dnnl_runtime_error;
    slot_state *slot = this_slot();
    if (!slot) return dnnl_out_of_memory;
    if (slot->any_failed) return slot->any_failed;
    if (!slot->any_bf16) {
        dnnl_status_t s = create_any_bf16(&slot->any_bf16);
        if (s != dnnl_success) {
            slot->any_failed = s;
            return s;
        }
    }
    dnnl_dims_t src_dims = {m, k}, src_strides = {lds, 1};
    dnnl_dims_t wei_dims = {k, n}, wei_strides = {1, ldw};
    dnnl_dims_t dst_dims = {m, n}, dst_strides = {ldd, 1};
    dnnl_memory_desc_t smd, wmd, dmd;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    dnnl_status_t s = p_dnnl_memory_desc_init_by_strides(&smd, 2, src_dims, dnnl_bf16, src_strides);
    if (s == dnnl_success) s = p_dnnl_memory_desc_init_by_strides(&wmd, 2, wei_dims, dnnl_bf16, wei_strides);
    if (s == dnnl_success) s = p_dnnl_memory_desc_init_by_strides(&dmd, 2, dst_dims, dnnl_f32, dst_strides);
    if (s == dnnl_success) s = p_dnnl_memory_create(&mem[0], &smd, engine, (void *)src);
    if (s == dnnl_success) s = p_dnnl_memory_create(&mem[1], &wmd, engine, (void *)wei);
    if (s == dnnl_success) s = p_dnnl_memory_create(&mem[2], &dmd, engine, dst);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}};
        s = p_dnnl_primitive_execute(slot->any_bf16, slot->stream, 3, args);
        if (s == dnnl_success) s = p_dnnl_stream_wait(slot->stream);
    }
    for (int i = 0; i < 3; i++)
        if (mem[i]) p_dnnl_memory_destroy(mem[i]);
    return s;
}
