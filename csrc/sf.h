/* sensiformer engine: public C API.
 *
 * Plain C11, no Python types. Every function that can fail returns an sf_status and leaves
 * a message in sf_last_error() (thread-local); nothing here prints or exits.
 *
 * A model owns one contiguous parameter buffer and an identically laid-out gradient buffer.
 * Tensors are named views into them (offsets in elements), in the official PyTorch
 * named_parameters() order of Hahn & Rofin's TorchModel.
 */
#ifndef SF_H
#define SF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the vocabulary ---------------------------------------------------------------------------
 * Every enumeration of the API is one list X(constant, value, name): the C enum below, and the
 * (name, value) pairs that sf_vocabulary() exports, so the Python layer reads its choices from here
 * instead of mirroring them. */
#define SF_STATUS_LIST(X)                                                                                     \
    X(SF_OK, 0, "ok")                                                                                         \
    X(SF_EINVAL, 1, "invalid")    /* bad argument (message names it) */                                       \
    X(SF_ENOMEM, 2, "no_memory")  /* allocation failed or over the memory limit */                            \
    X(SF_EINTR, 3, "interrupted") /* interrupted by the caller's stop hook */                                 \
    X(SF_ENUMERIC, 4, "numeric")  /* non-finite loss or parameters */
#define SF_DTYPE_LIST(X) X(SF_F32, 0, "float32") X(SF_F64, 1, "float64")
#define SF_NORM_LIST(X) X(SF_NORM_POST, 0, "post") X(SF_NORM_PRE, 1, "pre") X(SF_NORM_NONE, 2, "none")
/* What a norm computes: LayerNorm (centre, scale by 1/std, gain and bias) or RMSNorm (scale by 1/RMS, gain) */
#define SF_NORM_TYPE_LIST(X) X(SF_NORM_LAYER, 0, "layer") X(SF_NORM_RMS, 1, "rms")
/* How positions enter: a learned table concatenated with the token embedding (the paper's), a
 * learned full-width table added, the original transformer's fixed sinusoids added, nothing, or
 * rotary embeddings of each self-attention head's queries and keys (RoPE) */
#define SF_POSITIONAL_LIST(X)                                                                                 \
    X(SF_POS_CONCAT, 0, "concat") X(SF_POS_ADD, 1, "add") X(SF_POS_SINUSOIDAL, 2, "sinusoidal")              \
    X(SF_POS_NONE, 3, "none") X(SF_POS_ROPE, 4, "rope")
#define SF_ACTIVATION_LIST(X) X(SF_ACT_RELU, 0, "relu") X(SF_ACT_GELU, 1, "gelu") X(SF_ACT_GELU_TANH, 2, "gelu_tanh")
/* SF_MODEL_ENCODER: the official TorchModel (readout at the last position). SF_MODEL_SEQ2SEQ: the
 * official TorchModelWithScratchpad, nn.Transformer with a shared embedding of the tokens 0, 1 and
 * SF_SOS, causal decoder self-attention, cross-attention and a readout at every decoder position. */
#define SF_MODEL_KIND_LIST(X) X(SF_MODEL_ENCODER, 0, "encoder") X(SF_MODEL_SEQ2SEQ, 1, "seq2seq")
/* What a tensor is, for weight-decay masks and probe exclusions. */
#define SF_TENSOR_KIND_LIST(X)                                                                                \
    X(SF_KIND_TOKEN_EMBEDDING, 0, "token_embedding")                                                          \
    X(SF_KIND_POSITIONAL, 1, "positional")                                                                    \
    X(SF_KIND_WEIGHT, 2, "weight")                                                                            \
    X(SF_KIND_BIAS, 3, "bias")                                                                                \
    X(SF_KIND_NORM_WEIGHT, 4, "norm_weight")                                                                  \
    X(SF_KIND_NORM_BIAS, 5, "norm_bias")
#define SF_LOSS_LIST(X) X(SF_LOSS_MSE, 0, "mse") X(SF_LOSS_BCE, 1, "bce")
#define SF_TARGET_KIND_LIST(X)                                                                                \
    X(SF_TARGET_PARITY, 0, "parity")                                                                          \
    X(SF_TARGET_MAJORITY, 1, "majority") /* ties -> 0, as the paper */                                        \
    X(SF_TARGET_FIRST, 2, "first")                                                                            \
    X(SF_TARGET_MEAN, 3, "mean")                                                                              \
    X(SF_TARGET_TABLE, 4, "table") /* values[idx(x)], x_1 most significant */                                 \
    X(SF_TARGET_SPARSE_PARITY, 5, "sparse_parity") /* parity of the positions bits[0..n_bits) */              \
    X(SF_TARGET_JUNTA, 6, "junta") /* table[idx of x at bits[0..n_bits)], bits[0] most significant */         \
    X(SF_TARGET_FOURIER, 7, "fourier") /* g(x) = sum_t coefficients[t] chi_{S_t}(x), chi_S = (-1)^sum x_i */
#define SF_SAMPLER_KIND_LIST(X)                                                                               \
    X(SF_SAMPLE_UNIFORM, 0, "uniform") /* fresh uniform bits each step */                                     \
    X(SF_SAMPLE_SUBSET, 1, "subset")   /* uniform with replacement from a fixed set of input indices */       \
    X(SF_SAMPLE_DATASET, 2, "dataset") /* uniform with replacement from given rows (x, y) */
#define SF_OPTIMIZER_KIND_LIST(X) X(SF_OPT_ADAMW, 0, "adamw") X(SF_OPT_ADAM, 1, "adam") X(SF_OPT_SGD, 2, "sgd")
#define SF_SCHEDULE_KIND_LIST(X) X(SF_SCHED_CONSTANT, 0, "constant") X(SF_SCHED_WARMUP_COSINE, 1, "cosine")
/* Limits (plain numbers) */
#define SF_LIMIT_LIST(X)                                                                                      \
    X(SF_SOS, 2, "sos")                         /* the seq2seq decoder's start token */                       \
    X(SF_MAX_LAYERS, 64, "max_layers")          /* layers of a stack (encoder; seq2seq decoder) */            \
    X(SF_MAX_POSITIONS, 1 << 20, "max_positions")                                                             \
    X(SF_MAX_D_MODEL, 65536, "max_d_model")                                                                   \
    X(SF_MAX_D_FF, 1 << 20, "max_d_ff")

/* Every list, with the name of its vocabulary. */
#define SF_VOCABULARIES(X)                                                                                    \
    X(SF_STATUS_LIST, "status") X(SF_DTYPE_LIST, "dtype") X(SF_NORM_LIST, "norm")                             \
    X(SF_NORM_TYPE_LIST, "norm_type") X(SF_POSITIONAL_LIST, "positional")                                     \
    X(SF_ACTIVATION_LIST, "activation") X(SF_MODEL_KIND_LIST, "model_kind")                                   \
    X(SF_TENSOR_KIND_LIST, "tensor_kind") X(SF_LOSS_LIST, "loss") X(SF_TARGET_KIND_LIST, "target_kind")      \
    X(SF_SAMPLER_KIND_LIST, "sampler_kind") X(SF_OPTIMIZER_KIND_LIST, "optimizer_kind")                       \
    X(SF_SCHEDULE_KIND_LIST, "schedule_kind") X(SF_LIMIT_LIST, "limit")

#define SF_ENUM_CONSTANT(constant, value, name) constant = value,
typedef enum { SF_STATUS_LIST(SF_ENUM_CONSTANT) } sf_status;
typedef enum { SF_DTYPE_LIST(SF_ENUM_CONSTANT) } sf_dtype;
typedef enum { SF_NORM_LIST(SF_ENUM_CONSTANT) } sf_norm;
typedef enum { SF_NORM_TYPE_LIST(SF_ENUM_CONSTANT) } sf_norm_type;
typedef enum { SF_POSITIONAL_LIST(SF_ENUM_CONSTANT) } sf_positional;
typedef enum { SF_ACTIVATION_LIST(SF_ENUM_CONSTANT) } sf_activation;
typedef enum { SF_MODEL_KIND_LIST(SF_ENUM_CONSTANT) } sf_model_kind;
typedef enum { SF_TENSOR_KIND_LIST(SF_ENUM_CONSTANT) } sf_tensor_kind;
typedef enum { SF_LOSS_LIST(SF_ENUM_CONSTANT) } sf_loss;
typedef enum { SF_TARGET_KIND_LIST(SF_ENUM_CONSTANT) } sf_target_kind;
typedef enum { SF_SAMPLER_KIND_LIST(SF_ENUM_CONSTANT) } sf_sampler_kind;
typedef enum { SF_OPTIMIZER_KIND_LIST(SF_ENUM_CONSTANT) } sf_optimizer_kind;
typedef enum { SF_SCHEDULE_KIND_LIST(SF_ENUM_CONSTANT) } sf_schedule_kind;
enum { SF_LIMIT_LIST(SF_ENUM_CONSTANT) };

/* One list of the vocabulary, e.g. "norm" with the words {"post", 0}, {"pre", 1}, {"none", 2}. */
typedef struct {
    const char *name;
    int value;
} sf_word;
typedef struct {
    const char *name;
    const sf_word *words;
    int count;
} sf_word_list;
/* Every list above, in order; *count gets their number. */
const sf_word_list *sf_vocabulary(int *count);

typedef struct {
    int n_positions;     /* longest input; rows of the positional table (seq2seq: n_positions + 1) */
    int d_model;         /* even, divisible by n_heads */
    int n_heads;
    int n_layers;
    int d_ff;            /* FFN width */
    sf_norm norm;
    int final_norm;      /* 1: LayerNorm after the stack (only meaningful with SF_NORM_PRE) */
    double ln_eps;       /* >= 0 */
    sf_activation activation;
    sf_dtype dtype;
    sf_model_kind kind;  /* zero: the encoder */
    int n_decoder_layers; /* seq2seq: decoder layers (1..64); must be 0 for the encoder */
    sf_norm_type norm_type; /* zero: LayerNorm; RMSNorm norms have a gain and no bias tensor */
    sf_positional positional; /* zero: the paper's concatenated table */
    double rope_base;         /* RoPE: head pair i turns by t / rope_base^(2i / d_head) (> 0; 10000 usual) */
} sf_config;
/* A seq2seq model has n_layers encoder and n_decoder_layers decoder layers, norm post or pre
 * (nn.Transformer's norm_first) and always the final encoder and decoder LayerNorms of
 * nn.Transformer (final_norm must be 1). */

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    int64_t offset;      /* in elements, into the parameter buffer */
    int64_t size;
    sf_tensor_kind kind;
    int layer;           /* layer index: encoder layers 0..L-1, then (seq2seq) decoder layers L..L+Ld-1;
                            -1 outside the stacks */
    int slot;            /* inside a layer: its slot in engine.h's layer list; -1 outside */
} sf_tensor_info;

typedef struct sf_model sf_model;

/* ---- errors, memory, threads ------------------------------------------------------------ */
const char *sf_last_error(void);
void sf_set_memory_limit(int64_t bytes);      /* <= 0 restores the default */
int64_t sf_memory_limit(void);
int sf_resolve_threads(int n_threads);        /* <= 0: default; clamps to what the build allows */
void sf_set_default_threads(int n);
int sf_default_threads(void);
int sf_openmp_enabled(void);
/* CPU paths: the numeric code is compiled once per path ("baseline", "x86-64-v3": AVX2+FMA, "x86-64-v4":
 * AVX-512), and one path runs every kernel of the process. "auto" (the default) takes the widest this
 * CPU runs, x86-64-v4 only where its GEMM measures at least 5% faster than x86-64-v3's (the two give the
 * same bits, so this is a choice of speed only). Select before creating models: results are bitwise
 * reproducible for a given path. SF_EINVAL for an unknown path or one this CPU cannot run. */
sf_status sf_select_cpu_path(const char *name);
const char *sf_cpu_path(void);                /* the path in use, e.g. "x86-64-v4" */
int sf_cpu_vector_bits(void);                 /* its GEMM's vector width: 128, 256 or 512 */
int sf_widest_vector_bits(void);              /* that of the widest path this CPU runs */
double sf_cpu_path_speedup(void);             /* x86-64-v4's GEMM speed over x86-64-v3's as "auto" measured
                                                 it (0 where it was not measured) */
int sf_cpu_paths(const char **names, int capacity); /* the paths this build and CPU run, widest first; count */
/* Kernel test hook: C (M,N) (+)= op(A) op(B) (+ bias) with the GEMM of CPU path `path` ("x86-64-v4",
 * "x86-64-v3" or "baseline"); A is (M,K), or (K,M) if transpose_a; B (K,N), or (N,K) if
 * transpose_b; all row-major of the given dtype. SF_EINVAL if the path is unknown or this CPU
 * cannot run it. */
sf_status sf_kernel_gemm(const char *path, sf_dtype dtype, int64_t M, int64_t N, int64_t K, const void *A,
                         int transpose_a, const void *B, int transpose_b, void *C, const void *bias, int accumulate,
                         int n_threads);
const char *sf_build_flags(void);
/* Measured FMA throughput (GFLOP/s) on n_threads threads, float32 or float64, taking about `seconds`,
 * at the widest vector width this CPU supports (whatever the path in use); *vector_bits (if not NULL)
 * gets that width. */
double sf_measure_peak_gflops(int dtype_double, int n_threads, double seconds, int *vector_bits);

/* Called between training steps (and between long chunks of other work); return nonzero to
 * stop. The engine then returns SF_EINTR with the model in a consistent state. */
typedef int (*sf_stop_hook)(void *ctx);

/* ---- model ----------------------------------------------------------------------------- */
sf_status sf_config_check(const sf_config *cfg);
sf_status sf_model_create(const sf_config *cfg, uint64_t seed, int identical_layers, sf_model **out);
void sf_model_free(sf_model *m);
const sf_config *sf_model_config(const sf_model *m);
int64_t sf_model_num_params(const sf_model *m);
void *sf_model_params(sf_model *m);
void *sf_model_grads(sf_model *m);
int sf_model_num_tensors(const sf_model *m);
const sf_tensor_info *sf_model_tensor(const sf_model *m, int i);
int sf_model_last_threads(const sf_model *m); /* team size of the last parallel call */
size_t sf_model_workspace_bytes(const sf_model *m); /* activation workspace held since the last call */
sf_status sf_model_reinit(sf_model *m, uint64_t seed, int identical_layers);

/* The data of one call, for either model kind: `rows` sequences of encoder inputs x (rows, T) of 0/1,
 * T <= n_positions; for the seq2seq model also decoder inputs dec (rows, S) of 0, 1 or SF_SOS,
 * S <= n_positions + 1 (the encoder model: dec NULL, S 0); labels y (rows, L) in the model dtype, NULL
 * where no loss is needed (the encoder: L = 1; seq2seq: scored against decoder outputs 0..L-1, L <= S,
 * and the decoder then runs on the first L positions only: by the causal mask no other position
 * reaches them). Every entry point below that takes it serves both kinds. */
typedef struct {
    const uint8_t *x;
    const uint8_t *dec;
    const void *y;
    int rows, T, S, L;
} sf_seq_data;

/* Outputs in the model dtype: out (rows) for the encoder, the readout at the last position; (rows, S)
 * for the seq2seq model, the readout at every decoder position. */
sf_status sf_forward(sf_model *m, const sf_seq_data *d, void *out, int n_threads);

/* Mean loss of the outputs against d->y (over rows x L outputs); with grad=1 also fills the gradient
 * buffer (overwriting it). out ((rows) or (rows, L)) may be NULL. */
sf_status sf_loss_and_grad(sf_model *m, const sf_seq_data *d, sf_loss loss, int grad, double *loss_out, void *out,
                           int n_threads);

/* ---- targets and samplers (the C training loop's data) ---------------------------------- */
/* Values are on the {0,1} scale. Zero-initialise, then set what the kind needs: the fields
 * after `table` are options (zero = none). */
typedef struct {
    sf_target_kind kind;
    int n;                    /* input length */
    const double *table;      /* SF_TARGET_TABLE: 2^n values; SF_TARGET_JUNTA: 2^n_bits values */
    const int32_t *bits;      /* 0-based positions: SPARSE_PARITY its set, JUNTA the positions it reads,
                                 FOURIER every set's positions back to back */
    int64_t n_bits;
    const int64_t *set_offsets; /* FOURIER: set t is bits[set_offsets[t] .. set_offsets[t+1]) */
    const double *coefficients; /* FOURIER: one per set */
    int64_t n_terms;
    int sign_output;          /* FOURIER: 1 -> value 1 where g(x) < 0 else 0 (sign g on {0,1});
                                 0 -> the real value (1 - g(x)) / 2, so that 1 - 2y = g */
    double noise;             /* sf_sample_batch flips each label y -> 1 - y with this probability,
                                 drawn per (seed, step, row); sf_target_eval stays noiseless */
    int prefix;               /* 1: a label per position, y_t = f(x_1..x_t) (PARITY, MAJORITY, FIRST, MEAN):
                                 the scratchpad's sequence (prefix parities). Labels are then (B, T), and
                                 noise flips each (row, position) with counter row * T + t */
} sf_target;

/* y: (B) values, or (B, T) with t->prefix. */
sf_status sf_target_eval(const sf_target *t, const uint8_t *x, int64_t B, int T, double *y);

typedef struct {
    sf_sampler_kind kind;
    const int64_t *subset;    /* SF_SAMPLE_SUBSET */
    int64_t subset_size;
    const uint8_t *data_x;    /* SF_SAMPLE_DATASET: (rows, data_width) */
    int data_width;           /* must equal the batch length T */
    const double *data_y;     /* (rows), or (rows, data_width) for a prefix target */
    int64_t data_rows;
} sf_sampler;

/* Deterministic batch number `step` of a run keyed by `seed` (counter-based: depends only on
 * seed, step and position). y (B), or (B, T) for a prefix target, may be NULL. */
sf_status sf_sample_batch(const sf_target *t, const sf_sampler *s, uint64_t seed, int64_t step,
                          int B, int T, uint8_t *x, double *y);

/* flip[b] = 1 where sf_sample_batch flips the label of row b of batch `step` under label noise
 * with probability p (the same counter-based draw). */
sf_status sf_label_noise(uint8_t *flip, uint64_t seed, int64_t step, int64_t B, double p);

/* ---- optimizers ------------------------------------------------------------------------ */
typedef struct {
    sf_optimizer_kind kind;
    double lr, beta1, beta2, eps, weight_decay;
    double momentum, dampening;
    int nesterov;
    int decay_norm_bias_embedding;  /* 0: exclude LayerNorm, biases and embeddings from decay */
    sf_schedule_kind schedule;
    int64_t warmup_steps;           /* linear warm-up from lr/warmup to lr */
    int64_t total_steps;            /* cosine decay horizon (0: no decay after warm-up) */
    double min_lr;                  /* cosine floor */
    double clip_norm;               /* > 0: clip the global gradient norm (torch semantics) */
} sf_optim_config;

typedef struct sf_optimizer sf_optimizer;

sf_status sf_optimizer_create(sf_model *m, const sf_optim_config *cfg, sf_optimizer **out);
void sf_optimizer_free(sf_optimizer *o);
sf_status sf_optimizer_set_config(sf_optimizer *o, const sf_optim_config *cfg);
const sf_optim_config *sf_optimizer_config(const sf_optimizer *o);
/* State buffers (model dtype, laid out like the parameters): Adam m and v; SGD momentum in m. */
void *sf_optimizer_state(sf_optimizer *o, int which);
int64_t sf_optimizer_step_count(const sf_optimizer *o);
void sf_optimizer_set_step_count(sf_optimizer *o, int64_t step);
double sf_optimizer_lr_at(const sf_optimizer *o, int64_t step);
/* One update from the model's current gradient buffer. grad_norm_out may be NULL. */
sf_status sf_optimizer_step(sf_optimizer *o, double *grad_norm_out, int n_threads);

/* ---- training loop --------------------------------------------------------------------- */
typedef struct {
    sf_loss loss;
    int pm1_labels;        /* 1: regress on 2y-1 (the paper's negative_value=-1) */
    int batch_size;
    int seq_len;
    uint64_t seed;         /* data stream */
    double threshold;      /* accuracy: (out > threshold) == (label > threshold) */
} sf_train_config;

/* Runs steps [first_step, first_step + n_steps) of the data stream; per-step loss, accuracy,
 * lr and grad norm go to the given arrays (each n_steps long, any may be NULL). *done is the
 * number of completed steps (also on SF_EINTR / SF_ENUMERIC).
 * A seq2seq model trains by teacher forcing on a prefix target with 0/1 labels y (B, T): decoder
 * input [SOS, y_1..y_{T-1}], loss over the T outputs (the official [SOS, y_1..y_T] with the last
 * output dropped, whose other outputs are the same under the causal mask); accuracy per token. */
sf_status sf_train(sf_model *m, sf_optimizer *o, const sf_target *t, const sf_sampler *s,
                   const sf_train_config *tc, int64_t first_step, int64_t n_steps,
                   double *loss, double *acc, double *lr, double *grad_norm, int64_t *done,
                   int n_threads, sf_stop_hook stop, void *stop_ctx);

/* ---- probes ---------------------------------------------------------------------------- */

/* Gaussian sharpness. d holds n_batches batches of d->rows / n_batches rows with their labels.
 * base[b] = L_b(theta); perturbed[r * n_batches + b] = L_b(theta + sigma z), where z is draw r for
 * every batch (shared_draws) or draw (r, b), standard normal on the tensors whose mask entry is 1
 * (noise: explicit draws, repeats x n_params, or NULL for counter-based ones keyed by seed, tensor and
 * element). The perturbed parameters live in a private copy: the model's own are never written. */
sf_status sf_sharpness(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, double sigma, int repeats,
                       uint64_t seed, const unsigned char *mask, const void *noise, int shared_draws, double *base,
                       double *perturbed, int n_threads, sf_stop_hook stop, void *stop_ctx);

/* Rows the LayerNorm blowup probe reports. The encoder: norm1 and norm2 of every layer (+ the final one).
 * The seq2seq model: the sum of sf_seq2seq_ln_counts. */
int sf_ln_count(const sf_model *m);
/* Rows of the seq2seq model's blowup: counts[0] encoder LayerNorms (norm1, norm2 per layer, then the final
 * one), counts[1] decoder LayerNorms (norm1, norm2, norm3 per layer, then the final one), each over
 * every position; counts[2], counts[3]: the official subset (encoder, decoder: norm1, norm2 per
 * layer, the last layer at the last position only). Returns the total. */
int sf_seq2seq_ln_counts(const sf_model *m, int counts[4]);
/* maxs, means (sf_ln_count rows, d->rows): per LayerNorm and sample, max and mean over positions of 1/std
 * of the LayerNorm's input. The encoder: layer-major (norm1, norm2, ..., final), the last layer at the
 * readout position only (as the official hooks do). The seq2seq model: in the order of
 * sf_seq2seq_ln_counts, the forward on all S decoder positions (the official measure feeds
 * [SOS, y_1..y_n]). theory=0: unbiased std without eps (the official measure); 1: 1/sqrt(var + eps). */
sf_status sf_ln_blowup(sf_model *m, const sf_seq_data *d, int theory, double *maxs, double *means, int n_threads);

/* Exact Hessian-vector products of the mean loss by forward-over-reverse: hv[i] = H v[i] for the
 * k directions v (k x n_params, laid out like the parameters, model dtype), H the Hessian of the
 * average over the n_batches batches of d (d->rows / n_batches rows each) of the batch-mean loss
 * (teacher-forced for the seq2seq model). loss_out (may be NULL) gets that average loss. The gradient
 * buffer is not touched. Deterministic: the same bits for any thread count. */
sf_status sf_hvp(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, const void *v, int k, void *hv,
                 double *loss_out, int n_threads, sf_stop_hook stop, void *stop_ctx);

/* Attention-logit scale: per attention module and head (rows x n_heads, row-major), max and mean of
 * |q . k| / sqrt(d_head) over the batch, the query rows the model computes and every key each sees.
 * The encoder: n_layers rows (every position, except the last layer's readout position only). The
 * seq2seq model: n_layers + 2 n_decoder_layers rows, the encoder self-attention layers, the decoder
 * self-attention layers (the keys each query sees under the causal mask) and the cross-attention
 * layers, on all S decoder positions. */
sf_status sf_attention_logits(sf_model *m, const sf_seq_data *d, double *maxs, double *means, int n_threads);

/* ---- seq2seq (SF_MODEL_SEQ2SEQ) only ------------------------------------------------------- */

/* Autoregressive decoding from SF_SOS for `steps` positions (steps <= n_positions + 1): step t reads
 * output t and feeds back the token (out > threshold). tokens (B, steps); outputs (B, steps) in the
 * model dtype, may be NULL. cache=1 keeps every layer's keys and values (one new position per step);
 * cache=0 recomputes the whole model at every step, as the official autoregressive_answer (the
 * reference the cache is tested against). */
sf_status sf_generate(sf_model *m, const uint8_t *x, int B, int T, int steps, int cache, double threshold,
                      uint8_t *tokens, void *outputs, int n_threads, sf_stop_hook stop, void *stop_ctx);

#ifdef __cplusplus
}
#endif
#endif /* SF_H */
