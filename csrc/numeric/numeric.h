/* Entry points of the numeric translation units, declared for both precisions so the common
 * (precision-independent) code can dispatch on the model's dtype. */
#ifndef SF_NUMERIC_H
#define SF_NUMERIC_H

#include "../engine.h"

#define SF_DECLARE_NUMERIC(sfx)                                                                       \
    sf_status model_init_##sfx(sf_model *m, uint64_t seed, int identical_layers);                    \
    sf_status forward_##sfx(sf_model *m, const uint8_t *x, int B, int T, void *out, int nt);       \
    sf_status loss_and_grad_##sfx(sf_model *m, const uint8_t *x, const void *y, int B, int T,        \
                                  sf_loss loss, int grad, double *loss_out, void *out, int nt);     \
    sf_status optimizer_step_##sfx(sf_optimizer *o, double *grad_norm, int nt);                     \
    sf_status train_##sfx(sf_model *m, sf_optimizer *o, const sf_target *t, const sf_sampler *s,    \
                          const sf_train_config *tc, int64_t first_step, int64_t n_steps,           \
                          double *loss, double *acc, double *lr, double *grad_norm, int64_t *done, \
                          int nt, sf_stop_hook stop, void *stop_ctx);                               \
    const char *gemm_path_##sfx(void);                                                               \
    int gemm_on_path_##sfx(const char *name, long M, long N, long K, const void *A, long sai, long sak,    \
                           const void *B, long sbk, long sbj, void *C, long ldc, const void *bias,        \
                           int accumulate, sf_par *par);                                                  \
    sf_status sharpness_##sfx(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, double sigma,  \
                              int repeats, uint64_t seed, const unsigned char *mask, const void *noise,       \
                              int shared_draws, double *base, double *perturbed, int nt, sf_stop_hook stop,   \
                              void *stop_ctx);                                                                 \
    int ln_count_##sfx(const sf_config *c);                                                           \
    sf_status ln_blowup_##sfx(sf_model *m, const uint8_t *x, int B, int T, int theory, double *maxs,  \
                              double *means, int nt);

SF_DECLARE_NUMERIC(f32)
SF_DECLARE_NUMERIC(f64)

/* The seq2seq model (seq2seq*.c); sharpness above takes its data too (an encoder's sf_seq_data has
 * dec == NULL and L == 1). */
#define SF_DECLARE_SEQ2SEQ(sfx)                                                                                     \
    sf_status seq2seq_forward_##sfx(sf_model *m, const sf_seq_data *d, void *out, int nt);                          \
    sf_status seq2seq_loss_and_grad_##sfx(sf_model *m, const sf_seq_data *d, sf_loss loss, int grad,               \
                                          double *loss_out, void *out, int nt);                                     \
    sf_status seq2seq_ln_blowup_##sfx(sf_model *m, const sf_seq_data *d, int theory, double *maxs, double *means, \
                                      int nt);                                                                      \
    sf_status generate_##sfx(sf_model *m, const uint8_t *x, int B, int T, int steps, int cache, double threshold, \
                             uint8_t *tokens, void *outputs, int nt, sf_stop_hook stop, void *stop_ctx);       \
    sf_status seq2seq_hvp_##sfx(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, const void *v,   \
                                int k, void *hv, double *loss_out, int nt, sf_stop_hook stop, void *stop_ctx);  \
    sf_status seq2seq_attention_logits_##sfx(sf_model *m, const sf_seq_data *d, double *maxs, double *means,    \
                                             int nt);

SF_DECLARE_SEQ2SEQ(f32)
SF_DECLARE_SEQ2SEQ(f64)

/* Hessian-vector products (hvp.c) and the attention-logit probe (logits.c). */
#define SF_DECLARE_HVP(sfx)                                                                            \
    sf_status hvp_##sfx(sf_model *m, const uint8_t *x, const void *y, int n_batches, int B, int T, sf_loss loss, \
                        const void *v, int k, void *hv, double *loss_out, int nt, sf_stop_hook stop,          \
                        void *stop_ctx);                                                                      \
    sf_status attention_logits_##sfx(sf_model *m, const uint8_t *x, int B, int T, double *maxs, double *means, \
                                     int nt);

SF_DECLARE_HVP(f32)
SF_DECLARE_HVP(f64)

#endif
