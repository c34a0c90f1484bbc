/* Errors, memory accounting, thread policy and build facts. */
#include "engine.h"
#include "threads.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#ifndef SF_BUILD_FLAGS
#define SF_BUILD_FLAGS "unknown"
#endif

static _Thread_local char last_error[512];

const char *sf_last_error(void) { return last_error; }

sf_status sf_fail(sf_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

sf_status sf_check_tokens(const uint8_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (x[i] > 1)
            return sf_fail(SF_EINVAL, "x must hold tokens 0 or 1, found %d at flat index %lld", x[i], (long long)i);
    return SF_OK;
}

/* ---- memory ------------------------------------------------------------------------------ */

static int64_t memory_limit;  /* 0: default */

static int64_t physical_memory(void) {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) return (int64_t)pages * page;
#endif
    return (int64_t)8 << 30;
}

void sf_set_memory_limit(int64_t bytes) { memory_limit = bytes > 0 ? bytes : 0; }

int64_t sf_memory_limit(void) {
    return memory_limit > 0 ? memory_limit : physical_memory() / 10 * 8;
}

sf_status sf_check_budget(size_t bytes, const char *what) {
    int64_t limit = sf_memory_limit();
    if ((int64_t)bytes < 0 || (int64_t)bytes > limit)
        return sf_fail(SF_ENOMEM, "%s needs %.3g GB, over the memory limit of %.3g GB "
                       "(sensiformer.set_memory_limit changes it)", what, bytes / 1e9, limit / 1e9);
    return SF_OK;
}

void *sf_alloc(size_t bytes) {
    if (bytes == 0) bytes = SF_ALIGN;
    size_t rounded = (bytes + SF_ALIGN - 1) / SF_ALIGN * SF_ALIGN;
    void *p = NULL;
    if (posix_memalign(&p, SF_ALIGN, rounded) != 0) return NULL;
    memset(p, 0, rounded);
    return p;
}

void sf_free(void *p) { free(p); }

sf_status sf_workspace_reserve(sf_workspace *w, size_t bytes) {
    if (bytes <= w->bytes) return SF_OK;
    sf_status st = sf_check_budget(bytes, "the activation workspace for this batch");
    if (st) return st;
    void *p = sf_alloc(bytes);
    if (!p) return sf_fail(SF_ENOMEM, "could not allocate %.3g GB of activation workspace", bytes / 1e9);
    sf_free(w->base);
    w->base = p;
    w->bytes = bytes;
    return SF_OK;
}

/* ---- threads ----------------------------------------------------------------------------- */

static int default_threads;        /* 0: OpenMP's own default */
static volatile int forked_child;  /* libgomp's pool does not survive fork: stay serial there */

#if SF_HAVE_OPENMP && (defined(__unix__) || defined(__APPLE__))
static void mark_forked_child(void) { forked_child = 1; }
__attribute__((constructor)) static void install_fork_handler(void) {
    pthread_atfork(NULL, NULL, mark_forked_child);
}
#endif

int sf_openmp_enabled(void) { return SF_HAVE_OPENMP; }

void sf_set_default_threads(int n) { default_threads = n > 0 ? n : 0; }

int sf_default_threads(void) { return sf_resolve_threads(0); }

int sf_resolve_threads(int n) {
#if SF_HAVE_OPENMP
    if (forked_child) return 1;
    if (n <= 0) n = default_threads > 0 ? default_threads : omp_get_max_threads();
    return n < 1 ? 1 : (n > 512 ? 512 : n);
#else
    (void)n;
    return 1;
#endif
}

const char *sf_build_flags(void) { return SF_BUILD_FLAGS; }
