/* The probe functions of sensiformer._engine: sharpness, LayerNorm blowup, Hessian-vector
 * products and the attention-logit scale. Each takes the seq2seq model's decoder inputs as
 * decoder_input (then y has a label per decoder output). */
#include "py_util.h"

/* Rows of a batched probe: x holds n_batches * batch_size rows. */
static int batches_of(PyArrayObject *x, int batch_size, int *n_batches) {
    const npy_intp rows = PyArray_DIM(x, 0);
    if (batch_size < 1 || rows % batch_size) {
        PyErr_Format(PyExc_ValueError, "x has %zd rows, not a multiple of batch_size=%d", (Py_ssize_t)rows, batch_size);
        return -1;
    }
    *n_batches = (int)(rows / batch_size);
    return 0;
}

struct sharpness_call {
    sf_model *model;
    sf_seq_data data;
    int n_batches, loss, repeats, shared, n_threads;
    double sigma;
    uint64_t seed;
    const unsigned char *mask;
    const void *noise;
    double *base, *perturbed;
};

static sf_status sharpness_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct sharpness_call *c = p;
    return sf_sharpness(c->model, &c->data, c->n_batches, c->loss, c->sigma, c->repeats, c->seed, c->mask, c->noise,
                        c->shared, c->base, c->perturbed, c->n_threads, stop, stop_ctx);
}

/* sharpness(model, x uint8 (n_batches*B, T), y, decoder_input=None, batch_size, loss, sigma, repeats, seed,
 *           mask uint8 (n_tensors,), noise=None (repeats, P), shared_draws, n_threads)
 * -> (base float64 (n_batches,), perturbed float64 (repeats, n_batches)) */
static PyObject *py_sharpness(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    PyArrayObject *x, *y, *dec = NULL, *mask, *noise = NULL;
    struct sharpness_call c = {0};
    int batch_size;
    const sf_py_arg table[] = {
        SF_ARG("model", SF_ARG_MODEL, &model), SF_ARRAY("x", &x, NPY_UINT8, 2), SF_ARRAY("y", &y, SF_PY_MODEL_REAL, 0),
        SF_ARRAY_OPTIONAL("decoder_input", &dec, NPY_UINT8, 2), SF_ARG("batch_size", SF_ARG_INT, &batch_size),
        SF_ARG("loss", SF_ARG_INT, &c.loss), SF_ARG("sigma", SF_ARG_DOUBLE, &c.sigma),
        SF_ARG("repeats", SF_ARG_INT, &c.repeats), SF_ARG("seed", SF_ARG_UINT64, &c.seed),
        SF_ARRAY("mask", &mask, NPY_UINT8, 1), SF_ARRAY_OPTIONAL("noise", &noise, SF_PY_MODEL_REAL, 2),
        SF_ARG("shared_draws", SF_ARG_BOOL, &c.shared), SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_parse("sharpness", args, kw, SF_ARGS(table)) < 0 || sf_py_seq_data(x, dec, y, &c.data) < 0 ||
        batches_of(x, batch_size, &c.n_batches) < 0)
        return NULL;
    if (PyArray_DIM(mask, 0) != sf_model_num_tensors(model->model))
        return PyErr_Format(PyExc_ValueError, "mask must have one entry per tensor (%d), got %zd",
                            sf_model_num_tensors(model->model), (Py_ssize_t)PyArray_DIM(mask, 0));
    if (noise && (PyArray_DIM(noise, 0) != c.repeats || PyArray_DIM(noise, 1) != sf_model_num_params(model->model)))
        return PyErr_Format(PyExc_ValueError, "noise must be (repeats, n_params)");
    npy_intp nb = c.n_batches, shape[2] = {c.repeats, nb};
    PyObject *base = PyArray_SimpleNew(1, &nb, NPY_FLOAT64);
    PyObject *perturbed = base ? PyArray_SimpleNew(2, shape, NPY_FLOAT64) : NULL;
    PyObject *result = NULL;
    if (perturbed) {
        c.model = model->model, c.mask = PyArray_DATA(mask), c.noise = noise ? PyArray_DATA(noise) : NULL;
        c.base = PyArray_DATA((PyArrayObject *)base), c.perturbed = PyArray_DATA((PyArrayObject *)perturbed);
        if (sf_py_run(model, 0, sharpness_body, &c) == 0) result = Py_BuildValue("(OO)", base, perturbed);
    }
    Py_XDECREF(base);
    Py_XDECREF(perturbed);
    return result;
}

struct hvp_call {
    sf_model *model;
    sf_seq_data data;
    int n_batches, loss, k, n_threads;
    const void *v;
    void *hv;
    double value;
};

static sf_status hvp_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct hvp_call *c = p;
    return sf_hvp(c->model, &c->data, c->n_batches, c->loss, c->v, c->k, c->hv, &c->value, c->n_threads, stop,
                  stop_ctx);
}

/* hvp(model, x uint8 (n_batches*B, T), y, decoder_input=None, batch_size, loss, v (k, P), n_threads)
 * -> (hv (k, P) model dtype, loss float) */
static PyObject *py_hvp(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    PyArrayObject *x, *y, *dec = NULL, *v;
    struct hvp_call c = {0};
    int batch_size;
    const sf_py_arg table[] = {
        SF_ARG("model", SF_ARG_MODEL, &model), SF_ARRAY("x", &x, NPY_UINT8, 2), SF_ARRAY("y", &y, SF_PY_MODEL_REAL, 0),
        SF_ARRAY_OPTIONAL("decoder_input", &dec, NPY_UINT8, 2), SF_ARG("batch_size", SF_ARG_INT, &batch_size),
        SF_ARG("loss", SF_ARG_INT, &c.loss), SF_ARRAY("v", &v, SF_PY_MODEL_REAL, 2),
        SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_parse("hvp", args, kw, SF_ARGS(table)) < 0 || sf_py_seq_data(x, dec, y, &c.data) < 0 ||
        batches_of(x, batch_size, &c.n_batches) < 0)
        return NULL;
    const npy_intp k = PyArray_DIM(v, 0), P = (npy_intp)sf_model_num_params(model->model);
    if (PyArray_DIM(v, 1) != P || k > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "v must be (k, n_params=%zd), got (%zd, %zd)", (Py_ssize_t)P,
                            (Py_ssize_t)k, (Py_ssize_t)PyArray_DIM(v, 1));
    npy_intp shape[2] = {k, P};
    PyObject *hv = PyArray_SimpleNew(2, shape, PyArray_TYPE(v)), *result = NULL;
    if (!hv) return NULL;
    c.model = model->model, c.v = PyArray_DATA(v), c.k = (int)k, c.hv = PyArray_DATA((PyArrayObject *)hv);
    if (sf_py_run(model, 0, hvp_body, &c) == 0) result = Py_BuildValue("(Od)", hv, c.value);
    Py_DECREF(hv);
    return result;
}

/* The two per-row statistics probes: (maxs, means) float64 arrays of `rows` x `cols`. */
struct stats_call {
    sf_model *model;
    sf_seq_data data;
    int theory, n_threads;
    double *maxs, *means;
};

static sf_status ln_blowup_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct stats_call *c = p;
    return sf_ln_blowup(c->model, &c->data, c->theory, c->maxs, c->means, c->n_threads);
}

static sf_status attention_logits_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct stats_call *c = p;
    return sf_attention_logits(c->model, &c->data, c->maxs, c->means, c->n_threads);
}

static PyObject *run_stats(SfModelObject *model, struct stats_call *c, npy_intp rows, npy_intp cols, sf_py_body body) {
    npy_intp shape[2] = {rows, cols};
    PyObject *maxs = PyArray_SimpleNew(2, shape, NPY_FLOAT64);
    PyObject *means = maxs ? PyArray_SimpleNew(2, shape, NPY_FLOAT64) : NULL;
    PyObject *result = NULL;
    if (means) {
        c->model = model->model;
        c->maxs = PyArray_DATA((PyArrayObject *)maxs), c->means = PyArray_DATA((PyArrayObject *)means);
        if (sf_py_run(model, 0, body, c) == 0) result = Py_BuildValue("(OO)", maxs, means);
    }
    Py_XDECREF(maxs);
    Py_XDECREF(means);
    return result;
}

/* ln_blowup(model, x uint8 (B,T), decoder_input=None, theory, n_threads) -> (maxs, means), each float64
 * (n_ln, B); with decoder inputs (seq2seq) the rows in the order of sf_seq2seq_ln_counts. */
static PyObject *py_ln_blowup(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    PyArrayObject *x, *dec = NULL;
    struct stats_call c = {0};
    const sf_py_arg table[] = {SF_ARG("model", SF_ARG_MODEL, &model), SF_ARRAY("x", &x, NPY_UINT8, 2),
                               SF_ARRAY_OPTIONAL("decoder_input", &dec, NPY_UINT8, 2),
                               SF_ARG("theory", SF_ARG_BOOL, &c.theory), SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_parse("ln_blowup", args, kw, SF_ARGS(table)) < 0 || sf_py_seq_data(x, dec, NULL, &c.data) < 0)
        return NULL;
    return run_stats(model, &c, sf_ln_count(model->model), PyArray_DIM(x, 0), ln_blowup_body);
}

/* attention_logits(model, x uint8 (B,T), decoder_input=None, n_threads) -> (maxs, means), each float64
 * (n_layers, n_heads), or with decoder inputs (seq2seq) (n_layers + 2 n_decoder_layers, n_heads) */
static PyObject *py_attention_logits(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    PyArrayObject *x, *dec = NULL;
    struct stats_call c = {0};
    const sf_py_arg table[] = {SF_ARG("model", SF_ARG_MODEL, &model), SF_ARRAY("x", &x, NPY_UINT8, 2),
                               SF_ARRAY_OPTIONAL("decoder_input", &dec, NPY_UINT8, 2),
                               SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_parse("attention_logits", args, kw, SF_ARGS(table)) < 0 || sf_py_seq_data(x, dec, NULL, &c.data) < 0)
        return NULL;
    const sf_config *cfg = sf_model_config(model->model);
    return run_stats(model, &c, cfg->n_layers + (dec ? 2 * cfg->n_decoder_layers : 0), cfg->n_heads,
                     attention_logits_body);
}

PyMethodDef sf_probe_methods[] = {
    {"sharpness", SF_PY_KEYWORDS(py_sharpness), "Gaussian sharpness draws (see py_probes.c)."},
    {"ln_blowup", SF_PY_KEYWORDS(py_ln_blowup), "Per-LayerNorm, per-sample max and mean of 1/std of LN inputs."},
    {"hvp", SF_PY_KEYWORDS(py_hvp), "Exact Hessian-vector products (see py_probes.c)."},
    {"attention_logits", SF_PY_KEYWORDS(py_attention_logits), "Per-layer, per-head max and mean |q.k|/sqrt(d_head)."},
    {NULL, NULL, 0, NULL},
};
