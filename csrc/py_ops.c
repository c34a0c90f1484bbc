/* The model operations of sensiformer._engine, one function each for both model kinds (the decoder
 * input is what tells them apart): forward, loss and gradient, and autoregressive generation. */
#include "py_util.h"

struct forward_call {
    sf_model *model;
    sf_seq_data data;
    void *out;
    int n_threads;
};

static sf_status forward_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct forward_call *c = p;
    return sf_forward(c->model, &c->data, c->out, c->n_threads);
}

/* forward(model, x uint8 (B,T), decoder_input=None uint8 (B,S), n_threads) -> (B,), or (B,S) with
 * decoder inputs */
static PyObject *py_forward(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    PyArrayObject *x, *dec = NULL;
    struct forward_call c = {0};
    const sf_py_arg table[] = {SF_ARG("model", SF_ARG_MODEL, &model), SF_ARRAY("x", &x, NPY_UINT8, 2),
                               SF_ARRAY_OPTIONAL("decoder_input", &dec, NPY_UINT8, 2),
                               SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_parse("forward", args, kw, SF_ARGS(table)) < 0 || sf_py_seq_data(x, dec, NULL, &c.data) < 0) return NULL;
    npy_intp shape[2] = {PyArray_DIM(x, 0), dec ? PyArray_DIM(dec, 1) : 0};
    PyObject *out = PyArray_SimpleNew(dec ? 2 : 1, shape, sf_py_typenum(sf_model_config(model->model)->dtype));
    if (!out) return NULL;
    c.model = model->model, c.out = PyArray_DATA((PyArrayObject *)out);
    if (sf_py_run(model, 0, forward_body, &c) < 0) Py_CLEAR(out);
    return out;
}

struct loss_call {
    sf_model *model;
    sf_seq_data data;
    int loss, grad, n_threads;
    double value;
    void *out;
};

static sf_status loss_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct loss_call *c = p;
    return sf_loss_and_grad(c->model, &c->data, c->loss, c->grad, &c->value, c->out, c->n_threads);
}

/* loss_and_grad(model, x, y (B,) or (B,L) with decoder_input, decoder_input=None, loss, grad, n_threads)
 * -> (loss, outputs shaped as y); with grad, fills the model's gradient buffer */
static PyObject *py_loss_and_grad(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    PyArrayObject *x, *y, *dec = NULL;
    struct loss_call c = {0};
    const sf_py_arg table[] = {SF_ARG("model", SF_ARG_MODEL, &model), SF_ARRAY("x", &x, NPY_UINT8, 2),
                               SF_ARRAY("y", &y, SF_PY_MODEL_REAL, 0),
                               SF_ARRAY_OPTIONAL("decoder_input", &dec, NPY_UINT8, 2),
                               SF_ARG("loss", SF_ARG_INT, &c.loss), SF_ARG("grad", SF_ARG_BOOL, &c.grad),
                               SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_parse("loss_and_grad", args, kw, SF_ARGS(table)) < 0 || sf_py_seq_data(x, dec, y, &c.data) < 0)
        return NULL;
    PyObject *out = PyArray_SimpleNew(PyArray_NDIM(y), PyArray_DIMS(y), PyArray_TYPE(y));
    if (!out) return NULL;
    c.model = model->model, c.out = PyArray_DATA((PyArrayObject *)out);
    PyObject *result = sf_py_run(model, 0, loss_body, &c) < 0 ? NULL : Py_BuildValue("(dO)", c.value, out);
    Py_DECREF(out);
    return result;
}

struct generate_call {
    sf_model *model;
    const uint8_t *x;
    int B, T, steps, cache, n_threads;
    double threshold;
    uint8_t *tokens;
    void *outputs;
};

static sf_status generate_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct generate_call *c = p;
    return sf_generate(c->model, c->x, c->B, c->T, c->steps, c->cache, c->threshold, c->tokens, c->outputs,
                       c->n_threads, stop, stop_ctx);
}

/* generate(model, x uint8 (B,T), steps, cache, threshold, n_threads) -> (tokens uint8 (B,steps),
 * outputs (B,steps)): the seq2seq model's autoregressive decoding */
static PyObject *py_generate(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    PyArrayObject *x;
    struct generate_call c = {0};
    const sf_py_arg table[] = {SF_ARG("model", SF_ARG_MODEL, &model), SF_ARRAY("x", &x, NPY_UINT8, 2),
                               SF_ARG("steps", SF_ARG_INT, &c.steps), SF_ARG("cache", SF_ARG_BOOL, &c.cache),
                               SF_ARG("threshold", SF_ARG_DOUBLE, &c.threshold),
                               SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_parse("generate", args, kw, SF_ARGS(table)) < 0) return NULL;
    if (c.steps < 1) return PyErr_Format(PyExc_ValueError, "steps must be >= 1, got %d", c.steps);
    if (PyArray_DIM(x, 0) > INT_MAX || PyArray_DIM(x, 1) > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "x is too large for one engine call");
    npy_intp shape[2] = {PyArray_DIM(x, 0), c.steps};
    PyObject *tokens = PyArray_SimpleNew(2, shape, NPY_UINT8);
    PyObject *outputs = tokens ? PyArray_SimpleNew(2, shape, sf_py_typenum(sf_model_config(model->model)->dtype)) : NULL;
    PyObject *result = NULL;
    if (outputs) {
        c.model = model->model, c.x = PyArray_DATA(x), c.B = (int)shape[0], c.T = (int)PyArray_DIM(x, 1);
        c.tokens = PyArray_DATA((PyArrayObject *)tokens), c.outputs = PyArray_DATA((PyArrayObject *)outputs);
        if (sf_py_run(model, 0, generate_body, &c) == 0) result = Py_BuildValue("(OO)", tokens, outputs);
    }
    Py_XDECREF(tokens);
    Py_XDECREF(outputs);
    return result;
}

/* seq2seq_ln_counts(model) -> (encoder, decoder, official encoder, official decoder) */
static PyObject *py_seq2seq_ln_counts(PyObject *self, PyObject *mo) {
    if (!PyObject_TypeCheck(mo, &SfModelType)) return PyErr_Format(PyExc_TypeError, "model must be an engine Model");
    SfModelObject *model = (SfModelObject *)mo;
    if (sf_py_model_ready(model) < 0) return NULL;
    int c[4];
    sf_seq2seq_ln_counts(model->model, c);
    return Py_BuildValue("(iiii)", c[0], c[1], c[2], c[3]);
}

PyMethodDef sf_ops_methods[] = {
    {"forward", SF_PY_KEYWORDS(py_forward), "forward(*, model, x, decoder_input=None, n_threads) -> outputs"},
    {"loss_and_grad", SF_PY_KEYWORDS(py_loss_and_grad),
     "loss_and_grad(*, model, x, y, decoder_input=None, loss, grad, n_threads) -> (loss, outputs)"},
    {"generate", SF_PY_KEYWORDS(py_generate),
     "generate(*, model, x, steps, cache, threshold, n_threads) -> (tokens, outputs)"},
    {"seq2seq_ln_counts", py_seq2seq_ln_counts, METH_O, "LayerNorm rows of seq2seq ln_blowup, by group"},
    {NULL, NULL, 0, NULL},
};
