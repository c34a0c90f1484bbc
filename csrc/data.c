/* Built-in target functions and the batch samplers of the C training loop. */
#include "engine.h"
#include "rng.h"

#include <string.h>

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
    }
    return 0;
}

static sf_status check_target(const sf_target *t, int T) {
    if (t->kind < SF_TARGET_PARITY || t->kind > SF_TARGET_TABLE) return sf_fail(SF_EINVAL, "unknown target kind %d", t->kind);
    if (T < 1) return sf_fail(SF_EINVAL, "sequence length must be >= 1, got %d", T);
    if (t->kind == SF_TARGET_TABLE) {
        if (!t->table) return sf_fail(SF_EINVAL, "a truth-table target needs its table");
        if (T != t->n) return sf_fail(SF_EINVAL, "this truth table is defined for length %d, not %d", t->n, T);
    }
    return SF_OK;
}

sf_status sf_target_eval(const sf_target *t, const uint8_t *x, int64_t B, int T, double *y) {
    sf_status st = check_target(t, T);
    if (st) return st;
    for (int64_t i = 0; i < B * T; i++)
        if (x[i] > 1) return sf_fail(SF_EINVAL, "x must hold tokens 0 or 1, found %d at flat index %lld", x[i], (long long)i);
    for (int64_t b = 0; b < B; b++) y[b] = target_value(t, x + b * T, T);
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
        for (int b = 0; b < B; b++) {
            const int64_t row = (int64_t)sf_below(key, (uint64_t)b, (uint64_t)s->data_rows);
            memcpy(x + (int64_t)b * T, s->data_x + row * T, (size_t)T);
            if (y) y[b] = s->data_y[row];
        }
        return SF_OK;
    default: return sf_fail(SF_EINVAL, "unknown sampler kind %d", s->kind);
    }
    if (y)
        for (int b = 0; b < B; b++) y[b] = target_value(t, x + (int64_t)b * T, T);
    return SF_OK;
}
