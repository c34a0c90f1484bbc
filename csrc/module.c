/* The sensiformer._engine extension module: build facts, threads, memory limit, and the
 * registration of the Model and Optimizer types and the training functions. */
#define SF_MODULE_MAIN
#include "py_util.h"

PyObject *sf_py_raise(sf_status st) {
    PyObject *type = PyExc_RuntimeError;
    if (st == SF_EINVAL) type = PyExc_ValueError;
    else if (st == SF_ENOMEM) type = PyExc_MemoryError;
    else if (st == SF_ENUMERIC) type = PyExc_FloatingPointError;
    PyErr_SetString(type, sf_last_error());
    return NULL;
}

PyArrayObject *sf_py_array(PyObject *obj, int typenum, int ndim, const char *what) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a NumPy array", what);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != typenum) {
        PyArray_Descr *want = PyArray_DescrFromType(typenum);
        PyErr_Format(PyExc_TypeError, "%s must have dtype %S, got %S", what, (PyObject *)want,
                     (PyObject *)PyArray_DESCR(a));
        Py_XDECREF(want);
        return NULL;
    }
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension(s), got %d", what, ndim, PyArray_NDIM(a));
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a) || !PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous, aligned and in native byte order", what);
        return NULL;
    }
    Py_INCREF(a);
    return a;
}

sf_seq_data sf_py_seq_data(PyArrayObject *x, PyArrayObject *dec, PyArrayObject *y) {
    const sf_seq_data d = {PyArray_DATA(x), dec ? PyArray_DATA(dec) : NULL, y ? PyArray_DATA(y) : NULL,
                           (int)PyArray_DIM(x, 0), (int)PyArray_DIM(x, 1), dec ? (int)PyArray_DIM(dec, 1) : 0,
                           !y ? 0 : PyArray_NDIM(y) == 2 ? (int)PyArray_DIM(y, 1) : 1};
    return d;
}

int sf_py_token_arrays(PyObject *xo, PyObject *deco, int decoder_optional, PyArrayObject **x, PyArrayObject **dec) {
    *dec = NULL;
    if (!(*x = sf_py_array(xo, NPY_UINT8, 2, "x"))) return -1;
    if (decoder_optional && deco == Py_None) return 0;
    if (!(*dec = sf_py_array(deco, NPY_UINT8, 2, "decoder_input"))) {
        Py_CLEAR(*x);
        return -1;
    }
    if (PyArray_DIM(*dec, 0) != PyArray_DIM(*x, 0)) {
        PyErr_Format(PyExc_ValueError, "decoder_input has %zd rows for %zd inputs", (Py_ssize_t)PyArray_DIM(*dec, 0),
                     (Py_ssize_t)PyArray_DIM(*x, 0));
        Py_CLEAR(*x);
        Py_CLEAR(*dec);
        return -1;
    }
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

int sf_py_stop_hook(void *ctx) {
    sf_py_unlocked *u = ctx;
    PyEval_RestoreThread(u->saved);
    int stop = PyErr_CheckSignals() != 0;
    u->saved = PyEval_SaveThread();
    return stop;
}

/* ---- module-level functions ------------------------------------------------------------------ */

static PyObject *py_build_info(PyObject *self, PyObject *noargs) {
    const char *names[8];
    const int n = sf_cpu_paths(names, 8);
    PyObject *paths = PyTuple_New(n);
    if (!paths) return NULL;
    for (int i = 0; i < n; i++) PyTuple_SET_ITEM(paths, i, PyUnicode_FromString(names[i]));
    return Py_BuildValue("{s:O,s:s,s:i,s:N,s:d,s:i,s:s,s:i,s:L}", "openmp", sf_openmp_enabled() ? Py_True : Py_False,
                         "cpu_path", sf_cpu_path(), "vector_bits", sf_cpu_vector_bits(), "cpu_paths", paths,
                         "v4_gemm_speedup", sf_cpu_path_speedup(), "widest_vector_bits", sf_widest_vector_bits(), "build_flags", sf_build_flags(), "default_threads",
                         sf_default_threads(), "memory_limit", (long long)sf_memory_limit());
}

static PyObject *py_set_default_threads(PyObject *self, PyObject *arg) {
    int n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    sf_set_default_threads(n);
    Py_RETURN_NONE;
}

static PyObject *py_resolve_threads(PyObject *self, PyObject *arg) {
    int n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLong(sf_resolve_threads(n));
}

static PyObject *py_set_memory_limit(PyObject *self, PyObject *arg) {
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    sf_set_memory_limit(n);
    Py_RETURN_NONE;
}

static PyObject *py_measure_peak(PyObject *self, PyObject *args) {
    int dbl, nt;
    double budget;
    if (!PyArg_ParseTuple(args, "pid", &dbl, &nt, &budget)) return NULL;
    double gflops;
    Py_BEGIN_ALLOW_THREADS
    gflops = sf_measure_peak_gflops(dbl, nt, budget, NULL);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(gflops);
}

/* vocabulary() -> {list: {name: value}}: the engine's enumerations and limits (sf.h), so that Python never
 * mirrors them. */
static PyObject *py_vocabulary(PyObject *self, PyObject *noargs) {
    int n_lists;
    const sf_word_list *lists = sf_vocabulary(&n_lists);
    PyObject *out = PyDict_New();
    for (int i = 0; out && i < n_lists; i++) {
        PyObject *words = PyDict_New();
        for (int j = 0; words && j < lists[i].count; j++) {
            PyObject *value = PyLong_FromLong(lists[i].words[j].value);
            if (!value || PyDict_SetItemString(words, lists[i].words[j].name, value) < 0) Py_CLEAR(words);
            Py_XDECREF(value);
        }
        if (!words || PyDict_SetItemString(out, lists[i].name, words) < 0) Py_CLEAR(out);
        Py_XDECREF(words);
    }
    return out;
}

/* select_cpu_path(name): switch every later engine call of the process to another CPU path (private: the
 * benchmarks time paths side by side in one process; users choose with SENSIFORMER_CPU_PATH). */
static PyObject *py_select_cpu_path(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (sf_select_cpu_path(name)) return PyErr_Format(PyExc_ValueError, "%s", sf_last_error());
    return PyUnicode_FromString(sf_cpu_path());
}

static PyMethodDef module_methods[] = {
    {"vocabulary", py_vocabulary, METH_NOARGS, "vocabulary() -> {list: {name: value}}: the engine's enumerations"},
    {"select_cpu_path", py_select_cpu_path, METH_O, "select_cpu_path(name) -> the path now in use (private)"},
    {"measure_peak", py_measure_peak, METH_VARARGS, "measure_peak(float64, n_threads, seconds) -> GFLOP/s"},
    {"build_info", py_build_info, METH_NOARGS, "Facts about this build: OpenMP, CPU path, flags, threads, memory limit."},
    {"set_default_threads", py_set_default_threads, METH_O, "Default thread count (<= 0: OpenMP's default)."},
    {"resolve_threads", py_resolve_threads, METH_O, "The thread count a call with n_threads=n would use."},
    {"set_memory_limit", py_set_memory_limit, METH_O, "Largest allocation in bytes (<= 0: 80% of RAM)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef engine_module = {PyModuleDef_HEAD_INIT, "sensiformer._engine",
                                           "The sensiformer C engine (private: use the sensiformer package).", -1,
                                           NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__engine(void) {
    import_array();
    if (PyType_Ready(&SfModelType) < 0 || PyType_Ready(&SfOptimizerType) < 0) return NULL;
    /* one method table made of the module's and the training file's */
    static PyMethodDef all[64];
    int n = 0;
    for (PyMethodDef *d = module_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_train_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_boolean_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_probe_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_seq2seq_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_kernel_methods; d->ml_name; d++) all[n++] = *d;
    engine_module.m_methods = all;
    /* One CPU path for every kernel of the process, chosen before any model exists. */
    if (sf_select_cpu_path(getenv("SENSIFORMER_CPU_PATH"))) {
        PyErr_Format(PyExc_ImportError, "SENSIFORMER_CPU_PATH: %s", sf_last_error());
        return NULL;
    }
    PyObject *m = PyModule_Create(&engine_module);
    if (!m) return NULL;
    Py_INCREF(&SfModelType);
    Py_INCREF(&SfOptimizerType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&SfModelType) < 0 ||
        PyModule_AddObject(m, "Optimizer", (PyObject *)&SfOptimizerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
