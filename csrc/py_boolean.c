/* The NumPy boundary of the Boolean analysis (boolean.c), the label-noise draw, and the options
 * of the Boolean target kinds (data.c). Argument checks here guard the engine; user-facing
 * validation with friendly messages lives in sensiformer.analysis and sensiformer.targets. */
#include "boolean.h"
#include "py_util.h"

/* The transforms and measures of a truth table (boolean.c), one Python function each, read and run
 * by one routine: the table of operations says what each one reads and returns. */
typedef enum { OP_FWHT, OP_FOURIER, OP_SPECTRUM, OP_DEGREE_STATS, OP_INFLUENCES, OP_POINT_SENSITIVITY, OP_PROFILE } op_kind;
enum { LEN_ALL, LEN_DEGREES, LEN_BITS }; /* an output's length: 2^n, n + 1 or n */

static const struct {
    const char *name, *input; /* the function and its table argument */
    int map01;                /* reads the map01 flag */
    int outputs, length, typenum;
    const char *what; /* a 2^n output, counted against the memory limit before it is made */
} OPS[] = {
    [OP_FWHT] = {"fwht", "a", 0, 0, 0, 0, NULL},
    [OP_FOURIER] = {"fourier", "truth_table", 1, 1, LEN_ALL, NPY_FLOAT64, "the Fourier coefficients"},
    [OP_SPECTRUM] = {"spectrum", "truth_table", 1, 2, LEN_DEGREES, NPY_FLOAT64, NULL},
    [OP_DEGREE_STATS] = {"degree_stats", "coefficients", 0, 2, LEN_DEGREES, NPY_FLOAT64, NULL},
    [OP_INFLUENCES] = {"influences", "truth_table", 0, 1, LEN_BITS, NPY_FLOAT64, NULL},
    [OP_POINT_SENSITIVITY] = {"point_sensitivity", "truth_table", 0, 1, LEN_ALL, NPY_FLOAT64,
                              "the per-input sensitivities"},
    [OP_PROFILE] = {"sensitivity_profile", "truth_table", 0, 1, LEN_DEGREES, NPY_INT64, NULL},
};

struct boolean_call {
    op_kind op;
    double *table;
    int n, map01, n_threads;
    void *out[2];
};

static sf_status boolean_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct boolean_call *c = p;
    switch (c->op) {
    case OP_FWHT: return sf_fwht(c->table, c->n, c->n_threads);
    case OP_FOURIER: return sf_fourier(c->out[0], c->table, c->n, c->map01, c->n_threads);
    case OP_SPECTRUM: return sf_spectrum(c->out[0], c->out[1], c->table, c->n, c->map01, c->n_threads);
    case OP_DEGREE_STATS: return sf_degree_stats(c->out[0], c->out[1], c->table, c->n, c->n_threads);
    case OP_INFLUENCES: return sf_influences(c->out[0], c->table, c->n, c->n_threads);
    case OP_POINT_SENSITIVITY: return sf_point_sensitivity(c->out[0], c->table, c->n, c->n_threads);
    case OP_PROFILE: return sf_sensitivity_profile(c->out[0], c->table, c->n, c->n_threads);
    }
    return SF_EINVAL;
}

/* n with len == 2^n, 0 <= n <= SF_BOOLEAN_MAX_N; -1 with an exception naming the table otherwise. */
static int table_bits(PyArrayObject *a, const char *what) {
    const npy_intp len = PyArray_DIM(a, 0);
    int k = 0;
    while (k <= SF_BOOLEAN_MAX_N && ((npy_intp)1 << k) < len) k++;
    if (k > SF_BOOLEAN_MAX_N || ((npy_intp)1 << k) != len) {
        PyErr_Format(PyExc_ValueError, "%s must have 2**n entries with n <= %d, got %zd", what, SF_BOOLEAN_MAX_N,
                     (Py_ssize_t)len);
        return -1;
    }
    return k;
}

/* OPS[op](table float64 (2^n,), [map01,] n_threads): fwht in place (None); else its outputs */
static PyObject *run_op(op_kind op, PyObject *args, PyObject *kw) {
    PyArrayObject *table;
    struct boolean_call c = {.op = op};
    const sf_py_arg spec[] = {{OPS[op].input, SF_ARG_ARRAY, &table, 0, NPY_FLOAT64, 1, op == OP_FWHT},
                              SF_ARG("n_threads", SF_ARG_INT, &c.n_threads), SF_ARG("map01", SF_ARG_BOOL, &c.map01)};
    if (sf_py_parse(OPS[op].name, args, kw, spec, OPS[op].map01 ? 3 : 2) < 0 ||
        (c.n = table_bits(table, OPS[op].input)) < 0)
        return NULL;
    c.table = PyArray_DATA(table);
    npy_intp len = OPS[op].length == LEN_ALL ? (npy_intp)1 << c.n : OPS[op].length == LEN_DEGREES ? c.n + 1 : c.n;
    if (OPS[op].what) {
        sf_status st = sf_check_budget((size_t)len * 8, OPS[op].what);
        if (st) return sf_py_raise(st);
    }
    PyObject *out[2] = {NULL, NULL}, *result = NULL;
    for (int i = 0; i < OPS[op].outputs; i++) {
        if (!(out[i] = PyArray_SimpleNew(1, &len, OPS[op].typenum))) goto done;
        c.out[i] = PyArray_DATA((PyArrayObject *)out[i]);
    }
    if (sf_py_run(NULL, 0, boolean_body, &c) < 0) goto done;
    result = OPS[op].outputs == 0 ? Py_NewRef(Py_None) : OPS[op].outputs == 1 ? Py_NewRef(out[0])
                                                                              : PyTuple_Pack(2, out[0], out[1]);
done:
    Py_XDECREF(out[0]);
    Py_XDECREF(out[1]);
    return result;
}

#define BOOLEAN_FUNCTION(fn, op)                                                                                      \
    static PyObject *py_##fn(PyObject *self, PyObject *args, PyObject *kw) { return run_op(op, args, kw); }
BOOLEAN_FUNCTION(fwht, OP_FWHT)
BOOLEAN_FUNCTION(fourier, OP_FOURIER)
BOOLEAN_FUNCTION(spectrum, OP_SPECTRUM)
BOOLEAN_FUNCTION(degree_stats, OP_DEGREE_STATS)
BOOLEAN_FUNCTION(influences, OP_INFLUENCES)
BOOLEAN_FUNCTION(point_sensitivity, OP_POINT_SENSITIVITY)
BOOLEAN_FUNCTION(sensitivity_profile, OP_PROFILE)

/* label_noise(seed, step, rows, p) -> uint8 (rows,): rows whose label the training stream flips */
static PyObject *py_label_noise(PyObject *self, PyObject *args, PyObject *kw) {
    uint64_t seed;
    int64_t step, rows;
    double p;
    const sf_py_arg table[] = {SF_ARG("seed", SF_ARG_UINT64, &seed), SF_ARG("step", SF_ARG_INT64, &step),
                               SF_ARG("rows", SF_ARG_INT64, &rows), SF_ARG("p", SF_ARG_DOUBLE, &p)};
    if (sf_py_parse("label_noise", args, kw, SF_ARGS(table)) < 0) return NULL;
    if (rows < 0) return PyErr_Format(PyExc_ValueError, "rows must be >= 0");
    npy_intp len = rows;
    PyObject *out = PyArray_SimpleNew(1, &len, NPY_UINT8);
    if (!out) return NULL;
    sf_status st = sf_label_noise(PyArray_DATA((PyArrayObject *)out), seed, step, rows, p);
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
    {"fwht", SF_PY_KEYWORDS(py_fwht), "fwht(*, a, n_threads): in-place unnormalised Walsh-Hadamard transform"},
    {"fourier", SF_PY_KEYWORDS(py_fourier), "fourier(*, truth_table, map01, n_threads) -> coefficients"},
    {"spectrum", SF_PY_KEYWORDS(py_spectrum),
     "spectrum(*, truth_table, map01, n_threads) -> (weights, maxabs) by degree"},
    {"degree_stats", SF_PY_KEYWORDS(py_degree_stats), "degree_stats(*, coefficients, n_threads) -> (weights, maxabs)"},
    {"influences", SF_PY_KEYWORDS(py_influences),
     "influences(*, truth_table, n_threads) -> raw squared flip differences"},
    {"point_sensitivity", SF_PY_KEYWORDS(py_point_sensitivity),
     "point_sensitivity(*, truth_table, n_threads) -> (2^n,)"},
    {"sensitivity_profile", SF_PY_KEYWORDS(py_sensitivity_profile),
     "sensitivity_profile(*, truth_table, n_threads) -> counts"},
    {"label_noise", SF_PY_KEYWORDS(py_label_noise),
     "label_noise(*, seed, step, rows, p) -> uint8 flips of the training stream"},
    {NULL, NULL, 0, NULL},
};
