/* Built-in target functions, label noise, and the batch samplers of the C training loop. */
#include "engine.h"
#include "rng.h"

#include <string.h>

/* Stream tag of the label-noise draws: apart from rng.h's small tags, so that label noise never
 * shares random numbers with the data or any other stream of the same seed. */
#define SF_STREAM_LABEL_NOISE 0x6c6e6f697365ULL

static double target_value(const sf_target *t, const uint8_t *x, int T) {
    int ones = 0;
    switch (t->kind) {
    case SF_TARGET_PARITY:
        for (int j = 0; j < T; j++) ones ^= x[j];
        return ones;
    case SF_TARGET_MAJORITY:
        for (int j = 0; j < T; j++) ones += x[j];
        return ones > T - ones ? 1.0 : 0.0; /* a tie at even T gives 0, as the paper */
    case SF_TARGET_FIRST: return x[0];
    case SF_TARGET_MEAN:
        for (int j = 0; j < T; j++) ones += x[j];
        return (double)ones / T;
    case SF_TARGET_TABLE: {
        uint64_t idx = 0; /* x_1 is the most significant bit */
        for (int j = 0; j < T; j++) idx = idx << 1 | x[j];
        return t->table[idx];
    }
    case SF_TARGET_SPARSE_PARITY:
        for (int64_t j = 0; j < t->n_bits; j++) ones ^= x[t->bits[j]];
        return ones;
    case SF_TARGET_JUNTA: {
        uint64_t idx = 0; /* bits[0] is the most significant */
        for (int64_t j = 0; j < t->n_bits; j++) idx = idx << 1 | x[t->bits[j]];
        return t->table[idx];
    }
    case SF_TARGET_FOURIER: {
        double g = 0; /* terms in their given order: the same sum on every call */
        for (int64_t k = 0; k < t->n_terms; k++) {
            int odd = 0;
            for (int64_t j = t->set_offsets[k]; j < t->set_offsets[k + 1]; j++) odd ^= x[t->bits[j]];
            g += odd ? -t->coefficients[k] : t->coefficients[k];
        }
        return t->sign_output ? (g < 0 ? 1.0 : 0.0) : 0.5 * (1.0 - g);
    }
    }
    return 0;
}

/* y (T): the target on every prefix x_1..x_t, as running values (O(T) per row). */
static void prefix_values(const sf_target *t, const uint8_t *x, int T, double *y) {
    int ones = 0, odd = 0;
    for (int j = 0; j < T; j++) {
        ones += x[j];
        odd ^= x[j];
        const int n = j + 1;
        switch (t->kind) {
        case SF_TARGET_PARITY: y[j] = odd; break;
        case SF_TARGET_MAJORITY: y[j] = ones > n - ones ? 1.0 : 0.0; break; /* ties -> 0 */
        case SF_TARGET_FIRST: y[j] = x[0]; break;
        case SF_TARGET_MEAN: y[j] = (double)ones / n; break;
        default: y[j] = 0; break; /* refused by check_target */
        }
    }
}

static sf_status check_positions(const sf_target *t, int T, const char *what) {
    if (t->n_bits < 0) return sf_fail(SF_EINVAL, "%s: negative number of positions", what);
    if (t->n_bits > 0 && !t->bits) return sf_fail(SF_EINVAL, "%s needs its positions", what);
    for (int64_t j = 0; j < t->n_bits; j++)
        if (t->bits[j] < 0 || t->bits[j] >= T)
            return sf_fail(SF_EINVAL, "%s reads position %d, outside inputs of length %d", what, t->bits[j], T);
    return SF_OK;
}

static sf_status check_fourier(const sf_target *t) {
    if (t->n_terms < 0) return sf_fail(SF_EINVAL, "a Fourier target has a negative number of terms");
    if (t->n_terms > 0 && (!t->set_offsets || !t->coefficients))
        return sf_fail(SF_EINVAL, "a Fourier target needs its set offsets and coefficients");
    if (t->n_terms == 0) return SF_OK;
    if (t->set_offsets[0] != 0 || t->set_offsets[t->n_terms] != t->n_bits)
        return sf_fail(SF_EINVAL, "a Fourier target's set offsets must run from 0 to the number of positions");
    for (int64_t k = 0; k < t->n_terms; k++)
        if (t->set_offsets[k + 1] < t->set_offsets[k])
            return sf_fail(SF_EINVAL, "a Fourier target's set offsets must not decrease (term %lld)", (long long)k);
    return SF_OK;
}

static sf_status check_target(const sf_target *t, int T) {
    if (t->kind < SF_TARGET_PARITY || t->kind > SF_TARGET_FOURIER) return sf_fail(SF_EINVAL, "unknown target kind %d", t->kind);
    if (T < 1) return sf_fail(SF_EINVAL, "sequence length must be >= 1, got %d", T);
    if (!(t->noise >= 0 && t->noise <= 1)) return sf_fail(SF_EINVAL, "label noise must be in [0, 1], got %g", t->noise);
    if (t->prefix && t->kind != SF_TARGET_PARITY && t->kind != SF_TARGET_MAJORITY && t->kind != SF_TARGET_FIRST &&
        t->kind != SF_TARGET_MEAN)
        return sf_fail(SF_EINVAL, "prefix labels exist for parity, majority, first and mean, not target kind %d",
                       t->kind);
    sf_status st = SF_OK;
    switch (t->kind) {
    case SF_TARGET_TABLE:
        if (!t->table) return sf_fail(SF_EINVAL, "a truth-table target needs its table");
        if (T != t->n) return sf_fail(SF_EINVAL, "this truth table is defined for length %d, not %d", t->n, T);
        break;
    case SF_TARGET_SPARSE_PARITY: st = check_positions(t, T, "a sparse parity"); break;
    case SF_TARGET_JUNTA:
        if (!t->table) return sf_fail(SF_EINVAL, "a junta target needs its table");
        if (t->n_bits < 1 || t->n_bits > 30) return sf_fail(SF_EINVAL, "a junta reads 1 to 30 positions, not %lld", (long long)t->n_bits);
        st = check_positions(t, T, "a junta");
        break;
    case SF_TARGET_FOURIER:
        if (!(st = check_fourier(t))) st = check_positions(t, T, "a Fourier target");
        break;
    default: break;
    }
    return st;
}

/* Whether label noise p flips row `row` of batch `step`: a pure function of (seed, step, row). */
static inline int noise_flips(uint64_t seed, int64_t step, int64_t row, double p) {
    return sf_uniform(sf_key(seed, SF_STREAM_LABEL_NOISE, (uint64_t)step), (uint64_t)row) < p; /* p = 1: always */
}

sf_status sf_label_noise(uint8_t *flip, uint64_t seed, int64_t step, int64_t B, double p) {
    if (!(p >= 0 && p <= 1)) return sf_fail(SF_EINVAL, "label noise must be in [0, 1], got %g", p);
    for (int64_t b = 0; b < B; b++) flip[b] = (uint8_t)noise_flips(seed, step, b, p);
    return SF_OK;
}

sf_status sf_target_eval(const sf_target *t, const uint8_t *x, int64_t B, int T, double *y) {
    sf_status st = check_target(t, T);
    if (st) return st;
    if ((st = sf_check_tokens(x, B * T))) return st;
    for (int64_t b = 0; b < B; b++) {
        if (t->prefix) prefix_values(t, x + b * T, T, y + b * T);
        else y[b] = target_value(t, x + b * T, T);
    }
    return SF_OK;
}

sf_status sf_sample_batch(const sf_target *t, const sf_sampler *s, uint64_t seed, int64_t step, int B, int T,
                          uint8_t *x, double *y) {
    if (B < 1) return sf_fail(SF_EINVAL, "batch_size must be >= 1, got %d", B);
    if (s->kind != SF_SAMPLE_DATASET) {
        sf_status st = check_target(t, T);
        if (st) return st;
    }
    const uint64_t key = sf_key(seed, SF_STREAM_DATA, (uint64_t)step);
    switch (s->kind) {
    case SF_SAMPLE_UNIFORM: {
        const int words = (T + 63) / 64; /* 64 bits per counter */
        for (int b = 0; b < B; b++)
            for (int j = 0; j < T; j++) {
                const uint64_t r = sf_rand64(key, (uint64_t)b * words + j / 64);
                x[(int64_t)b * T + j] = (uint8_t)(r >> (j % 64) & 1);
            }
        break;
    }
    case SF_SAMPLE_SUBSET:
        if (s->subset_size < 1) return sf_fail(SF_EINVAL, "train_subset is empty");
        if (T > 62) return sf_fail(SF_EINVAL, "train_subset needs length <= 62, got %d", T);
        for (int b = 0; b < B; b++) {
            const int64_t idx = s->subset[sf_below(key, (uint64_t)b, (uint64_t)s->subset_size)];
            if (idx < 0 || (T < 63 && idx >= ((int64_t)1 << T)))
                return sf_fail(SF_EINVAL, "train_subset holds %lld, outside [0, 2^%d)", (long long)idx, T);
            for (int j = 0; j < T; j++) x[(int64_t)b * T + j] = (uint8_t)(idx >> (T - 1 - j) & 1);
        }
        break;
    case SF_SAMPLE_DATASET:
        if (s->data_rows < 1) return sf_fail(SF_EINVAL, "the dataset is empty");
        if (s->data_width != T)
            return sf_fail(SF_EINVAL, "the dataset's inputs have length %d, not the batch length %d", s->data_width, T);
        for (int b = 0; b < B; b++) {
            const int64_t row = (int64_t)sf_below(key, (uint64_t)b, (uint64_t)s->data_rows);
            memcpy(x + (int64_t)b * T, s->data_x + row * T, (size_t)T);
            if (y && t->prefix) memcpy(y + (int64_t)b * T, s->data_y + row * T, (size_t)T * sizeof(double));
            else if (y) y[b] = s->data_y[row];
        }
        return SF_OK;
    default: return sf_fail(SF_EINVAL, "unknown sampler kind %d", s->kind);
    }
    if (y) {
        const int64_t per_row = t->prefix ? T : 1; /* noise flips each label: counter row * per_row + t */
        for (int b = 0; b < B; b++) {
            if (t->prefix) prefix_values(t, x + (int64_t)b * T, T, y + (int64_t)b * T);
            else y[b] = target_value(t, x + (int64_t)b * T, T);
        }
        if (t->noise > 0)
            for (int64_t i = 0; i < B * per_row; i++)
                if (noise_flips(seed, step, i, t->noise)) y[i] = 1.0 - y[i];
    }
    return SF_OK;
}
