/* The seq2seq functions of sensiformer._engine: teacher-forced forward and loss, and
 * autoregressive decoding. (Sharpness and LayerNorm blowup take decoder inputs in py_probes.c.) */
#include "py_util.h"

/* seq2seq_forward(model, x (B,T), dec (B,S), n_threads) -> (B,S) */
static PyObject *py_seq2seq_forward(PyObject *self, PyObject *args) {
    PyObject *mo, *xo, *deco;
    int nt;
    if (!PyArg_ParseTuple(args, "O!OOi", &SfModelType, &mo, &xo, &deco, &nt)) return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    PyArrayObject *x, *dec;
    if (sf_py_model_ready(model) < 0 || sf_py_token_arrays(xo, deco, 0, &x, &dec) < 0) return NULL;
    npy_intp shape[2] = {PyArray_DIM(dec, 0), PyArray_DIM(dec, 1)};
    PyObject *out = PyArray_SimpleNew(2, shape, sf_py_typenum(sf_model_config(model->model)->dtype));
    PyObject *result = NULL;
    if (out && sf_py_model_acquire(model) == 0) {
        const sf_seq_data d = sf_py_seq_data(x, dec, NULL);
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        st = sf_forward(model->model, &d, PyArray_DATA((PyArrayObject *)out), nt);
        Py_END_ALLOW_THREADS
        sf_py_model_release(model);
        if (st) sf_py_raise(st);
        else result = out, out = NULL;
    }
    Py_XDECREF(out);
    Py_DECREF(x);
    Py_DECREF(dec);
    return result;
}

/* seq2seq_loss_and_grad(model, x (B,T), dec (B,S), y (B,L), loss, grad, n_threads) -> (loss, outputs (B,L)) */
static PyObject *py_seq2seq_loss_and_grad(PyObject *self, PyObject *args) {
    PyObject *mo, *xo, *deco, *yo;
    int loss_kind, grad, nt;
    if (!PyArg_ParseTuple(args, "O!OOOipi", &SfModelType, &mo, &xo, &deco, &yo, &loss_kind, &grad, &nt)) return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    PyArrayObject *x, *dec, *y;
    if (sf_py_model_ready(model) < 0 || sf_py_token_arrays(xo, deco, 0, &x, &dec) < 0) return NULL;
    const int typenum = sf_py_typenum(sf_model_config(model->model)->dtype);
    PyObject *out = NULL, *result = NULL;
    if (!(y = sf_py_array(yo, typenum, 2, "y"))) goto done;
    if (PyArray_DIM(y, 0) != PyArray_DIM(x, 0)) {
        PyErr_Format(PyExc_ValueError, "y has %zd rows for %zd inputs", (Py_ssize_t)PyArray_DIM(y, 0),
                     (Py_ssize_t)PyArray_DIM(x, 0));
        goto done;
    }
    npy_intp shape[2] = {PyArray_DIM(y, 0), PyArray_DIM(y, 1)};
    if (!(out = PyArray_SimpleNew(2, shape, typenum)) || sf_py_model_acquire(model) < 0) goto done;
    const sf_seq_data d = sf_py_seq_data(x, dec, y);
    double loss = 0;
    sf_status st;
    Py_BEGIN_ALLOW_THREADS
    st = sf_loss_and_grad(model->model, &d, loss_kind, grad, &loss, PyArray_DATA((PyArrayObject *)out), nt);
    Py_END_ALLOW_THREADS
    sf_py_model_release(model);
    if (st) sf_py_raise(st);
    else result = Py_BuildValue("(dO)", loss, out);
done:
    Py_XDECREF(out);
    Py_DECREF(x);
    Py_DECREF(dec);
    Py_XDECREF(y);
    return result;
}

/* generate(model, x (B,T), steps, cache, threshold, n_threads) -> (tokens uint8 (B,steps), outputs (B,steps)) */
static PyObject *py_generate(PyObject *self, PyObject *args) {
    PyObject *mo, *xo;
    int steps, cache, nt;
    double threshold;
    if (!PyArg_ParseTuple(args, "O!Oipdi", &SfModelType, &mo, &xo, &steps, &cache, &threshold, &nt)) return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    if (sf_py_model_ready(model) < 0) return NULL;
    PyArrayObject *x = sf_py_array(xo, NPY_UINT8, 2, "x");
    if (!x) return NULL;
    if (steps < 1) {
        Py_DECREF(x);
        return PyErr_Format(PyExc_ValueError, "steps must be >= 1, got %d", steps);
    }
    npy_intp shape[2] = {PyArray_DIM(x, 0), steps};
    PyObject *tokens = PyArray_SimpleNew(2, shape, NPY_UINT8);
    PyObject *outputs = tokens ? PyArray_SimpleNew(2, shape, sf_py_typenum(sf_model_config(model->model)->dtype)) : NULL;
    PyObject *result = NULL;
    if (outputs && sf_py_model_acquire(model) == 0) {
        sf_py_unlocked u;
        u.saved = PyEval_SaveThread();
        sf_status st = sf_generate(model->model, PyArray_DATA(x), (int)shape[0], (int)PyArray_DIM(x, 1), steps, cache,
                                   threshold, PyArray_DATA((PyArrayObject *)tokens),
                                   PyArray_DATA((PyArrayObject *)outputs), nt, sf_py_stop_hook, &u);
        PyEval_RestoreThread(u.saved);
        sf_py_model_release(model);
        if (st == SF_EINTR && PyErr_Occurred()) { /* the signal handler's exception */
        } else if (st) {
            sf_py_raise(st);
        } else {
            result = Py_BuildValue("(OO)", tokens, outputs);
        }
    }
    Py_DECREF(x);
    Py_XDECREF(tokens);
    Py_XDECREF(outputs);
    return result;
}

/* seq2seq_ln_counts(model) -> (encoder, decoder, official encoder, official decoder) */
static PyObject *py_seq2seq_ln_counts(PyObject *self, PyObject *args) {
    PyObject *mo;
    if (!PyArg_ParseTuple(args, "O!", &SfModelType, &mo)) return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    if (sf_py_model_ready(model) < 0) return NULL;
    int c[4];
    sf_seq2seq_ln_counts(model->model, c);
    return Py_BuildValue("(iiii)", c[0], c[1], c[2], c[3]);
}

PyMethodDef sf_seq2seq_methods[] = {
    {"seq2seq_forward", py_seq2seq_forward, METH_VARARGS, "seq2seq_forward(model, x, dec, n_threads) -> (B, S)"},
    {"seq2seq_loss_and_grad", py_seq2seq_loss_and_grad, METH_VARARGS,
     "seq2seq_loss_and_grad(model, x, dec, y, loss, grad, n_threads) -> (loss, outputs (B, L))"},
    {"generate", py_generate, METH_VARARGS,
     "generate(model, x, steps, cache, threshold, n_threads) -> (tokens, outputs)"},
    {"seq2seq_ln_counts", py_seq2seq_ln_counts, METH_VARARGS, "LayerNorm rows of seq2seq ln_blowup, by group"},
    {NULL, NULL, 0, NULL},
};
