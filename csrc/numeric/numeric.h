/* The entry points of one numeric build (one precision, one CPU path), declared once: the lists below
 * give each build's prototypes (`SF(forward)`, e.g. forward_f32_v3), the fields of its table of
 * functions, and the table itself (api.c). The common code calls
 * `sf_numeric_of(dtype)->kinds[kind].forward(...)`, so the CPU path is decided in one place
 * (dispatch.c) for every kernel of the engine, and the model kind is an interface. */
#ifndef SF_NUMERIC_H
#define SF_NUMERIC_H

#include "../engine.h"

/* One model kind's operations, X(return type, name, parameters): every build defines them for the encoder
 * (SF(forward), ...) and the seq2seq model (SF(seq2seq_forward), ...) on the same data, so the common
 * code calls one of two tables and never branches on the kind. */
#define SF_MODEL_OPERATIONS(X)                                                                                        \
    /* out: (rows) for the encoder, (rows, S) for the seq2seq model */                                                \
    X(sf_status, forward, (sf_model * m, const sf_seq_data *d, void *out, int nt))                                   \
    X(sf_status, loss_and_grad,                                                                                       \
      (sf_model * m, const sf_seq_data *d, sf_loss loss, int grad, double *loss_out, void *out, int nt))             \
    X(sf_status, ln_blowup, (sf_model * m, const sf_seq_data *d, int theory, double *maxs, double *means, int nt))   \
    X(sf_status, hvp,                                                                                                 \
      (sf_model * m, const sf_seq_data *d, int n_batches, sf_loss loss, const void *v, int k, void *hv,              \
       double *loss_out, int nt, sf_stop_hook stop, void *stop_ctx))                                                  \
    X(sf_status, attention_logits, (sf_model * m, const sf_seq_data *d, double *maxs, double *means, int nt))

#define SF_OPERATION_FIELD(ret, name, params) ret(*name) params;
typedef struct sf_model_ops {
    SF_MODEL_OPERATIONS(SF_OPERATION_FIELD)
} sf_model_ops;
#undef SF_OPERATION_FIELD

/* The build's other entry points, X(return type, name, parameters). */
#define SF_NUMERIC_ENTRY_POINTS(X)                                                                                    \
    X(sf_status, model_init, (sf_model * m, uint64_t seed, int identical_layers))                                    \
    X(sf_status, optimizer_step, (sf_optimizer * o, double *grad_norm, int nt))                                      \
    X(sf_status, train,                                                                                               \
      (sf_model * m, sf_optimizer * o, const sf_target *t, const sf_sampler *s, const sf_train_config *tc,            \
       int64_t first_step, int64_t n_steps, double *loss, double *acc, double *lr, double *grad_norm, int64_t *done,  \
       int nt, sf_stop_hook stop, void *stop_ctx))                                                                    \
    /* C (M,N, row stride ldc) (+)= op(A) op(B) (+ bias), A(i,k) = A[i*sai + k*sak], B(k,j) = B[k*sbk + j*sbj] */   \
    X(void, gemm_strided,                                                                                             \
      (long M, long N, long K, const void *A, long sai, long sak, const void *B, long sbk, long sbj, void *C,         \
       long ldc, const void *bias, int accumulate, sf_par *par))                                                      \
    X(int, ln_count, (const sf_config *c))                                                                           \
    /* either kind (an encoder's sf_seq_data has dec == NULL and L == 1) */                                           \
    X(sf_status, sharpness,                                                                                           \
      (sf_model * m, const sf_seq_data *d, int n_batches, sf_loss loss, double sigma, int repeats, uint64_t seed,     \
       const unsigned char *mask, const void *noise, int shared_draws, double *base, double *perturbed, int nt,       \
       sf_stop_hook stop, void *stop_ctx))                                                                            \
    X(sf_status, generate,                                                                                            \
      (sf_model * m, const uint8_t *x, int B, int T, int steps, int cache, double threshold, uint8_t *tokens,         \
       void *outputs, int nt, sf_stop_hook stop, void *stop_ctx))

#define SF_NUMERIC_FIELD(ret, name, params) ret(*name) params;
typedef struct sf_numeric {
    SF_NUMERIC_ENTRY_POINTS(SF_NUMERIC_FIELD)
    sf_model_ops kinds[2]; /* by sf_model_kind */
} sf_numeric;
#undef SF_NUMERIC_FIELD

/* Every build's table; setup.py compiles the paths its compiler supports (SF_BUILT_PATHS says which). */
extern const sf_numeric numeric_f32_base, numeric_f64_base, numeric_f32_v3, numeric_f64_v3, numeric_f32_v4,
    numeric_f64_v4;

/* The table of the CPU path in use (sf_select_cpu_path) for a precision. */
const sf_numeric *sf_numeric_of(sf_dtype dtype);

/* Inside a numeric build: its own entry points, SF(name). */
#ifdef SF_DOUBLE
#include "real.h"
#define SF_NUMERIC_PROTOTYPE(ret, name, params) ret SF(name) params;
#define SF_SEQ2SEQ_PROTOTYPE(ret, name, params) ret SF(seq2seq_##name) params;
SF_NUMERIC_ENTRY_POINTS(SF_NUMERIC_PROTOTYPE)
SF_MODEL_OPERATIONS(SF_NUMERIC_PROTOTYPE)
SF_MODEL_OPERATIONS(SF_SEQ2SEQ_PROTOTYPE)
#undef SF_NUMERIC_PROTOTYPE
#undef SF_SEQ2SEQ_PROTOTYPE
#endif

#endif
