/* Helpers shared by the CPython/NumPy boundary files (py_*.c, module.c). Nothing numeric. */
#ifndef SF_PY_UTIL_H
#define SF_PY_UTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL sensiformer_ARRAY_API
#ifndef SF_MODULE_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "engine.h"

/* Raise the Python exception matching an engine status (message from sf_last_error). */
PyObject *sf_py_raise(sf_status st);

/* Borrow `obj` as a C-contiguous, aligned array of exactly `typenum` and `ndim` dimensions;
 * anything else raises TypeError/ValueError naming `what`. Returns a new reference. */
PyArrayObject *sf_py_array(PyObject *obj, int typenum, int ndim, const char *what);

/* x (B,T) uint8 and decoder_input `deco` (B,S) uint8 with the same B, as new references; with
 * decoder_optional, deco may be None (then *dec = NULL). -1 with an exception and nothing held. */
int sf_py_token_arrays(PyObject *xo, PyObject *deco, int decoder_optional, PyArrayObject **x, PyArrayObject **dec);
/* The engine's data of one call from checked arrays: x (rows, T); dec (rows, S) or NULL (the encoder);
 * y (rows) or (rows, L), or NULL where no loss is needed. */
sf_seq_data sf_py_seq_data(PyArrayObject *x, PyArrayObject *dec, PyArrayObject *y);

/* A NumPy array viewing `data` and keeping `owner` alive. */
PyObject *sf_py_view(PyObject *owner, void *data, int ndim, npy_intp *shape, int typenum, int writeable);

static inline int sf_py_typenum(sf_dtype dt) { return dt == SF_F64 ? NPY_FLOAT64 : NPY_FLOAT32; }

/* Stop hook for long C loops: re-takes the GIL briefly and runs Python's signal handlers. */
typedef struct {
    PyThreadState *saved;
} sf_py_unlocked;
int sf_py_stop_hook(void *ctx);

/* The Model type (py_model.c), for the other files. */
typedef struct {
    PyObject_HEAD
    sf_model *model;
    int busy; /* one call at a time per model (the workspace is shared): SF_BUSY_ENGINE or SF_BUSY_PYTHON */
} SfModelObject;
extern PyTypeObject SfModelType;
extern PyTypeObject SfOptimizerType;
int sf_py_model_ready(SfModelObject *m); /* -1 with an exception if uninitialised */
enum { SF_BUSY_ENGINE = 1, SF_BUSY_PYTHON = 2 }; /* who holds a model: an engine call, or Python's acquire() */
int sf_py_model_acquire(SfModelObject *m);
int sf_py_model_acquire_waiting(SfModelObject *m);
void sf_py_model_release(SfModelObject *m);

typedef struct {
    PyObject_HEAD
    sf_optimizer *opt;
    SfModelObject *owner;
} SfOptimizerObject;

extern PyMethodDef sf_train_methods[];
extern PyMethodDef sf_boolean_methods[]; /* py_boolean.c */
extern PyMethodDef sf_kernel_methods[];  /* py_kernels.c */

/* The options dict of a target spec (kind, n, table, options) (py_boolean.c): fills the option
 * fields of `t`, keeping the arrays it borrows in `refs` until sf_py_target_refs_release. */
typedef struct {
    PyArrayObject *bits, *set_offsets, *coefficients, *table;
} sf_py_target_refs;
int sf_py_target_options(PyObject *options, sf_target *t, sf_py_target_refs *refs);
void sf_py_target_refs_release(sf_py_target_refs *refs);
extern PyMethodDef sf_probe_methods[];
extern PyMethodDef sf_seq2seq_methods[]; /* py_seq2seq.c */

#endif
