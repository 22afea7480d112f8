// A software CUDA device: the parts of the CUDA driver API, cuBLAS and NVRTC
// that the hybrid executor calls, implemented in host memory, so that its GPU
// path (CUDAExpertAccelerator) runs its real call sequence in tests on
// machines without a GPU. The tests build this file into one shared library
// and link it as libcuda.so.1, libcublas.so.13 and libnvrtc.so.13.
//
// It is a test double, strict where the GPU is strict, so that mistakes that
// would only show on a GPU show here:
// - Streams are lazy. Work queued on a stream runs only when something waits
//   for it (cuStreamSynchronize, cuEventSynchronize, a stream waiting on an
//   event, a blocking copy, cuMemFree). A host buffer rewritten before a
//   queued copy of it has run, or results read before a wait, give wrong
//   numbers here, as they can on a GPU.
// - Copies from pinned memory (cuMemHostAlloc) read the source when they run;
//   copies from pageable memory take it at the call, as the driver stages it.
// - Device addresses are not host addresses, and every access is checked
//   against its allocation: an out-of-bounds access or a host pointer given
//   as a device pointer is a sticky CUDA_ERROR_ILLEGAL_ADDRESS, as on a GPU.
// - Fresh device and pinned memory hold NaN bytes (0xFF), so reading what was
//   never written shows. Each device allocation ends at a page the process
//   may not touch, so a kernel running off its end stops the test at once.
// - Every call that needs a context checks that one is current on the
//   calling thread.
// - cublasGemmEx, cublasGemmBatchedEx and cublasGemmStridedBatchedEx follow cuBLAS's column-major
//   definition, leading-dimension checks and data types (the batched one
//   reads its device arrays of pointers when it runs); NVRTC "compiles" a kernel's CUDA C source with the
//   host C compiler, and cuLaunchKernel runs it over the grid: threads one
//   after another, or, for a kernel with __syncthreads, each block's threads
//   as contexts that switch at every barrier (__shared__ arrays are statics).
//   Every other launch of a kernel runs its blocks and threads in reverse order (the
//   last block first; within a block the last thread first, and at
//   barriers the next lower thread), so a kernel whose result depends on
//   which of two unordered threads runs first gives different numbers
//   from one launch to the next, as it may on a GPU. The threads of a block
//   passing their n-th barrier must all be at the same __syncthreads: one
//   that waits at another (a barrier inside a branch some threads skip)
//   stops the process naming the kernel, where a GPU would hang.
// - Alignment: kernels are built with the alignment sanitizer, trapping, so
//   a load or store of a type at an address not a multiple of its size (say
//   a float read two bytes into one, which an x86 host does quietly) stops
//   the process naming the kernel, as a GPU stops the kernel with
//   CUDA_ERROR_MISALIGNED_ADDRESS; a product whose matrix starts inside an
//   element of its type is that sticky error.
//
// What it cannot show: speed, the GPU's own rounding order, and races
// between threads that a barrier does not order other than by those two
// orders (threads switch only at barriers), or warp-level operations.
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// The most parameters a kernel may take here (a kernel with more does not compile).
#define KERNEL_ARGS 32

typedef int CUresult;
enum {
    CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_OUT_OF_MEMORY = 2, CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101, CUDA_ERROR_INVALID_IMAGE = 200, CUDA_ERROR_NO_BINARY_FOR_GPU = 209, CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222, CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400, CUDA_ERROR_NOT_FOUND = 500, CUDA_ERROR_ILLEGAL_ADDRESS = 700, CUDA_ERROR_MISALIGNED_ADDRESS = 716,
    CUDA_ERROR_LAUNCH_FAILED = 719,
};
enum { CUBLAS_OK = 0, CUBLAS_NOT_INITIALIZED = 1, CUBLAS_INVALID_VALUE = 7, CUBLAS_EXECUTION_FAILED = 13, CUBLAS_NOT_SUPPORTED = 15 };
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14, CUBLAS_COMPUTE_32F = 68, CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };

static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static CUresult sticky = CUDA_SUCCESS;
static char sticky_message[512];
static int primary_context;  // its address is the context handle
static __thread void *current_context;

// Counters the tests read (softcuda_counter).
static struct {
    long long pinned_h2d_bytes, pageable_h2d_bytes, d2h_bytes, gemms, batched_gemms, strided_gemms, launches, event_waits, max_queued,
        host_waits;
} counters;

static void fail(CUresult code, const char *message) {
    if (sticky == CUDA_SUCCESS) {
        sticky = code;
        snprintf(sticky_message, sizeof sticky_message, "%s", message);
    }
}

// ---------------------------------------------------------------- memory
typedef struct { uint64_t dev; size_t size; unsigned char *host, *mapping; size_t mapped; } allocation;
static allocation *allocations;
static int allocation_count, allocation_capacity;
static uint64_t next_device_address = 0x7f0000000000ull;  // far from where this process's heap lives
static size_t device_used;

typedef struct { unsigned char *ptr; size_t size; } pinned_block;
static pinned_block *pinned;
static int pinned_count, pinned_capacity;

// What the device reports, set by the tests (softcuda_configure).
static size_t memory_bytes = (size_t)1 << 30;
static int devices = 1;
static char compiler[1024] = "cc";
// Set by tests: cublasGemmBatchedEx and cublasGemmStridedBatchedEx answer
// CUBLAS_STATUS_NOT_SUPPORTED, as a cuBLAS without this type combination would.
static int refuse_batched;
// Set by tests: the launch this many launches from now fails, as a kernel
// that faults does (a sticky CUDA_ERROR_LAUNCH_FAILED); 0: none.
static long long fail_launch_countdown;
// Set by tests (softcuda_configure_toolkit): the device's compute capability
// (major * 10 + minor), the newest sm_ NVRTC here compiles for, and whether
// the driver can compile NVRTC's PTX (a driver older than the NVRTC cannot).
static int compute_capability = 90, nvrtc_newest_arch = 120, driver_takes_ptx = 1;

static size_t device_memory_bytes(void) { return memory_bytes; }

// The host bytes behind [dev, dev + bytes), or NULL (and a sticky error).
static unsigned char *device_bytes(uint64_t dev, size_t bytes, const char *what) {
    for (int i = 0; i < allocation_count; i++) {
        allocation *a = &allocations[i];
        if (dev >= a->dev && dev < a->dev + a->size) {
            if (dev + bytes <= a->dev + a->size) return a->host + (dev - a->dev);
            char m[256];
            snprintf(m, sizeof m, "%s: %zu bytes at device address 0x%llx run %zu bytes past its allocation of %zu", what, bytes,
                     (unsigned long long)dev, (size_t)(dev + bytes - a->dev - a->size), a->size);
            fail(CUDA_ERROR_ILLEGAL_ADDRESS, m);
            return NULL;
        }
    }
    char m[256];
    snprintf(m, sizeof m, "%s: 0x%llx is not device memory", what, (unsigned long long)dev);
    fail(CUDA_ERROR_ILLEGAL_ADDRESS, m);
    return NULL;
}

static void *kernel_pointer(unsigned long long dev) { return device_bytes(dev, 1, "a kernel's pointer argument"); }

static const char *running_kernel;

static void misaligned_access(int signal) {
    (void)signal;
    static const char head[] = "software CUDA: kernel ";
    static const char tail[] = " made a misaligned access (a GPU fails it with CUDA_ERROR_MISALIGNED_ADDRESS)\n";
    write(2, head, sizeof head - 1);
    if (running_kernel) write(2, running_kernel, strlen(running_kernel));
    write(2, tail, sizeof tail - 1);
    abort();
}

static int is_pinned(const void *p, size_t bytes) {
    const unsigned char *c = p;
    for (int i = 0; i < pinned_count; i++)
        if (c >= pinned[i].ptr && c + bytes <= pinned[i].ptr + pinned[i].size) return 1;
    return 0;
}

// ---------------------------------------------------------------- streams
typedef struct event { unsigned long long recorded, completed; struct stream *stream; } event;
enum { OP_H2D, OP_D2H, OP_GEMM, OP_GEMM_BATCHED, OP_GEMM_STRIDED, OP_KERNEL, OP_RECORD, OP_WAIT };

// A kernel's pointer arguments are device addresses; its runner turns them
// into host addresses through this (NULL, and a sticky error, for one that
// is not device memory).
static void *kernel_pointer(unsigned long long dev);

typedef struct kernel {
    void (*run)(void **args, const unsigned *grid, const unsigned *block, void *(*translate)(unsigned long long));
    const size_t *sizes;
    int nargs;
    char name[128];
} kernel;

typedef struct op {
    int kind;
    struct op *next;
    uint64_t dev;            // H2D destination, D2H source
    void *host;              // H2D source, D2H destination
    void *owned;             // a pageable source taken at the call
    size_t bytes;
    event *ev;
    unsigned long long seq;
    // For OP_GEMM_BATCHED, a, b and c are device arrays of `batch` device
    // pointers, read when the product runs.
    // For OP_GEMM_STRIDED, product i's matrices start sa, sb, sc elements
    // after product i - 1's.
    struct { int ta, tb, m, n, k, atype, btype, ctype, lda, ldb, ldc, batch; float alpha, beta; uint64_t a, b, c; long long sa, sb, sc; } gemm;
    struct { kernel *f; unsigned grid[3], block[3]; void *args[KERNEL_ARGS]; } launch;
} op;

typedef struct stream { op *head, *tail; int queued; struct stream *next_stream; } stream;
static stream *streams;  // every live stream
static stream null_stream;

static void run_until(stream *s, event *e, unsigned long long seq, int depth);

static float bf16_to_float(uint16_t v) { uint32_t b = (uint32_t)v << 16; float f; memcpy(&f, &b, 4); return f; }
static uint16_t float_to_bf16(float f) {
    uint32_t b; memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

static size_t type_size(int t) { return t == CUDA_R_32F ? 4 : 2; }
static float load(const unsigned char *base, int type, size_t index) {
    return type == CUDA_R_32F ? ((const float *)base)[index] : bf16_to_float(((const uint16_t *)base)[index]);
}

static void execute_gemm(op *o) {
    int m = o->gemm.m, n = o->gemm.n, k = o->gemm.k;
    if (m == 0 || n == 0) return;
    // Column-major: op(A) is m x k, op(B) is k x n, C is m x n.
    size_t a_cols = o->gemm.ta == CUBLAS_OP_N ? (size_t)k : (size_t)m, a_rows = o->gemm.ta == CUBLAS_OP_N ? (size_t)m : (size_t)k;
    size_t b_cols = o->gemm.tb == CUBLAS_OP_N ? (size_t)n : (size_t)k, b_rows = o->gemm.tb == CUBLAS_OP_N ? (size_t)k : (size_t)n;
    const unsigned char *a = k ? device_bytes(o->gemm.a, ((a_cols - 1) * o->gemm.lda + a_rows) * type_size(o->gemm.atype), "cublasGemmEx A") : NULL;
    const unsigned char *b = k ? device_bytes(o->gemm.b, ((b_cols - 1) * o->gemm.ldb + b_rows) * type_size(o->gemm.btype), "cublasGemmEx B") : NULL;
    unsigned char *c = device_bytes(o->gemm.c, ((size_t)(n - 1) * o->gemm.ldc + m) * type_size(o->gemm.ctype), "cublasGemmEx C");
    if ((k && (!a || !b)) || !c) return;
    // cuBLAS reads and writes whole elements: a matrix that starts inside
    // one is a misaligned address on a GPU.
    if ((k && (o->gemm.a % type_size(o->gemm.atype) || o->gemm.b % type_size(o->gemm.btype))) || o->gemm.c % type_size(o->gemm.ctype)) {
        fail(CUDA_ERROR_MISALIGNED_ADDRESS, "cublasGemmEx: a matrix does not start on a whole element of its type");
        return;
    }
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            float sum = 0;
            for (int p = 0; p < k; p++) {
                size_t ai = o->gemm.ta == CUBLAS_OP_N ? (size_t)i + (size_t)p * o->gemm.lda : (size_t)p + (size_t)i * o->gemm.lda;
                size_t bi = o->gemm.tb == CUBLAS_OP_N ? (size_t)p + (size_t)j * o->gemm.ldb : (size_t)j + (size_t)p * o->gemm.ldb;
                sum += load(a, o->gemm.atype, ai) * load(b, o->gemm.btype, bi);
            }
            size_t ci = (size_t)i + (size_t)j * o->gemm.ldc;
            float value = o->gemm.alpha * sum + (o->gemm.beta != 0 ? o->gemm.beta * load(c, o->gemm.ctype, ci) : 0);
            if (o->gemm.ctype == CUDA_R_32F) ((float *)c)[ci] = value;
            else ((uint16_t *)c)[ci] = float_to_bf16(value);
        }
    }
}

static void execute(op *o, stream *s, int depth) {
    switch (o->kind) {
    case OP_H2D: {
        unsigned char *d = device_bytes(o->dev, o->bytes, "cuMemcpyHtoDAsync destination");
        if (d) memcpy(d, o->owned ? o->owned : o->host, o->bytes);
        break;
    }
    case OP_D2H: {
        unsigned char *d = device_bytes(o->dev, o->bytes, "cuMemcpyDtoHAsync source");
        if (d) memcpy(o->host, d, o->bytes);
        break;
    }
    case OP_GEMM: execute_gemm(o); break;
    case OP_GEMM_BATCHED: {
        size_t bytes = (size_t)o->gemm.batch * sizeof(uint64_t);
        const uint64_t *as = (const uint64_t *)device_bytes(o->gemm.a, bytes, "cublasGemmBatchedEx Aarray");
        const uint64_t *bs = (const uint64_t *)device_bytes(o->gemm.b, bytes, "cublasGemmBatchedEx Barray");
        const uint64_t *cs = (const uint64_t *)device_bytes(o->gemm.c, bytes, "cublasGemmBatchedEx Carray");
        if (!as || !bs || !cs) break;
        for (int i = 0; i < o->gemm.batch && sticky == CUDA_SUCCESS; i++) {
            op one = *o;
            one.gemm.a = as[i]; one.gemm.b = bs[i]; one.gemm.c = cs[i];
            execute_gemm(&one);
        }
        break;
    }
    case OP_GEMM_STRIDED:
        for (int i = 0; i < o->gemm.batch && sticky == CUDA_SUCCESS; i++) {
            op one = *o;
            one.gemm.a += (uint64_t)(i * o->gemm.sa) * type_size(o->gemm.atype);
            one.gemm.b += (uint64_t)(i * o->gemm.sb) * type_size(o->gemm.btype);
            one.gemm.c += (uint64_t)(i * o->gemm.sc) * type_size(o->gemm.ctype);
            execute_gemm(&one);
        }
        break;
    case OP_KERNEL: {
        // Kernels are built with the alignment sanitizer trapping (SIGILL):
        // a load or store of a type at an address not a multiple of its
        // size, which a GPU stops with CUDA_ERROR_MISALIGNED_ADDRESS and an
        // x86 host would do quietly. The handler names it; it is only
        // installed while a kernel runs, so Swift's own traps stay Swift's.
        struct sigaction trap = {0}, previous;
        trap.sa_handler = misaligned_access;
        sigaction(SIGILL, &trap, &previous);
        running_kernel = o->launch.f->name;
        o->launch.f->run(o->launch.args, o->launch.grid, o->launch.block, kernel_pointer);
        running_kernel = NULL;
        sigaction(SIGILL, &previous, NULL);
        break;
    }
    case OP_RECORD: if (o->ev->completed < o->seq) o->ev->completed = o->seq; break;
    case OP_WAIT:
        if (o->ev->completed < o->seq) {
            if (o->ev->stream == s || depth > 32) fail(CUDA_ERROR_LAUNCH_FAILED, "a stream waits on an event that can never complete");
            else run_until(o->ev->stream, o->ev, o->seq, depth + 1);
        }
        break;
    }
    (void)s;
}

static void free_op(op *o) {
    free(o->owned);
    if (o->kind == OP_KERNEL) for (int i = 0; i < o->launch.f->nargs; i++) free(o->launch.args[i]);
    free(o);
}

// Runs `s` until `e` reaches `seq` (e NULL: until `s` is empty).
static void run_until(stream *s, event *e, unsigned long long seq, int depth) {
    while (s->head && !(e && e->completed >= seq)) {
        op *o = s->head;
        s->head = o->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        if (sticky == CUDA_SUCCESS) execute(o, s, depth);
        free_op(o);
    }
}

static void drain_all(void) {
    for (stream *s = streams; s; s = s->next_stream) run_until(s, NULL, 0, 0);
    run_until(&null_stream, NULL, 0, 0);
}

static op *new_op(int kind) {
    op *o = calloc(1, sizeof *o);
    o->kind = kind;
    return o;
}

static void enqueue(stream *s, op *o) {
    if (!s) {  // the legacy default stream: after all other work, at once
        drain_all();
        if (sticky == CUDA_SUCCESS) execute(o, &null_stream, 0);
        free_op(o);
        return;
    }
    if (s->tail) s->tail->next = o; else s->head = o;
    s->tail = o;
    if (++s->queued > counters.max_queued) counters.max_queued = s->queued;
}

// ---------------------------------------------------------------- driver API
#define ENTER() pthread_mutex_lock(&lock)
#define RETURN(code) do { CUresult r_ = (code); pthread_mutex_unlock(&lock); return r_; } while (0)
#define NEED_CONTEXT() do { if (sticky) RETURN(sticky); if (current_context != &primary_context) RETURN(CUDA_ERROR_INVALID_CONTEXT); } while (0)

static int device_count(void) { return devices; }

CUresult cuInit(unsigned flags) { (void)flags; return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
CUresult cuDeviceGetCount(int *n) { *n = device_count(); return CUDA_SUCCESS; }
CUresult cuDeviceGet(int *d, int ordinal) {
    if (ordinal < 0 || ordinal >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char *name, int len, int d) {
    if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "Software CUDA device %d (host memory)", d);
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, int d) {
    if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    if (attribute == 75) *value = compute_capability / 10;       // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    else if (attribute == 76) *value = compute_capability % 10;  // ..._MINOR
    else return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem(size_t *bytes, int d) {
    if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = device_memory_bytes();
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int d) {
    if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *ctx = &primary_context;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease(int d) { return d >= 0 && d < device_count() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }
CUresult cuCtxSetCurrent(void *ctx) {
    if (ctx && ctx != &primary_context) return CUDA_ERROR_INVALID_CONTEXT;
    current_context = ctx;
    return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize(void) { ENTER(); NEED_CONTEXT(); drain_all(); RETURN(sticky); }
CUresult cuMemGetInfo(size_t *free_bytes, size_t *total) {
    ENTER(); NEED_CONTEXT();
    *total = device_memory_bytes();
    *free_bytes = *total - device_used;
    RETURN(CUDA_SUCCESS);
}
CUresult cuGetErrorString(CUresult code, const char **text) {
    switch (code) {
    case CUDA_SUCCESS: *text = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *text = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *text = "out of memory"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *text = "invalid device context"; break;
    case CUDA_ERROR_ILLEGAL_ADDRESS: *text = "an illegal memory access was encountered"; break;
    default: *text = "software CUDA device error"; break;
    }
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc(uint64_t *dev, size_t bytes) {
    ENTER(); NEED_CONTEXT();
    if (bytes == 0) RETURN(CUDA_ERROR_INVALID_VALUE);
    if (device_used + bytes > device_memory_bytes()) RETURN(CUDA_ERROR_OUT_OF_MEMORY);
    // The bytes end (256-byte aligned, as cuMemAlloc aligns) just before a
    // page with no access.
    size_t page = (size_t)sysconf(_SC_PAGESIZE), rounded = (bytes + 255) & ~(size_t)255;
    size_t mapped = ((rounded + page - 1) / page + 1) * page;
    unsigned char *mapping = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping == MAP_FAILED) RETURN(CUDA_ERROR_OUT_OF_MEMORY);
    mprotect(mapping + mapped - page, page, PROT_NONE);
    unsigned char *host = mapping + mapped - page - rounded;
    memset(host, 0xFF, bytes);
    if (allocation_count == allocation_capacity) {
        allocation_capacity = allocation_capacity ? 2 * allocation_capacity : 64;
        allocations = realloc(allocations, (size_t)allocation_capacity * sizeof *allocations);
    }
    allocations[allocation_count++] = (allocation){next_device_address, bytes, host, mapping, mapped};
    *dev = next_device_address;
    // A gap after every allocation, so running off the end never lands in the next.
    next_device_address += (bytes + 0xFFFFull + 0x10000ull) & ~0xFFFFull;
    device_used += bytes;
    RETURN(CUDA_SUCCESS);
}

CUresult cuMemFree(uint64_t dev) {
    ENTER(); NEED_CONTEXT();
    drain_all();  // as on a GPU, freeing waits for the device
    for (int i = 0; i < allocation_count; i++) {
        if (allocations[i].dev == dev) {
            munmap(allocations[i].mapping, allocations[i].mapped);
            device_used -= allocations[i].size;
            allocations[i] = allocations[--allocation_count];
            RETURN(sticky);
        }
    }
    RETURN(CUDA_ERROR_INVALID_VALUE);
}

CUresult cuMemHostAlloc(void **p, size_t bytes, unsigned flags) {
    (void)flags;
    ENTER(); NEED_CONTEXT();
    unsigned char *host = malloc(bytes ? bytes : 1);
    if (!host) RETURN(CUDA_ERROR_OUT_OF_MEMORY);
    memset(host, 0xFF, bytes);
    if (pinned_count == pinned_capacity) {
        pinned_capacity = pinned_capacity ? 2 * pinned_capacity : 16;
        pinned = realloc(pinned, (size_t)pinned_capacity * sizeof *pinned);
    }
    pinned[pinned_count++] = (pinned_block){host, bytes};
    *p = host;
    RETURN(CUDA_SUCCESS);
}

CUresult cuMemFreeHost(void *p) {
    ENTER(); NEED_CONTEXT();
    drain_all();
    for (int i = 0; i < pinned_count; i++) {
        if (pinned[i].ptr == p) {
            free(p);
            pinned[i] = pinned[--pinned_count];
            RETURN(sticky);
        }
    }
    RETURN(CUDA_ERROR_INVALID_VALUE);
}

CUresult cuStreamCreate(stream **out, unsigned flags) {
    (void)flags;
    ENTER(); NEED_CONTEXT();
    stream *s = calloc(1, sizeof *s);
    s->next_stream = streams;
    streams = s;
    *out = s;
    RETURN(CUDA_SUCCESS);
}

CUresult cuStreamDestroy(stream *s) {
    ENTER(); NEED_CONTEXT();
    run_until(s, NULL, 0, 0);
    for (stream **p = &streams; *p; p = &(*p)->next_stream) {
        if (*p == s) { *p = s->next_stream; free(s); RETURN(sticky); }
    }
    RETURN(CUDA_ERROR_INVALID_HANDLE);
}

CUresult cuStreamSynchronize(stream *s) {
    ENTER(); NEED_CONTEXT();
    counters.host_waits++;
    if (s) run_until(s, NULL, 0, 0); else drain_all();
    RETURN(sticky);
}

CUresult cuEventCreate(event **out, unsigned flags) {
    (void)flags;
    ENTER(); NEED_CONTEXT();
    *out = calloc(1, sizeof(event));
    RETURN(CUDA_SUCCESS);
}

CUresult cuEventDestroy(event *e) {
    ENTER(); NEED_CONTEXT();
    drain_all();  // queued records and waits may still name it
    free(e);
    RETURN(sticky);
}

CUresult cuEventRecord(event *e, stream *s) {
    ENTER(); NEED_CONTEXT();
    if (!e) RETURN(CUDA_ERROR_INVALID_HANDLE);
    op *o = new_op(OP_RECORD);
    o->ev = e;
    o->seq = ++e->recorded;
    e->stream = s;
    enqueue(s, o);
    RETURN(sticky);
}

CUresult cuStreamWaitEvent(stream *s, event *e, unsigned flags) {
    (void)flags;
    ENTER(); NEED_CONTEXT();
    if (!e) RETURN(CUDA_ERROR_INVALID_HANDLE);
    if (e->recorded == 0) RETURN(CUDA_SUCCESS);  // never recorded: nothing to wait for
    counters.event_waits++;
    op *o = new_op(OP_WAIT);
    o->ev = e;
    o->seq = e->recorded;
    enqueue(s, o);
    RETURN(sticky);
}

CUresult cuEventSynchronize(event *e) {
    ENTER(); NEED_CONTEXT();
    counters.host_waits++;
    if (!e) RETURN(CUDA_ERROR_INVALID_HANDLE);
    if (e->completed < e->recorded) {
        if (e->stream) run_until(e->stream, e, e->recorded, 0); else drain_all();
    }
    RETURN(sticky);
}

CUresult cuMemcpyHtoDAsync(uint64_t dev, const void *host, size_t bytes, stream *s) {
    ENTER(); NEED_CONTEXT();
    if (bytes == 0) RETURN(CUDA_SUCCESS);
    if (!device_bytes(dev, bytes, "cuMemcpyHtoDAsync destination")) RETURN(sticky);
    op *o = new_op(OP_H2D);
    o->dev = dev;
    o->bytes = bytes;
    if (is_pinned(host, bytes)) {
        o->host = (void *)host;
        counters.pinned_h2d_bytes += (long long)bytes;
    } else {  // the driver stages pageable memory before returning
        o->owned = malloc(bytes);
        memcpy(o->owned, host, bytes);
        counters.pageable_h2d_bytes += (long long)bytes;
    }
    enqueue(s, o);
    RETURN(sticky);
}

CUresult cuMemcpyDtoHAsync(void *host, uint64_t dev, size_t bytes, stream *s) {
    ENTER(); NEED_CONTEXT();
    if (bytes == 0) RETURN(CUDA_SUCCESS);
    if (!device_bytes(dev, bytes, "cuMemcpyDtoHAsync source")) RETURN(sticky);
    op *o = new_op(OP_D2H);
    o->dev = dev;
    o->host = host;
    o->bytes = bytes;
    counters.d2h_bytes += (long long)bytes;
    int pinned_destination = is_pinned(host, bytes);
    enqueue(s, o);
    // Into pageable memory the copy is synchronous.
    if (!pinned_destination && s) run_until(s, NULL, 0, 0);
    RETURN(sticky);
}

CUresult cuMemcpyHtoD(uint64_t dev, const void *host, size_t bytes) {
    ENTER(); NEED_CONTEXT();
    drain_all();
    unsigned char *d = device_bytes(dev, bytes, "cuMemcpyHtoD destination");
    if (d) memcpy(d, host, bytes);
    RETURN(sticky);
}

// Modules: the image NVRTC made names a shared library of host code.
typedef struct module { void *library; } module;

CUresult cuModuleLoadData(module **out, const void *image) {
    ENTER(); NEED_CONTEXT();
    const char *text = image, *at = strstr(text, "\n.softcuda_library ");
    if (!at) RETURN(CUDA_ERROR_INVALID_IMAGE);  // real PTX: this device runs only its own NVRTC's output
    char path[4096];
    if (sscanf(at + 19, "%4095s", path) != 1) RETURN(CUDA_ERROR_INVALID_IMAGE);
    // A cubin runs on its own major version at its minor or above; PTX
    // needs a driver at least as new as the NVRTC that wrote it.
    const char *target = strstr(text, "\n.softcuda_target ");
    int arch = 0;
    if (!target) RETURN(CUDA_ERROR_INVALID_IMAGE);
    if (sscanf(target + 18, "sm_%d", &arch) == 1) {
        if (arch / 10 != compute_capability / 10 || arch % 10 > compute_capability % 10) RETURN(CUDA_ERROR_NO_BINARY_FOR_GPU);
    } else if (!driver_takes_ptx) {
        RETURN(CUDA_ERROR_UNSUPPORTED_PTX_VERSION);
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) RETURN(CUDA_ERROR_INVALID_IMAGE);
    module *m = calloc(1, sizeof *m);
    m->library = lib;
    *out = m;
    RETURN(CUDA_SUCCESS);
}

CUresult cuModuleGetFunction(kernel **out, module *m, const char *name) {
    ENTER(); NEED_CONTEXT();
    if (!m) RETURN(CUDA_ERROR_INVALID_HANDLE);
    char symbol[300];
    snprintf(symbol, sizeof symbol, "softcuda_run_%s", name);
    void *run = dlsym(m->library, symbol);
    snprintf(symbol, sizeof symbol, "softcuda_sizes_%s", name);
    const size_t *sizes = dlsym(m->library, symbol);
    snprintf(symbol, sizeof symbol, "softcuda_nargs_%s", name);
    const int *nargs = dlsym(m->library, symbol);
    if (!run || !sizes || !nargs) RETURN(CUDA_ERROR_NOT_FOUND);
    kernel *k = calloc(1, sizeof *k);
    k->run = (void (*)(void **, const unsigned *, const unsigned *, void *(*)(unsigned long long)))run;
    k->sizes = sizes;
    k->nargs = *nargs;
    snprintf(k->name, sizeof k->name, "%s", name);
    *out = k;
    RETURN(CUDA_SUCCESS);
}

CUresult cuLaunchKernel(kernel *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared,
                        stream *s, void **params, void **extra) {
    ENTER(); NEED_CONTEXT();
    if (!f) RETURN(CUDA_ERROR_INVALID_HANDLE);
    if (extra || shared || !gx || !gy || !gz || !bx || !by || !bz || (unsigned long long)bx * by * bz > 1024 || (f->nargs && !params))
        RETURN(CUDA_ERROR_INVALID_VALUE);
    if (fail_launch_countdown > 0 && --fail_launch_countdown == 0) {
        fail(CUDA_ERROR_LAUNCH_FAILED, "a launch failed (injected by the test)");
        RETURN(CUDA_ERROR_LAUNCH_FAILED);
    }
    op *o = new_op(OP_KERNEL);
    o->launch.f = f;
    unsigned g[3] = {gx, gy, gz}, b[3] = {bx, by, bz};
    memcpy(o->launch.grid, g, sizeof g);
    memcpy(o->launch.block, b, sizeof b);
    // Arguments are taken at the launch, as the driver does.
    for (int i = 0; i < f->nargs; i++) {
        o->launch.args[i] = malloc(f->sizes[i]);
        memcpy(o->launch.args[i], params[i], f->sizes[i]);
    }
    counters.launches++;
    enqueue(s, o);
    RETURN(sticky);
}

typedef struct { const char *name; void *fn; } entry;
static const entry entries[] = {
    {"cuInit", (void *)cuInit}, {"cuDriverGetVersion", (void *)cuDriverGetVersion}, {"cuDeviceGetCount", (void *)cuDeviceGetCount},
    {"cuDeviceGet", (void *)cuDeviceGet}, {"cuDeviceGetName", (void *)cuDeviceGetName}, {"cuDeviceTotalMem", (void *)cuDeviceTotalMem},
    {"cuDeviceGetAttribute", (void *)cuDeviceGetAttribute},
    {"cuDevicePrimaryCtxRetain", (void *)cuDevicePrimaryCtxRetain}, {"cuDevicePrimaryCtxRelease", (void *)cuDevicePrimaryCtxRelease},
    {"cuCtxSetCurrent", (void *)cuCtxSetCurrent}, {"cuCtxSynchronize", (void *)cuCtxSynchronize}, {"cuMemGetInfo", (void *)cuMemGetInfo},
    {"cuGetErrorString", (void *)cuGetErrorString}, {"cuMemAlloc", (void *)cuMemAlloc}, {"cuMemFree", (void *)cuMemFree},
    {"cuMemHostAlloc", (void *)cuMemHostAlloc}, {"cuMemFreeHost", (void *)cuMemFreeHost}, {"cuStreamCreate", (void *)cuStreamCreate},
    {"cuStreamDestroy", (void *)cuStreamDestroy}, {"cuStreamSynchronize", (void *)cuStreamSynchronize},
    {"cuEventCreate", (void *)cuEventCreate}, {"cuEventDestroy", (void *)cuEventDestroy}, {"cuEventRecord", (void *)cuEventRecord},
    {"cuStreamWaitEvent", (void *)cuStreamWaitEvent}, {"cuEventSynchronize", (void *)cuEventSynchronize},
    {"cuMemcpyHtoDAsync", (void *)cuMemcpyHtoDAsync}, {"cuMemcpyDtoHAsync", (void *)cuMemcpyDtoHAsync},
    {"cuMemcpyHtoD", (void *)cuMemcpyHtoD}, {"cuModuleLoadData", (void *)cuModuleLoadData},
    {"cuModuleGetFunction", (void *)cuModuleGetFunction}, {"cuLaunchKernel", (void *)cuLaunchKernel},
};

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags, int *status) {
    (void)flags;
    *pfn = NULL;
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        if (strcmp(entries[i].name, symbol) == 0 && version >= 12000) {
            *pfn = entries[i].fn;
            if (status) *status = 0;
            return CUDA_SUCCESS;
        }
    }
    if (status) *status = 1;
    return CUDA_ERROR_NOT_FOUND;
}

// ---------------------------------------------------------------- cuBLAS
typedef struct { stream *stream; } blas_handle;

int cublasCreate_v2(blas_handle **out) {
    ENTER();
    if (current_context != &primary_context) RETURN(CUBLAS_NOT_INITIALIZED);
    *out = calloc(1, sizeof(blas_handle));
    RETURN(CUBLAS_OK);
}
int cublasDestroy_v2(blas_handle *h) { free(h); return CUBLAS_OK; }
int cublasSetStream_v2(blas_handle *h, stream *s) {
    if (!h) return CUBLAS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_OK;
}

static int gemm_ex(int kind, int batch, blas_handle *h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a, int atype,
                   int lda, uint64_t b, int btype, int ldb, const void *beta, uint64_t c, int ctype, int ldc, int compute);
static int gemm_strided(int kind, int batch, blas_handle *h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a,
                        int atype, int lda, long long sa, uint64_t b, int btype, int ldb, long long sb, const void *beta, uint64_t c,
                        int ctype, int ldc, long long sc, int compute);

int cublasGemmEx(blas_handle *h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a, int atype, int lda, uint64_t b,
                 int btype, int ldb, const void *beta, uint64_t c, int ctype, int ldc, int compute, int algo) {
    (void)algo;
    return gemm_ex(OP_GEMM, 1, h, ta, tb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc, compute);
}

// The same types and rules as cublasGemmEx, over `batch` products whose
// matrices the device pointer arrays name.
int cublasGemmBatchedEx(blas_handle *h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a, int atype, int lda,
                        uint64_t b, int btype, int ldb, const void *beta, uint64_t c, int ctype, int ldc, int batch, int compute, int algo) {
    (void)algo;
    if (batch < 0) return CUBLAS_INVALID_VALUE;
    if (refuse_batched) return CUBLAS_NOT_SUPPORTED;
    return gemm_ex(OP_GEMM_BATCHED, batch, h, ta, tb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc, compute);
}

static int gemm_ex(int kind, int batch, blas_handle *h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a, int atype,
                   int lda, uint64_t b, int btype, int ldb, const void *beta, uint64_t c, int ctype, int ldc, int compute) {
    return gemm_strided(kind, batch, h, ta, tb, m, n, k, alpha, a, atype, lda, 0, b, btype, ldb, 0, beta, c, ctype, ldc, 0, compute);
}

// The same types and rules as cublasGemmEx, over `batch` products, the
// matrices of each `stride` elements after the one before.
int cublasGemmStridedBatchedEx(blas_handle *h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a, int atype, int lda,
                               long long sa, uint64_t b, int btype, int ldb, long long sb, const void *beta, uint64_t c, int ctype,
                               int ldc, long long sc, int batch, int compute, int algo) {
    (void)algo;
    if (batch < 0) return CUBLAS_INVALID_VALUE;
    if (refuse_batched) return CUBLAS_NOT_SUPPORTED;
    return gemm_strided(OP_GEMM_STRIDED, batch, h, ta, tb, m, n, k, alpha, a, atype, lda, sa, b, btype, ldb, sb, beta, c, ctype, ldc, sc,
                        compute);
}

static int gemm_strided(int kind, int batch, blas_handle *h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a,
                        int atype, int lda, long long sa, uint64_t b, int btype, int ldb, long long sb, const void *beta, uint64_t c,
                        int ctype, int ldc, long long sc, int compute) {
    ENTER();
    if (!h) RETURN(CUBLAS_NOT_INITIALIZED);
    if (current_context != &primary_context || sticky) RETURN(CUBLAS_EXECUTION_FAILED);
    if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T) || m < 0 || n < 0 || k < 0) RETURN(CUBLAS_INVALID_VALUE);
    // cuBLAS's leading-dimension rules.
    if (lda < (ta == CUBLAS_OP_N ? (m > 1 ? m : 1) : (k > 1 ? k : 1)) || ldb < (tb == CUBLAS_OP_N ? (k > 1 ? k : 1) : (n > 1 ? n : 1))
        || ldc < (m > 1 ? m : 1))
        RETURN(CUBLAS_INVALID_VALUE);
    if ((atype != CUDA_R_32F && atype != CUDA_R_16BF) || btype != atype || (ctype != CUDA_R_32F && ctype != CUDA_R_16BF)
        || compute != CUBLAS_COMPUTE_32F)
        RETURN(CUBLAS_NOT_SUPPORTED);
    op *o = new_op(kind);
    o->gemm.batch = batch;
    o->gemm.ta = ta; o->gemm.tb = tb; o->gemm.m = m; o->gemm.n = n; o->gemm.k = k;
    o->gemm.atype = atype; o->gemm.btype = btype; o->gemm.ctype = ctype;
    o->gemm.lda = lda; o->gemm.ldb = ldb; o->gemm.ldc = ldc;
    // Host pointer mode: alpha and beta are read at the call.
    o->gemm.alpha = *(const float *)alpha;
    o->gemm.beta = *(const float *)beta;
    o->gemm.a = a; o->gemm.b = b; o->gemm.c = c;
    o->gemm.sa = sa; o->gemm.sb = sb; o->gemm.sc = sc;
    if (kind == OP_GEMM) counters.gemms++;
    else if (kind == OP_GEMM_STRIDED) counters.strided_gemms++;
    else counters.batched_gemms++;
    enqueue(h->stream, o);
    RETURN(CUBLAS_OK);
}

// ---------------------------------------------------------------- NVRTC
typedef struct { char *source, *name, *image, *log; int arch; } program;

int nvrtcCreateProgram(program **out, const char *source, const char *name, int headers, const char *const *h, const char *const *hn) {
    (void)headers; (void)h; (void)hn;
    program *p = calloc(1, sizeof *p);
    p->source = strdup(source);
    p->name = strdup(name ? name : "kernel.cu");
    *out = p;
    return 0;
}

int nvrtcDestroyProgram(program **p) {
    if (!p || !*p) return 0;
    free((*p)->source); free((*p)->name); free((*p)->image); free((*p)->log); free(*p);
    *p = NULL;
    return 0;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = calloc((size_t)n + 1, 1);
    if (fread(text, 1, (size_t)n, f) != (size_t)n) text[0] = 0;
    fclose(f);
    return text;
}

static void append(char **buffer, size_t *length, const char *format, ...) __attribute__((format(printf, 3, 4)));
static void append(char **buffer, size_t *length, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *piece = NULL;
    int n = vasprintf(&piece, format, args);
    va_end(args);
    if (n < 0) return;
    *buffer = realloc(*buffer, *length + (size_t)n + 1);
    memcpy(*buffer + *length, piece, (size_t)n + 1);
    *length += (size_t)n;
    free(piece);
}

// Every `__global__ void name(params)` of the source, with a host runner:
// the kernel over every block and thread, arguments cast from the
// launch's copies.
static int write_runners(const char *source, char **out, size_t *length, char **entries_text, size_t *entries_length) {
    int kernels = 0;
    for (const char *at = strstr(source, "__global__"); at; at = strstr(at + 10, "__global__")) {
        const char *p = at + 10;
        while (isspace((unsigned char)*p)) p++;
        if (strncmp(p, "void", 4) != 0) return -1;
        p += 4;
        while (isspace((unsigned char)*p)) p++;
        const char *name = p;
        while (isalnum((unsigned char)*p) || *p == '_') p++;
        int name_length = (int)(p - name);
        while (isspace((unsigned char)*p)) p++;
        if (*p != '(' || name_length == 0) return -1;
        const char *close = strchr(p, ')');
        if (!close) return -1;
        // The body, to see whether its threads meet at barriers.
        const char *open = strchr(close, '{'), *body_end = open;
        for (int depth = 0; body_end && *body_end; body_end++) {
            if (*body_end == '{') depth++;
            if (*body_end == '}' && --depth == 0) break;
        }
        if (!open || !body_end || !*body_end) return -1;
        // Threads that share memory meet at barriers (in the body or in a
        // __device__ function it calls).
        const char *barrier = strstr(open, "__syncthreads"), *shared = strstr(open, "__shared__");
        int cooperative = (barrier && barrier < body_end) || (shared && shared < body_end);
        char types[KERNEL_ARGS][128];
        int nargs = 0;
        for (const char *param = p + 1; param < close;) {
            if (nargs == KERNEL_ARGS) return -1;
            const char *end = param;
            while (end < close && *end != ',') end++;
            const char *last = end;  // the parameter's name is its last identifier
            while (last > param && isspace((unsigned char)last[-1])) last--;
            const char *ident = last;
            while (ident > param && (isalnum((unsigned char)ident[-1]) || ident[-1] == '_')) ident--;
            snprintf(types[nargs], sizeof types[nargs], "%.*s", (int)(ident - param), param);
            nargs++;
            param = end + 1;
        }
        append(out, length, "const size_t softcuda_sizes_%.*s[] = {", name_length, name);
        for (int i = 0; i < nargs; i++) append(out, length, "%ssizeof(%s)", i ? ", " : "", types[i]);
        append(out, length, "%s};\nconst int softcuda_nargs_%.*s = %d;\n", nargs ? "" : "0", name_length, name, nargs);
        if (cooperative) {
            // Each block's threads as contexts of their own that switch at
            // every __syncthreads (softcuda_block in the prelude): the
            // arguments go through statics the body trampoline reads.
            for (int i = 0; i < nargs; i++)
                append(out, length, "static %s softcuda_arg_%.*s_%d;\n", types[i], name_length, name, i);
            append(out, length, "static void softcuda_body_%.*s(void) { %.*s(", name_length, name, name_length, name);
            for (int i = 0; i < nargs; i++) append(out, length, "%ssoftcuda_arg_%.*s_%d", i ? ", " : "", name_length, name, i);
            append(out, length, "); }\n");
        }
        append(out, length, "void softcuda_run_%.*s(void **a, const unsigned *g, const unsigned *b, void *(*translate)(unsigned long long)) {\n",
               name_length, name);
        for (int i = 0; i < nargs; i++) {
            if (strchr(types[i], '*'))
                append(out, length, "  %s p%d = (%s)translate(*(unsigned long long *)a[%d]);\n  if (!p%d) return;\n", types[i], i, types[i], i, i);
            else
                append(out, length, "  %s p%d = *(%s *)a[%d];\n", types[i], i, types[i], i);
        }
        append(out, length, "  gridDim = (softcuda_dim3){g[0], g[1], g[2]}; blockDim = (softcuda_dim3){b[0], b[1], b[2]};\n");
        if (cooperative) {
            for (int i = 0; i < nargs; i++) append(out, length, "  softcuda_arg_%.*s_%d = p%d;\n", name_length, name, i, i);
            append(out, length, "  softcuda_kernel = \"%.*s\";\n", name_length, name);
            append(out, length, "  static int launches; int r = softcuda_reverse = launches++ & 1;\n"
                                "  for (unsigned bz = 0; bz < g[2]; bz++) for (unsigned by = 0; by < g[1]; by++) for (unsigned bx = 0; bx < g[0]; bx++) {\n"
                                "    blockIdx = (softcuda_dim3){SOFTCUDA_AT(bx, g[0]), SOFTCUDA_AT(by, g[1]), SOFTCUDA_AT(bz, g[2])};\n"
                                "    softcuda_block(softcuda_body_%.*s);\n  }\n}\n", name_length, name);
        } else {
            append(out, length, "  static int launches; int r = launches++ & 1;\n"
                                "  for (unsigned bz = 0; bz < g[2]; bz++) for (unsigned by = 0; by < g[1]; by++) for (unsigned bx = 0; bx < g[0]; bx++)\n"
                                "  for (unsigned tz = 0; tz < b[2]; tz++) for (unsigned ty = 0; ty < b[1]; ty++) for (unsigned tx = 0; tx < b[0]; tx++) {\n"
                                "    blockIdx = (softcuda_dim3){SOFTCUDA_AT(bx, g[0]), SOFTCUDA_AT(by, g[1]), SOFTCUDA_AT(bz, g[2])};\n"
                                "    threadIdx = (softcuda_dim3){SOFTCUDA_AT(tx, b[0]), SOFTCUDA_AT(ty, b[1]), SOFTCUDA_AT(tz, b[2])};\n    %.*s(",
                   name_length, name);
            for (int i = 0; i < nargs; i++) append(out, length, "%sp%d", i ? ", " : "", i);
            append(out, length, ");\n  }\n}\n");
        }
        append(entries_text, entries_length, ".visible .entry %.*s(\n", name_length, name);
        kernels++;
    }
    return kernels;
}

static const char *prelude =
    "#include <math.h>\n#include <stddef.h>\n#include <string.h>\n"
    "typedef struct { unsigned int x, y, z; } softcuda_dim3;\n"
    "static softcuda_dim3 blockIdx, blockDim, threadIdx, gridDim;\n"
    // Every other launch of a kernel in reverse order (`r`: this launch's).
    "static int softcuda_reverse;\n"
    "#define SOFTCUDA_AT(i, n) (r ? (n) - 1 - (i) : (i))\n"
    // Kernels with barriers: a block's threads are contexts that run in
    // turn and switch at each __syncthreads, so every thread reaches a
    // barrier before any passes it, as on a GPU; __shared__ arrays are
    // statics (blocks run one after another).
    "#include <ucontext.h>\n#include <stdlib.h>\n#include <stdio.h>\n#define __shared__ static\n"
    "static ucontext_t softcuda_back, *softcuda_ctx;\nstatic softcuda_dim3 *softcuda_tid;\n"
    "static int *softcuda_done, softcuda_n, softcuda_now;\nstatic void (*softcuda_body)(void);\n"
    // Barrier divergence: the threads of a block passing their g-th
    // barrier must all be at the same __syncthreads (the return address
    // of this never-inlined function); rounds g and g + 1 overlap at most,
    // as threads run in turn from one barrier to the next.
    "static const char *softcuda_kernel;\nstatic int *softcuda_generation;\n"
    "static struct { int generation; void *site; } softcuda_round[2];\n"
    "static int softcuda_next(int me) {\n"
    "  for (int step = 1; step <= softcuda_n; step++) {\n"
    "    int n = softcuda_reverse ? (me - step + softcuda_n) % softcuda_n : (me + step) % softcuda_n;\n"
    "    if (!softcuda_done[n]) return n;\n  }\n"
    "  return -1;\n}\n"
    "static __attribute__((noinline)) void __syncthreads(void) {\n"
    "  if (!softcuda_ctx) { fputs(\"software CUDA: __syncthreads in a kernel whose threads run one after another; \"\n"
    "                             \"declare its __shared__ arrays in the kernel\\n\", stderr); abort(); }\n"
    "  int me = softcuda_now, g = softcuda_generation[me]++;\n  void *site = __builtin_return_address(0);\n"
    "  if (softcuda_round[g & 1].generation != g) { softcuda_round[g & 1].generation = g; softcuda_round[g & 1].site = site; }\n"
    "  else if (softcuda_round[g & 1].site != site) {\n"
    "    fprintf(stderr, \"software CUDA: kernel %s: threads of block %u wait at different __syncthreads \"\n"
    "            \"(thread %u at another barrier than the block's first to arrive; on a GPU that hangs or breaks the barrier)\\n\",\n"
    "            softcuda_kernel, blockIdx.x, threadIdx.x);\n    abort();\n  }\n"
    "  int n = softcuda_next(me);\n"
    "  if (n < 0 || n == me) return;\n"
    "  softcuda_now = n; threadIdx = softcuda_tid[n];\n"
    "  swapcontext(&softcuda_ctx[me], &softcuda_ctx[n]);\n"
    "  softcuda_now = me; threadIdx = softcuda_tid[me];\n}\n"
    "static void softcuda_entry(void) {\n"
    "  int me = softcuda_now;\n  softcuda_body();\n  softcuda_done[me] = 1;\n"
    "  int n = softcuda_next(me);\n"
    "  if (n < 0) setcontext(&softcuda_back);\n"
    "  softcuda_now = n; threadIdx = softcuda_tid[n];\n  setcontext(&softcuda_ctx[n]);\n}\n"
    "static void softcuda_block(void (*body)(void)) {\n"
    "  int n = (int)(blockDim.x * blockDim.y * blockDim.z);\n  size_t stack = 32 * 1024;\n"
    "  softcuda_ctx = calloc((size_t)n, sizeof *softcuda_ctx); softcuda_tid = calloc((size_t)n, sizeof *softcuda_tid);\n"
    "  softcuda_done = calloc((size_t)n, sizeof *softcuda_done); char *stacks = malloc((size_t)n * stack);\n"
    "  softcuda_generation = calloc((size_t)n, sizeof *softcuda_generation);\n"
    "  softcuda_round[0].generation = softcuda_round[1].generation = -1;\n"
    "  softcuda_n = n; softcuda_body = body;\n"
    "  for (int i = 0; i < n; i++) {\n"
    "    softcuda_tid[i] = (softcuda_dim3){(unsigned)i % blockDim.x, (unsigned)i / blockDim.x % blockDim.y, (unsigned)i / (blockDim.x * blockDim.y)};\n"
    "    getcontext(&softcuda_ctx[i]); softcuda_ctx[i].uc_stack.ss_sp = stacks + (size_t)i * stack;\n"
    "    softcuda_ctx[i].uc_stack.ss_size = stack; softcuda_ctx[i].uc_link = NULL; makecontext(&softcuda_ctx[i], softcuda_entry, 0);\n  }\n"
    "  int first = softcuda_reverse ? n - 1 : 0;\n"
    "  softcuda_now = first; threadIdx = softcuda_tid[first];\n  swapcontext(&softcuda_back, &softcuda_ctx[first]);\n"
    "  free(stacks); free(softcuda_ctx); free(softcuda_tid); free(softcuda_done); free(softcuda_generation); softcuda_ctx = NULL;\n}\n"
    "#define __global__\n#define __device__ static\n#define __forceinline__ inline\n"
    "static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }\n"
    "static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }\n";

int nvrtcVersion(int *major, int *minor) { *major = 13; *minor = 0; return 0; }

int nvrtcCompileProgram(program *p, int n, const char *const *options) {
    // The one option taken: a real architecture (a cubin) or a virtual one
    // (PTX); one newer than this NVRTC knows, or anything else, is
    // NVRTC_ERROR_INVALID_OPTION, as NVRTC answers.
    p->arch = 0;
    for (int i = 0; i < n; i++) {
        const char *value = !strncmp(options[i], "--gpu-architecture=", 19) ? options[i] + 19
            : !strncmp(options[i], "-arch=", 6) ? options[i] + 6 : NULL;
        int arch = 0, real = value && sscanf(value, "sm_%d", &arch) == 1;
        if (!value || !(real || sscanf(value, "compute_%d", &arch) == 1) || arch > nvrtc_newest_arch) {
            free(p->log);
            p->log = strdup(value ? "nvrtc: error: invalid value for --gpu-architecture (-arch)\n" : "nvrtc: error: unrecognized option\n");
            return 5;
        }
        p->arch = real ? arch : 0;
    }
    char dir[] = "/tmp/softcuda-nvrtc-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    // CUDA C's `extern "C"` is C++; the host compiler reads the kernel as C.
    char *source = strdup(p->source);
    for (char *e = strstr(source, "extern \"C\""); e; e = strstr(e, "extern \"C\"")) memset(e, ' ', 10);
    char *text = NULL, *entries_text = NULL;
    size_t length = 0, entries_length = 0;
    append(&text, &length, "%s#line 1 \"%s\"\n%s\n", prelude, p->name, source);
    free(source);
    append(&entries_text, &entries_length, "%s", "");
    if (write_runners(p->source, &text, &length, &entries_text, &entries_length) <= 0) {
        free(p->log);
        p->log = strdup("software NVRTC: no `__global__ void name(...)` kernel found");
        free(text); free(entries_text);
        return 6;  // NVRTC_ERROR_COMPILATION
    }
    char c_path[64], so_path[64], log_path[64], command[1400];
    snprintf(c_path, sizeof c_path, "%s/kernel.c", dir);
    snprintf(so_path, sizeof so_path, "%s/kernel.so", dir);
    snprintf(log_path, sizeof log_path, "%s/log.txt", dir);
    FILE *f = fopen(c_path, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    snprintf(command, sizeof command, "'%s' -x c -std=gnu11 -O1 -fsanitize=alignment -fsanitize-undefined-trap-on-error -shared -fPIC -o %s %s -lm > %s 2>&1", compiler, so_path, c_path, log_path);
    int status = system(command);
    free(p->log);
    p->log = read_file(log_path);
    if (status != 0) { free(entries_text); return 6; }
    free(p->image);
    size_t image_length = 0;
    p->image = NULL;
    char target[32];
    if (p->arch) snprintf(target, sizeof target, "sm_%d", p->arch);
    else snprintf(target, sizeof target, "ptx");
    append(&p->image, &image_length, "// software CUDA module\n.softcuda_library %s\n.softcuda_target %s\n%s", so_path, target, entries_text);
    free(entries_text);
    return 0;
}

int nvrtcGetProgramLogSize(program *p, size_t *n) { *n = p->log ? strlen(p->log) + 1 : 1; return 0; }
int nvrtcGetProgramLog(program *p, char *log) { strcpy(log, p->log ? p->log : ""); return 0; }
int nvrtcGetPTXSize(program *p, size_t *n) { if (!p->image) return 6; *n = strlen(p->image) + 1; return 0; }
int nvrtcGetPTX(program *p, char *ptx) { if (!p->image) return 6; strcpy(ptx, p->image); return 0; }
// Only a program compiled for a real architecture has a cubin
// (NVRTC_ERROR_INVALID_INPUT otherwise).
int nvrtcGetCUBINSize(program *p, size_t *n) { if (!p->image || !p->arch) return 3; *n = strlen(p->image) + 1; return 0; }
int nvrtcGetCUBIN(program *p, char *cubin) { if (!p->image || !p->arch) return 3; strcpy(cubin, p->image); return 0; }

// ---------------------------------------------------------------- for tests
long long softcuda_counter(const char *name) {
    pthread_mutex_lock(&lock);
    long long v = !strcmp(name, "pinned_h2d_bytes") ? counters.pinned_h2d_bytes
        : !strcmp(name, "pageable_h2d_bytes") ? counters.pageable_h2d_bytes
        : !strcmp(name, "d2h_bytes") ? counters.d2h_bytes
        : !strcmp(name, "gemms") ? counters.gemms
        : !strcmp(name, "batched_gemms") ? counters.batched_gemms
        : !strcmp(name, "strided_gemms") ? counters.strided_gemms
        : !strcmp(name, "launches") ? counters.launches
        : !strcmp(name, "event_waits") ? counters.event_waits
        : !strcmp(name, "max_queued") ? counters.max_queued
        : !strcmp(name, "host_waits") ? counters.host_waits
        : !strcmp(name, "device_bytes_in_use") ? (long long)device_used
        : -1;
    pthread_mutex_unlock(&lock);
    return v;
}

// The device count and memory the driver reports, and the host C compiler
// NVRTC uses.
void softcuda_configure(int device_count_, long long memory, const char *c_compiler) {
    pthread_mutex_lock(&lock);
    devices = device_count_;
    memory_bytes = (size_t)memory;
    snprintf(compiler, sizeof compiler, "%s", c_compiler);
    pthread_mutex_unlock(&lock);
}

void softcuda_refuse_batched(int refuse) { refuse_batched = refuse; }
void softcuda_configure_toolkit(int capability, int newest_arch, int takes_ptx) {
    compute_capability = capability;
    nvrtc_newest_arch = newest_arch;
    driver_takes_ptx = takes_ptx;
}
void softcuda_fail_launch(long long after) { fail_launch_countdown = after; }

const char *softcuda_error(void) { return sticky ? sticky_message : ""; }

// Clears a sticky error and the counters (a GPU needs a new context for the first).
void softcuda_reset(void) {
    pthread_mutex_lock(&lock);
    sticky = CUDA_SUCCESS;
    sticky_message[0] = 0;
    fail_launch_countdown = 0;
    compute_capability = 90, nvrtc_newest_arch = 120, driver_takes_ptx = 1;
    memset(&counters, 0, sizeof counters);
    pthread_mutex_unlock(&lock);
}
