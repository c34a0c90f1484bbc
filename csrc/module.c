/* The sensiformer._engine extension module: build facts, threads, memory limit, and the
 * registration of the Model and Optimizer types and the training functions. */
#define SF_MODULE_MAIN
#include "py_util.h"

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

struct peak_call {
    int float64, n_threads;
    double seconds, gflops;
};

static sf_status peak_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct peak_call *c = p;
    c->gflops = sf_measure_peak_gflops(c->float64, c->n_threads, c->seconds, NULL);
    return SF_OK;
}

/* measure_peak(float64, n_threads, seconds) -> GFLOP/s */
static PyObject *py_measure_peak(PyObject *self, PyObject *args, PyObject *kw) {
    struct peak_call c = {0};
    const sf_py_arg table[] = {SF_ARG("float64", SF_ARG_BOOL, &c.float64), SF_ARG("n_threads", SF_ARG_INT, &c.n_threads),
                               SF_ARG("seconds", SF_ARG_DOUBLE, &c.seconds)};
    if (sf_py_parse("measure_peak", args, kw, SF_ARGS(table)) < 0 || sf_py_run(NULL, 0, peak_body, &c) < 0) return NULL;
    return PyFloat_FromDouble(c.gflops);
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
    {"measure_peak", SF_PY_KEYWORDS(py_measure_peak), "measure_peak(float64, n_threads, seconds) -> GFLOP/s"},
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
    for (PyMethodDef *d = sf_ops_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_probe_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_train_methods; d->ml_name; d++) all[n++] = *d;
    for (PyMethodDef *d = sf_boolean_methods; d->ml_name; d++) all[n++] = *d;
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
