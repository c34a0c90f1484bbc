/* Kernel test hooks (private): run one engine kernel on a chosen CPU path, so the tests can
 * compare every compiled path with a NumPy reference. */
#include "py_util.h"

/* kernel_gemm(path, a, b, c, bias, accumulate, transpose_a, transpose_b, n_threads):
 * c (+)= op(a) op(b) (+ bias) */
static PyObject *py_kernel_gemm(PyObject *self, PyObject *args) {
    const char *path;
    PyObject *a_obj, *b_obj, *c_obj, *bias_obj;
    int accumulate, transpose_a, transpose_b, n_threads;
    if (!PyArg_ParseTuple(args, "sOOOOpppi", &path, &a_obj, &b_obj, &c_obj, &bias_obj, &accumulate, &transpose_a,
                          &transpose_b, &n_threads))
        return NULL;
    if (!PyArray_Check(c_obj)) return PyErr_Format(PyExc_TypeError, "c must be a NumPy array");
    const int typenum = PyArray_TYPE((PyArrayObject *)c_obj);
    if (typenum != NPY_FLOAT32 && typenum != NPY_FLOAT64)
        return PyErr_Format(PyExc_TypeError, "c must be float32 or float64");
    PyArrayObject *a = sf_py_array(a_obj, typenum, 2, "a"), *b = a ? sf_py_array(b_obj, typenum, 2, "b") : NULL;
    PyArrayObject *c = b ? sf_py_array(c_obj, typenum, 2, "c") : NULL;
    PyArrayObject *bias = c && bias_obj != Py_None ? sf_py_array(bias_obj, typenum, 1, "bias") : NULL;
    PyObject *result = NULL;
    if (!c || (bias_obj != Py_None && !bias)) goto done;
    const npy_intp M = PyArray_DIM(c, 0), N = PyArray_DIM(c, 1), K = PyArray_DIM(b, transpose_b ? 1 : 0);
    const npy_intp am = PyArray_DIM(a, transpose_a ? 1 : 0), ak = PyArray_DIM(a, transpose_a ? 0 : 1);
    if (am != M || ak != K || PyArray_DIM(b, transpose_b ? 0 : 1) != N || (bias && PyArray_DIM(bias, 0) != N) ||
        !PyArray_ISWRITEABLE(c)) {
        PyErr_SetString(PyExc_ValueError, "kernel_gemm: shapes must be a (M,K) (or (K,M) transposed), b (K,N) (or (N,K)), "
                                          "writeable c (M,N), bias (N,)");
        goto done;
    }
    sf_status st;
    Py_BEGIN_ALLOW_THREADS
    st = sf_kernel_gemm(path, typenum == NPY_FLOAT64 ? SF_F64 : SF_F32, M, N, K, PyArray_DATA(a), transpose_a,
                        PyArray_DATA(b), transpose_b, PyArray_DATA(c), bias ? PyArray_DATA(bias) : NULL, accumulate, n_threads);
    Py_END_ALLOW_THREADS
    if (st) sf_py_raise(st);
    else result = Py_NewRef(Py_None);
done:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    Py_XDECREF(bias);
    return result;
}

PyMethodDef sf_kernel_methods[] = {
    {"kernel_gemm", py_kernel_gemm, METH_VARARGS,
     "kernel_gemm(path, a, b, c, bias, accumulate, transpose_a, transpose_b, n_threads): c (+)= op(a) op(b) "
     "(+ bias) on a CPU path"},
    {NULL, NULL, 0, NULL},
};
