/* The NumPy boundary of the Boolean analysis (boolean.c), the label-noise draw, and the options
 * of the Boolean target kinds (data.c). Argument checks here guard the engine; user-facing
 * validation with friendly messages lives in sensiformer.analysis and sensiformer.targets. */
#include "boolean.h"
#include "py_util.h"

/* Borrow a float64 truth table of 2^n entries (0 <= n <= SF_BOOLEAN_MAX_N). New reference. */
static PyArrayObject *table_arg(PyObject *obj, const char *what, int *n) {
    PyArrayObject *a = sf_py_array(obj, NPY_FLOAT64, 1, what);
    if (!a) return NULL;
    const npy_intp len = PyArray_DIM(a, 0);
    int k = 0;
    while (k <= SF_BOOLEAN_MAX_N && ((npy_intp)1 << k) < len) k++;
    if (k > SF_BOOLEAN_MAX_N || ((npy_intp)1 << k) != len) {
        PyErr_Format(PyExc_ValueError, "%s must have 2**n entries with n <= %d, got %zd", what, SF_BOOLEAN_MAX_N,
                     (Py_ssize_t)len);
        Py_DECREF(a);
        return NULL;
    }
    *n = k;
    return a;
}

/* A new float64 array of `len` entries, refused before allocation when over the memory limit. */
static PyObject *new_output(npy_intp len, int typenum, const char *what) {
    sf_status st = sf_check_budget((size_t)len * 8, what);
    if (st) return sf_py_raise(st);
    return PyArray_SimpleNew(1, &len, typenum);
}

/* fwht(a, n_threads): in place. */
static PyObject *py_fwht(PyObject *self, PyObject *args) {
    PyObject *ao;
    int nt, n;
    if (!PyArg_ParseTuple(args, "Oi", &ao, &nt)) return NULL;
    PyArrayObject *a = table_arg(ao, "a", &n);
    if (!a) return NULL;
    if (!PyArray_ISWRITEABLE(a)) {
        Py_DECREF(a);
        return PyErr_Format(PyExc_ValueError, "a must be writeable (the transform is in place)");
    }
    sf_status st;
    Py_BEGIN_ALLOW_THREADS
    st = sf_fwht(PyArray_DATA(a), n, nt);
    Py_END_ALLOW_THREADS
    Py_DECREF(a);
    if (st) return sf_py_raise(st);
    Py_RETURN_NONE;
}

/* fourier(values, map01, n_threads) -> coefficients */
static PyObject *py_fourier(PyObject *self, PyObject *args) {
    PyObject *vo;
    int map01, nt, n;
    if (!PyArg_ParseTuple(args, "Opi", &vo, &map01, &nt)) return NULL;
    PyArrayObject *v = table_arg(vo, "truth_table", &n);
    if (!v) return NULL;
    PyObject *out = new_output(PyArray_DIM(v, 0), NPY_FLOAT64, "the Fourier coefficients");
    if (out) {
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        st = sf_fourier(PyArray_DATA((PyArrayObject *)out), PyArray_DATA(v), n, map01, nt);
        Py_END_ALLOW_THREADS
        if (st) {
            Py_CLEAR(out);
            sf_py_raise(st);
        }
    }
    Py_DECREF(v);
    return out;
}

/* Shared by spectrum and degree_stats: (weights, maxabs), each n + 1 long. */
static PyObject *stats_result(PyArrayObject *v, int n, int map01, int from_coefficients, int nt) {
    npy_intp K = n + 1;
    PyObject *w = PyArray_SimpleNew(1, &K, NPY_FLOAT64), *m = PyArray_SimpleNew(1, &K, NPY_FLOAT64);
    PyObject *result = NULL;
    if (w && m) {
        double *wd = PyArray_DATA((PyArrayObject *)w), *md = PyArray_DATA((PyArrayObject *)m);
        const double *vd = PyArray_DATA(v);
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        st = from_coefficients ? sf_degree_stats(wd, md, vd, n, nt) : sf_spectrum(wd, md, vd, n, map01, nt);
        Py_END_ALLOW_THREADS
        if (st) sf_py_raise(st);
        else result = PyTuple_Pack(2, w, m);
    }
    Py_XDECREF(w);
    Py_XDECREF(m);
    return result;
}

/* spectrum(values, map01, n_threads) -> (weights, maxabs) by degree */
static PyObject *py_spectrum(PyObject *self, PyObject *args) {
    PyObject *vo;
    int map01, nt, n;
    if (!PyArg_ParseTuple(args, "Opi", &vo, &map01, &nt)) return NULL;
    PyArrayObject *v = table_arg(vo, "truth_table", &n);
    if (!v) return NULL;
    PyObject *result = stats_result(v, n, map01, 0, nt);
    Py_DECREF(v);
    return result;
}

/* degree_stats(coefficients, n_threads) -> (weights, maxabs) by degree */
static PyObject *py_degree_stats(PyObject *self, PyObject *args) {
    PyObject *co;
    int nt, n;
    if (!PyArg_ParseTuple(args, "Oi", &co, &nt)) return NULL;
    PyArrayObject *c = table_arg(co, "coefficients", &n);
    if (!c) return NULL;
    PyObject *result = stats_result(c, n, 0, 1, nt);
    Py_DECREF(c);
    return result;
}

/* influences(values, n_threads) -> (n,) raw E[(v(x) - v(x xor e_j))^2] */
static PyObject *py_influences(PyObject *self, PyObject *args) {
    PyObject *vo;
    int nt, n;
    if (!PyArg_ParseTuple(args, "Oi", &vo, &nt)) return NULL;
    PyArrayObject *v = table_arg(vo, "truth_table", &n);
    if (!v) return NULL;
    npy_intp len = n;
    PyObject *out = PyArray_SimpleNew(1, &len, NPY_FLOAT64);
    if (out) {
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        st = sf_influences(PyArray_DATA((PyArrayObject *)out), PyArray_DATA(v), n, nt);
        Py_END_ALLOW_THREADS
        if (st) {
            Py_CLEAR(out);
            sf_py_raise(st);
        }
    }
    Py_DECREF(v);
    return out;
}

/* point_sensitivity(values, n_threads) -> (2^n,) raw sum_j (v(x) - v(x xor e_j))^2 */
static PyObject *py_point_sensitivity(PyObject *self, PyObject *args) {
    PyObject *vo;
    int nt, n;
    if (!PyArg_ParseTuple(args, "Oi", &vo, &nt)) return NULL;
    PyArrayObject *v = table_arg(vo, "truth_table", &n);
    if (!v) return NULL;
    PyObject *out = new_output(PyArray_DIM(v, 0), NPY_FLOAT64, "the per-input sensitivities");
    if (out) {
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        st = sf_point_sensitivity(PyArray_DATA((PyArrayObject *)out), PyArray_DATA(v), n, nt);
        Py_END_ALLOW_THREADS
        if (st) {
            Py_CLEAR(out);
            sf_py_raise(st);
        }
    }
    Py_DECREF(v);
    return out;
}

/* sensitivity_profile(values, n_threads) -> int64 (n + 1,) counts */
static PyObject *py_sensitivity_profile(PyObject *self, PyObject *args) {
    PyObject *vo;
    int nt, n;
    if (!PyArg_ParseTuple(args, "Oi", &vo, &nt)) return NULL;
    PyArrayObject *v = table_arg(vo, "truth_table", &n);
    if (!v) return NULL;
    npy_intp K = n + 1;
    PyObject *out = PyArray_SimpleNew(1, &K, NPY_INT64);
    if (out) {
        sf_status st;
        Py_BEGIN_ALLOW_THREADS
        st = sf_sensitivity_profile(PyArray_DATA((PyArrayObject *)out), PyArray_DATA(v), n, nt);
        Py_END_ALLOW_THREADS
        if (st) {
            Py_CLEAR(out);
            sf_py_raise(st);
        }
    }
    Py_DECREF(v);
    return out;
}

/* label_noise(seed, step, B, p) -> uint8 (B,): rows whose label the training stream flips */
static PyObject *py_label_noise(PyObject *self, PyObject *args) {
    unsigned long long seed;
    long long step;
    Py_ssize_t B;
    double p;
    if (!PyArg_ParseTuple(args, "KLnd", &seed, &step, &B, &p)) return NULL;
    if (B < 0) return PyErr_Format(PyExc_ValueError, "the number of rows must be >= 0");
    npy_intp len = B;
    PyObject *out = PyArray_SimpleNew(1, &len, NPY_UINT8);
    if (!out) return NULL;
    sf_status st = sf_label_noise(PyArray_DATA((PyArrayObject *)out), seed, step, B, p);
    if (st) {
        Py_DECREF(out);
        return sf_py_raise(st);
    }
    return out;
}

/* ---- target options ------------------------------------------------------------------------- */

void sf_py_target_refs_release(sf_py_target_refs *r) {
    Py_CLEAR(r->bits);
    Py_CLEAR(r->set_offsets);
    Py_CLEAR(r->coefficients);
    Py_CLEAR(r->table);
}

/* One optional array entry of the options dict. */
static int option_array(PyObject *options, const char *key, int typenum, PyArrayObject **out) {
    PyObject *o = PyDict_GetItemString(options, key); /* borrowed */
    if (!o) return 0;
    return (*out = sf_py_array(o, typenum, 1, key)) ? 0 : -1;
}

int sf_py_target_options(PyObject *options, sf_target *t, sf_py_target_refs *r) {
    static const char *known[] = {"noise", "bits", "table", "set_offsets", "coefficients", "sign_output", "prefix",
                                  NULL};
    if (!PyDict_Check(options)) {
        PyErr_SetString(PyExc_TypeError, "target options must be a dict");
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(options, &pos, &key, &value)) {
        int ok = 0;
        for (const char **k = known; *k && !ok; k++) ok = PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, *k) == 0;
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "unknown target option %R", key);
            return -1;
        }
    }
    PyObject *noise = PyDict_GetItemString(options, "noise"), *sign = PyDict_GetItemString(options, "sign_output");
    if (noise && ((t->noise = PyFloat_AsDouble(noise)) == -1.0 && PyErr_Occurred())) return -1;
    if (sign && (t->sign_output = PyObject_IsTrue(sign)) < 0) return -1;
    PyObject *prefix = PyDict_GetItemString(options, "prefix");
    if (prefix && (t->prefix = PyObject_IsTrue(prefix)) < 0) return -1;
    if (option_array(options, "bits", NPY_INT32, &r->bits) < 0 ||
        option_array(options, "set_offsets", NPY_INT64, &r->set_offsets) < 0 ||
        option_array(options, "coefficients", NPY_FLOAT64, &r->coefficients) < 0 ||
        option_array(options, "table", NPY_FLOAT64, &r->table) < 0)
        return -1;
    if (r->bits) t->bits = PyArray_DATA(r->bits), t->n_bits = PyArray_DIM(r->bits, 0);
    if (r->table) {
        if (t->table) {
            PyErr_SetString(PyExc_ValueError, "a target has either a table or a table option, not both");
            return -1;
        }
        if (t->kind != SF_TARGET_JUNTA || t->n_bits > 30 || PyArray_DIM(r->table, 0) != ((npy_intp)1 << t->n_bits)) {
            PyErr_SetString(PyExc_ValueError, "the table option is a junta's 2**len(bits) values");
            return -1;
        }
        t->table = PyArray_DATA(r->table);
    }
    if (!r->set_offsets != !r->coefficients) {
        PyErr_SetString(PyExc_ValueError, "a Fourier target needs both set_offsets and coefficients");
        return -1;
    }
    if (r->coefficients) {
        if (PyArray_DIM(r->set_offsets, 0) != PyArray_DIM(r->coefficients, 0) + 1) {
            PyErr_SetString(PyExc_ValueError, "set_offsets must have one entry more than coefficients");
            return -1;
        }
        t->set_offsets = PyArray_DATA(r->set_offsets);
        t->coefficients = PyArray_DATA(r->coefficients);
        t->n_terms = PyArray_DIM(r->coefficients, 0);
    }
    return 0;
}

PyMethodDef sf_boolean_methods[] = {
    {"fwht", py_fwht, METH_VARARGS, "fwht(a, n_threads): in-place unnormalised Walsh-Hadamard transform"},
    {"fourier", py_fourier, METH_VARARGS, "fourier(values, map01, n_threads) -> coefficients"},
    {"spectrum", py_spectrum, METH_VARARGS, "spectrum(values, map01, n_threads) -> (weights, maxabs) by degree"},
    {"degree_stats", py_degree_stats, METH_VARARGS, "degree_stats(coefficients, n_threads) -> (weights, maxabs)"},
    {"influences", py_influences, METH_VARARGS, "influences(values, n_threads) -> raw squared flip differences"},
    {"point_sensitivity", py_point_sensitivity, METH_VARARGS, "point_sensitivity(values, n_threads) -> (2^n,)"},
    {"sensitivity_profile", py_sensitivity_profile, METH_VARARGS, "sensitivity_profile(values, n_threads) -> counts"},
    {"label_noise", py_label_noise, METH_VARARGS, "label_noise(seed, step, B, p) -> uint8 flips of the training stream"},
    {NULL, NULL, 0, NULL},
};
