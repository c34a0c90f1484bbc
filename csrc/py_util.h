/* What the CPython/NumPy boundary files (py_*.c, module.c) share: the model and optimizer types and the
 * one way a function of _engine reads its arguments and enters the engine. Nothing numeric. */
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
int sf_py_optimizer_ready(SfOptimizerObject *o); /* -1 with an exception if uninitialised (py_train.c) */

/* ---- one engine call (py_call.c) ------------------------------------------------------------
 * Every function of _engine reads its arguments by keyword (no positional ones), with one table per
 * function naming each argument and how it is read; then checks what the table cannot (shapes
 * against each other); then enters the engine through sf_py_run. Errors name the argument. */

typedef enum {
    SF_ARG_INT,       /* int */
    SF_ARG_INT64,     /* int64_t */
    SF_ARG_UINT64,    /* uint64_t (seeds: >= 0) */
    SF_ARG_DOUBLE,    /* double */
    SF_ARG_BOOL,      /* int: 0 or 1, from any object's truth */
    SF_ARG_STRING,    /* const char * (UTF-8, borrowed) */
    SF_ARG_OBJECT,    /* PyObject * (borrowed; the caller's keyword dict keeps it alive) */
    SF_ARG_MODEL,     /* SfModelObject *, initialised */
    SF_ARG_OPTIMIZER, /* SfOptimizerObject *, initialised */
    SF_ARG_ARRAY,     /* PyArrayObject * (borrowed): C-contiguous, aligned, native byte order */
} sf_py_arg_kind;

enum {
    SF_PY_MODEL_REAL = -1, /* an array's dtype: the float type of the call's model (parsed before it) */
    SF_PY_ANY_REAL = -2,   /* float32 or float64 */
};

typedef struct {
    const char *name;
    sf_py_arg_kind kind;
    void *dest;
    int optional; /* may be omitted, or None: dest keeps its initial value (NULL for arrays) */
    int dtype;    /* arrays: NPY_*, SF_PY_MODEL_REAL or SF_PY_ANY_REAL */
    int ndim;     /* arrays: dimensions, 0 for any */
    int writable; /* arrays the engine writes into */
} sf_py_arg;

#define SF_ARG(name, kind, dest) {name, kind, dest, 0, 0, 0, 0}
#define SF_ARG_OPTIONAL(name, kind, dest) {name, kind, dest, 1, 0, 0, 0}
#define SF_ARRAY(name, dest, dtype, ndim) {name, SF_ARG_ARRAY, dest, 0, dtype, ndim, 0}
#define SF_ARRAY_OPTIONAL(name, dest, dtype, ndim) {name, SF_ARG_ARRAY, dest, 1, dtype, ndim, 0}
#define SF_ARRAY_OUT(name, dest, dtype, ndim) {name, SF_ARG_ARRAY, dest, 0, dtype, ndim, 1}
#define SF_ARGS(table) table, (int)(sizeof table / sizeof table[0])
/* A method-table entry's function and flags for a function reading keywords. */
#define SF_PY_KEYWORDS(fn) (PyCFunction)(void (*)(void))(fn), METH_VARARGS | METH_KEYWORDS

/* Read `fn`'s keyword arguments into the table's destinations. -1 with a TypeError/ValueError naming
 * the argument (positional arguments, unknown or missing keywords, wrong types, dtypes or dimensions). */
int sf_py_parse(const char *fn, PyObject *args, PyObject *kw, const sf_py_arg *table, int n);

/* The engine part of a call, run without the GIL: `call` holds plain C data only. */
typedef sf_status (*sf_py_body)(void *call, sf_stop_hook stop, void *stop_ctx);
enum {
    SF_PY_WAIT = 1,   /* wait for a Python-side hold of the model instead of refusing the call */
    SF_PY_REPORT = 2, /* return an interruption or divergence as its status, for the caller to report */
};
/* Enter the engine: take the model (when there is one: one call at a time per model), release the GIL
 * with the stop hook armed (Ctrl-C and other signals run their handlers during long calls), run `body`,
 * take the GIL and give the model back, and turn a failed status into the matching exception (a signal
 * handler's own exception is kept). Returns 0; -1 with an exception set; with SF_PY_REPORT, a status
 * other than SF_EINVAL/SF_ENOMEM as it is (an interrupting handler's exception left set). */
int sf_py_run(SfModelObject *model, int flags, sf_py_body body, void *call);

/* An array argument found inside another (a spec tuple, an options dict), checked as the table's arrays
 * are: a new reference, or NULL with an exception naming `what`. */
PyArrayObject *sf_py_array(PyObject *obj, int typenum, int ndim, const char *what);

/* Raise the Python exception matching an engine status (message from sf_last_error). */
PyObject *sf_py_raise(sf_status st);

/* The engine's data of one call, checking that decoder inputs and labels have x's rows and that the
 * labels have the model kind's dimensions: y (rows) for the encoder, (rows, L) with decoder inputs. y
 * may be NULL where no loss is needed. -1 with an exception naming the argument. */
int sf_py_seq_data(PyArrayObject *x, PyArrayObject *dec, PyArrayObject *y, sf_seq_data *d);

/* A NumPy array viewing `data` and keeping `owner` alive. */
PyObject *sf_py_view(PyObject *owner, void *data, int ndim, npy_intp *shape, int typenum, int writeable);

static inline int sf_py_typenum(sf_dtype dt) { return dt == SF_F64 ? NPY_FLOAT64 : NPY_FLOAT32; }

/* The stop hook's state: the thread state saved while the GIL is released. */
typedef struct {
    PyThreadState *saved;
} sf_py_unlocked;
int sf_py_stop_hook(void *ctx);

/* The method tables of the files, joined into one by module.c. */
extern PyMethodDef sf_ops_methods[];     /* py_ops.c: forward, loss, generation */
extern PyMethodDef sf_probe_methods[];   /* py_probes.c */
extern PyMethodDef sf_train_methods[];   /* py_train.c */
extern PyMethodDef sf_boolean_methods[]; /* py_boolean.c */
extern PyMethodDef sf_kernel_methods[];  /* py_kernels.c */

/* The options dict of a target spec (kind, n, table, options) (py_boolean.c): fills the option
 * fields of `t`, keeping the arrays it borrows in `refs` until sf_py_target_refs_release. */
typedef struct {
    PyArrayObject *bits, *set_offsets, *coefficients, *table;
} sf_py_target_refs;
int sf_py_target_options(PyObject *options, sf_target *t, sf_py_target_refs *refs);
void sf_py_target_refs_release(sf_py_target_refs *refs);

#endif
