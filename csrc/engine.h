/* Internal definitions shared by the engine's translation units (never by Python code). */
#ifndef SF_ENGINE_H
#define SF_ENGINE_H

#include "sf.h"

#include <stdarg.h>
#include <stdlib.h>

#define SF_ALIGN 64

/* Workspace: activations saved by the last forward, and backward scratch. */
typedef struct {
    void *base;
    size_t bytes;
} sf_workspace;

struct sf_model {
    sf_config cfg;
    int n_tensors;
    sf_tensor_info *tensors;
    int64_t n_params;
    size_t elem;              /* bytes per element: 4 or 8 */
    void *params;
    void *grads;
    sf_workspace work;
    int last_threads;
};

struct sf_optimizer {
    sf_model *model;
    sf_optim_config cfg;
    int64_t step;             /* number of updates taken (torch's state["step"]) */
    void *m, *v;              /* first and second moments (SGD: momentum buffer in m) */
    unsigned char *decay;     /* per-parameter-tensor weight decay flag */
    int has_momentum_buffer;  /* SGD: torch creates the buffer on the first step */
};

/* Errors: set the thread-local message and return the code. */
sf_status sf_fail(sf_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* SF_EINVAL unless every token is 0 or 1. */
sf_status sf_check_tokens(const uint8_t *x, int64_t n);

/* Aligned, zeroed allocation counted against the memory limit; free with sf_free. */
void *sf_alloc(size_t bytes);
void sf_free(void *p);
/* Fails with a message naming `what` when `bytes` would pass the memory limit. */
sf_status sf_check_budget(size_t bytes, const char *what);

/* Ensure the workspace holds at least `bytes`. */
sf_status sf_workspace_reserve(sf_workspace *w, size_t bytes);

int sf_layer_slots(const sf_config *c);
int sf_tensor_index(const sf_model *m, int layer, int slot);
/* Seq2seq: index of slot `slot` of encoder (decoder=0, slots as the encoder's 12) or decoder
 * (decoder=1, SF_DEC_SLOTS in nn.TransformerDecoderLayer's order) layer `layer`. */
#define SF_DEC_SLOTS 18
int sf_seq2seq_tensor_index(const sf_model *m, int decoder, int layer, int slot);

/* Parallel-call bookkeeping: the requested team size, and the largest team actually used. */
typedef struct {
    int nt;
    int used;
} sf_par;

static inline void sf_par_note(sf_par *p, int team) {
    if (team > p->used) p->used = team;
}

#endif
