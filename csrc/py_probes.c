/* The probe functions of sensiformer._engine: sharpness, LayerNorm blowup, Hessian-vector
 * products and the attention-logit scale. */
#include "py_util.h"

/* sharpness(model, x uint8 (n_batches*B, T), y (n_batches*B,), B, loss, sigma, repeats, seed,
 *           mask uint8 (n_tensors,), noise (repeats, P) or None, shared_draws, n_threads[, dec])
 * -> (base float64 (n_batches,), perturbed float64 (repeats, n_batches))
 * With dec (seq2seq: decoder inputs uint8 (n_batches*B, S)), y is (n_batches*B, L). */
static PyObject *py_sharpness(PyObject *self, PyObject *args) {
    PyObject *mo, *xo, *yo, *masko, *noiseo, *deco = Py_None;
    int B, loss, repeats, shared, nt;
    double sigma;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "O!OOiidiKOOpi|O", &SfModelType, &mo, &xo, &yo, &B, &loss, &sigma, &repeats, &seed,
                          &masko, &noiseo, &shared, &nt, &deco))
        return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    if (sf_py_model_ready(model) < 0) return NULL;
    const int typenum = sf_py_typenum(sf_model_config(model->model)->dtype);
    const npy_intp P = (npy_intp)sf_model_num_params(model->model);
    PyArrayObject *x = NULL, *y = NULL, *mask = NULL, *noise = NULL, *dec = NULL;
    PyObject *base = NULL, *perturbed = NULL, *result = NULL;
    if (!(x = sf_py_array(xo, NPY_UINT8, 2, "x")) || !(y = sf_py_array(yo, typenum, deco == Py_None ? 1 : 2, "y")) ||
        !(mask = sf_py_array(masko, NPY_UINT8, 1, "mask")))
        goto done;
    if (deco != Py_None && !(dec = sf_py_array(deco, NPY_UINT8, 2, "decoder_input"))) goto done;
    if (noiseo != Py_None && !(noise = sf_py_array(noiseo, typenum, 2, "noise"))) goto done;
    const npy_intp rows = PyArray_DIM(x, 0);
    if (B < 1 || rows % B) {
        PyErr_Format(PyExc_ValueError, "x has %zd rows, not a multiple of batch_size=%d", (Py_ssize_t)rows, B);
        goto done;
    }
    if (PyArray_DIM(y, 0) != rows || PyArray_DIM(mask, 0) != sf_model_num_tensors(model->model) ||
        (noise && (PyArray_DIM(noise, 0) != repeats || PyArray_DIM(noise, 1) != P)) ||
        (dec && PyArray_DIM(dec, 0) != rows)) {
        PyErr_SetString(PyExc_ValueError, "y, mask, noise or decoder_input has the wrong shape");
        goto done;
    }
    npy_intp nb = rows / B, shape[2] = {repeats, nb};
    if (!(base = PyArray_SimpleNew(1, &nb, NPY_FLOAT64)) || !(perturbed = PyArray_SimpleNew(2, shape, NPY_FLOAT64)))
        goto done;
    if (sf_py_model_acquire(model) < 0) goto done;
    sf_py_unlocked u;
    u.saved = PyEval_SaveThread();
    sf_status st;
    const sf_seq_data d = sf_py_seq_data(x, dec, y);
    st = sf_sharpness(model->model, &d, (int)nb, loss, sigma, repeats, seed, PyArray_DATA(mask),
                      noise ? PyArray_DATA(noise) : NULL, shared, PyArray_DATA((PyArrayObject *)base),
                      PyArray_DATA((PyArrayObject *)perturbed), nt, sf_py_stop_hook, &u);
    PyEval_RestoreThread(u.saved);
    sf_py_model_release(model);
    if (st == SF_EINTR && PyErr_Occurred()) goto done; /* the signal handler's exception */
    if (st) {
        sf_py_raise(st);
        goto done;
    }
    result = Py_BuildValue("(OO)", base, perturbed);
done:
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(mask);
    Py_XDECREF(noise);
    Py_XDECREF(dec);
    Py_XDECREF(base);
    Py_XDECREF(perturbed);
    return result;
}

/* ln_blowup(model, x uint8 (B,T), theory, n_threads[, dec uint8 (B,S)]) -> (maxs, means), each float64
 * (n_ln, B); with dec (seq2seq) the rows in the order of sf_seq2seq_ln_counts. */
static PyObject *py_ln_blowup(PyObject *self, PyObject *args) {
    PyObject *mo, *xo, *deco = Py_None;
    int theory, nt;
    if (!PyArg_ParseTuple(args, "O!Opi|O", &SfModelType, &mo, &xo, &theory, &nt, &deco)) return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    if (sf_py_model_ready(model) < 0) return NULL;
    PyArrayObject *x, *dec;
    if (sf_py_token_arrays(xo, deco, 1, &x, &dec) < 0) return NULL;
    npy_intp shape[2] = {sf_ln_count(model->model), PyArray_DIM(x, 0)};
    PyObject *maxs = PyArray_SimpleNew(2, shape, NPY_FLOAT64), *means = PyArray_SimpleNew(2, shape, NPY_FLOAT64);
    PyObject *result = NULL;
    if (maxs && means && sf_py_model_acquire(model) == 0) {
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        const sf_seq_data d = sf_py_seq_data(x, dec, NULL);
        st = sf_ln_blowup(model->model, &d, theory, PyArray_DATA((PyArrayObject *)maxs),
                          PyArray_DATA((PyArrayObject *)means), nt);
        Py_END_ALLOW_THREADS
        sf_py_model_release(model);
        if (st) sf_py_raise(st);
        else result = Py_BuildValue("(OO)", maxs, means);
    }
    Py_XDECREF(x);
    Py_XDECREF(dec);
    Py_XDECREF(maxs);
    Py_XDECREF(means);
    return result;
}

/* hvp(model, x uint8 (n_batches*B, T), y (n_batches*B,), B, loss, v (k, P), n_threads[, dec])
 * -> (hv (k, P) model dtype, loss float). With dec (seq2seq: decoder inputs uint8 (n_batches*B, S)),
 * y is (n_batches*B, L). */
static PyObject *py_hvp(PyObject *self, PyObject *args) {
    PyObject *mo, *xo, *yo, *vo, *deco = Py_None;
    int B, loss, nt;
    if (!PyArg_ParseTuple(args, "O!OOiiOi|O", &SfModelType, &mo, &xo, &yo, &B, &loss, &vo, &nt, &deco)) return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    if (sf_py_model_ready(model) < 0) return NULL;
    const int typenum = sf_py_typenum(sf_model_config(model->model)->dtype);
    const npy_intp P = (npy_intp)sf_model_num_params(model->model);
    PyArrayObject *x = NULL, *y = NULL, *v = NULL, *dec = NULL;
    PyObject *hv = NULL, *result = NULL;
    if (!(x = sf_py_array(xo, NPY_UINT8, 2, "x")) || !(y = sf_py_array(yo, typenum, deco == Py_None ? 1 : 2, "y")) ||
        !(v = sf_py_array(vo, typenum, 2, "v")))
        goto done;
    if (deco != Py_None && !(dec = sf_py_array(deco, NPY_UINT8, 2, "decoder_input"))) goto done;
    const npy_intp rows = PyArray_DIM(x, 0), k = PyArray_DIM(v, 0);
    if (B < 1 || rows % B) {
        PyErr_Format(PyExc_ValueError, "x has %zd rows, not a multiple of batch_size=%d", (Py_ssize_t)rows, B);
        goto done;
    }
    if (PyArray_DIM(y, 0) != rows || PyArray_DIM(v, 1) != P || k > INT_MAX || (dec && PyArray_DIM(dec, 0) != rows)) {
        PyErr_SetString(PyExc_ValueError, "y, v or decoder_input has the wrong shape");
        goto done;
    }
    npy_intp shape[2] = {k, P};
    if (!(hv = PyArray_SimpleNew(2, shape, typenum))) goto done;
    if (sf_py_model_acquire(model) < 0) goto done;
    double value = 0;
    sf_py_unlocked u;
    u.saved = PyEval_SaveThread();
    sf_status st;
    const sf_seq_data d = sf_py_seq_data(x, dec, y);
    st = sf_hvp(model->model, &d, (int)(rows / B), loss, PyArray_DATA(v), (int)k, PyArray_DATA((PyArrayObject *)hv),
                &value, nt, sf_py_stop_hook, &u);
    PyEval_RestoreThread(u.saved);
    sf_py_model_release(model);
    if (st == SF_EINTR && PyErr_Occurred()) goto done; /* the signal handler's exception */
    if (st) {
        sf_py_raise(st);
        goto done;
    }
    result = Py_BuildValue("(Od)", hv, value);
done:
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(v);
    Py_XDECREF(dec);
    Py_XDECREF(hv);
    return result;
}

/* attention_logits(model, x uint8 (B,T), n_threads[, dec uint8 (B,S)]) -> (maxs, means), each float64
 * (n_layers, n_heads), or with dec (seq2seq) (n_layers + 2 n_decoder_layers, n_heads) */
static PyObject *py_attention_logits(PyObject *self, PyObject *args) {
    PyObject *mo, *xo, *deco = Py_None;
    int nt;
    if (!PyArg_ParseTuple(args, "O!Oi|O", &SfModelType, &mo, &xo, &nt, &deco)) return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    if (sf_py_model_ready(model) < 0) return NULL;
    PyArrayObject *x, *dec;
    if (sf_py_token_arrays(xo, deco, 1, &x, &dec) < 0) return NULL;
    const sf_config *c = sf_model_config(model->model);
    npy_intp shape[2] = {c->n_layers + (dec ? 2 * c->n_decoder_layers : 0), c->n_heads};
    PyObject *maxs = PyArray_SimpleNew(2, shape, NPY_FLOAT64), *means = PyArray_SimpleNew(2, shape, NPY_FLOAT64);
    PyObject *result = NULL;
    if (maxs && means && sf_py_model_acquire(model) == 0) {
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        const sf_seq_data d = sf_py_seq_data(x, dec, NULL);
        st = sf_attention_logits(model->model, &d, PyArray_DATA((PyArrayObject *)maxs),
                                 PyArray_DATA((PyArrayObject *)means), nt);
        Py_END_ALLOW_THREADS
        sf_py_model_release(model);
        if (st) sf_py_raise(st);
        else result = Py_BuildValue("(OO)", maxs, means);
    }
    Py_XDECREF(x);
    Py_XDECREF(dec);
    Py_XDECREF(maxs);
    Py_XDECREF(means);
    return result;
}

PyMethodDef sf_probe_methods[] = {
    {"sharpness", py_sharpness, METH_VARARGS, "Gaussian sharpness draws (see py_probes.c)."},
    {"ln_blowup", py_ln_blowup, METH_VARARGS, "Per-LayerNorm, per-sample max and mean of 1/std of LN inputs."},
    {"hvp", py_hvp, METH_VARARGS, "Exact Hessian-vector products (see py_probes.c)."},
    {"attention_logits", py_attention_logits, METH_VARARGS, "Per-layer, per-head max and mean |q.k|/sqrt(d_head)."},
    {NULL, NULL, 0, NULL},
};
