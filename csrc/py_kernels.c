/* Kernel test hooks (private): run one engine kernel on a chosen CPU path, so the tests can
 * compare every compiled path with a NumPy reference. */
#include "py_util.h"

struct gemm_call {
    const char *path;
    sf_dtype dtype;
    int64_t M, N, K;
    const void *a, *b, *bias;
    void *c;
    int transpose_a, transpose_b, accumulate, n_threads;
};

static sf_status gemm_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct gemm_call *g = p;
    return sf_kernel_gemm(g->path, g->dtype, g->M, g->N, g->K, g->a, g->transpose_a, g->b, g->transpose_b, g->c,
                          g->bias, g->accumulate, g->n_threads);
}

/* kernel_gemm(path, a, b, c, bias=None, accumulate, transpose_a, transpose_b, n_threads):
 * c (+)= op(a) op(b) (+ bias), all of c's float type */
static PyObject *py_kernel_gemm(PyObject *self, PyObject *args, PyObject *kw) {
    PyArrayObject *a, *b, *c, *bias = NULL;
    struct gemm_call g = {0};
    const sf_py_arg table[] = {
        SF_ARG("path", SF_ARG_STRING, &g.path), SF_ARRAY("a", &a, SF_PY_ANY_REAL, 2), SF_ARRAY("b", &b, SF_PY_ANY_REAL, 2),
        SF_ARRAY_OUT("c", &c, SF_PY_ANY_REAL, 2), SF_ARRAY_OPTIONAL("bias", &bias, SF_PY_ANY_REAL, 1),
        SF_ARG("accumulate", SF_ARG_BOOL, &g.accumulate), SF_ARG("transpose_a", SF_ARG_BOOL, &g.transpose_a),
        SF_ARG("transpose_b", SF_ARG_BOOL, &g.transpose_b), SF_ARG("n_threads", SF_ARG_INT, &g.n_threads)};
    if (sf_py_parse("kernel_gemm", args, kw, SF_ARGS(table)) < 0) return NULL;
    const int typenum = PyArray_TYPE(c);
    PyArrayObject *operands[] = {a, b, bias};
    const char *names[] = {"a", "b", "bias"};
    for (int i = 0; i < 3; i++)
        if (operands[i] && PyArray_TYPE(operands[i]) != typenum)
            return PyErr_Format(PyExc_TypeError, "%s must have dtype %S (c's), got %S", names[i],
                                (PyObject *)PyArray_DESCR(c), (PyObject *)PyArray_DESCR(operands[i]));
    g.M = PyArray_DIM(c, 0), g.N = PyArray_DIM(c, 1), g.K = PyArray_DIM(b, g.transpose_b ? 1 : 0);
    if (PyArray_DIM(a, g.transpose_a ? 1 : 0) != g.M || PyArray_DIM(a, g.transpose_a ? 0 : 1) != g.K ||
        PyArray_DIM(b, g.transpose_b ? 0 : 1) != g.N || (bias && PyArray_DIM(bias, 0) != g.N))
        return PyErr_Format(PyExc_ValueError, "kernel_gemm: shapes must be a (M,K) (or (K,M) transposed), b (K,N) "
                                              "(or (N,K)), c (M,N), bias (N,)");
    g.dtype = typenum == NPY_FLOAT64 ? SF_F64 : SF_F32;
    g.a = PyArray_DATA(a), g.b = PyArray_DATA(b), g.c = PyArray_DATA(c), g.bias = bias ? PyArray_DATA(bias) : NULL;
    if (sf_py_run(NULL, 0, gemm_body, &g) < 0) return NULL;
    Py_RETURN_NONE;
}

PyMethodDef sf_kernel_methods[] = {
    {"kernel_gemm", SF_PY_KEYWORDS(py_kernel_gemm),
     "kernel_gemm(*, path, a, b, c, bias=None, accumulate, transpose_a, transpose_b, n_threads): c (+)= op(a) op(b) "
     "(+ bias) on a CPU path"},
    {NULL, NULL, 0, NULL},
};
