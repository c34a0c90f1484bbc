/* The one way a function of sensiformer._engine reads its arguments (keywords, by table) and
 * enters the engine (GIL released, stop hook armed, status turned into an exception). */
#include "py_util.h"

#include <string.h>

PyObject *sf_py_raise(sf_status st) {
    PyObject *type = PyExc_RuntimeError;
    if (st == SF_EINVAL) type = PyExc_ValueError;
    else if (st == SF_ENOMEM) type = PyExc_MemoryError;
    else if (st == SF_ENUMERIC) type = PyExc_FloatingPointError;
    PyErr_SetString(type, sf_last_error());
    return NULL;
}

/* ---- reading arguments ---------------------------------------------------------------------- */

static int read_array(PyObject *obj, const sf_py_arg *a, const SfModelObject *model, PyArrayObject **dest) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a NumPy array", a->name);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    const int type = PyArray_TYPE(arr);
    int want = a->dtype;
    if (want == SF_PY_MODEL_REAL) want = sf_py_typenum(sf_model_config(model->model)->dtype);
    if (want == SF_PY_ANY_REAL ? type != NPY_FLOAT32 && type != NPY_FLOAT64 : type != want) {
        if (want == SF_PY_ANY_REAL) {
            PyErr_Format(PyExc_TypeError, "%s must have dtype float32 or float64, got %S", a->name,
                         (PyObject *)PyArray_DESCR(arr));
        } else {
            PyArray_Descr *d = PyArray_DescrFromType(want);
            PyErr_Format(PyExc_TypeError, "%s must have dtype %S, got %S", a->name, (PyObject *)d,
                         (PyObject *)PyArray_DESCR(arr));
            Py_XDECREF(d);
        }
        return -1;
    }
    if (a->ndim && PyArray_NDIM(arr) != a->ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension(s), got %d", a->name, a->ndim, PyArray_NDIM(arr));
        return -1;
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr) || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous, aligned and in native byte order", a->name);
        return -1;
    }
    if (a->writable && !PyArray_ISWRITEABLE(arr)) {
        PyErr_Format(PyExc_ValueError, "%s must be writeable (the engine writes into it)", a->name);
        return -1;
    }
    *dest = arr;
    return 0;
}

PyArrayObject *sf_py_array(PyObject *obj, int typenum, int ndim, const char *what) {
    const sf_py_arg a = {what, SF_ARG_ARRAY, NULL, 0, typenum, ndim, 0};
    PyArrayObject *arr;
    if (read_array(obj, &a, NULL, &arr) < 0) return NULL;
    return (PyArrayObject *)Py_NewRef(arr);
}

static int read_integer(PyObject *obj, const char *name, long long lo, long long hi, long long *out) {
    if (!PyLong_Check(obj)) { /* bools are ints; floats are refused rather than truncated */
        PyErr_Format(PyExc_TypeError, "%s must be an integer, got %R", name, obj);
        return -1;
    }
    int overflow;
    const long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be in [%lld, %lld], got %R", name, lo, hi, obj);
        return -1;
    }
    *out = v;
    return 0;
}

static int read_arg(PyObject *obj, const sf_py_arg *a, SfModelObject **model) {
    long long v;
    switch (a->kind) {
    case SF_ARG_INT:
        if (read_integer(obj, a->name, INT_MIN, INT_MAX, &v) < 0) return -1;
        *(int *)a->dest = (int)v;
        return 0;
    case SF_ARG_INT64:
        if (read_integer(obj, a->name, INT64_MIN, INT64_MAX, &v) < 0) return -1;
        *(int64_t *)a->dest = v;
        return 0;
    case SF_ARG_UINT64: {
        if (!PyLong_Check(obj)) {
            PyErr_Format(PyExc_TypeError, "%s must be an integer, got %R", a->name, obj);
            return -1;
        }
        const unsigned long long u = PyLong_AsUnsignedLongLong(obj);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError, "%s must be in [0, 2**64), got %R", a->name, obj);
            return -1;
        }
        *(uint64_t *)a->dest = u;
        return 0;
    }
    case SF_ARG_DOUBLE: {
        const double d = PyFloat_AsDouble(obj);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "%s must be a number, got %R", a->name, obj);
            return -1;
        }
        *(double *)a->dest = d;
        return 0;
    }
    case SF_ARG_BOOL: {
        const int b = PyObject_IsTrue(obj);
        if (b < 0) return -1;
        *(int *)a->dest = b;
        return 0;
    }
    case SF_ARG_STRING: {
        const char *s = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
        if (!s) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s must be a string, got %R", a->name, obj);
            return -1;
        }
        *(const char **)a->dest = s;
        return 0;
    }
    case SF_ARG_OBJECT:
        *(PyObject **)a->dest = obj;
        return 0;
    case SF_ARG_MODEL:
        if (!PyObject_TypeCheck(obj, &SfModelType)) {
            PyErr_Format(PyExc_TypeError, "%s must be an engine Model, got %R", a->name, obj);
            return -1;
        }
        if (sf_py_model_ready((SfModelObject *)obj) < 0) return -1;
        *(SfModelObject **)a->dest = *model = (SfModelObject *)obj;
        return 0;
    case SF_ARG_OPTIMIZER:
        if (!PyObject_TypeCheck(obj, &SfOptimizerType)) {
            PyErr_Format(PyExc_TypeError, "%s must be an engine Optimizer, got %R", a->name, obj);
            return -1;
        }
        if (sf_py_optimizer_ready((SfOptimizerObject *)obj) < 0) return -1;
        *(SfOptimizerObject **)a->dest = (SfOptimizerObject *)obj;
        return 0;
    case SF_ARG_ARRAY:
        if (a->dtype == SF_PY_MODEL_REAL && !*model) { /* a table-order mistake, not the caller's */
            PyErr_Format(PyExc_SystemError, "%s: the model must come before the arrays of its dtype", a->name);
            return -1;
        }
        return read_array(obj, a, *model, (PyArrayObject **)a->dest);
    }
    PyErr_SetString(PyExc_SystemError, "unknown argument kind");
    return -1;
}

int sf_py_parse(const char *fn, PyObject *args, PyObject *kw, const sf_py_arg *table, int n) {
    if (args && PyTuple_GET_SIZE(args)) {
        PyErr_Format(PyExc_TypeError, "%s() takes keyword arguments only", fn);
        return -1;
    }
    Py_ssize_t given = kw ? PyDict_GET_SIZE(kw) : 0, used = 0;
    SfModelObject *model = NULL;
    for (int i = 0; i < n; i++) {
        PyObject *obj = kw ? PyDict_GetItemString(kw, table[i].name) : NULL; /* borrowed */
        if (obj) used++;
        if (!obj || (obj == Py_None && table[i].optional)) {
            if (table[i].optional) continue;
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, table[i].name);
            return -1;
        }
        if (read_arg(obj, &table[i], &model) < 0) return -1;
    }
    if (used == given) return 0;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kw, &pos, &key, &value)) {
        int known = 0;
        for (int i = 0; i < n && !known; i++)
            known = PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, table[i].name) == 0;
        if (!known) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fn, key);
            return -1;
        }
    }
    return 0;
}

/* ---- entering the engine -------------------------------------------------------------------- */

int sf_py_stop_hook(void *ctx) {
    sf_py_unlocked *u = ctx;
    PyEval_RestoreThread(u->saved);
    const int stop = PyErr_CheckSignals() != 0;
    u->saved = PyEval_SaveThread();
    return stop;
}

int sf_py_run(SfModelObject *model, int flags, sf_py_body body, void *call) {
    if (model && ((flags & SF_PY_WAIT) ? sf_py_model_acquire_waiting(model) : sf_py_model_acquire(model)) < 0)
        return -1;
    sf_py_unlocked u = {PyEval_SaveThread()};
    const sf_status st = body(call, sf_py_stop_hook, &u);
    PyEval_RestoreThread(u.saved);
    if (model) sf_py_model_release(model);
    if (st == SF_OK) return 0;
    if ((flags & SF_PY_REPORT) && st != SF_EINVAL && st != SF_ENOMEM) return (int)st;
    if (!(st == SF_EINTR && PyErr_Occurred())) sf_py_raise(st); /* else: the signal handler's exception */
    return -1;
}

/* ---- data and outputs ------------------------------------------------------------------------- */

int sf_py_seq_data(PyArrayObject *x, PyArrayObject *dec, PyArrayObject *y, sf_seq_data *d) {
    const npy_intp rows = PyArray_DIM(x, 0);
    if (dec && PyArray_DIM(dec, 0) != rows) {
        PyErr_Format(PyExc_ValueError, "decoder_input has %zd rows for %zd inputs", (Py_ssize_t)PyArray_DIM(dec, 0),
                     (Py_ssize_t)rows);
        return -1;
    }
    if (y && PyArray_NDIM(y) != (dec ? 2 : 1)) {
        PyErr_Format(PyExc_ValueError, "y must have %d dimension(s) %s, got %d", dec ? 2 : 1,
                     dec ? "(rows, L) with decoder inputs" : "(rows,)", PyArray_NDIM(y));
        return -1;
    }
    if (y && PyArray_DIM(y, 0) != rows) {
        PyErr_Format(PyExc_ValueError, "y has %zd rows for %zd inputs", (Py_ssize_t)PyArray_DIM(y, 0),
                     (Py_ssize_t)rows);
        return -1;
    }
    if (rows > INT_MAX || PyArray_DIM(x, 1) > INT_MAX || (dec && PyArray_DIM(dec, 1) > INT_MAX) ||
        (y && dec && PyArray_DIM(y, 1) > INT_MAX)) {
        PyErr_SetString(PyExc_ValueError, "x, decoder_input or y is too large for one engine call");
        return -1;
    }
    *d = (sf_seq_data){PyArray_DATA(x), dec ? PyArray_DATA(dec) : NULL, y ? PyArray_DATA(y) : NULL,
                       (int)rows, (int)PyArray_DIM(x, 1), dec ? (int)PyArray_DIM(dec, 1) : 0,
                       !y ? 0 : dec ? (int)PyArray_DIM(y, 1) : 1};
    return 0;
}

PyObject *sf_py_view(PyObject *owner, void *data, int ndim, npy_intp *shape, int typenum, int writeable) {
    PyObject *arr = PyArray_New(&PyArray_Type, ndim, shape, typenum, NULL, data, 0,
                                writeable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, NULL);
    if (!arr) return NULL;
    Py_INCREF(owner);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, owner) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}
